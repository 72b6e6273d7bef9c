# Two commands do everything on a fresh machine (Python 3.11, no Docker, no AWS):
#   make demo   install what is needed, then run the local demo DAG end to end
#   make test   install what is needed, then run the whole test suite
# and `make ui` opens the Airflow UI with the plugin and the demo's runs.
# Installs are cached under ~/.cache/llmeval (keyed by the requirements files' hash) and
# skipped when already done, so a second run starts straight away.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
WORKER_VENV := .venv-worker
OPENAI_SERVER_VENV := .venv-openai-server
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR)/plugins
export LLM_EVAL_ARTIFACTS_DIR ?= $(CURDIR)/artifacts
export LLM_EVAL_WORKER_PYTHON := $(CURDIR)/$(WORKER_VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DEMO_DAG ?= llm-eval-local-demo
PYTEST_ARGS ?=
BENCHMARKS ?=

.PHONY: env worker-env openai-server-env model-cache services airflow-db demo ui test lint docs plugins-zip faults validate schema benchmarks clean

env:  ## Airflow environment (+ test tools)
	@PYTHON=$(PYTHON) scripts/ensure_venv.sh $(VENV) requirements-dev.txt requirements.txt

worker-env:  ## worker environment: fmeval, torch (CPU), transformers, the packaged models
	@PYTHON=$(PYTHON) scripts/ensure_venv.sh $(WORKER_VENV) requirements-worker.txt requirements-worker-nodeps.txt

openai-server-env:  ## llama.cpp's OpenAI-compatible server, for the tests (compiled once, ~5 min)
	@CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  PYTHON=$(PYTHON) scripts/ensure_venv.sh $(OPENAI_SERVER_VENV) requirements-openai-server.txt

model-cache: worker-env  ## convert the packaged GGUF model to safetensors once (~30 s)
	@cd plugins && ../$(WORKER_VENV)/bin/python -c "from llmeval.evaluation.local_models import resolve_model_dir as r; print('>> model cache:', r('smollm2-135m-instruct'))"

services:  ## PostgreSQL and Redis from the OS packages (the distributed-Airflow tests start their own)
	@scripts/ensure_services.sh

airflow-db: env
	@test -f $(AIRFLOW_HOME)/airflow.db || (echo ">> creating the Airflow database in $(AIRFLOW_HOME)" && airflow db migrate > /dev/null)

demo: env worker-env model-cache airflow-db  ## run the demo DAG with `airflow dags test`, showing each task as it runs
	@$(VENV)/bin/python -m llmeval validate include/configs/*.yaml
	@echo ">> airflow dags test $(DEMO_DAG) (full log: $(AIRFLOW_HOME)/demo.log)"
	@start=$$(date +%s); set -o pipefail; \
	  airflow dags test $(DEMO_DAG) 2>&1 | $(VENV)/bin/python scripts/demo_progress.py $(AIRFLOW_HOME)/demo.log; rc=$$?; \
	  echo ">> airflow dags test $(DEMO_DAG): exit $$rc in $$(( $$(date +%s) - start ))s"; \
	  report=$$(ls -td $(LLM_EVAL_ARTIFACTS_DIR)/runs/$(DEMO_DAG)/*/ 2>/dev/null | head -1); \
	  test -n "$$report" && cat $$report/summary.md && echo ">> leaderboard: $${report}leaderboard.html"; \
	  echo ">> make ui: the same run in the Airflow UI (its Leaderboard tab)"; exit $$rc

ui: env worker-env model-cache airflow-db  ## Airflow standalone with the plugin and the demo's runs (prints URL and login)
	@$(VENV)/bin/python scripts/ui.py

test: env worker-env openai-server-env model-cache services  ## the whole test suite
	$(VENV)/bin/python scripts/run_tests.py $(PYTEST_ARGS)

lint: env  ## ruff (lint and format), mypy, the import-linter layers
	$(VENV)/bin/ruff check plugins tests benchmarks dags scripts
	$(VENV)/bin/ruff format --check plugins tests benchmarks dags scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: env  ## the documentation site in site/ (generated pages first; --strict: broken links fail)
	@$(VENV)/bin/python scripts/docs_pages.py
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

plugins-zip:  ## plugins.zip for MWAA: the plugin module, the package, the .airflowignore
	@$(PYTHON) scripts/plugins_zip.py plugins.zip

faults: env worker-env model-cache services  ## the fault-injection tests; prints the fault matrix
	$(VENV)/bin/python -m pytest -m faults -q -p no:warnings

validate: env
	$(VENV)/bin/python -m llmeval validate include/configs/*.yaml

schema: env
	@$(VENV)/bin/python -m llmeval schema

benchmarks: env worker-env  ## each prints `<name>: <ratio>x ...` last; the figures go to docs/benchmarks.json
	$(VENV)/bin/python scripts/run_benchmarks.py $(BENCHMARKS)
	@$(VENV)/bin/python scripts/docs_pages.py

clean:  ## remove run artifacts and the local Airflow home (not the cached environments)
	rm -rf artifacts .airflow .pytest_cache site
