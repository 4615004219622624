# phaseforge — two commands on a fresh machine: `make demo` and `make test`.
# Set-up builds a virtual environment in .venv. It sees the system site-packages, so a
# torch you already have is kept; where none is importable it installs the CPU build
# (TORCH_SPEC), never a multi-GB CUDA wheel just to run tests.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
# Elsewhere, point pip at the CPU wheels if PyPI would hand you a CUDA build, e.g.
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "setup: keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "setup: no torch found; installing the CPU build ($(TORCH_SPEC))"; \
		$(PIP) install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"; \
	fi
	$(PIP) install --quiet -e ".[test]"
	@touch $@

demo: setup
	$(VENV)/bin/phaseforge demo --out $(DEMO_OUT)

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/propagation.py
	$(PY) benchmarks/simulate.py
	$(PY) benchmarks/solvers.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/export.py

clean:
	rm -rf $(VENV) out .pytest_cache
