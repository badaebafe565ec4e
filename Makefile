# Quick start: `make demo` (the main job) and `make test` (the test suite).
# Both create ./.venv and install vaedft into it on first use.
#
# TORCH is the torch requirement installed before vaedft; the default pins the
# CPU build that CI uses. Override it for a CUDA build, e.g. `make test TORCH=torch`.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vaedft-installed
DEMO   ?= data/demo

.PHONY: install demo test bench lint clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The main job. For now: the three small demo datasets (the quick benchmark suite
# replaces this once `vaedft-bench` lands).
demo: $(STAMP)
	$(BIN)/vaedft generate gaussian1d --n 2000 --seed 0 --out $(DEMO)/gaussian1d.h5
	$(BIN)/vaedft generate gaussian1d --test-set snyder2012 --out $(DEMO)/gaussian1d_snyder2012.h5
	$(BIN)/vaedft generate speckle1d --n 2000 --seed 0 --out $(DEMO)/speckle1d.h5
	$(BIN)/vaedft generate gaussian3d --n 500 --seed 0 --out $(DEMO)/gaussian3d.h5
	$(BIN)/vaedft validate $(DEMO)/*.h5

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pytest --benchmark -q

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check vaedft tests benchmark conftest.py

clean-demo:
	rm -rf $(DEMO)
