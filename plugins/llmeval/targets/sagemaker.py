"""SageMaker target: the per-model tasks, built from the Amazon provider's operators.

    [prepare_training -> finetune (SageMakerTrainingOperator, deferrable) ->]
    prepare (JumpStart URIs, names; evaluation inputs to S3)
      -> deploy (SageMakerEndpointOperator, deferrable)
      -> evaluate (SageMakerProcessingOperator, deferrable)
      -> collect (results from S3) ; teardown (delete what this pipeline created)

The Processing job runs the same evaluation entry point as the local target. Role, S3
prefix and image come from Airflow Variables (never the YAML) unless the config names them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.evaluation.endpoint_release import SETTLING
from llmeval.prices import PriceTable, endpoint_usage, processing_usage, table_for, training_usage
from llmeval.runtime import PACKAGE_DIR, algorithms_dir
from llmeval.targets import endpoint_leases as leases
from llmeval.targets import sagemaker_requests as req

log = logging.getLogger("llmeval.sagemaker")
CODE_MANIFEST = "llmeval-code.json"  # written last: its presence means the code is complete


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
    """Inference (or training) image, artifacts and settings of a JumpStart model, read from
    the JumpStart spec files with the connection's credentials (no SageMaker SDK needed)."""
    from llmeval import jumpstart

    s3 = _s3(cfg).get_client_type(region_name=region)
    return jumpstart.resolve(model_id, version, region, instance_type, training, s3_client=s3).as_dict()


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
        region,
    )


def _training_summary(job: dict[str, Any], base_model: str, prices: PriceTable) -> dict[str, Any]:
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
    region = cfg.sagemaker.region or _hook(cfg).conn_region_name
    resolved = resolve_jumpstart(
        cfg, model.model_id, model.model_version, model.deployment_config.instance_type, region
    )
    training = None
    if model.finetuning:  # deploy the tuned weights with the base model's inference container
        job = _hook(cfg).describe_training_job(req.training_job_name(dag_id, run_id, model_name))
        training = _training_summary(job, model.model_id, table_for(cfg.sagemaker.instance_prices))
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
    return {"region": region, "endpoint": endpoint, "container": container, "training": training}


def run_prefix(cfg: EvalConfig, dag_id: str, run_id: str) -> str:
    """The S3 prefix of a run's jobs: run/ (inputs), results/<model>/, released/, pairwise/."""
    return f"{s3_prefix(cfg)}/{dag_id}/{req.short_hash(run_id, length=12)}"


def code_files() -> dict[str, Path]:
    """The evaluation code a job imports, by its path under the job's code folder: the
    package (modules and report templates) and the users' custom algorithms."""
    files = {
        f"llmeval/{p.relative_to(PACKAGE_DIR)}": p
        for p in sorted(PACKAGE_DIR.rglob("*"))
        if p.suffix in (".py", ".html")
    }
    return files | {p.name: p for p in sorted(algorithms_dir().glob("*.py"))}


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
    s3 = _s3(cfg)
    code = upload_code(cfg, s3)
    prefix = run_prefix(cfg, dag_id, run_id)
    bucket, key_prefix = store.split_s3_uri(prefix)
    for name in (store.CONFIG, store.DATASET):
        s3.load_bytes((run_folder / name).read_bytes(), f"{key_prefix}/run/{name}", bucket_name=bucket, replace=True)
    if cfg.model(model_name).outputs_location:
        from llmeval.steps import outputs_file

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
        _setting(cfg.sagemaker.processing_image, "llm_eval_processing_image", "evaluation image"),
        code,
        f"{prefix}/run/",
        f"{prefix}/results/{model_name}/",
        region,
        cache_uri=f"{s3_prefix(cfg)}/{dag_id}/cache/{model_name}/responses.sqlite",
        release_uri=f"{prefix}/released/{model_name}.json" if early_release(cfg, model_name) else None,
        judges={j.name: req.endpoint_name(cfg, j) for j in cfg.judged_by if j.deploys},
    )


