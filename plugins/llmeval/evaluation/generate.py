"""Generate stage: call the model once per prompt and save the outputs.

One client for every target: boto3 `sagemaker-runtime` (its endpoint URL overridden for
the local server). Bounded concurrency with additive-increase / multiplicative-decrease
on throttling, retries with jittered exponential back-off, a per-request timeout, and a
persistent response cache keyed by (model identity, request payload), so re-runs and
overlapping backfills only call the endpoint for prompts it has not answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sqlite3
import string
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jmespath

log = logging.getLogger("llmeval.generate")

PLACEHOLDER = "PROMPT_PLACEHOLDER"
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


def render_prompt(template: str, model_input: str) -> str:
    """Fill the seed's `$feature` (or fmeval's `$model_input`) with the dataset input."""
    return string.Template(template).safe_substitute(feature=model_input, model_input=model_input)


def build_payload(
    content_template: Any, prompt: str, parameters: dict[str, Any], provider: str = "sagemaker"
) -> dict[str, Any]:
    """The request body: the content template with the prompt in place of the placeholder.
    SageMaker (JumpStart) bodies are {"inputs": ..., "parameters": ...}; a Bedrock template
    is the whole body, and inference parameters are merged into it."""

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return node.replace(PLACEHOLDER, prompt)
        if isinstance(node, list):
            return [fill(x) for x in node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    if provider == "bedrock":
        body = fill(content_template)
        if not isinstance(body, dict):
            raise ValueError("a Bedrock content_template must be the whole JSON request body (an object)")
        return {**body, **parameters}
    payload: dict[str, Any] = {"inputs": fill(content_template)}
    if parameters:
        payload["parameters"] = parameters
    return payload


class ResponseCache:
    """SQLite cache of model outputs, safe for the generate stage's threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: no corruption, far fewer fsyncs
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()
        self._lock = threading.Lock()

    @staticmethod
    def key(model_identity: str, payload: dict[str, Any]) -> str:
        blob = json.dumps([model_identity, payload], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()

    def close(self) -> None:
        self._db.close()


class AdaptiveLimit:
    """Concurrency limit that halves on throttling and creeps back up on success."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self._cond = threading.Condition()

    def __enter__(self) -> AdaptiveLimit:
        with self._cond:
            while self.in_flight >= max(1, int(self.limit)):
                self._cond.wait()
            self.in_flight += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def throttled(self) -> None:
        with self._cond:
            self.limit = max(1.0, self.limit / 2)

    def succeeded(self) -> None:
        with self._cond:
            self.limit = min(float(self.maximum), self.limit + 1.0 / max(1.0, self.limit))
            self._cond.notify_all()


@dataclass
class Target:
    """Where and how to call the model."""

    endpoint_name: str
    model_identity: str
    output_path: str
    content_template: Any
    inference_parameters: dict[str, Any]
    custom_attributes: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    max_concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 5
    provider: str = "sagemaker"  # "sagemaker": invoke_endpoint; "bedrock": bedrock-runtime invoke_model
    log_probability_path: str | None = None  # JMESPath to a sentence's log probability
    log_probability_parameters: dict[str, Any] = field(default_factory=dict)


def _retryable(exc: Exception) -> tuple[bool, bool]:
    """(retry?, was it throttling?) for an invocation error."""
    from botocore.exceptions import ClientError, ReadTimeoutError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (BotoConnectionError, ReadTimeoutError)):
        return True, False
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        original = exc.response.get("OriginalStatusCode")
        throttled = code == "ThrottlingException" or status == 429 or original == 429
        if code in RETRYABLE_CODES or status in RETRYABLE_STATUS or throttled:
            return True, throttled
        if code == "ModelError" and original in RETRYABLE_STATUS:
            return True, original == 429
    return False, False


def make_client(target: Target):
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


class Invoker:
    """Calls one endpoint with retries, back-off and the adaptive concurrency limit."""

    def __init__(self, target: Target, client: Any = None, sleep: Callable[[float], None] = time.sleep):
        self.target = target
        self.client = client or make_client(target)
        self.limit = AdaptiveLimit(target.max_concurrency)
        self.sleep = sleep
        self.retries = 0

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload)
        if self.target.provider == "bedrock":
            call = self.client.invoke_model
            kwargs: dict[str, Any] = {
                "modelId": self.target.endpoint_name,
                "body": body,
                "contentType": "application/json",
                "accept": "application/json",
            }
        else:
            call = self.client.invoke_endpoint
            kwargs = {
                "EndpointName": self.target.endpoint_name,
                "Body": body,
                "ContentType": "application/json",
                "Accept": "application/json",
            }
            if self.target.custom_attributes:
                kwargs["CustomAttributes"] = self.target.custom_attributes
        for attempt in range(self.target.max_retries + 1):
            started = time.perf_counter()
            try:
                with self.limit:
                    response = call(**kwargs)
                    raw = (response.get("Body") or response["body"]).read()
                self.limit.succeeded()
            except Exception as exc:
                retry, throttled = _retryable(exc)
                if throttled:
                    self.limit.throttled()
                if not retry or attempt == self.target.max_retries:
                    raise
                self.retries += 1
                self.sleep(min(20.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0))
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            return {"response": json.loads(raw), "latency_ms": latency_ms}
        raise AssertionError("unreachable")


def extract_output(output_path: str, response: Any) -> str:
    value = jmespath.search(output_path, response)
    if value is None:
        raise ValueError(f"output path {output_path!r} found nothing in the response {json.dumps(response)[:300]}")
    return value if isinstance(value, str) else json.dumps(value)


def _token_counts(response: Any, prompt: str, output: str) -> tuple[int, int, bool]:
    """(input tokens, output tokens, exact?): from the response's details, else word counts."""
    first = response[0] if isinstance(response, list) and response else response
    details = first.get("details") if isinstance(first, dict) else None
    if isinstance(details, dict) and "generated_tokens" in details:
        return int(details.get("prompt_tokens", 0)), int(details["generated_tokens"]), True
    usage = first.get("usage") if isinstance(first, dict) else None  # Bedrock (Anthropic messages)
    if isinstance(usage, dict) and "output_tokens" in usage:
        return int(usage.get("input_tokens", 0)), int(usage["output_tokens"]), True
    return len(prompt.split()), len(output.split()), False


class Progress:
    def __init__(self, total: int, label: str, every_s: float = 5.0):
        self.total, self.label, self.every_s = total, label, every_s
        self.done = self.hits = self.failed = 0
        self.started = self.last = time.monotonic()
        self._lock = threading.Lock()

    def tick(self, cached: bool, failed: bool) -> None:
        with self._lock:
            self.done += 1
            self.hits += cached
            self.failed += failed
            now = time.monotonic()
            if now - self.last >= self.every_s or self.done == self.total:
                self.last = now
                rate = self.done / max(now - self.started, 1e-9)
                eta = (self.total - self.done) / rate if rate else float("inf")
                log.info(
                    "%s: %d/%d (%.0f%%) %.1f rec/s ETA %.0fs, cache hits %d, failed %d",
                    self.label,
                    self.done,
                    self.total,
                    100 * self.done / self.total,
                    rate,
                    eta,
                    self.hits,
                    self.failed,
                )


class ModelClient:
    """Asks one model for one input: render the prompt, look in the cache, call, extract.

    The generate stage and the algorithms that call the model while scoring (semantic
    robustness, prompt stereotyping) share it, so both go through the same cache, retries
    and adaptive concurrency limit."""

    def __init__(self, target: Target, prompt_template: str, cache: ResponseCache, invoker: Invoker | None = None):
        self.target = target
        self.prompt_template = prompt_template
        self.cache = cache
        self.invoker = invoker or Invoker(target)

    def _answer(self, prompt: str, parameters: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(cached answer {response, latency_ms}, was it a cache hit?)"""
        payload = build_payload(self.target.content_template, prompt, parameters, self.target.provider)
        key = ResponseCache.key(self.target.model_identity, payload)
        hit = self.cache.get(key)
        if hit is not None:
            return hit, True
        answer = self.invoker(payload)
        self.cache.put(key, answer)
        return answer, False

    def ask(self, model_input: str, prompt_template: str | None = None) -> dict[str, Any]:
        """{prompt, model_output, latency_ms, cached, input/output tokens} for one input."""
        prompt = render_prompt(prompt_template or self.prompt_template, model_input)
        answer, cached = self._answer(prompt, self.target.inference_parameters)
        output = extract_output(self.target.output_path, answer["response"])
        tokens_in, tokens_out, exact = _token_counts(answer["response"], prompt, output)
        return {
            "prompt": prompt,
            "model_output": output,
            "latency_ms": round(answer["latency_ms"], 2),
            "cached": cached,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "tokens_exact": exact,
        }

    def log_probability(self, text: str) -> float:
        """The model's log probability of `text`, read with the config's JMESPath."""
        if not self.target.log_probability_path:
            raise ValueError("the model's evaluation_config has no log_probability JMESPath")
        parameters = {**self.target.inference_parameters, **self.target.log_probability_parameters}
        answer, _ = self._answer(text, parameters)
        value = jmespath.search(self.target.log_probability_path, answer["response"])
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(
                f"log_probability path {self.target.log_probability_path!r} gave {value!r}, not a number, "
                f"in the response {json.dumps(answer['response'])[:300]}"
            )
        return float(value)


def generate_with(client: ModelClient, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    target = client.target
    progress = Progress(len(records), f"generate {target.endpoint_name}")

    def one(record: dict[str, Any]) -> dict[str, Any]:
        row = {**record, "model_output": None, "error": None, "cached": False}
        try:
            row.update(client.ask(record["model_input"]))
        except Exception as exc:
            row["prompt"] = render_prompt(client.prompt_template, record["model_input"])
            row["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        progress.tick(row["cached"], row["error"] is not None)
        return row

    with ThreadPoolExecutor(max_workers=target.max_concurrency, thread_name_prefix="invoke") as pool:
        rows = list(pool.map(one, records))
    log.info(
        "generate %s: %d retries, final concurrency limit %.1f",
        target.endpoint_name,
        client.invoker.retries,
        client.invoker.limit.limit,
    )
    return rows
