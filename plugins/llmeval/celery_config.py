"""Celery settings for Airflow workers that run evaluation DAGs.

Set `[celery] celery_config_options = llmeval.celery_config.CELERY_CONFIG`
(`AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS`). These are Airflow's defaults plus `imports`:
a Celery worker imports the modules below once, when it starts, and forks every task
process from itself, so a task starts with the DAG factory, the Amazon provider's
SageMaker operators and s3fs already imported instead of importing them (measured in
`benchmarks/task_start.py`).
"""

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

PRELOADED = (
    "llmeval.factory",
    "llmeval.steps",
    "llmeval.targets.sagemaker",
    "llmeval.targets.endpoint_leases",
    "airflow.providers.amazon.aws.operators.sagemaker",
    "s3fs",
)

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), *PRELOADED)}
