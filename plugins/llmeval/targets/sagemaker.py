"""SageMaker target: the per-model tasks, built from the Amazon provider's operators.

    [prepare_training -> finetune (SageMakerTrainingOperator, deferrable) ->]
    prepare (JumpStart URIs, names) -> deploy (SageMakerEndpointOperator, deferrable)
      -> stage (inputs to S3) -> evaluate (SageMakerProcessingOperator, deferrable)
      -> collect (results from S3) ; teardown (delete what this pipeline created)

The Processing job runs the same evaluation entry point as the local target. Role, S3
prefix and image come from Airflow Variables (never the YAML) unless the config names them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from llmeval.config import EvalConfig
from llmeval.runtime import ALGORITHMS_DIR, PACKAGE_DIR, PLUGINS_DIR, model_dir, worker_python
from llmeval.targets import sagemaker_requests as req

log = logging.getLogger("llmeval.sagemaker")

DEPLOYMENT_FILE = "deployment.json"
TRAINING_FILE = "training_metrics.json"


def _hook(cfg: EvalConfig):
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id=cfg.sagemaker.aws_conn_id, region_name=cfg.sagemaker.region)


def _s3(cfg: EvalConfig):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(
        aws_conn_id=cfg.sagemaker.aws_conn_id, region_name=cfg.sagemaker.region, extra_args=req.s3_encryption(cfg)
    )


def _setting(explicit: str | None, variable: str, what: str) -> str:
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
        extra = _hook(cfg).get_connection(cfg.sagemaker.aws_conn_id).extra_dejson
        value = extra.get("role_arn")
    if not value:
        raise ValueError(
            f"no SageMaker execution role: set the Airflow Variable {cfg.sagemaker.role_variable!r} "
            f"or the extra 'role_arn' of connection {cfg.sagemaker.aws_conn_id!r}"
        )
    return value


def s3_prefix(cfg: EvalConfig) -> str:
    return _setting(cfg.sagemaker.s3_prefix, "llm_eval_s3_prefix", "S3 prefix").rstrip("/")


def resolve_jumpstart(
    cfg: EvalConfig, model_id: str, version: str, instance_type: str, region: str, training: bool = False
) -> dict:
    """Inference (or training) image, artifacts and settings of a JumpStart model (worker env)."""
    creds = _hook(cfg).get_credentials(region_name=region)
    env = dict(os.environ, PYTHONPATH=str(PLUGINS_DIR), AWS_DEFAULT_REGION=region)
    env.update(AWS_ACCESS_KEY_ID=creds.access_key, AWS_SECRET_ACCESS_KEY=creds.secret_key)
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    cmd = [
        worker_python(),
        "-m",
        "llmeval.jumpstart",
        *(["--training"] if training else []),
        model_id,
        version,
        region,
        instance_type,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PLUGINS_DIR)
    if out.returncode != 0:
        raise RuntimeError(f"JumpStart lookup of {model_id}@{version} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _data_uri(cfg: EvalConfig, location: str, prefix: str) -> str:
    """An s3:// location as it is; a file under include/data uploaded under the run prefix."""
    from llmeval.runtime import resolve_data_path

    if location.startswith("s3://"):
        return location
    path = resolve_data_path(location)
    if not path.is_file():
        raise FileNotFoundError(f"training data {location!r} is neither an s3:// URI nor a file at {path}")
    bucket, _, key_prefix = f"{prefix}/training-data/{path.stem}".removeprefix("s3://").partition("/")
    _s3(cfg).load_file(str(path), f"{key_prefix}/{path.name}", bucket_name=bucket, replace=True)
    return f"s3://{bucket}/{key_prefix}/"


def prepare_training(cfg: EvalConfig, model_name: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """The fine-tuning job request for a model with a finetuning block."""
    model = cfg.model(model_name)
    tuning = model.finetuning
    region = cfg.sagemaker.region or _hook(cfg).conn_region_name
    resolved = resolve_jumpstart(
        cfg, model.model_id, model.model_version, tuning.parameters.instance_type, region, training=True
    )
    prefix = f"{s3_prefix(cfg)}/{dag_id}/{req.short_hash(run_id, length=12)}"
    validation = _data_uri(cfg, tuning.validation_data_path, prefix) if tuning.validation_data_path else None
    return req.training_config(
        cfg,
        model,
        req.training_job_name(dag_id, run_id, model_name),
        role_arn(cfg),
        resolved,
        _data_uri(cfg, tuning.train_data_path, prefix),
        validation,
        f"{prefix}/training-output/{model_name}/",
    )


def _training_summary(job: dict[str, Any], base_model: str) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "job_name": job["TrainingJobName"],
        "base_model": base_model,
        "artifact": job["ModelArtifacts"]["S3ModelArtifacts"],
        "wall_seconds": job.get("TrainingTimeInSeconds"),
    }
    for metric in job.get("FinalMetricDataList") or []:
        summary[metric["MetricName"]] = metric["Value"]
    return summary


