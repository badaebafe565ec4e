# Quick start: `make quick` (the main job: the quick benchmark suite) and `make test` (the test suite).
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

SMOKE  ?= E6,E9

.PHONY: install quick cpu accuracy smoke demo test bench lint clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,dist]"
	touch $(STAMP)

# The main job: every experiment of the paper at reduced size (about 10 minutes on 2 cores);
# writes reports/quick/report.md. Artifacts are cached in ~/.cache/vaedft/bench ($VAEDFT_CACHE): a rerun is fast.
quick: $(STAMP)
	$(BIN)/vaedft-bench --profile quick

# The paper's 1D networks on a 2-core CPU (about 2.4 hours; resumable: rerun after an interruption);
# writes reports/cpu/report.md with the goals of benchmark/reference/cpu.toml.
cpu: $(STAMP)
	$(BIN)/vaedft-bench --profile cpu

# The cpu profile's accuracy slice: one gaussian1d pair with the cpu recipe on the 100 Snyder potentials,
# checked against the cpu goals (35 minutes on 2 cores from an empty cache; exit 1 when chemical accuracy is missed).
# ACCURACY_CACHE=DIR builds in DIR instead of the default cache (CI starts from an empty one).
ACCURACY_CACHE ?=
accuracy: $(STAMP)
	$(BIN)/vaedft-bench --profile cpu_slice --experiments E4 --out reports-accuracy \
		$(if $(ACCURACY_CACHE),--cache $(ACCURACY_CACHE))
	$(BIN)/vaedft-bench check reports-accuracy/cpu_slice/results.json --against benchmark/reference/cpu_slice.toml

# CI's regression slice: two experiments of the quick profile, checked against the committed reference.
smoke: $(STAMP)
	$(BIN)/vaedft-bench --profile quick --experiments $(SMOKE) --out reports-smoke --cache .vaedft-cache-smoke
	$(BIN)/vaedft-bench check reports-smoke/quick/results.json --against benchmark/reference/quick.toml \
		--experiments $(SMOKE)

# Three small demo datasets (data/demo), for trying the `vaedft` subcommands by hand.
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
