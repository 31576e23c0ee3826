# Two entry points: `make run` (the main job) and `make test` (the docs build, then the test suite).
# On a machine without nvidia-smi, torch is pinned to the CPU wheel (constraints-cpu.txt) so pip never
# pulls CUDA packages; on a GPU machine pip resolves its normal CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
GRID ?= configs/quick.toml
TORCH_PIN := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
# gpu-check needs no install step: any python with torch and the repo's dependencies (e.g. `pip install -e .`)
PYTHON ?= python3
GPU_CHECK_ARGS ?=

.PHONY: install run test bench report docs gpu-check
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN) -e '.[dev]'
	touch $@

run: install
	$(VENV)/bin/vaebench run --grid $(GRID)

report: install
	$(VENV)/bin/vaebench report

test: install docs
	$(VENV)/bin/pytest -q --benchmark-disable

# the documentation site (mkdocs.yml, docs/), built offline; warnings are errors
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $${TMPDIR:-/tmp}/vaebench-site

bench: install
	$(VENV)/bin/pytest -q --benchmark-only

gpu-check:  # CUDA machines: tests, the grid shortened, report in gpu-check/report.md (docs/gpu.md); exit 2 without CUDA
	$(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)