def prepare(cfg: EvalConfig, model_name: str, run_folder: Path, dag_id: str, run_id: str) -> dict[str, Any]:
    model = cfg.model(model_name)
    region = cfg.sagemaker.region or _hook(cfg).conn_region_name
    resolved = resolve_jumpstart(
        cfg, model.model_id, model.model_version, model.deployment_config.instance_type, region
    )
    folder = model_dir(run_folder, model_name)
    folder.mkdir(parents=True, exist_ok=True)
    if model.finetuning:  # deploy the tuned weights with the base model's inference container
        job = _hook(cfg).describe_training_job(req.training_job_name(dag_id, run_id, model_name))
        training = _training_summary(job, model.model_id)
        resolved = dict(resolved, model_data=training["artifact"])
        (folder / TRAINING_FILE).write_text(json.dumps(training, indent=2, default=str))
    endpoint = req.endpoint_config(cfg, model, resolved, role_arn(cfg))
    state = {"region": region, "endpoint": endpoint, "container": req.container(resolved)}
    (folder / DEPLOYMENT_FILE).write_text(json.dumps(state, indent=2))
    log.info(
        "%s: %s on %s x%d as endpoint %s",
        model_name,
        resolved["image_uri"],
        model.deployment_config.instance_type,
        model.deployment_config.num_instances,
        endpoint["Endpoint"]["EndpointName"],
    )
    return state


def stage(cfg: EvalConfig, model_name: str, run_folder: Path, dag_id: str, run_id: str, region: str) -> dict:
    """Upload the code and the run's inputs; return the Processing job request."""
    s3 = _s3(cfg)
    prefix = f"{s3_prefix(cfg)}/{dag_id}/{req.short_hash(run_id, length=12)}"
    bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        key = f"{key_prefix}/code/llmeval/{path.relative_to(PACKAGE_DIR)}"
        s3.load_file(str(path), key, bucket_name=bucket, replace=True)
    for path in sorted(ALGORITHMS_DIR.glob("*.py")):  # users' custom algorithms, importable in the job
        s3.load_file(str(path), f"{key_prefix}/code/{path.name}", bucket_name=bucket, replace=True)
    for name in ("config.json", "dataset.jsonl"):
        s3.load_file(str(run_folder / name), f"{key_prefix}/run/{name}", bucket_name=bucket, replace=True)
    job = req.processing_job_name(dag_id, run_id, model_name)
    return req.processing_config(
        cfg,
        cfg.model(model_name),
        job,
        role_arn(cfg),
        _setting(cfg.sagemaker.processing_image, "llm_eval_processing_image", "evaluation image"),
        f"{prefix}/code/",
        f"{prefix}/run/",
        f"{prefix}/results/{model_name}/",
        region,
        cache_uri=f"{s3_prefix(cfg)}/{dag_id}/cache/{model_name}/responses.sqlite",
    )


