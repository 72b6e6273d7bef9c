"""Generate stage: call the model once per prompt and save the outputs.

One client for every model, whatever serves it (`transport`) and whichever API it speaks
(`apis`): a SageMaker endpoint (or the local server, which speaks the same API), Bedrock, an
OpenAI-compatible URL. Bounded concurrency with additive-increase / multiplicative-decrease
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
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jmespath

from llmeval.contracts import Api
from llmeval.evaluation import apis, transport
from llmeval.evaluation.served import Target

log = logging.getLogger("llmeval.generate")


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


class Invoker:
    """Calls one model with retries, back-off and the adaptive concurrency limit."""

    def __init__(self, target: Target, client: Any = None, sleep: Callable[[float], None] = time.sleep):
        self.target = target
        self.send = transport.sender(target, client)
        self.limit = AdaptiveLimit(target.max_concurrency)
        self.sleep = sleep
        self.retries = 0

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.target.max_retries + 1):
            started = time.perf_counter()
            try:
                with self.limit:
                    response = self.send(payload)
                self.limit.succeeded()
            except Exception as exc:
                failure = transport.judged(exc)
                if failure.throttled:
                    self.limit.throttled()
                if not failure.retry or attempt == self.target.max_retries:
                    raise
                self.retries += 1
                backoff = min(20.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)
                self.sleep(max(backoff, failure.wait_s or 0.0))
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            return {"response": response, "latency_ms": latency_ms}
        raise AssertionError("unreachable")


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
    """Asks one model for one input: make the conversation and its request, look in the cache,
    call, read the answer.

    The generate stage, the algorithms that call the model while scoring (semantic robustness,
    prompt stereotyping) and the judges share it, so all go through the same cache, retries
    and adaptive concurrency limit."""

    def __init__(self, target: Target, prompt_template: Any, cache: ResponseCache, invoker: Invoker | None = None):
        self.target = target
        self.prompt_template = prompt_template  # a string, or a message list (messages, converse)
        self.cache = cache
        self.invoker = invoker or Invoker(target)

    def _answer(self, payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(cached answer {response, latency_ms}, was it a cache hit?)"""
        key = ResponseCache.key(self.target.model_identity, payload)
        hit = self.cache.get(key)
        if hit is not None:
            return hit, True
        answer = self.invoker(payload)
        self.cache.put(key, answer)
        return answer, False

    def conversation(self, model_input: str) -> apis.Conversation:
        return apis.conversation(self.prompt_template, self.target.system_prompt, model_input)

    def ask(self, model_input: str) -> dict[str, Any]:
        """{prompt, model_output, latency_ms, cached, input/output tokens} for one input."""
        return self.ask_conversation(self.conversation(model_input), self.target.inference_parameters)

    def ask_conversation(self, asked: apis.Conversation, parameters: dict[str, Any]) -> dict[str, Any]:
        """What `ask` gives, for a conversation made elsewhere (an Inspect task's messages)."""
        answer, cached = self._answer(apis.request(self.target, asked, parameters))
        read = apis.read(self.target, answer["response"], asked.text)
        return {
            "prompt": asked.text,
            "model_output": read.text,
            "latency_ms": round(answer["latency_ms"], 2),
            "cached": cached,
            "input_tokens": read.input_tokens,
            "output_tokens": read.output_tokens,
            "tokens_exact": read.exact,
        }

    def ask_request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """{response, latency_ms, cached} for a request body made elsewhere (an Inspect task's
        conversation with tool calls), through the same cache and limits."""
        answer, cached = self._answer(payload)
        return {**answer, "cached": cached}

    def log_probability(self, text: str) -> float:
        """The model's log probability of `text`, read with the config's JMESPath."""
        if not self.target.log_probability_path:
            raise ValueError("the model's evaluation_config has no log_probability JMESPath")
        if self.target.api != Api.INVOKE:
            raise ValueError(f"log probabilities are read from invoke responses, not {self.target.api}")
        parameters = {**self.target.inference_parameters, **self.target.log_probability_parameters}
        payload = apis.build_payload(self.target.content_template, text, parameters, self.target.provider)
        answer, _ = self._answer(payload)
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
            row["prompt"] = client.conversation(record["model_input"]).text
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
