"""Where the SageMaker target's settings come from (the config, else Airflow Variables and the
connection; never the YAML for the role) and the arguments every operator of a DAG gets."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from llmeval.config import EvalConfig, ModelSection
from llmeval.targets.sagemaker import requests as req

PROCESSING_IMAGE_VARIABLE = "llm_eval_processing_image"
S3_PREFIX_VARIABLE = "llm_eval_s3_prefix"


def hook(cfg: EvalConfig):
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id=cfg.sagemaker.aws_conn_id, region_name=cfg.sagemaker.region)


def s3_hook(cfg: EvalConfig):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(
        aws_conn_id=cfg.sagemaker.aws_conn_id, region_name=cfg.sagemaker.region, extra_args=req.s3_encryption(cfg)
    )


def setting(explicit: str | None, variable: str, what: str) -> str:
    from airflow.sdk import Variable

    value = explicit or Variable.get(variable, default=None)
    if not value:
        raise ValueError(f"no {what}: set the Airflow Variable {variable!r} (or the config's sagemaker section)")
    return value


def role_arn(cfg: EvalConfig) -> str:
    """From the Variable named by `sagemaker.role_variable`, else the connection's extra `role_arn`."""
    from airflow.sdk import Variable

    value = Variable.get(cfg.sagemaker.role_variable, default=None)
    if not value:
        extra = hook(cfg).get_connection(cfg.sagemaker.aws_conn_id).extra_dejson
        value = extra.get("role_arn")
    if not value:
        raise ValueError(
            f"no SageMaker execution role: set the Airflow Variable {cfg.sagemaker.role_variable!r} "
            f"or the extra 'role_arn' of connection {cfg.sagemaker.aws_conn_id!r}"
        )
    return value


def s3_prefix(cfg: EvalConfig) -> str:
    return setting(cfg.sagemaker.s3_prefix, S3_PREFIX_VARIABLE, "S3 prefix").rstrip("/")


def processing_image(cfg: EvalConfig) -> str:
    return setting(cfg.sagemaker.processing_image, PROCESSING_IMAGE_VARIABLE, "evaluation image")


def region(cfg: EvalConfig) -> str:
    """The config's region, else the connection's."""
    return cfg.sagemaker.region or hook(cfg).conn_region_name


def run_prefix(cfg: EvalConfig, dag_id: str, run_id: str) -> str:
    """The S3 prefix of a run's jobs: run/ (inputs), results/<model>/, released/, pairwise/."""
    return f"{s3_prefix(cfg)}/{dag_id}/{req.short_hash(run_id, length=12)}"


def early_release(cfg: EvalConfig, model_name: str) -> bool:
    """Whether the model's endpoint is created without waiting and deleted when its job releases it."""
    return cfg.sagemaker.early_release and cfg.model(model_name).deploys


def operator_args(cfg: EvalConfig) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the AWS connection, retries, waits) every operator of the DAG gets."""
    aws = {"aws_conn_id": cfg.sagemaker.aws_conn_id, "region_name": cfg.sagemaker.region}
    # Every AWS step is retried with exponential back-off (throttling, capacity, a lost worker);
    # the reusing operators make a retry re-attach to what the failed try created, and never
    # re-run a job that failed (its failures are usually deterministic).
    retried = {"retries": cfg.sagemaker.retries, "retry_delay": timedelta(seconds=cfg.sagemaker.retry_delay_s)}
    waits = {"deferrable": cfg.sagemaker.deferrable, "check_interval": cfg.sagemaker.poll_interval_s}
    return aws, retried, waits


def polls(cfg: EvalConfig) -> dict[str, Any]:
    """How often a job's wait polls: the provider polls at most 60 times by default (30
    minutes at a 30 s interval), so enough polls for the job's longest run."""
    return {"max_attempts": -(-(cfg.sagemaker.max_runtime_s + 600) // cfg.sagemaker.poll_interval_s)}


def deploy_pool(cfg: EvalConfig, deployed: list[ModelSection]) -> dict[str, str]:
    """The pool argument of a mapped deploy over `deployed` (one instance type: the config
    checks it), when the config names a pool prefix."""
    if not (cfg.sagemaker.pool_prefix and deployed):
        return {}
    return {"pool": f"{cfg.sagemaker.pool_prefix}{deployed[0].deployment_config.instance_type}"}