def collect(cfg: EvalConfig, model_name: str, run_folder: Path, processing: dict[str, Any]) -> str:
    """Copy the job's results into the run folder; record why there are none."""
    from llmeval.results import read_model_result, write_failure

    folder = model_dir(run_folder, model_name)
    uri = processing["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    bucket, _, key_prefix = uri.removeprefix("s3://").partition("/")
    s3 = _s3(cfg)
    keys = s3.list_keys(bucket_name=bucket, prefix=key_prefix) or []
    if not any(k.endswith("results.json") for k in keys):
        job = req.stop_job_if_running(_hook(cfg).conn, "processing", processing["ProcessingJobName"])
        if job is None:
            reason = "the job was never created"
        elif job["ProcessingJobStatus"] == "InProgress":
            reason = "the evaluate task ended while the job was running (timeout?): job stopped"
        else:
            reason = job.get("FailureReason") or f"job {job['ProcessingJobStatus']} without results.json"
        write_failure(folder, model_name, "evaluate", f"processing job {processing['ProcessingJobName']}: {reason}")
        raise RuntimeError(reason)
    for key in keys:
        target = folder / key[len(key_prefix) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_key(key, bucket_name=bucket).get()["Body"].read())
    result = read_model_result(folder, model_name)
    result.outputs_location = f"{uri}outputs.jsonl"
    if (folder / TRAINING_FILE).exists():
        result.metadata["training"] = json.loads((folder / TRAINING_FILE).read_text())
    (folder / "results.json").write_text(result.to_json())
    return str(folder / "results.json")


def teardown(
    cfg: EvalConfig, model_name: str, run_folder: Path, keep: bool, training_job: str | None = None
) -> list[str]:
    """Stop the model's fine-tuning job if its task ended with the job running; delete the
    endpoint, endpoint config and model this pipeline created."""
    stopped = []
    job = training_job and req.stop_job_if_running(_hook(cfg).conn, "training", training_job)
    if job and job["TrainingJobStatus"] == "InProgress":
        stopped.append(f"training job {training_job} (stopped)")
    return stopped + _delete_endpoint(cfg, model_name, run_folder, keep)


def _delete_endpoint(cfg: EvalConfig, model_name: str, run_folder: Path, keep: bool) -> list[str]:
    state_file = model_dir(run_folder, model_name) / DEPLOYMENT_FILE
    if not state_file.exists():
        log.info("%s was never prepared: nothing to delete", model_name)
        return []
    if keep or not cfg.model(model_name).cleanup_endpoint:
        log.warning("keeping the endpoint of %s (cleanup disabled): it keeps costing money", model_name)
        return []
    endpoint = json.loads(state_file.read_text())["endpoint"]
    return req.delete_endpoint_resources(_hook(cfg).conn, endpoint, cfg.pipeline.name)


def registry(cfg: EvalConfig, run_folder: Path):
    from llmeval.registry import SageMakerModelRegistry

    def container_of(model: str) -> dict[str, Any] | None:
        deployment = model_dir(run_folder, model) / DEPLOYMENT_FILE  # none for Bedrock models
        return json.loads(deployment.read_text())["container"] if deployment.exists() else None

    return SageMakerModelRegistry(
        _hook(cfg).conn, _s3(cfg).get_conn(), s3_prefix(cfg), container_of, req.s3_encryption(cfg)
    )


# --------------------------------------------------------------------------- operators


@functools.cache
def _operators():
    """Provider operators that reuse what a previous try already created (defined once)."""
    from airflow.providers.amazon.aws.operators.sagemaker import (
        SageMakerEndpointOperator,
        SageMakerProcessingOperator,
        SageMakerTrainingOperator,
    )
    from airflow.providers.amazon.aws.utils import trim_none_values

    class ReusingEndpointOperator(SageMakerEndpointOperator):
        """Reuse an InService endpoint; create only the parts that do not exist yet."""

        def execute(self, context):
            conn = self.hook.conn
            name = self.config["Endpoint"]["EndpointName"]
            status = req.endpoint_status(conn, name)
            if status == "InService":
                self.log.info("endpoint %s is already InService: reusing it", name)
                return {"Endpoint": trim_none_values(conn.describe_endpoint(EndpointName=name))}
            if status in ("Creating", "Updating", "SystemUpdating"):
                self.log.info("endpoint %s is %s: waiting for it", name, status)
                self.hook.get_waiter("endpoint_in_service").wait(EndpointName=name)
                return {"Endpoint": trim_none_values(conn.describe_endpoint(EndpointName=name))}
            if status is not None:
                raise RuntimeError(f"endpoint {name} exists with status {status}; delete it or fix it first")
            self.config = req.missing_parts(conn, self.config)
            return super().execute(context)

    class ReusingProcessingOperator(SageMakerProcessingOperator):
        """A completed job with the same (deterministic) name is the result: not run twice."""

        def execute(self, context):
            name = self.config["ProcessingJobName"]
            job = req.describe_or_none(self.hook.conn.describe_processing_job, ProcessingJobName=name)
            if job and job["ProcessingJobStatus"] == "Completed":
                self.log.info("processing job %s already completed: reusing its outputs", name)
                return {"Processing": trim_none_values(job)}
            return super().execute(context)

    class ReusingTrainingOperator(SageMakerTrainingOperator):
        """A completed (or running) job with the same deterministic name is reused, not duplicated."""

        def execute(self, context):
            name = self.config["TrainingJobName"]
            job = req.describe_or_none(self.hook.conn.describe_training_job, TrainingJobName=name)
            status = job and job["TrainingJobStatus"]
            if status in ("InProgress", "Stopping"):
                self.log.info("training job %s is %s: waiting for it", name, status)
                self.hook.conn.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name)
                job = self.hook.describe_training_job(name)
                status = job["TrainingJobStatus"]
            if status == "Completed":
                self.log.info("training job %s already completed: reusing its model", name)
                return {"Training": trim_none_values(job)}
            if status in ("Failed", "Stopped"):
                raise RuntimeError(f"training job {name} is {status}: {job.get('FailureReason', '')}")
            return super().execute(context)

    return ReusingEndpointOperator, ReusingProcessingOperator, ReusingTrainingOperator


