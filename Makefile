# The newcomer's path: `make install`, `make test`, `make demo`.
# PYTHON must be a Python 3.10 (the only build of Detectron2 on the package index is cp310).
PYENV_VERSION ?= 3.10.13
export PYENV_VERSION
PYTHON ?= python3.10
VENV ?= .venv
VPY := $(VENV)/bin/python

.PHONY: install lint test demo clean

install:
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -r requirements.txt
	$(VPY) -m pip install --no-deps -e .

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test:
	$(VENV)/bin/pytest -q tests

demo:
	$(VPY) tools/demo.py --output-dir output/demo

clean:
	rm -rf output .pytest_cache
