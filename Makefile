# Two commands do everything on a fresh machine (Python 3.11, no Docker, no AWS):
#   make demo   install what is needed, then run the local demo DAG end to end
#   make test   install what is needed, then run the whole test suite
# Installs are cached under ~/.cache/llmeval (keyed by the requirements files' hash) and
# skipped when already done, so a second run starts straight away.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
WORKER_VENV := .venv-worker
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

.PHONY: env worker-env model-cache services airflow-db demo test faults validate schema benchmarks clean

env:  ## Airflow environment (+ test tools)
	@PYTHON=$(PYTHON) scripts/ensure_venv.sh $(VENV) requirements-dev.txt requirements.txt

worker-env:  ## worker environment: fmeval, torch (CPU), transformers, the packaged models
	@PYTHON=$(PYTHON) scripts/ensure_venv.sh $(WORKER_VENV) requirements-worker.txt requirements-worker-nodeps.txt

model-cache: worker-env  ## convert the packaged GGUF model to safetensors once (~30 s)
	@cd plugins && ../$(WORKER_VENV)/bin/python -c "from llmeval.evaluation.local_models import resolve_model_dir as r; print('>> model cache:', r('smollm2-135m-instruct'))"

services:  ## PostgreSQL and Redis from the OS packages (the distributed-Airflow tests start their own)
	@scripts/ensure_services.sh

airflow-db: env
	@test -f $(AIRFLOW_HOME)/airflow.db || (echo ">> creating the Airflow database in $(AIRFLOW_HOME)" && airflow db migrate > /dev/null)

demo: env worker-env model-cache airflow-db  ## run the demo DAG with `airflow dags test`
	@$(VENV)/bin/python -m llmeval validate include/configs/*.yaml
	@start=$$(date +%s); airflow dags test $(DEMO_DAG) > $(AIRFLOW_HOME)/demo.log 2>&1; rc=$$?; \
	  grep -E "llmeval\.(steps|local|factory)" $(AIRFLOW_HOME)/demo.log | grep -vE "Batches|^\s*$$" | sed -E 's/^\S+ \[[a-z]+ *\] //; s/ \[llmeval[^]]*\] loc=\S+$$//' | cut -c1-200; \
	  echo ">> airflow dags test $(DEMO_DAG): exit $$rc in $$(( $$(date +%s) - start ))s (full log: $(AIRFLOW_HOME)/demo.log)"; \
	  report=$$(ls -td $(LLM_EVAL_ARTIFACTS_DIR)/runs/$(DEMO_DAG)/*/ 2>/dev/null | head -1); \
	  test -n "$$report" && cat $$report/summary.md && echo ">> leaderboard: $${report}leaderboard.html"; exit $$rc

test: env worker-env model-cache services  ## the whole test suite
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

faults: env worker-env model-cache services  ## the fault-injection tests; prints the fault matrix
	$(VENV)/bin/python -m pytest -m faults -q -p no:warnings

validate: env
	$(VENV)/bin/python -m llmeval validate include/configs/*.yaml

schema: env
	@$(VENV)/bin/python -m llmeval schema

benchmarks: env worker-env  ## each prints `<name>: <ratio>x ...` last
	$(WORKER_VENV)/bin/python benchmarks/generate_throughput.py 2>&1 | grep -vE "sagemaker.config|row/s|Tasks:|^\s*$$"
	$(WORKER_VENV)/bin/python benchmarks/score_overhead.py 2>&1 | grep -vE "sagemaker.config|row/s|Tasks:|warn|^\s*$$"
	$(WORKER_VENV)/bin/python benchmarks/robustness_throughput.py 2>&1 | tail -n 5
	$(WORKER_VENV)/bin/python benchmarks/judge_throughput.py 2>&1 | grep -v "sagemaker.config"
	$(VENV)/bin/python benchmarks/parse_time.py
	$(VENV)/bin/python benchmarks/task_start.py
	$(VENV)/bin/python benchmarks/endpoint_minutes.py 2>&1 | tail -n 6

clean:  ## remove run artifacts and the local Airflow home (not the cached environments)
	rm -rf artifacts .airflow .pytest_cache
