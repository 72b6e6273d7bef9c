"""The Amazon provider's SageMaker operators, made to re-attach: a retry (or a re-run) finds
what an earlier try created under the same deterministic name and reuses it instead of
creating it twice. Imported when a SageMaker DAG is built (the provider's operators are
what its tasks are), never by a local one."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerBaseOperator,
    SageMakerEndpointOperator,
    SageMakerProcessingOperator,
    SageMakerTrainingOperator,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.providers.amazon.aws.utils import trim_none_values
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowRescheduleException

from llmeval.evaluation.endpoint_release import SETTLING
from llmeval.targets.sagemaker import leases
from llmeval.targets.sagemaker import requests as req
from llmeval.targets.sagemaker.release import RELEASED, ReleasedOrEnded, clients, release_state


class ReusingEndpointOperator(SageMakerEndpointOperator):
    """Reuse an InService endpoint; create only the parts that do not exist yet. Under an
    endpoint quota for its instance type, wait until a lease is free (in the triggerer, or
    rescheduled when not deferrable). Without `wait_for_completion`, return once the
    endpoint is being created: the evaluation job waits for InService itself."""

    def __init__(self, *, endpoint_quotas: dict[str, int] | None = None, artifacts_url: str | None = None, **kwargs):
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
            retry_at = datetime.now(UTC) + timedelta(seconds=self.check_interval)
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
                self.log.info("endpoint %s is %s (an earlier try's): waiting for it", name, status)
                return self.wait_in_service(name)
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

    def wait_in_service(self, name: str) -> dict[str, Any]:
        """Until the endpoint is InService: in the triggerer when deferrable (as the provider's own
        create path waits), else polling every check_interval up to max_ingestion_time."""
        attempts = max(1, self.max_ingestion_time // self.check_interval)
        if self.deferrable:
            trigger = SageMakerTrigger(
                job_name=name,
                job_type="endpoint",
                waiter_delay=self.check_interval,
                waiter_max_attempts=attempts,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
            )
            self.defer(
                trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=self.max_ingestion_time)
            )
        self.hook.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": self.check_interval, "MaxAttempts": attempts}
        )
        return {"Endpoint": trim_none_values(self.hook.conn.describe_endpoint(EndpointName=name))}

    def execute_after_lease_wait(self, context, event=None):
        return self.execute(context)


class _JobLifecycle(SageMakerBaseOperator):
    """Waiting for a SageMaker job this task (or an earlier try) started, and ending the task
    as the job ended: its description when it completed, a final failure (no retry: a retry would
    only find it so again) when it failed or was stopped. `JOB` is "Processing" or "Training"."""

    JOB: str
    deferrable: bool
    check_interval: int
    max_attempts: int
    max_ingestion_time: int | None
    aws_conn_id: str | None
    region_name: str | None

    @property
    def job_name(self) -> str:
        return self.config[f"{self.JOB}JobName"]

    def describe(self) -> dict[str, Any] | None:
        describe = getattr(self.hook.conn, f"describe_{self.JOB.lower()}_job")
        return req.describe_or_none(describe, **{f"{self.JOB}JobName": self.job_name})

    def status(self, job: dict[str, Any] | None) -> str | None:
        return job[f"{self.JOB}JobStatus"] if job else None

    def wait_for_end(self, context):
        """Until the job ends: in the triggerer when deferrable, else polling every check_interval."""
        if self.deferrable:
            timeout = timedelta(seconds=self.max_ingestion_time) if self.max_ingestion_time else None
            trigger = SageMakerTrigger(
                job_name=self.job_name,
                job_type=self.JOB,
                waiter_delay=self.check_interval,
                waiter_max_attempts=self.max_attempts,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
            )
            self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)
        self.hook.conn.get_waiter(f"{self.JOB.lower()}_job_completed_or_stopped").wait(
            **{f"{self.JOB}JobName": self.job_name},
            WaiterConfig={"Delay": self.check_interval, "MaxAttempts": self.max_attempts},
        )
        return self.finished(self.describe() or {})

    def finished(self, job: dict[str, Any]) -> dict[str, Any]:
        """The task's result for an ended job: its description, or the failure."""
        if self.status(job) == "Completed":
            self.log.info("%s job %s completed", self.JOB.lower(), self.job_name)
            return {self.JOB: trim_none_values(job)}
        raise self.ended(job)

    def not_retried_if_the_job_ended(self, step, *args):
        """Run the provider's step; a job that failed or was stopped fails the task for good."""
        try:
            return step(*args)
        except AirflowException:
            job = self.describe()
            if self.status(job) not in ("Failed", "Stopped"):
                raise
            raise self.ended(job or {}) from None

    def ended(self, job: dict[str, Any]) -> AirflowFailException:
        """The task's final failure for a job that failed or was stopped."""
        return AirflowFailException(
            f"{self.JOB.lower()} job {self.job_name} is {self.status(job)}: {job.get('FailureReason', '')}"
        )


class ReusingProcessingOperator(_JobLifecycle, SageMakerProcessingOperator):
    """A job with the same (deterministic) name is this model's evaluation: a retry (say,
    after its worker died) waits for it or reuses its outputs, and never runs it twice.
    With `release` (a job that writes a release object), the job is created without waiting;
    when it releases its endpoint, `release(model)` deletes the endpoint while the job goes
    on scoring."""

    JOB = "Processing"

    def __init__(self, *, release: Callable[[str], list[str]] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.release = release

    def execute(self, context):
        name = self.job_name
        job = self.describe()
        status = self.status(job)
        releases = self.release is not None and req.job_args(self.config).release_uri is not None
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
        return self.finished(job or {})

    def wait_for_release(self, context):
        """Until the job releases its endpoint or ends (in the triggerer when deferrable)."""
        name, uri = self.job_name, req.job_args(self.config).release_uri
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
            model = req.job_args(self.config).model
            self.log.info("the job no longer needs the endpoint of %s: deleting it while scoring goes on", model)
            try:
                self.log.info("released: %s", self.release(model))
            except Exception:  # the teardown task deletes it later, and fails loudly if it cannot
                self.log.exception("releasing the endpoint of %s failed: teardown will delete it", model)
            return self.wait_for_end(context)
        return self.finished(self.hook.describe_processing_job(self.job_name))  # it ended

    def execute_complete(self, context, event=None):
        return self.not_retried_if_the_job_ended(super().execute_complete, context, event)


class ReusingTrainingOperator(_JobLifecycle, SageMakerTrainingOperator):
    """A completed (or running) job with the same deterministic name is reused, not duplicated;
    one that failed or was stopped fails the task without retries."""

    JOB = "Training"

    def execute(self, context):
        job = self.describe()
        status = self.status(job)
        if status in ("InProgress", "Stopping"):
            self.log.info("training job %s is %s (started by an earlier try): waiting for it", self.job_name, status)
            return self.wait_for_end(context)
        if status is not None:
            if status == "Completed":
                self.log.info("training job %s already completed: reusing its model", self.job_name)
            return self.finished(job or {})
        return self.not_retried_if_the_job_ended(super().execute, context)

    def execute_complete(self, context, event=None):
        return self.not_retried_if_the_job_ended(super().execute_complete, context, event)
