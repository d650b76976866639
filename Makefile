# Two commands for a fresh machine: `make run` (the main job) and `make test`.
# Both bootstrap .venv themselves; requirements.lock pins every package exactly.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo

.PHONY: run test lint venv clean reliability

$(STAMP): pyproject.toml requirements.lock deploy/pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exactly: any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# ./deploy too: the edge runtime (`granvae-edge pull/serve`) the README runs after `make run`
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]" -e ./deploy
	touch $(STAMP)

venv: $(STAMP)

# The retraining flow on embedded defaults: ephemeral Prefect API, MLflow on sqlite,
# a local DVC remote, the CPU; the data snapshot is versioned in its own git repo.
run: $(STAMP)
	$(VENV)/bin/granvae retrain --profile quick --data-repo $(RUN_DIR)/data-repo \
		--set pipeline.work_dir=$(RUN_DIR)/retrain

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Re-run tests/reliability and the serve benchmark; rewrites docs/reliability.md.
reliability: $(STAMP)
	$(PY) benchmarks/reliability.py

clean:
	rm -rf $(VENV) runs
