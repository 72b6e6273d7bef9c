"""Tearing a model's resources down: the endpoint, endpoint config and model this pipeline
created (from its deploy's XCom, else found by deterministic name and ownership tag), a
fine-tuning job left running, the endpoint's lease; what they were billed for."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.prices import endpoint_usage, table_for, training_usage
from llmeval.results import record_usage
from llmeval.targets.sagemaker import leases
from llmeval.targets.sagemaker import requests as req
from llmeval.targets.sagemaker.settings import hook

log = logging.getLogger("llmeval.sagemaker")


def teardown(
    cfg: EvalConfig,
    model_name: str,
    keep: bool,
    endpoint: dict[str, Any] | None,
    training_job: str | None = None,
    run_folder: Any = None,
) -> list[str]:
    """Stop the model's fine-tuning job if its task ended with the job running; delete the
    endpoint, endpoint config and model this pipeline created: the ones its deploy handed on
    by XCom, else the ones found by the endpoint's deterministic name and the ownership tag.
    With `run_folder`, what the endpoint was billed for (creation to deletion) is recorded."""
    conn = hook(cfg).conn
    stopped = []
    job = training_job and req.stop_job_if_running(conn, "training", training_job)
    if job and job["TrainingJobStatus"] == "InProgress":
        stopped.append(f"training job {training_job} (stopped)")
    model = cfg.model(model_name)
    deployed = model.deployment_config
    prices = table_for(cfg.sagemaker.instance_prices)
    billed = [training_usage(job, prices)] if job else []  # also when fine-tuning failed and nothing was deployed

    def measure(kind: str, described: dict[str, Any]) -> None:
        if kind == "endpoint":
            at = datetime.now(UTC)
            billed.append(endpoint_usage(described, at, deployed.instance_type, deployed.num_instances, prices))

    def record() -> None:
        if billed and run_folder is not None:
            record_usage(store.model_folder(run_folder, model_name), billed)
            log.info("%s: %s", model_name, "; ".join(f"{u.resource} {u.seconds:.0f} s, {_usd(u.usd)}" for u in billed))

    if keep or not model.cleanup_endpoint:
        log.warning("keeping the endpoint of %s (cleanup disabled): it keeps costing money", model_name)
        described = req.describe_or_none(conn.describe_endpoint, EndpointName=req.endpoint_name(cfg, model))
        if described:  # billed so far
            measure("endpoint", described)
        record()
        return stopped
    if endpoint:
        names = req.resource_names(endpoint)
    else:
        name = req.endpoint_name(cfg, cfg.model(model_name))
        log.info("%s: no deployment handed on; looking for endpoint %s and what it owns", model_name, name)
        names = req.discover_resources(conn, name, cfg.pipeline.name, model_name)
    deleted = req.delete_endpoint_resources(conn, names, cfg.pipeline.name, measure, cfg.sagemaker.poll_interval_s)
    instance_type, name = deployed.instance_type, req.endpoint_name(cfg, model)
    if instance_type in cfg.sagemaker.endpoint_quotas and leases.give_back(cfg.artifacts_url, instance_type, name):
        deleted.append(f"{instance_type} endpoint lease of {name}")
    record()  # after the lease is given back: a waiting deploy need not wait for the bookkeeping
    return stopped + deleted


def _usd(usd: float | None) -> str:
    return "no price for its instance type" if usd is None else f"${usd:.4f}"
