#!/usr/bin/env bash
# Prepare, on this (networked) machine, what the lent GPU machine lacks to run detpre's
# benchmarks: Detectron2's source (built there, for its torch) and Detectron2's pure-Python
# needs as wheels (cp312 where compiled). Both folders are git-ignored and travel with `carry`.
#
#   bash benchmarks/gpu/make_kit.sh /path/to/detectron2.git
#
# See DEVELOPERS.md, "Benchmarks on the lent GPU".
set -euo pipefail
src=${1:?usage: make_kit.sh DETECTRON2_GIT_DIR (a bare or .git directory)}
top=$(git rev-parse --show-toplevel)
cd "$top"
rm -rf .d2src .whl
mkdir -p .d2src .whl
# The Python package, its C++/CUDA sources and the model-zoo configs (setup.py links them
# into detectron2/model_zoo at build time): no tests, docs or projects.
git --git-dir="$src" archive HEAD setup.py detectron2 configs | tar -x -C .d2src
git --git-dir="$src" log -1 --format='%H %cs' HEAD > .d2src/COMMIT
pip_download() {
  python3 -m pip download -q --no-deps -d .whl "$@"
}
plat=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip_download "${plat[@]}" yacs==0.1.8 termcolor==2.4.0 omegaconf==2.3.0 hydra-core==1.3.2 pycocotools==2.0.8
# These three are published as sdists only; built here into pure-Python wheels, so that the
# GPU machine installs nothing but wheels.
python3 -m pip wheel -q --no-deps -w .whl fvcore==0.1.5.post20221221 iopath==0.1.10 antlr4-python3-runtime==4.9.3
du -sh .d2src .whl
