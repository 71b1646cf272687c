# litlab: every target creates .venv and fetches the data it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Datasets fetched by `make data` (Fashion-MNIST comes from Debian's packages).
DATASETS ?= mnist fashion_mnist bbc_news tweets_sentiment rotten_tomatoes
ARGS ?=

.PHONY: help install data train test bench lint format clean distclean

help:
	@echo "make train [ARGS='experiment=mlp_relu ...']  train (default: the article's CNN on MNIST)"
	@echo "make test                                     the test suite (installs and fetches first)"
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

test: data
	$(BIN)/pytest

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
