"""Sending one request to where a model is served, and which failures are worth a retry.

    SageMaker endpoint   sagemaker-runtime InvokeEndpoint (invoke and messages bodies)
    Bedrock              bedrock-runtime InvokeModel (invoke) or Converse
    OpenAI-compatible    POST <base URL>/chat/completions with the API key as a Bearer token

boto3 clients are built without botocore's own retries, so the caller's retry loop sees every
throttle (and can halve its concurrency); an HTTP 429 or 503 with `Retry-After` is waited out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmeval.contracts import Api
from llmeval.evaluation.served import Target

RETRYABLE_CODES = {
    "ThrottlingException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ModelNotReadyException",
}
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 60.0
JSON = "application/json"


class HttpError(Exception):
    """An OpenAI-compatible server answered with an error status."""

    def __init__(self, status: int, body: str, retry_after: float | None):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status, self.retry_after = status, retry_after


@dataclass(frozen=True)
class Failure:
    """What the retry loop should do about one failed request."""

    retry: bool
    throttled: bool
    wait_s: float | None = None  # the server's Retry-After


def judged(exc: Exception) -> Failure:
    """Retry throttling, server errors, timeouts and lost connections; nothing else."""
    from botocore.exceptions import ClientError, ReadTimeoutError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from urllib3.exceptions import HTTPError as TransportError

    if isinstance(exc, HttpError):
        wait = min(exc.retry_after, MAX_RETRY_AFTER_S) if exc.retry_after is not None else None
        return Failure(exc.status in RETRYABLE_STATUS, exc.status == 429, wait)
    if isinstance(exc, (BotoConnectionError, ReadTimeoutError, TransportError)):
        return Failure(True, False)
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        original = exc.response.get("OriginalStatusCode")
        throttled = code == "ThrottlingException" or status == 429 or original == 429
        if code in RETRYABLE_CODES or status in RETRYABLE_STATUS or throttled:
            return Failure(True, throttled)
        if code == "ModelError" and original in RETRYABLE_STATUS:
            return Failure(True, original == 429)
    return Failure(False, False)


def sender(target: Target, client: Any = None) -> Callable[[dict[str, Any]], Any]:
    """A function that sends one request body to the target and returns the parsed response
    (through `client`, a boto3 client, when given)."""
    if target.provider == "openai_compatible":
        return _chat_completions(target)
    client = client or _boto_client(target)
    if target.provider == "bedrock" and target.api == Api.CONVERSE:

        def converse(call: dict[str, Any]) -> Any:
            response = client.converse(**call)
            response.pop("ResponseMetadata", None)
            return response

        return converse
    # InvokeModel and InvokeEndpoint: the same JSON request under other parameter names
    if target.provider == "bedrock":
        call, keys, extra = client.invoke_model, ("modelId", "body", "contentType", "accept"), {}
    else:
        call, keys = client.invoke_endpoint, ("EndpointName", "Body", "ContentType", "Accept")
        extra = {"CustomAttributes": target.custom_attributes} if target.custom_attributes else {}
    name, body_key, content_type, accept = keys

    def invoke(body: dict[str, Any]) -> Any:
        sent = {name: target.endpoint_name, body_key: json.dumps(body), content_type: JSON, accept: JSON}
        return json.loads(call(**sent, **extra)[body_key].read())

    return invoke


def _boto_client(target: Target) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=10,
        read_timeout=target.timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},  # no botocore retries: ours see every throttle
        max_pool_connections=target.max_concurrency + 4,
    )
    service = "bedrock-runtime" if target.provider == "bedrock" else "sagemaker-runtime"
    return boto3.client(service, endpoint_url=target.endpoint_url, region_name=target.region, config=config)


def _chat_completions(target: Target) -> Callable[[dict[str, Any]], Any]:
    import urllib3

    if not target.base_url:
        raise ValueError(f"{target.model_identity}: no base URL for the OpenAI-compatible model")
    url = target.base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    pool = urllib3.PoolManager(
        maxsize=target.max_concurrency + 4,
        timeout=urllib3.Timeout(connect=10, read=target.timeout_s),
        retries=False,
    )

    def post(body: dict[str, Any]) -> Any:
        response = pool.request("POST", url, body=json.dumps(body).encode(), headers=headers)
        if response.status >= 400:
            raise HttpError(response.status, response.data.decode(errors="replace"), _seconds(response.headers))
        return json.loads(response.data)

    return post


def _seconds(headers: Any) -> float | None:
    """The `Retry-After` header in seconds (HTTP dates are not used by model servers)."""
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
