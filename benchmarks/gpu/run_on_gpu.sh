#!/usr/bin/env bash
# Run detpre's GPU benchmarks on the lent GPU machine (no network there; see DEVELOPERS.md).
# It installs the carried wheels, builds the carried Detectron2 source for this GPU, prints
# the versions, then runs one group of benchmarks, logging each to $OUT (or ./gpu-logs):
#
#   bash benchmarks/gpu/run_on_gpu.sh ladder   # benchmarks/train_step.py, every rung (~6 min)
#   bash benchmarks/gpu/run_on_gpu.sh others   # GN vs BN, box-domain step, KAIST mapper (~5 min)
#
# Needs the git-ignored .whl/ and .d2src/ made by benchmarks/gpu/make_kit.sh (carried), and
# for `others` a copy of the KAIST fixture in .kaist-fixture/ (carried).
set -euo pipefail
group=${1:?usage: run_on_gpu.sh ladder|others}
out=${OUT:-gpu-logs}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --target /tmp/site .whl/*.whl > "$out/install.log" 2>&1 || { tail -30 "$out/install.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/.d2src:$PWD
arch=$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
start=$(date +%s)
(cd .d2src && TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) python3 setup.py build_ext --inplace) \
  > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "detectron2 built in $(( $(date +%s) - start )) s for sm_$arch"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch, detectron2, detectron2._C; print("torch", torch.__version__, "cuda", torch.version.cuda,
"cudnn", torch.backends.cudnn.version(), "detectron2", detectron2.__version__, open(".d2src/COMMIT").read().strip())'
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*"
  local t=$(date +%s)
  "$@" 2>&1 | grep -v -i "warn" | tee "$out/$name.log" | tail -25
  echo "== $name took $(( $(date +%s) - t )) s"
}
case "$group" in
  ladder)
    run train_step python3 benchmarks/train_step.py --device cuda --iters 20 --warmup 5 --check-iters 3
    ;;
  others)
    run norm_cost python3 benchmarks/norm_cost.py --device cuda --iters 20 --warmup 5 --rounds 2
    run norm_cost_fp32 python3 benchmarks/norm_cost.py --device cuda --iters 20 --warmup 5 --rounds 2 \
      --opts SOLVER.AMP.ENABLED False
    run box_domain_step python3 benchmarks/box_domain_step.py --device cuda --iters 20 --warmup 5 --rounds 2
    run mapper_speed python3 benchmarks/mapper_speed.py --root .kaist-fixture --rounds 5
    ;;
  *) echo "unknown group $group (ladder|others)"; exit 2 ;;
esac