def early_release(cfg: EvalConfig, model_name: str) -> bool:
    """Whether the model's endpoint is created without waiting and deleted when its job releases it."""
    return cfg.sagemaker.early_release and cfg.model(model_name).deploys


def collect(
    cfg: EvalConfig, model_name: str, run_folder: Any, processing: dict[str, Any], training: dict[str, Any] | None
) -> dict[str, Any]:
    """Copy the job's results into the run store; return the result summary, or raise why
    there is none."""
    from llmeval.results import ModelResult, ResourceUsage, record_usage

    folder = store.model_folder(run_folder, model_name)
    uri = processing["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    bucket, key_prefix = store.split_s3_uri(uri)
    s3, conn, prices = _s3(cfg), _hook(cfg).conn, table_for(cfg.sagemaker.instance_prices)
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
    job = conn.describe_processing_job(ProcessingJobName=processing["ProcessingJobName"])
    result.usage = record_usage(folder, billed + [processing_usage(job, cluster, prices)])
    store.write_text(folder / store.RESULTS, result.to_json())
    if not result.succeeded:
        raise RuntimeError(f"{model_name} failed at {result.failed_step}: {result.error}")
    return json.loads(result.to_json())


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
    from llmeval.results import record_usage

    conn = _hook(cfg).conn
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
            at = datetime.now(timezone.utc)
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


# --------------------------------------------------------------------------- operators


@functools.cache
def _operators():
    """Provider operators that reuse what a previous try already created (defined once)."""
    from airflow.providers.amazon.aws.operators.sagemaker import (
        SageMakerEndpointOperator,
        SageMakerProcessingOperator,
        SageMakerTrainingOperator,
    )
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
    from airflow.providers.amazon.aws.utils import trim_none_values
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowRescheduleException

    from llmeval.targets.model_release import RELEASED, ReleasedOrEnded, clients, release_state

    class ReusingEndpointOperator(SageMakerEndpointOperator):
        """Reuse an InService endpoint; create only the parts that do not exist yet. Under an
        endpoint quota for its instance type, wait until a lease is free (in the triggerer, or
        rescheduled when not deferrable). Without `wait_for_completion`, return once the
        endpoint is being created: the evaluation job waits for InService itself."""

        def __init__(
            self, *, endpoint_quotas: dict[str, int] | None = None, artifacts_url: str | None = None, **kwargs
        ):
            super().__init__(**kwargs)
            self.endpoint_quotas, self.artifacts_url = endpoint_quotas or {}, artifacts_url

        def execute(self, context):
            conn = self.hook.conn
            name = self.config["Endpoint"]["EndpointName"]
            instance_type = self.config["EndpointConfig"]["ProductionVariants"][0]["InstanceType"]
            quota = self.endpoint_quotas.get(instance_type)
            exists = lambda endpoint: req.endpoint_status(conn, endpoint) is not None  # noqa: E731
            if quota and leases.take(self.artifacts_url, instance_type, quota, name, exists) is None:
                if self.deferrable:  # wait in the triggerer until a lease is given back
                    trigger = leases.LeaseFreed(self.artifacts_url, instance_type, quota, name, self.check_interval)
                    self.defer(trigger=trigger, method_name="execute_after_lease_wait")
                retry_at = datetime.now(timezone.utc) + timedelta(seconds=self.check_interval)
                raise AirflowRescheduleException(reschedule_date=retry_at)
            status = req.endpoint_status(conn, name)
            if status is not None:  # never reuse (or wait for) another pipeline's endpoint
                tags = {t["Key"]: t["Value"] for t in self.config["Endpoint"].get("Tags", [])}
                req.check_owner(conn, name, tags[req.OWNER_TAG])
            if status == "InService":
                self.log.info("endpoint %s is already InService: reusing it", name)
                return {"Endpoint": trim_none_values(conn.describe_endpoint(EndpointName=name))}
            if status in SETTLING:
                if self.wait_for_completion:  # else the evaluation job waits for it
                    self.log.info("endpoint %s is %s: waiting for it", name, status)
                    self.hook.get_waiter("endpoint_in_service").wait(EndpointName=name)
                return {"Endpoint": trim_none_values(conn.describe_endpoint(EndpointName=name))}
            if status is not None:
                raise RuntimeError(f"endpoint {name} exists with status {status}; delete it or fix it first")
            self.config = req.missing_parts(conn, self.config)
            if self.wait_for_completion:
                return super().execute(context)
            self.preprocess_config()
            for part, create in (
                ("Model", self.hook.create_model),
                ("EndpointConfig", self.hook.create_endpoint_config),
                ("Endpoint", functools.partial(self.hook.create_endpoint, wait_for_completion=False)),
            ):
                if part in self.config:
                    create(self.config[part])
            self.log.info("creating endpoint %s; the evaluation job waits for it to be InService", name)
            return {"Endpoint": trim_none_values(conn.describe_endpoint(EndpointName=name))}

        def execute_after_lease_wait(self, context, event=None):
            return self.execute(context)

    class ReusingProcessingOperator(SageMakerProcessingOperator):
        """A job with the same (deterministic) name is this model's evaluation: a retry (say,
        after its worker died) waits for it or reuses its outputs, and never runs it twice.
        With `release` (a job that writes a release object), the job is created without waiting;
        when it releases its endpoint, `release(model)` deletes the endpoint while the job goes
        on scoring."""

        def __init__(self, *, release: Callable[[str], list[str]] | None = None, **kwargs):
            super().__init__(**kwargs)
            self.release = release

        def execute(self, context):
            name = self.config["ProcessingJobName"]
            job = req.describe_or_none(self.hook.conn.describe_processing_job, ProcessingJobName=name)
            status = job and job["ProcessingJobStatus"]
            releases = self.release is not None and req.job_argument(self.config, "--release-uri") is not None
            if status is None and not releases:
                return self.not_retried_if_the_job_ended(super().execute, context)
            if status is None:
                self.preprocess_config()
                self.hook.create_processing_job(self.config, wait_for_completion=False)
                self.log.info("processing job %s created: waiting for it to release the endpoint", name)
                return self.wait_for_release(context)
            if status == "InProgress" and releases:
                self.log.info("processing job %s (started by an earlier try) is running: waiting for it", name)
                return self.wait_for_release(context)
            if status in ("InProgress", "Stopping"):
                self.log.info("processing job %s is %s (started by an earlier try): waiting for it", name, status)
                return self.wait_for_end(context)
            return self.finished(job)

        def wait_for_release(self, context):
            """Until the job releases its endpoint or ends (in the triggerer when deferrable)."""
            name, uri = self.config["ProcessingJobName"], req.job_argument(self.config, "--release-uri")
            if self.deferrable:
                self.defer(
                    trigger=ReleasedOrEnded(name, uri, self.aws_conn_id, self.region_name, self.check_interval),
                    method_name="execute_after_release",
                    timeout=timedelta(seconds=self.max_ingestion_time),
                )
            s3, sagemaker = clients(self.aws_conn_id, self.region_name)
            while (event := release_state(s3, sagemaker, name, uri)) is None:
                time.sleep(self.check_interval)
            return self.execute_after_release(context, event)

        def execute_after_release(self, context, event=None):
            if event and event["status"] == RELEASED:
                model = req.job_argument(self.config, "--model")
                self.log.info("the job no longer needs the endpoint of %s: deleting it while scoring goes on", model)
                try:
                    self.log.info("released: %s", self.release(model))
                except Exception:  # the teardown task deletes it later, and fails loudly if it cannot
                    self.log.exception("releasing the endpoint of %s failed: teardown will delete it", model)
                return self.wait_for_end(context)
            return self.finished(self.hook.describe_processing_job(self.config["ProcessingJobName"]))  # it ended

        def wait_for_end(self, context):
            name = self.config["ProcessingJobName"]
            if self.deferrable:
                self.defer(
                    trigger=SageMakerTrigger(
                        job_name=name,
                        job_type="Processing",
                        waiter_delay=self.check_interval,
                        waiter_max_attempts=self.max_attempts,
                        aws_conn_id=self.aws_conn_id,
                        region_name=self.region_name,
                    ),
                    method_name="execute_complete",
                    timeout=timedelta(seconds=self.max_ingestion_time),
                )
            self.hook.conn.get_waiter("processing_job_completed_or_stopped").wait(
                ProcessingJobName=name,
                WaiterConfig={"Delay": self.check_interval, "MaxAttempts": self.max_attempts},
            )
            return self.finished(self.hook.describe_processing_job(name))

        def finished(self, job: dict[str, Any]) -> dict[str, Any]:
            """The task's result for an ended job: its description, or the failure."""
            if job["ProcessingJobStatus"] == "Completed":
                self.log.info("processing job %s completed", job["ProcessingJobName"])
                return {"Processing": trim_none_values(job)}
            raise self.ended(job)

        def execute_complete(self, context, event=None):
            return self.not_retried_if_the_job_ended(super().execute_complete, context, event)

        def not_retried_if_the_job_ended(self, step, *args):
            """A failed or stopped job fails the task for good: a retry would only find it so again."""
            try:
                return step(*args)
            except AirflowException:
                name = self.config["ProcessingJobName"]
                job = req.describe_or_none(self.hook.conn.describe_processing_job, ProcessingJobName=name)
                if not job or job["ProcessingJobStatus"] not in ("Failed", "Stopped"):
                    raise
                raise self.ended(job) from None

        @staticmethod
        def ended(job: dict[str, Any]) -> AirflowFailException:
            """The task's final failure for a job that failed or was stopped."""
            return AirflowFailException(
                f"processing job {job['ProcessingJobName']} is {job['ProcessingJobStatus']}: "
                f"{job.get('FailureReason', '')}"
            )

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


class SageMakerTarget:
    result_task = "collect_results"

    def validate(self, cfg: EvalConfig) -> list[str]:
        """Any executor works (every step's state is in AWS, XCom or the run store) as long as
        the run store is shared: under an executor with several hosts, the implicit local
        folder is refused (an explicit file:// URL is taken to be a shared mount)."""
        import os

        from llmeval.runtime import multi_host_executors

        multi_host = multi_host_executors()
        if multi_host and not (cfg.artifacts_url or os.environ.get(store.ARTIFACTS_URL_ENV)):
            return [
                f"the executor {multi_host[0]} runs tasks on several hosts, and the run store is this host's "
                f"folder {store.configured_url()}: set {store.ARTIFACTS_URL_ENV} (or the config's artifacts_url) "
                "to s3://[conn_id@]bucket/prefix, or to a file:// path every worker mounts"
            ]
        return []

    def registry(self, cfg: EvalConfig, run: Any):
        """SageMaker Model Registry; a model's container is what its deploy handed on by XCom."""
        from airflow.sdk import get_current_context

        from llmeval.registry import SageMakerModelRegistry
        from llmeval.tasks import model_xcom

        ti = get_current_context()["ti"]

        def container_of(model: str) -> dict[str, Any] | None:  # None: a Bedrock model
            kind = cfg.model(model).kind
            return model_xcom(ti, kind, "prepare", model, key="container") if cfg.model(model).deploys else None

        return SageMakerModelRegistry(
            _hook(cfg).conn, _s3(cfg).get_conn(), s3_prefix(cfg), container_of, req.s3_encryption(cfg)
        )

    def model_steps(self, cfg: EvalConfig, model_name: Any, kind: str) -> None:
        _model_steps(cfg, model_name, kind)

    def judge_steps(self, cfg: EvalConfig, after: Any) -> tuple[Any, Any, Any]:
        return _judge_steps(cfg, after)


def _operator_args(cfg: EvalConfig) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the AWS connection, retries, waits) every operator of the DAG gets."""
    aws = {"aws_conn_id": cfg.sagemaker.aws_conn_id, "region_name": cfg.sagemaker.region}
    # Every AWS step is retried with exponential back-off (throttling, capacity, a lost worker);
    # the reusing operators make a retry re-attach to what the failed try created, and never
    # re-run a job that failed (its failures are usually deterministic).
    retried = {"retries": cfg.sagemaker.retries, "retry_delay": timedelta(seconds=cfg.sagemaker.retry_delay_s)}
    waits = {"deferrable": cfg.sagemaker.deferrable, "check_interval": cfg.sagemaker.poll_interval_s}
    return aws, retried, waits


def _polls(cfg: EvalConfig) -> dict[str, int]:
    """How often a job's wait polls: the provider polls at most 60 times by default (30
    minutes at a 30 s interval), so enough polls for the job's longest run."""
    return {"max_attempts": -(-(cfg.sagemaker.max_runtime_s + 600) // cfg.sagemaker.poll_interval_s)}


def compare_pairwise(cfg: EvalConfig, dag_id: str, run_id: str) -> dict[str, Any]:
    """The pairwise comparison's Processing job request: every model's results (from this
    run's evaluation jobs) in, pairwise.json out; the judge's cache kept in S3."""
    section = next(s for s in cfg.algorithms if s.compares_models)
    prefix = run_prefix(cfg, dag_id, run_id)
    return req.pairwise_config(
        cfg,
        req.pairwise_job_name(dag_id, run_id),
        role_arn(cfg),
        _setting(cfg.sagemaker.processing_image, "llm_eval_processing_image", "evaluation image"),
        upload_code(cfg, _s3(cfg)),
        f"{prefix}/run/",
        f"{prefix}/results/",
        f"{prefix}/pairwise/",
        cfg.sagemaker.region or _hook(cfg).conn_region_name,
        f"{s3_prefix(cfg)}/{dag_id}/cache/pairwise-{section.options['judge']}/responses.sqlite",
        {j.name: req.endpoint_name(cfg, j) for j in cfg.judged_by if j.deploys},
    )


def collect_pairwise(cfg: EvalConfig, run_folder: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Copy the comparison job's pairwise.json into the run store; the Bradley-Terry ranking."""
    uri = request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    bucket, key_prefix = store.split_s3_uri(uri)
    key = f"{key_prefix.rstrip('/')}/{store.PAIRWISE}"
    s3 = _s3(cfg)
    if not s3.check_for_key(key, bucket_name=bucket):
        job = req.describe_or_none(
            _hook(cfg).conn.describe_processing_job, ProcessingJobName=request["ProcessingJobName"]
        )
        reason = (job or {}).get("FailureReason") or (job or {}).get("ProcessingJobStatus") or "never created"
        raise RuntimeError(f"pairwise comparison job {request['ProcessingJobName']}: no {store.PAIRWISE} ({reason})")
    data = s3.get_key(key, bucket_name=bucket).get()["Body"].read()
    store.write_bytes(run_folder / store.PAIRWISE, data)
    return {"bradley_terry": json.loads(data)["bradley_terry"]}


def _deploy_pool(cfg: EvalConfig, deployed: list[Any]) -> dict[str, str]:
    """The pool argument of a mapped deploy over `deployed` (one instance type: the config
    checks it), when the config names a pool prefix."""
    if not (cfg.sagemaker.pool_prefix and deployed):
        return {}
    return {"pool": f"{cfg.sagemaker.pool_prefix}{deployed[0].deployment_config.instance_type}"}


def _judge_steps(cfg: EvalConfig, after: Any) -> tuple[Any, Any, Any]:
    """after >> prepare_judges >> deploy_judges (one endpoint per judge, waited for InService)
    ... [compare: prepare >> job >> collect] ... teardown_judges (deletes them, whatever happened)."""
    from airflow.sdk import TaskGroup, get_current_context, task

    from llmeval.tasks import JUDGES_UP, current_run

    aws, retried, waits = _operator_args(cfg)

    @task
    def prepare_judges() -> list[dict[str, Any]]:
        """Resolve each judge's JumpStart model and name its model, endpoint config and endpoint."""
        run = current_run()
        frozen = run.config()
        return [
            prepare_endpoint(frozen, j.name, run.dag_id, run.run_id)["endpoint"] for j in frozen.judged_by if j.deploys
        ]

    @task(**retried)
    def teardown_judges() -> list[str]:
        """Delete the judges' endpoints, endpoint configs and models (those prepare_judges named,
        else found by name and ownership tag), whatever happened upstream; what they cost goes
        to models/<judge>/."""
        run = current_run()
        frozen, keep = run.config(), bool(run.params.get("keep_endpoints"))
        prepared = get_current_context()["ti"].xcom_pull(task_ids="prepare_judges") or []
        named = {r["Endpoint"]["EndpointName"]: r for r in prepared}
        deleted = []
        for judge in (j for j in frozen.judged_by if j.deploys):
            request = named.get(req.endpoint_name(frozen, judge))
            deleted += teardown(frozen, judge.name, keep, request, None, run.folder)
        return deleted

    requests = prepare_judges()
    after >> requests
    deployed = (
        _operators()[0]
        .partial(
            task_id=JUDGES_UP,
            **_deploy_pool(cfg, [j for j in cfg.judged_by if j.deploys]),
            wait_for_completion=True,
            endpoint_quotas=cfg.sagemaker.endpoint_quotas,
            artifacts_url=cfg.artifacts_url,
            **aws,
            **waits,
            **retried,
        )
        .expand(config=requests)
    )
    compared = None
    if any(s.compares_models for s in cfg.algorithms):
        with TaskGroup("compare", tooltip="Pairwise: the judge compares the models' answers") as compared:

            @task(trigger_rule="all_done")
            def prepare() -> dict[str, Any]:
                """The comparison job's request, once every model's evaluation has ended."""
                run = current_run()
                return compare_pairwise(run.config(), run.dag_id, run.run_id)

            @task
            def collect(request: dict[str, Any]) -> dict[str, Any]:
                """Copy pairwise.json into the run store."""
                run = current_run()
                return collect_pairwise(run.config(), run.folder, request)

            request = prepare()
            job = _operators()[1](
                task_id="job",
                config=request,
                max_ingestion_time=cfg.sagemaker.max_runtime_s + 600,
                execution_timeout=timedelta(seconds=min(cfg.task_timeout_s, cfg.sagemaker.max_runtime_s + 3600)),
                **aws,
                **waits,
                **_polls(cfg),
                **retried,
            )
            job >> collect(request)
    return deployed, compared, teardown_judges().as_teardown(setups=[requests, deployed])


def _model_steps(cfg: EvalConfig, model_name: Any, kind: str) -> None:
    from airflow.sdk import get_current_context, task

    from llmeval.tasks import GROUPS, guarded, label

    aws, retried, waits = _operator_args(cfg)
    polls = _polls(cfg)
    # deploys (creating an endpoint, or waiting for one or for its lease) in one pool per
    # instance type; the config checks there is one per kind
    pooled = _deploy_pool(cfg, [m for m in cfg.models if m.kind == kind] if kind in ("foundation", "tuned") else [])
    timeout = timedelta(seconds=min(cfg.task_timeout_s, cfg.sagemaker.max_runtime_s + 3600))
    endpoint_op, processing_op, training_op = _operators()

    def own(task_name: str) -> Any:
        """What this model's `task_name` handed on (same mapped index), or None."""
        ti = get_current_context()["ti"]
        return ti.xcom_pull(task_ids=f"{GROUPS[kind]}.{task_name}", map_indexes=ti.map_index)

    @task(multiple_outputs=True, map_index_template="{{ model_label }}")
    def prepare(model: str) -> dict[str, Any]:
        """Resolve the JumpStart model and name its model, endpoint config and endpoint (unless
        it is a Bedrock model); upload the evaluation code, config and dataset and build the
        Processing job request."""
        label(model)
        prepared = (
            {}
            if kind in ("bedrock", "provided")
            else guarded(
                "deploy",
                model,
                lambda cfg, run: prepare_endpoint(cfg, model, run.dag_id, run.run_id),
                first=kind == "foundation",
            )
        )

        def staged(cfg: EvalConfig, run: Any) -> dict[str, Any]:
            region = prepared.get("region") or cfg.sagemaker.region or _hook(cfg).conn_region_name
            return stage(cfg, model, run.folder, run.dag_id, run.run_id, region, run.catalog_version)

        served_elsewhere = kind in ("bedrock", "provided")
        return {**prepared, "processing": guarded("evaluate", model, staged, first=served_elsewhere)}

    @task(map_index_template="{{ model_label }}")
    def prepare_training_job(model: str) -> dict[str, Any]:
        """Resolve the JumpStart training specs and upload the training data."""
        label(model)
        return guarded(
            "finetune",
            model,
            lambda cfg, run: prepare_training(cfg, model, run.dag_id, run.run_id),
            first=True,
        )

    @task(trigger_rule="all_done", map_index_template="{{ model_label }}")
    def collect_results(model: str) -> dict[str, Any]:
        """Copy the evaluation results from S3 into the run store (or record why there are none)."""
        label(model)
        prepared = own("prepare") or {}
        if "processing" not in prepared:  # its failure is recorded (the first one is kept)
            raise RuntimeError(f"{model}: nothing to collect, the prepare step failed (see its log)")
        training = prepared.get("training") if kind == "tuned" else None
        return guarded(
            "evaluate", model, lambda cfg, run: collect(cfg, model, run.folder, prepared["processing"], training)
        )

    def delete_endpoint(model: str, training_job: bool) -> list[str]:
        """Delete what this pipeline created for the model (with `training_job`, also stop its
        fine-tuning job if still running), from any of the model's tasks."""
        from llmeval.tasks import current_run

        run = current_run()
        frozen = run.config()
        job = (
            req.training_job_name(run.dag_id, run.run_id, model)
            if training_job and frozen.model(model).finetuning
            else None
        )
        prepared = own("prepare")
        endpoint = prepared.get("endpoint") if isinstance(prepared, dict) else None
        return teardown(frozen, model, bool(run.params.get("keep_endpoints")), endpoint, job, run.folder)

    @task(map_index_template="{{ model_label }}", **retried)
    def teardown_endpoint(model: str) -> list[str]:
        """Delete the endpoint, endpoint config and model this pipeline created (and stop a
        fine-tuning job still running), whatever happened: usually the evaluation released
        them already, and this finds nothing left."""
        label(model)
        return delete_endpoint(model, training_job=True)

    def evaluation_job(staged: Any, release: Callable[[str], list[str]] | None = None):
        """The Processing job running the evaluation entry point."""
        return processing_op(
            task_id="evaluate",
            config=staged,
            release=release,
            max_ingestion_time=cfg.sagemaker.max_runtime_s + 600,
            execution_timeout=timeout,
            **aws,
            **waits,
            **polls,
            **retried,
        )

    prepared = prepare(model_name)
    if kind in ("bedrock", "provided"):  # served elsewhere (Bedrock, or outputs given): nothing to deploy or delete
        evaluation_job(prepared["processing"]) >> collect_results(model_name)
        return
    if kind == "tuned":
        training = prepare_training_job(model_name)
        finetune = training_op(
            task_id="finetune",
            config=training,
            check_if_job_exists=False,
            print_log=False,
            max_ingestion_time=cfg.sagemaker.max_runtime_s + 600,
            **aws,
            **waits,
            **polls,
            **retried,
        )
        training >> finetune >> prepared
    early = cfg.sagemaker.early_release
    deploy = endpoint_op(
        task_id="deploy",
        config=prepared["endpoint"],
        wait_for_completion=not early,
        endpoint_quotas=cfg.sagemaker.endpoint_quotas,
        artifacts_url=cfg.artifacts_url,
        **aws,
        **waits,
        **retried,
        **pooled,
    )
    evaluate = evaluation_job(
        prepared["processing"], functools.partial(delete_endpoint, training_job=False) if early else None
    )
    collected = collect_results(model_name)
    stop = teardown_endpoint(model_name)
    prepared >> deploy >> evaluate >> collected >> stop
    # The training request is a setup too: when fine-tuning fails or times out, the teardown
    # still runs and stops a training job left running.
    stop.as_teardown(setups=[prepared, deploy, *([training] if kind == "tuned" else [])])
