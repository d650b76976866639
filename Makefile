# Two commands for a fresh machine: `make run` (the main job) and `make test`.
# Both bootstrap .venv themselves; requirements.lock pins every package exactly.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo

.PHONY: run test lint venv clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly: any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/granvae data make surfaces --out $(RUN_DIR)/data --n 1024 --n-val 256 --n-test 256
	$(VENV)/bin/granvae train --data $(RUN_DIR)/data --out $(RUN_DIR)/train \
		--objective beta_stcvae --granularity 2 --beta 4 --latent-dim 10 --epochs 5

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
