"""The model's SageMaker endpoint as the evaluation job sees it: wait until it serves (the
job starts while the endpoint is still being created), and say with an S3 object under the
run's prefix when the model is no longer needed, so the pipeline deletes the endpoint while
scoring goes on."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from llmeval.evaluation.cache_sync import encryption
from llmeval.store import split_s3_uri

log = logging.getLogger("llmeval.evaluation")

SETTLING = ("Creating", "Updating", "SystemUpdating")  # an endpoint that will change status by itself


def wait_in_service(endpoint: str, region: str, poll_s: float) -> float:
    """Wait until `endpoint` is InService; return the seconds waited. Raises when it will not
    serve (Failed, OutOfService, being deleted), with SageMaker's reason."""
    import boto3

    client = boto3.client("sagemaker", region_name=region)
    started = time.monotonic()
    while True:
        described = client.describe_endpoint(EndpointName=endpoint)
        status = described["EndpointStatus"]
        waited = time.monotonic() - started
        if status == "InService":
            log.info("endpoint %s is InService (waited %.0f s)", endpoint, waited)
            return waited
        if status not in SETTLING:
            reason = described.get("FailureReason") or "no reason given"
            raise RuntimeError(f"endpoint {endpoint} is {status}, it will not serve: {reason}")
        log.info("endpoint %s is %s: waiting for InService (%.0f s so far)", endpoint, status, waited)
        time.sleep(poll_s)


def announce_release(uri: str, model: str) -> None:
    """Write the release object at `uri` (the pipeline deletes the endpoint when it sees it).
    A failure is logged, not raised: the endpoint is then deleted after the job, as before."""
    import boto3

    bucket, key = split_s3_uri(uri)
    body = json.dumps({"model": model, "released_at": datetime.now(UTC).isoformat()})
    try:
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode(), **encryption())
    except Exception as exc:
        log.warning("could not write the release object %s (%s): the endpoint lives until teardown", uri, exc)
        return
    log.info("release object written to %s", uri)
