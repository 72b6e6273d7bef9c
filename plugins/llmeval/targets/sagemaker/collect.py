"""After a job: its results copied from S3 into the run store, with what it was billed for."""

from __future__ import annotations

import json
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.prices import processing_usage, table_for
from llmeval.results import TOKENS, ModelResult, ResourceUsage, record_usage
from llmeval.targets.sagemaker import requests as req
from llmeval.targets.sagemaker.settings import hook, s3_hook


def collect(
    cfg: EvalConfig,
    model_name: str,
    run_folder: Any,
    processing: dict[str, Any],
    training: dict[str, Any] | None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Copy the job's results into the run store; return the result summary, or raise why
    there is none."""
    folder = store.model_folder(run_folder, model_name)
    uri = processing["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    bucket, key_prefix = store.split_s3_uri(uri)
    s3, conn, prices = s3_hook(cfg), hook(cfg).conn, table_for(cfg.sagemaker.instance_prices)
    billed = [ResourceUsage(**training["usage"])] if training and training.get("usage") else []
    cluster = processing["ProcessingResources"]["ClusterConfig"]
    keys = s3.list_keys(bucket_name=bucket, prefix=key_prefix) or []
    if not any(k.endswith(store.RESULTS) for k in keys):
        job = req.stop_job_if_running(conn, "processing", processing["ProcessingJobName"])
        record_usage(folder, billed + ([processing_usage(job, cluster, prices)] if job else []))
        if job is None:
            reason = "the job was never created"
        elif job["ProcessingJobStatus"] == "InProgress":
            reason = "the evaluate task ended while the job was running (timeout?): job stopped"
        else:
            reason = job.get("FailureReason") or f"job {job['ProcessingJobStatus']} without results.json"
        raise RuntimeError(f"processing job {processing['ProcessingJobName']}: {reason}")
    summary: dict[str, Any] = {}
    for key in keys:
        name = key[len(key_prefix) :].lstrip("/")
        data = s3.get_key(key, bucket_name=bucket).get()["Body"].read()
        if name == store.RESULTS:
            summary = json.loads(data)
        else:
            store.write_bytes(folder / name, data)
    result = ModelResult.from_dict(summary)
    result.outputs_location = f"{uri}{store.OUTPUTS}"
    if training:
        result.metadata["training"] = training
    if warnings:  # what allow_vulnerable let through
        result.metadata["warnings"] = warnings
    job = conn.describe_processing_job(ProcessingJobName=processing["ProcessingJobName"])
    tokens = [u for u in result.usage if u.resource == TOKENS]  # a model billed by the token: the job counted
    result.usage = record_usage(folder, billed + [processing_usage(job, cluster, prices)] + tokens)
    store.write_text(folder / store.RESULTS, result.to_json())
    if not result.succeeded:
        raise RuntimeError(f"{model_name} failed at {result.failed_step}: {result.error}")
    return json.loads(result.to_json())


def collect_pairwise(cfg: EvalConfig, run_folder: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Copy the comparison job's pairwise.json into the run store; the Bradley-Terry ranking."""
    uri = request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    bucket, key_prefix = store.split_s3_uri(uri)
    key = f"{key_prefix.rstrip('/')}/{store.PAIRWISE}"
    s3 = s3_hook(cfg)
    if not s3.check_for_key(key, bucket_name=bucket):
        job = req.describe_or_none(
            hook(cfg).conn.describe_processing_job, ProcessingJobName=request["ProcessingJobName"]
        )
        reason = (job or {}).get("FailureReason") or (job or {}).get("ProcessingJobStatus") or "never created"
        raise RuntimeError(f"pairwise comparison job {request['ProcessingJobName']}: no {store.PAIRWISE} ({reason})")
    data = s3.get_key(key, bucket_name=bucket).get()["Body"].read()
    store.write_bytes(run_folder / store.PAIRWISE, data)
    return {"bradley_terry": json.loads(data)["bradley_terry"]}
