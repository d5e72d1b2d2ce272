# The README's two commands. Both create .venv if missing and install the project into it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all install clean lint

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(shell command -v $(PYTHON) || echo python3) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeship demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check pipeline calibration exporters targets tests benchmarks examples
	rm -rf build/lint && $(BIN)/python -c "import setuptools; setuptools.setup()" -q build_py --build-lib build/lint
	PYTHONPATH=build/lint $(BIN)/lint-imports  # on the installed layout: the folders map into one namespace

clean:
	rm -rf runs .pytest_cache
