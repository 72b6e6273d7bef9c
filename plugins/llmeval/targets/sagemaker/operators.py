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
        return self.finished(job)

    def wait_for_release(self, context):
        """Until the job releases its endpoint or ends (in the triggerer when deferrable)."""
        name, uri = self.config["ProcessingJobName"], req.job_args(self.config).release_uri
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
            f"processing job {job['ProcessingJobName']} is {job['ProcessingJobStatus']}: {job.get('FailureReason', '')}"
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
