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

.PHONY: setup demo test bench clean mutate fuzz docs docs-check

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

# Mutation testing (not in CI; README "Testing" says how long). benchmarks/mutate.py runs mutmut 3
# once per module of [tool.phaseforge.mutation] tests (pyproject.toml), each in its own folder
# mutants/<module>/ with only that module's test files as the selection; incremental: a re-run
# redoes last run's survivors (tests may be new) and mutants whose function changed.
# MODULES chooses modules (default all), e.g. MODULES="learning/metrics.py optics/sensor.py";
# MUTANTS narrows to mutant-name globs, e.g. MUTANTS='learning.losses.*' (named mutants are always
# re-run). One results file per run goes to benchmarks/results/mutation/.
MODULES ?=
MUTANTS ?=
MUTATE_JOBS ?= 1
mutate: setup
	@$(VENV)/bin/mutmut --version >/dev/null 2>&1 || $(PIP) install --quiet -e ".[test,mutation]"
	OMP_NUM_THREADS=1 $(PY) benchmarks/mutate.py --jobs $(MUTATE_JOBS) \
		$(if $(strip $(MODULES)),--modules $(foreach m,$(MODULES),'$(m)')) \
		$(if $(strip $(MUTANTS)),--mutants $(foreach m,$(MUTANTS),'$(m)'))

# Reader fuzzing with a large budget (the normal `make test` runs the same tests with a few
# derandomized examples each): profile phaseforge-fuzz-fuzz, FUZZ_EXAMPLES per test.
FUZZ_EXAMPLES ?= 300
fuzz: setup
	OMP_NUM_THREADS=1 PHASEFORGE_FUZZ_PROFILE=fuzz PHASEFORGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(PY) -m pytest tests/fuzz -q -p no:cacheprovider

# Documentation (Sphinx + sphinx-gallery + MyST + furo; docs/conf.py). `make docs` builds the HTML
# with every gallery example executed (docs/_build/html/index.html); `make docs-check` is the fast
# check CI runs: the same build without executing the examples (they are still parsed into pages)
# and with the CALIBRATION.h5 sample written from made-up values instead of a real calibrate run.
# Both fail on any warning: a broken internal link or reference (nitpicky), an undocumented or stale
# file-format field, a failing example, an example without a figure. The docs extra is installed
# by the target, as `make mutate` installs its own.
DOCS_OUT ?= docs/_build
SPHINXOPTS ?=
DOCS_DEPS := $(PY) -c "import sphinx, sphinx_gallery, myst_parser, furo" >/dev/null 2>&1 || $(PIP) install --quiet -e ".[test,docs]"
docs: setup
	@$(DOCS_DEPS)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m sphinx -b html -W --keep-going -n -q \
		-d $(DOCS_OUT)/doctrees docs $(DOCS_OUT)/html $(SPHINXOPTS)
	@echo "docs: open $(DOCS_OUT)/html/index.html"

docs-check: setup
	@$(DOCS_DEPS)
	PHASEFORGE_DOCS_GALLERY=0 PHASEFORGE_DOCS_FAST=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
		$(PY) -m sphinx -b html -W --keep-going -n -q -E -d $(DOCS_OUT)/doctrees-check docs $(DOCS_OUT)/check $(SPHINXOPTS)

clean:
	rm -rf $(VENV) out .pytest_cache mutants docs/_build docs/_generated docs/auto_examples docs/reference/api
