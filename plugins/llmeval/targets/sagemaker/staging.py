"""What a SageMaker run's jobs need before they start: the JumpStart model resolved, the
endpoint and training requests named, the evaluation code and the run's inputs in S3, and the
Processing job requests (pure builders in `requests`)."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig, ModelSection
from llmeval.inputs import outputs_file
from llmeval.prices import PriceTable, table_for, training_usage
from llmeval.runtime import PACKAGE_DIR, algorithms_dir
from llmeval.targets.connections import served_models
from llmeval.targets.sagemaker import jumpstart
from llmeval.targets.sagemaker import requests as req
from llmeval.targets.sagemaker.settings import (
    early_release,
    hook,
    processing_image,
    region,
    role_arn,
    run_prefix,
    s3_hook,
    s3_prefix,
)

log = logging.getLogger("llmeval.sagemaker")
CODE_MANIFEST = "llmeval-code.json"  # written last: its presence means the code is complete


def resolve_jumpstart(
    cfg: EvalConfig, model: ModelSection, instance_type: str, region: str, training: bool = False
) -> dict:
    """Inference (or training) image, artifacts and settings of a JumpStart model, read from
    the JumpStart spec files with the connection's credentials (no SageMaker SDK needed);
    deprecated and vulnerable versions refused as the SDK refuses them."""
    s3 = s3_hook(cfg).get_client_type(region_name=region)
    resolved = jumpstart.resolve(
        model.model_id,
        model.model_version,
        region,
        instance_type,
        training,
        s3_client=s3,
        allow_vulnerable=model.allow_vulnerable,
        tuned=model.finetuning is not None,
    )
    return resolved.as_dict()


def data_uri(cfg: EvalConfig, location: str, prefix: str) -> str:
    """An s3:// location as it is; a file under include/data uploaded under the run prefix."""
    from llmeval.runtime import resolve_data_path

    if location.startswith("s3://"):
        return location
    path = resolve_data_path(location)
    if not path.is_file():
        raise FileNotFoundError(f"training data {location!r} is neither an s3:// URI nor a file at {path}")
    bucket, _, key_prefix = f"{prefix}/training-data/{path.stem}".removeprefix("s3://").partition("/")
    s3_hook(cfg).load_file(str(path), f"{key_prefix}/{path.name}", bucket_name=bucket, replace=True)
    return f"s3://{bucket}/{key_prefix}/"


def prepare_training(cfg: EvalConfig, model_name: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """The fine-tuning job request for a model with a finetuning block."""
    model = cfg.model(model_name)
    tuning = model.tuning
    where = region(cfg)
    resolved = resolve_jumpstart(cfg, model, tuning.parameters.instance_type, where, training=True)
    prefix = f"{s3_prefix(cfg)}/{dag_id}/{req.short_hash(run_id, length=12)}"
    validation = data_uri(cfg, tuning.validation_data_path, prefix) if tuning.validation_data_path else None
    return req.training_config(
        cfg,
        model,
        req.training_job_name(dag_id, run_id, model_name),
        role_arn(cfg),
        resolved,
        data_uri(cfg, tuning.train_data_path, prefix),
        validation,
        f"{prefix}/training-output/{model_name}/",
        where,
    )


def training_summary(job: dict[str, Any], base_model: str, prices: PriceTable) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "job_name": job["TrainingJobName"],
        "base_model": base_model,
        "artifact": job["ModelArtifacts"]["S3ModelArtifacts"],
        "wall_seconds": job.get("TrainingTimeInSeconds"),
        "usage": asdict(training_usage(job, prices)),
    }
    for metric in job.get("FinalMetricDataList") or []:
        summary[metric["MetricName"]] = metric["Value"]
    return summary


