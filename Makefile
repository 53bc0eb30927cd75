# `make test` and `make demo` work from a fresh clone: they create .venv and
# install the package with its test and example extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-slow demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,examples]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest keras_mtl tests -m "not slow"

test-slow: install
	$(BIN)/python -m pytest tests -m slow || [ $$? -eq 5 ]  # 5: no slow test collected

demo: install
	$(BIN)/keras-mtl demo

bench: install
	$(BIN)/python benchmarks/bench_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info
