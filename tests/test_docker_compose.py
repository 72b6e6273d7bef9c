"""docker-compose.yaml cannot run here (no Docker engine): check that it parses and holds
the services, mounts and variables the stack needs."""

from __future__ import annotations

import importlib

import yaml

from conftest import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services_of_a_celery_stack_with_triggerer():
    services = _compose()["services"]
    assert {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
    } <= set(services)
    assert services["airflow-worker"]["command"] == "celery worker --queues default"
    assert services["airflow-worker-local"]["command"] == "celery worker --queues llmeval-local"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert "8080:8080" in services["airflow-apiserver"]["ports"]


def test_workers_preload_the_factory_through_airflows_celery_config():
    path = _compose()["x-airflow-common"]["environment"]["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"]
    module, _, name = path.rpartition(".")
    config = getattr(importlib.import_module(module), name)
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    assert {k: v for k, v in config.items() if k != "imports"} == DEFAULT_CELERY_CONFIG
    assert "llmeval.dag" in config["imports"]
    for preloaded in config["imports"]:
        importlib.import_module(preloaded)


def test_airflow_services_mount_the_project_and_share_artifacts():
    services = _compose()["services"]
    for name in (
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-worker-local",
        "airflow-triggerer",
    ):
        volumes = services[name]["volumes"]
        for mount in (
            "./dags:/opt/airflow/dags",
            "./plugins:/opt/airflow/plugins",
            "./include:/opt/airflow/include",
            "./artifacts:/opt/airflow/artifacts",
        ):
            assert mount in volumes, (name, mount)
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["LLM_EVAL_WORKER_PYTHON"] == "/opt/llmeval/worker-venv/bin/python"
        assert env["LLM_EVAL_ARTIFACTS_URL"] == "${LLM_EVAL_ARTIFACTS_URL:-file:///opt/airflow/artifacts}"
        for var in (
            "AIRFLOW_VAR_LLM_EVAL_SAGEMAKER_ROLE_ARN",
            "AIRFLOW_VAR_LLM_EVAL_S3_PREFIX",
            "AIRFLOW_VAR_LLM_EVAL_PROCESSING_IMAGE",
            "AIRFLOW_CONN_AWS_DEFAULT",
        ):
            assert var in env


def test_the_image_installs_both_environments():
    dockerfile = (ROOT / _compose()["x-airflow-common"]["build"]["dockerfile"]).read_text()
    assert dockerfile.startswith("# ") and "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "requirements.txt" in dockerfile and "requirements-worker.txt" in dockerfile
    assert "torch==2.13.0" in dockerfile and "/opt/llmeval/worker-venv" in dockerfile


def test_every_shipped_config_loads_under_the_stacks_executor(monkeypatch):
    """What the stack promises: under its CeleryExecutor and store URL, every shipped config
    is a DAG; the local demo's tasks all go to the queue of the one local worker."""
    from airflow.dag_processing.dagbag import DagBag

    env = _compose()["x-airflow-common"]["environment"]
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", env["AIRFLOW__CORE__EXECUTOR"])
    monkeypatch.setenv("LLM_EVAL_ARTIFACTS_URL", "file:///opt/airflow/artifacts")
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    local_queue = _compose()["services"]["airflow-worker-local"]["command"].split("--queues ")[1]
    assert {t.queue for t in bag.dags["llm-eval-local-demo"].tasks} == {local_queue}
    monkeypatch.delenv("LLM_EVAL_ARTIFACTS_URL")  # several hosts and no shared store: refused, named
    errors = DagBag(dag_folder=str(ROOT / "dags")).import_errors
    assert errors and all("set LLM_EVAL_ARTIFACTS_URL" in e for e in errors.values())