def prepare_endpoint(cfg: EvalConfig, model_name: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """The deployment description (handed on by XCom): region, the endpoint operator's
    config, the container to register, and the training job of a tuned model."""
    model = cfg.model(model_name)
    where = region(cfg)
    resolved = resolve_jumpstart(cfg, model, model.deployment_config.instance_type, where)
    training = None
    if model.finetuning:  # deploy the tuned weights with the base model's inference container
        job = hook(cfg).describe_training_job(req.training_job_name(dag_id, run_id, model_name))
        training = training_summary(job, model.model_id, table_for(cfg.sagemaker.instance_prices))
        resolved = dict(resolved, model_data=training["artifact"])
    req.check_eula(model, resolved)  # a gated model without its EULA accepted: refused before anything exists
    endpoint = req.endpoint_config(cfg, model, resolved, role_arn(cfg))
    log.info(
        "%s: %s on %s x%d as endpoint %s",
        model_name,
        resolved.get("image_uri") or resolved.get("model_package_arn"),
        model.deployment_config.instance_type,
        model.deployment_config.num_instances,
        endpoint["Endpoint"]["EndpointName"],
    )
    container = req.container(resolved, model.eula_accepted)
    warnings = resolved.get("warnings") or []  # what allow_vulnerable let through: the report flags it
    return {"region": where, "endpoint": endpoint, "container": container, "training": training, "warnings": warnings}


def code_files() -> dict[str, Path]:
    """The evaluation code a job imports, by its path under the job's code folder: the
    package (modules and report templates) and everything in include/algorithms: the users'
    custom algorithms (packages and dotted modules included, `custom:my_metrics.brevity:Brevity`),
    Inspect tasks and the data files beside them."""
    files = {
        f"llmeval/{p.relative_to(PACKAGE_DIR)}": p
        for p in sorted(PACKAGE_DIR.rglob("*"))
        if p.suffix in (".py", ".html")
    }
    custom = algorithms_dir()
    return files | {
        p.relative_to(custom).as_posix(): p
        for p in sorted(custom.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def upload_code(cfg: EvalConfig, s3: Any) -> str:
    """The S3 prefix of the evaluation code, named by a digest of its content: the first task
    that needs it uploads it (the manifest last), every later model, run and DAG running the
    same code finds the manifest and uploads nothing. `s3`: the caller's S3Hook."""
    files = code_files()
    digest = hashlib.sha256()
    for name, path in files.items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    prefix = f"{s3_prefix(cfg)}/code/{digest.hexdigest()[:16]}"
    bucket, key_prefix = store.split_s3_uri(prefix)
    if s3.check_for_key(f"{key_prefix}/{CODE_MANIFEST}", bucket_name=bucket):
        log.info("evaluation code: %s/ (already uploaded)", prefix)
        return f"{prefix}/"
    for name, path in files.items():
        s3.load_file(str(path), f"{key_prefix}/{name}", bucket_name=bucket, replace=True)
    manifest = json.dumps({"files": sorted(files)}, indent=1)
    s3.load_string(manifest, f"{key_prefix}/{CODE_MANIFEST}", bucket_name=bucket, replace=True)
    log.info("evaluation code: uploaded %d files to %s/", len(files), prefix)
    return f"{prefix}/"


def stage(
    cfg: EvalConfig, model_name: str, run_folder: Any, dag_id: str, run_id: str, region: str, catalog_version: str
) -> dict:
    """Upload the code (unless it is there) and the run's inputs (from the run store, and a
    model's provided outputs); return the Processing job request."""
    s3 = s3_hook(cfg)
    code = upload_code(cfg, s3)
    prefix = run_prefix(cfg, dag_id, run_id)
    bucket, key_prefix = store.split_s3_uri(prefix)
    for name in (store.CONFIG, store.DATASET):
        s3.load_bytes((run_folder / name).read_bytes(), f"{key_prefix}/run/{name}", bucket_name=bucket, replace=True)
    if cfg.model(model_name).outputs_location:
        with tempfile.TemporaryDirectory(prefix="llmeval-outputs-") as scratch:
            given = outputs_file(cfg, model_name, catalog_version, Path(scratch))
            s3.load_file(
                str(given), f"{key_prefix}/run/{req.outputs_name(model_name)}", bucket_name=bucket, replace=True
            )
    job = req.processing_job_name(dag_id, run_id, model_name)
    return req.processing_config(
        cfg,
        cfg.model(model_name),
        job,
        role_arn(cfg),
        processing_image(cfg),
        code,
        f"{prefix}/run/",
        f"{prefix}/results/{model_name}/",
        region,
        cache_uri=f"{s3_prefix(cfg)}/{dag_id}/cache/{model_name}/responses.sqlite",
        release_uri=f"{prefix}/released/{model_name}.json" if early_release(cfg, model_name) else None,
        judges={j.name: req.endpoint_name(cfg, j) for j in cfg.judged_by if j.deploys},
        served=served_models(cfg, [model_name], for_processing=True),
    )


def compare_pairwise(cfg: EvalConfig, dag_id: str, run_id: str) -> dict[str, Any]:
    """The pairwise comparison's Processing job request: every model's results (from this
    run's evaluation jobs) in, pairwise.json out; the judge's cache kept in S3."""
    section = next(s for s in cfg.algorithms if s.compares_models)
    prefix = run_prefix(cfg, dag_id, run_id)
    return req.pairwise_config(
        cfg,
        req.pairwise_job_name(dag_id, run_id),
        role_arn(cfg),
        processing_image(cfg),
        upload_code(cfg, s3_hook(cfg)),
        f"{prefix}/run/",
        f"{prefix}/results/",
        f"{prefix}/pairwise/",
        region(cfg),
        f"{s3_prefix(cfg)}/{dag_id}/cache/pairwise-{section.options['judge']}/responses.sqlite",
        {j.name: req.endpoint_name(cfg, j) for j in cfg.judged_by if j.deploys},
        served_models(cfg, [], for_processing=True),
    )
