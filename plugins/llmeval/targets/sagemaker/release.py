"""Waiting for a Processing job to release its model's endpoint: the job writes a release
object when generation and the scorers that call the model are done; the evaluate task
then deletes the endpoint while the job goes on scoring."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from llmeval.store import split_s3_uri

RELEASED, ENDED = "released", "ended"


def clients(aws_conn_id: str | None, region: str | None) -> tuple[Any, Any]:
    """The S3 and SageMaker clients the checks use (built once per wait: building them is slow)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return (
        S3Hook(aws_conn_id=aws_conn_id, region_name=region).get_conn(),
        SageMakerHook(aws_conn_id=aws_conn_id, region_name=region).conn,
    )


def release_state(s3: Any, sagemaker: Any, job_name: str, release_uri: str) -> dict | None:
    """{"status": "released"} once the job wrote its release object; {"status": "ended"} once
    the job ended without writing it; None while neither."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3_uri(release_uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return {"status": RELEASED, "job_name": job_name}
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    job = sagemaker.describe_processing_job(ProcessingJobName=job_name)
    if job["ProcessingJobStatus"] not in ("InProgress", "Stopping"):
        return {"status": ENDED, "job_name": job_name}
    return None


class ReleasedOrEnded(BaseTrigger):
    """Fires when the Processing job `job_name` has released its endpoint, or has ended."""

    def __init__(
        self, job_name: str, release_uri: str, aws_conn_id: str | None, region_name: str | None, poll_interval_s: float
    ):
        super().__init__()
        self.job_name, self.release_uri, self.poll_interval_s = job_name, release_uri, poll_interval_s
        self.aws_conn_id, self.region_name = aws_conn_id, region_name

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.ReleasedOrEnded",
            {
                "job_name": self.job_name,
                "release_uri": self.release_uri,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_interval_s": self.poll_interval_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        s3, sagemaker = await asyncio.to_thread(clients, self.aws_conn_id, self.region_name)
        args = (s3, sagemaker, self.job_name, self.release_uri)
        while (state := await asyncio.to_thread(release_state, *args)) is None:
            await asyncio.sleep(self.poll_interval_s)
        yield TriggerEvent(state)
