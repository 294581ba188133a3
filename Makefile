# make run   create .venv, install the pinned dependencies, run the whole pipeline on the embedded dataset
#            (CONFIG="config/voc2012.yaml" ARGS="--config data_root=/data": other config files and Snakemake arguments)
# make test  the test suite (unit tests and the whole DAG on a micro config)
# make ablation  the paper's Table 1 on the embedded data (config/ablation.yaml): 4 classifier variants x 3 seeds, CAMs
#                scored; results/ablation/tables/ablation.md and results/ablation/report.html
# make lint  snakemake --lint, ruff and snakefmt (what CI runs before the tests)
# make gpu-check  the GPU paths on this machine's GPU (bench/gpu_check.py): a table in bench/gpu_check.md
# make dag   docs/dag.md: the DAG picture, drawn from the workflow's rules
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed-$(shell cksum envs/requirements.txt | cut -d' ' -f1)
# The run a config file names (its `run:` line), read without the venv, which may not exist yet
run_of = $(shell sed -n 's/^run: *\([^ #]*\).*/\1/p' $(1))
RUN := $(call run_of,config/config.yaml)
CORES ?= all

CONFIG ?= config/config.yaml
CHECK_CONFIG := PYTHONPATH=workflow/rules $(BIN)/python -m pipeline.config

.PHONY: run ablation check-config test lint gpu-check dag install clean

install: $(STAMP)

# pip would byte-compile the 5 GB of packages one file at a time; compileall does it on every core (on 2 cores the
# install takes 124 s instead of 165). Modules that do not compile under this Python (test fixtures written in newer
# syntax) are skipped, as pip skips them.
$(STAMP): envs/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -r envs/requirements.txt
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP) check-config
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) $(ARGS)
	@echo
	@cat results/$$($(CHECK_CONFIG) --run-name $(CONFIG))/tables/miou.md

# config/ablation.yaml stops the run after the CAMs (until: cams): the classifiers, their CAMs and the tables.
ABLATION := config/config.yaml config/ablation.yaml
ABLATION_RUN := $(call run_of,config/ablation.yaml)
ablation: $(STAMP)
	@$(CHECK_CONFIG) $(ABLATION)
	$(BIN)/snakemake --cores $(CORES) --configfile $(ABLATION) $(ARGS)
	$(BIN)/snakemake --cores 1 --configfile $(ABLATION) $(ARGS) --report results/$(ABLATION_RUN)/report.html
	@echo
	@cat results/$(ABLATION_RUN)/tables/ablation.md

# Snakemake reads the files of --configfile before the workflow can check them, and names no line of a YAML mistake.
check-config: $(STAMP)
	@$(CHECK_CONFIG) $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests

gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check

dag: $(STAMP)
	PYTHONPATH=workflow/rules $(BIN)/python -m pipeline.dag docs/dag.md

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow

clean:
	rm -rf results/$(RUN) resources .snakemake
