# make run   create .venv, install the pinned dependencies, run the whole pipeline on the embedded dataset
#            (CONFIG="config/voc2012.yaml" ARGS="--config data_root=/data": other config files and Snakemake arguments)
# make test  the test suite (unit tests and the whole DAG on a micro config)
# make ablation  the paper's Table 1 on the embedded data (config/ablation.yaml): 4 classifier variants x 3 seeds, CAMs
#                scored; results/ablation/tables/ablation.md and results/ablation/report.html
# make lint  snakemake --lint, ruff and snakefmt (what CI runs before the tests)
# make gpu-check  the GPU paths on this machine's GPU (bench/gpu_check.py): a table in bench/gpu_check.md
# make dag   docs/dag.md: the DAG picture, drawn from the workflow's rules
# make unlock  lift the lock a killed snakemake left (CONFIG and ARGS as for make run)
# make mutation  the mutation score of the pure numerical code (bench/mutation.py; installs mutmut into the venv): bench/mutation.md;
#                25 to 45 min on 2 cores (bench/mutation.md), so not in CI
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed-$(shell cksum envs/requirements.txt | cut -d' ' -f1)
# The run make clean removes: config/config.yaml's `run:` line, read without the venv, which may not exist yet
RUN := $(shell sed -n 's/^run: *\([^ #]*\).*/\1/p' config/config.yaml)
CORES ?= all

CONFIG ?= config/config.yaml
CHECK_CONFIG := PYTHONPATH=workflow/rules $(BIN)/python -m pipeline.config
# The run that `snakemake --configfile FILES $(ARGS)` runs: its config files, then the --config overrides of ARGS
run_name = $(shell $(CHECK_CONFIG) --run-name --configfile $(1) $(ARGS))

.PHONY: run ablation check-config test lint gpu-check dag mutation unlock install clean

install: $(STAMP)

# pip would byte-compile the 5 GB of packages one file at a time; compileall does it on every core (on 2 cores the
# install takes 124 s instead of 165). Modules that do not compile under this Python (test fixtures written in newer
# syntax) are skipped, as pip skips them.
$(STAMP): envs/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -r envs/requirements.txt
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	rm -f $(VENV)/.installed-* && touch $@

# A snakemake killed by SIGKILL (a closed terminal, a power loss) leaves its lock, and the next call stops at once:
# where a call fails with a lock left behind, say the one command that lifts it.
LOCKED = { test -z "$$(ls -A .snakemake/locks 2>/dev/null)" || echo "If no other snakemake runs in this folder, a killed \
one left its lock: make unlock CONFIG=\"$(1)\" ARGS=\"$(ARGS)\", then run again."; exit 1; }

run: $(STAMP) check-config
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) $(ARGS) || $(call LOCKED,$(CONFIG))
	@echo
	@cat results/$(call run_name,$(CONFIG))/tables/miou.md

# config/ablation.yaml stops the run after the CAMs (until: cams): the classifiers, their CAMs and the tables.
ABLATION := config/config.yaml config/ablation.yaml
ablation: $(STAMP)
	@$(CHECK_CONFIG) $(ABLATION)
	$(BIN)/snakemake --cores $(CORES) --configfile $(ABLATION) $(ARGS) || $(call LOCKED,$(ABLATION))
	$(BIN)/snakemake --cores 1 --configfile $(ABLATION) $(ARGS) --report results/$(call run_name,$(ABLATION))/report.html
	@echo
	@cat results/$(call run_name,$(ABLATION))/tables/ablation.md

# Snakemake reads the files of --configfile before the workflow can check them, and names no line of a YAML mistake.
check-config: $(STAMP)
	@$(CHECK_CONFIG) $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests

unlock: $(STAMP)
	$(BIN)/snakemake --unlock --configfile $(CONFIG) $(ARGS)

gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check

mutation: $(STAMP)
	$(BIN)/python -m bench.mutation

dag: $(STAMP)
	PYTHONPATH=workflow/rules $(BIN)/python -m pipeline.dag docs/dag.md

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow

clean:
	rm -rf results/$(RUN) resources .snakemake
