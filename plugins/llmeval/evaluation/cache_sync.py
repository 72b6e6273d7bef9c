"""Keep the response cache in S3 between SageMaker Processing jobs.

A Processing job's disk is gone when the job ends, so the entry point pulls the model's
cache file from S3 before generating and pushes it back when it stops (also on SIGTERM,
which SageMaker sends when it stops a job). One object per model: a pipeline runs one
DAG run at a time, so runs and backfills of the same model never write it concurrently.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from llmeval.store import split_s3_uri

if TYPE_CHECKING:  # the Airflow side imports this module for KMS_ENV, at DAG parse time
    from llmeval.evaluation.generate import ResponseCache

log = logging.getLogger("llmeval.cache")

KMS_ENV = "LLM_EVAL_S3_KMS_KEY"  # SSE-KMS key for the objects the job puts


def encryption() -> dict[str, str]:
    """The S3 put arguments for SSE-KMS when the job was given a key (else none)."""
    key = os.environ.get(KMS_ENV)
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key} if key else {}


def pull(uri: str, path: Path) -> bool:
    """Download the cache from `uri` into `path`; False when there is none yet."""
    import boto3
    from botocore.exceptions import ClientError

    bucket, key = split_s3_uri(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        boto3.client("s3").download_file(bucket, key, str(path))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
            raise
        log.info("no response cache at %s yet: starting empty", uri)
        return False
    log.info("response cache pulled from %s (%d bytes)", uri, path.stat().st_size)
    return True


def push(path: Path, uri: str) -> None:
    """Upload the (closed) cache file to `uri`."""
    import boto3

    bucket, key = split_s3_uri(uri)
    boto3.client("s3").upload_file(str(path), bucket, key, ExtraArgs=encryption() or None)
    log.info("response cache pushed to %s (%d bytes)", uri, path.stat().st_size)


@contextmanager
def opened(cache_dir: Path, uri: str | None) -> Iterator[ResponseCache]:
    """The response cache in `cache_dir`, pulled from `uri` first and pushed back after
    (also when the body fails), when a `uri` is given."""
    from llmeval.evaluation.generate import ResponseCache

    path = cache_dir / "responses.sqlite"
    if uri:
        pull(uri, path)
    cache = ResponseCache(path)
    try:
        yield cache
    finally:
        cache.close()
        if uri:
            push(path, uri)