def model_steps(cfg: EvalConfig, model_name: Any, kind: str) -> None:
    from airflow.sdk import task

    from llmeval.factory import guarded, label, run_ids

    aws = {"aws_conn_id": cfg.sagemaker.aws_conn_id, "region_name": cfg.sagemaker.region}
    # Control-plane steps are retried with exponential back-off (throttling, capacity); the
    # reusing operators make a retry pick up what the failed try created. The evaluation job
    # is not retried: its failures are usually deterministic, and its requests retry inside.
    retried = {"retries": cfg.sagemaker.retries}
    pooled: dict[str, str] = {}  # one pool per instance type (the config checks there is one per kind)
    if cfg.sagemaker.pool_prefix and kind != "bedrock":
        instance_type = next(m.deployment_config.instance_type for m in cfg.models if m.kind == kind)
        pooled = {"pool": f"{cfg.sagemaker.pool_prefix}{instance_type}"}
    timeout = timedelta(seconds=min(cfg.task_timeout_s, cfg.sagemaker.max_runtime_s + 3600))
    endpoint_op, processing_op, training_op = _operators()

    @task(multiple_outputs=True, map_index_template="{{ model_label }}")
    def prepare_endpoint(model: str) -> dict[str, Any]:
        """Resolve the JumpStart model and name its model, endpoint config and endpoint."""
        label(model)
        dag_id, run_id = run_ids()
        return guarded(
            "deploy",
            model,
            lambda cfg, run, _: prepare(cfg, model, run, dag_id, run_id),
            first=kind == "foundation",
        )

    @task(map_index_template="{{ model_label }}")
    def prepare_training_job(model: str) -> dict[str, Any]:
        """Resolve the JumpStart training specs and upload the training data."""
        label(model)
        dag_id, run_id = run_ids()
        return guarded(
            "finetune",
            model,
            lambda cfg, run, _: prepare_training(cfg, model, dag_id, run_id),
            first=True,
        )

    @task(map_index_template="{{ model_label }}")
    def stage_evaluation(model: str, region: str | None) -> dict[str, Any]:
        """Upload the evaluation code, config and dataset; build the Processing job request."""
        label(model)
        dag_id, run_id = run_ids()
        return guarded(
            "evaluate",
            model,
            lambda cfg, run, _: stage(
                cfg, model, run, dag_id, run_id, region or cfg.sagemaker.region or _hook(cfg).conn_region_name
            ),
            first=kind == "bedrock",
        )

    @task(trigger_rule="all_done", map_index_template="{{ model_label }}")
    def collect_results(model: str, processing: dict[str, Any]) -> str:
        """Copy the evaluation results from S3 into the run folder (or record why there are none)."""
        label(model)
        return guarded("evaluate", model, lambda cfg, run, _: collect(cfg, model, run, processing))

    @task(map_index_template="{{ model_label }}", **retried)
    def teardown_endpoint(model: str) -> list[str]:
        """Delete the endpoint, endpoint config and model this pipeline created (and stop a
        fine-tuning job still running), whatever happened."""
        from llmeval.factory import current_run, run_ids
        from llmeval.steps import run_config

        label(model)
        run_folder, _, params = current_run()
        cfg_run = run_config(run_folder)
        job = req.training_job_name(*run_ids(), model) if cfg_run.model(model).finetuning else None
        return teardown(cfg_run, model, run_folder, bool(params.get("keep_endpoints")), job)

    def evaluation_job(staged: Any):
        """The Processing job running the evaluation entry point (deferrable, not retried)."""
        return processing_op(
            task_id="evaluate",
            config=staged,
            deferrable=True,
            check_interval=30,
            max_ingestion_time=cfg.sagemaker.max_runtime_s + 600,
            execution_timeout=timeout,
            **aws,
            **pooled,
        )

    if kind == "bedrock":  # a Bedrock model is already served: evaluate it, nothing to deploy or delete
        staged = stage_evaluation(model_name, None)
        staged >> evaluation_job(staged) >> collect_results(model_name, staged)
        return
    prepared = prepare_endpoint(model_name)
    if kind == "tuned":
        training = prepare_training_job(model_name)
        finetune = training_op(
            task_id="finetune",
            config=training,
            deferrable=True,
            check_interval=60,
            check_if_job_exists=False,
            print_log=False,
            **aws,
            **retried,
        )
        training >> finetune >> prepared
    deploy = endpoint_op(
        task_id="deploy", config=prepared["endpoint"], deferrable=True, check_interval=30, **aws, **retried, **pooled
    )
    staged = stage_evaluation(model_name, prepared["region"])
    evaluate = evaluation_job(staged)
    collected = collect_results(model_name, staged)
    stop = teardown_endpoint(model_name)
    prepared >> deploy >> staged >> evaluate >> collected >> stop
    # The training request is a setup too: when fine-tuning fails or times out, the teardown
    # still runs and stops a training job left running.
    stop.as_teardown(setups=[prepared, deploy, *([training] if kind == "tuned" else [])])
