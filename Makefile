# make run   create .venv, install the pinned dependencies, run the whole pipeline on the embedded dataset
# make test  the test suite (unit tests and the whole DAG on a micro config)
# make lint  snakemake --lint, ruff and snakefmt (what CI runs before the tests)
# make gpu-check  the GPU paths on this machine's GPU (bench/gpu_check.py): a table in bench/gpu_check.md
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed-$(shell cksum envs/requirements.txt | cut -d' ' -f1)
RUN := $(shell sed -n 's/^run: *\([^ #]*\).*/\1/p' config/config.yaml)
CORES ?= all

.PHONY: run test lint gpu-check install clean

install: $(STAMP)

# pip would byte-compile the 5 GB of packages one file at a time; compileall does it on every core (on 2 cores the
# install takes 124 s instead of 165). Modules that do not compile under this Python (test fixtures written in newer
# syntax) are skipped, as pip skips them.
$(STAMP): envs/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -r envs/requirements.txt
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@cat results/$(RUN)/tables/miou.md

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests

gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow

clean:
	rm -rf results/$(RUN) resources .snakemake
