# litlab: every target creates .venv and fetches the data it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Datasets fetched by `make data` (Fashion-MNIST comes from Debian's packages).
DATASETS ?= mnist fashion_mnist bbc_news tweets_sentiment rotten_tomatoes
ARGS ?=
# A SLURM cluster for the tests and `make slurm-up` (tests/slurm_cluster.py): NODES=1 or 2.
SLURM_PACKAGES ?= slurm-wlm munge
# A PostgreSQL server for the shared-study tests, a headless browser for the dashboard test.
POSTGRES_PACKAGES ?= postgresql
CHROMIUM_PACKAGES ?= chromium chromium-driver
NODES ?= 2

.PHONY: help install data train test bench lint format clean distclean slurm slurm-up slurm-down \
	postgres chromium

help:
	@echo "make train [ARGS='experiment=mlp_relu ...']  train (default: the article's CNN on MNIST)"
	@echo "make test                                     the test suite (installs and fetches first)"
	@echo "make slurm-up [NODES=1] | slurm-down           a two-node SLURM cluster on this machine"
	@echo "make data | bench | lint | format | clean | distclean"

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	@touch $@

install: $(INSTALLED)

data: $(INSTALLED)
	$(BIN)/litlab-data $(DATASETS)

train: $(INSTALLED)
	$(BIN)/litlab-data mnist
	$(BIN)/litlab-train $(ARGS)

test: data slurm postgres chromium
	$(BIN)/pytest

# Debian's SLURM and munge where apt-get is (as root) and they are missing; elsewhere the SLURM
# tests skip and say how to get them.
slurm:
	@for tool in slurmctld slurmd sbatch munged; do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES); \
		else echo "SLURM is not installed (apt-get install $(SLURM_PACKAGES), as root)"; fi; \
	fi

# Debian's packages where apt-get is (as root) and a check fails: $(call debian,check,packages)
define debian
	@if ! ( $(1) ) >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2); \
		else echo "$(2) not installed (apt-get install $(2), as root): their tests skip"; fi; \
	fi
endef

postgres:
	$(call debian,ls /usr/lib/postgresql/*/bin/pg_ctl,$(POSTGRES_PACKAGES))

chromium:
	$(call debian,command -v chromium && command -v chromedriver,$(CHROMIUM_PACKAGES))

slurm-up: slurm
	$(PYTHON) tests/slurm_cluster.py up $(NODES)

slurm-down:
	$(PYTHON) tests/slurm_cluster.py down

bench: data
	$(BIN)/python benchmarks/run.py

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(INSTALLED)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf logs outputs .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) data
