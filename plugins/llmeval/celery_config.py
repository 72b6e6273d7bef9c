"""Celery settings for Airflow workers that run evaluation DAGs.

Set `[celery] celery_config_options = llmeval.celery_config.CELERY_CONFIG`
(`AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS`). These are Airflow's defaults plus `imports`:
a Celery worker imports the modules below once, when it starts, and forks every task
process from itself, so a task starts with the DAG factory, the Amazon provider's
SageMaker operators and s3fs already imported instead of importing them, and with the
modules' files already mapped (measured in `benchmarks/task_start.py`).
"""

import inspect

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

PRELOADED = (
    "llmeval.dag",
    "llmeval.steps",
    "llmeval.registration",
    "llmeval.targets.sagemaker.target",
    "llmeval.targets.sagemaker.leases",
    "airflow.providers.amazon.aws.operators.sagemaker",
    "s3fs",
)

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), *PRELOADED)}


def map_module_files(**_: object) -> None:
    """Map every loaded module's file once in the worker (after `imports`), for the task
    processes forked from it to inherit: the Amazon provider's hooks call `inspect.stack()`
    for every client they create (the user agent names the calling operator), and the first
    call in a process resolves the real path of every loaded module."""
    inspect.stack()


worker_init.connect(map_module_files, weak=False)
