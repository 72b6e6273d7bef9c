"""A local model server that speaks the APIs models are asked through elsewhere.

    POST /endpoints/<name>/invocations   SageMaker runtime: a JumpStart text-generation payload
                                          (`{"inputs": ..., "parameters": {...}}`), or the Messages
                                          API of current JumpStart containers (`{"messages": [...]}`)
    POST /v1/chat/completions             OpenAI-compatible chat (`"model"`: a served name; with
                                          LLMEVAL_SERVER_API_KEY set, the key as a Bearer token)
    POST /model/<name>/converse           Bedrock's Converse

so the generate stage uses the same clients on both targets. String inputs are completed as
raw text; chat inputs (messages, or the JumpStart Llama form `[[...]]`) go through the
model's chat template. With
`"decoder_input_details": true` the response carries the log probability of every input
token under `details.prefill`, as TGI-based JumpStart endpoints do.

Concurrent requests with the same inference parameters are generated as one batch
(greedy batched generation is ~10x the throughput of single streams on 2 cores).
The server binds to loopback only and serves only the endpoint names it was given.
Past `--max-in-flight` concurrent requests it refuses more with 429 (ThrottlingException;
OpenAI's rate-limit error with Retry-After), as an overloaded endpoint does, rather than
queueing without bound. Every name it serves is an endpoint name, a model or a model id.

    python -m llmeval.evaluation.server --model-id smollm2-135m-instruct \
        --endpoint-name demo-a --ready-file /tmp/ready.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("llmeval.server")

MAX_NEW_TOKENS_CAP = 512
_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_CONVERSE = re.compile(r"^/model/([^/]+)/converse$")
CHAT_PATH = "/v1/chat/completions"
API_KEY_ENV = "LLMEVAL_SERVER_API_KEY"
_MESSAGES_PARAMETERS = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
}
_CONVERSE_PARAMETERS = {"maxTokens": "max_new_tokens", "temperature": "temperature", "topP": "top_p"}
_GENERATION_KEYS = {
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "do_sample",
    "repetition_penalty",
    "decoder_input_details",
}


class ModelError(Exception):
    """The request reached the model but cannot be served (SageMaker's ModelError)."""


@dataclass
class _Request:
    prompt: Any
    params: dict[str, Any]
    future: Future = field(default_factory=Future)

    @property
    def batch_key(self) -> str:
        return json.dumps({k: self.params.get(k) for k in sorted(_GENERATION_KEYS)}, sort_keys=True)


def _as_messages(inputs: Any) -> list[dict[str, str]] | None:
    """Chat messages from JumpStart chat payloads; None for plain text."""
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], list):
        inputs = inputs[0]
    if isinstance(inputs, list) and all(isinstance(m, dict) and "content" in m for m in inputs):
        return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in inputs]
    return None


class Generator:
    """Owns the model; a single thread runs batches taken from a queue."""

    def __init__(self, model_dir: Path, max_batch: int = 16, batch_window_s: float = 0.02):
        from llmeval.evaluation.local_models import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(model_dir)
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self.queue: queue.Queue[_Request] = queue.Queue()
        threading.Thread(target=self._loop, name="generator", daemon=True).start()

    def submit(self, prompt: Any, params: dict[str, Any]) -> Future:
        request = _Request(prompt, params)
        self.queue.put(request)
        return request.future

    def _loop(self) -> None:
        pending: list[_Request] = []
        while True:
            first = pending.pop(0) if pending else self.queue.get()
            batch = [first]
            deadline = time.monotonic() + self.batch_window_s
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                (batch if nxt.batch_key == first.batch_key else pending).append(nxt)
            try:
                outputs = self._generate([r.prompt for r in batch], first.params)
            except Exception as exc:  # a failed batch fails its requests, not the server
                log.exception("generation failed")
                for r in batch:
                    r.future.set_exception(ModelError(str(exc)))
                continue
            for r, out in zip(batch, outputs):
                r.future.set_result(out)

    def _text(self, prompt: Any) -> str:
        messages = _as_messages(prompt)
        if messages is not None:  # a last assistant message is the start of the answer (prefill)
            prefilled = messages[-1]["role"] == "assistant"
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=not prefilled, continue_final_message=prefilled
            )
        if not isinstance(prompt, str):
            raise ModelError("'inputs' must be a string or a list of chat messages")
        return prompt

    def _generate(self, prompts: list[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
        import torch

        texts = [self._text(p) for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        max_new = min(int(params.get("max_new_tokens", 64)), MAX_NEW_TOKENS_CAP)
        temperature = float(params.get("temperature", 0) or 0)
        sample = bool(params.get("do_sample", temperature > 0)) and temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": sample}
        if sample:
            kwargs.update(temperature=temperature, top_p=float(params.get("top_p", 1.0)))
            if "top_k" in params:
                kwargs["top_k"] = int(params["top_k"])
            torch.manual_seed(int(params.get("seed", 0)))
        if "repetition_penalty" in params:
            kwargs["repetition_penalty"] = float(params["repetition_penalty"])
        with torch.inference_mode():
            out = self.model.generate(**enc, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        prefill = self._prefill(enc) if params.get("decoder_input_details") else None
        results = []
        for i, row in enumerate(new_tokens):
            ids = row.tolist()
            if self.tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(self.tokenizer.eos_token_id)]
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            prompt_tokens = int(enc["attention_mask"][i].sum())
            results.append({"text": text, "prompt_tokens": prompt_tokens, "generated_tokens": len(ids)})
            if prefill is not None:
                results[-1]["prefill"] = prefill[i]
        return results

    def _prefill(self, enc: Any) -> list[list[dict[str, Any]]]:
        """Per input token: id, text and log probability given the tokens before it (None
        for the first), from one forward pass over the (left-padded) batch."""
        import torch

        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(**enc, position_ids=positions).logits.float()
        ids = enc["input_ids"]
        token_logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        rows = []
        for i in range(ids.shape[0]):
            start = int((mask[i] == 0).sum())  # left padding
            tokens = ids[i, start:].tolist()
            logprobs = [None] + token_logprobs[i, start:].tolist()
            rows.append(
                [{"id": t, "text": self.tokenizer.decode([t]), "logprob": lp} for t, lp in zip(tokens, logprobs)]
            )
        return rows


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any, error_type: str | None = None) -> None:
    """Write a JSON response; `error_type` sets the header botocore reads the error code from."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    if error_type:
        handler.send_header("x-amzn-ErrorType", error_type)
    handler.end_headers()
    handler.wfile.write(data)


@dataclass(frozen=True)
class _Asked:
    """One request, whichever API it came in: the served name, the prompt and the parameters."""

    api: str  # "invoke", "messages" (SageMaker's Messages API), "chat" (/v1/chat/completions), "converse"
    name: str
    prompt: Any
    params: dict[str, Any]


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list (OpenAI's parts, Converse's blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise ModelError("a message's content must be a string or a list of text parts")


def _chat(messages: Any, system: list[dict[str, Any]] | None = None) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ModelError("'messages' must be a non-empty list")
    turns = [{"role": "system", "content": _text_of(system)}] if system else []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ModelError("each message needs a role: system, user or assistant")
        turns.append({"role": m["role"], "content": _text_of(m.get("content", ""))})
    return turns


def _renamed(given: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names[k]: v for k, v in given.items() if k in names}


def parse_request(path: str, payload: Any) -> _Asked:
    """What a request asks, by its path; ModelError when its body is not what the API takes."""
    if not isinstance(payload, dict):
        raise ModelError("the request body must be a JSON object")
    found = _INVOKE.match(path)
    if found and "messages" in payload:
        return _Asked("messages", found.group(1), _chat(payload["messages"]), _renamed(payload, _MESSAGES_PARAMETERS))
    if found:
        params = payload.get("parameters") or {}
        if not isinstance(params, dict):
            raise ModelError("'parameters' must be an object")
        if "inputs" not in payload:
            raise ModelError("expected 'inputs' (text generation) or 'messages' (the Messages API)")
        return _Asked("invoke", found.group(1), payload["inputs"], params)
    if path == CHAT_PATH:
        return _Asked(
            "chat", str(payload.get("model")), _chat(payload.get("messages")), _renamed(payload, _MESSAGES_PARAMETERS)
        )
    found = _CONVERSE.match(path)
    if found:
        inference = payload.get("inferenceConfig") or {}
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in payload.get("messages") or []]
        return _Asked(
            "converse",
            unquote(found.group(1)),
            _chat(messages, payload.get("system")),
            _renamed(inference, _CONVERSE_PARAMETERS),
        )
    raise LookupError(path)


def _response(asked: _Asked, result: dict[str, Any]) -> Any:
    text, prompt_tokens, generated = result["text"], result["prompt_tokens"], result["generated_tokens"]
    finished = "length" if generated >= min(int(asked.params.get("max_new_tokens", 64)), MAX_NEW_TOKENS_CAP) else "stop"
    if asked.api in ("messages", "chat"):
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": asked.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finished}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": generated,
                "total_tokens": prompt_tokens + generated,
            },
        }
    if asked.api == "converse":
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "max_tokens" if finished == "length" else "end_turn",
            "usage": {
                "inputTokens": prompt_tokens,
                "outputTokens": generated,
                "totalTokens": prompt_tokens + generated,
            },
            "metrics": {"latencyMs": int(result.get("latency_ms", 0))},
        }
    details: dict[str, Any] = {"prompt_tokens": prompt_tokens, "generated_tokens": generated}
    if "prefill" in result:
        details["prefill"] = result["prefill"]
    body: dict[str, Any] = {"generated_text": text, "details": details}
    if _as_messages(asked.prompt) is not None:
        body["generation"] = {"role": "assistant", "content": text}
    return [body]


_ERROR_TYPES = {  # (api, status) -> the error type its clients read
    ("converse", 400): "ValidationException",
    ("converse", 404): "ResourceNotFoundException",
    ("converse", 429): "ThrottlingException",
    ("converse", 424): "ModelErrorException",
    ("converse", 408): "ModelTimeoutException",
}


def send_error(handler: BaseHTTPRequestHandler, api: str, status: int, message: str) -> None:
    """An error in the shape the API's clients parse: botocore's (SageMaker, Bedrock), OpenAI's."""
    if api == "chat":
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            status, "invalid_request_error"
        )
        handler.send_response(status)
        data = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        if status == 429:
            handler.send_header("Retry-After", "1")
        handler.end_headers()
        handler.wfile.write(data)
        return
    if api == "converse":
        send_json(handler, status, {"message": message}, _ERROR_TYPES.get((api, status), "InternalServerException"))
        return
    if status == 429:
        send_json(handler, 429, {"message": message}, "ThrottlingException")
    elif status == 404:  # SageMaker's own answer: no such endpoint
        send_json(handler, 400, {"message": message}, "ValidationError")
    else:  # the container's answer: SageMaker wraps its status in a ModelError
        wrapped = f"Received client error ({status}) from primary with message: {message}"
        send_json(handler, 424, {"message": wrapped, "OriginalStatusCode": status}, "ModelError")


class Admission:
    """At most `limit` requests in flight; counts what was served and refused."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = self.served = self.refused = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                self.refused += 1
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.served += 1


def make_handler(
    generator: Generator, endpoints: set[str], timeout_s: float, admission: Admission, api_key: str | None = None
):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet access log
            log.debug(fmt, *args)

        def _send(self, status: int, payload: Any, error_type: str | None = None) -> None:
            send_json(self, status, payload, error_type)

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(200, {"status": "ok", "endpoints": sorted(endpoints)})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in sorted(endpoints)]})
            else:
                self._send(404, {"message": "not found"}, "ValidationError")

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            api = "chat" if path == CHAT_PATH else "converse" if _CONVERSE.match(path) else "invoke"
            if api == "chat" and api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                send_error(self, api, 401, "Incorrect API key provided")
                return
            try:
                asked = parse_request(path, json.loads(raw))
            except LookupError:
                send_error(self, api, 404, f"no such path: {path}")
                return
            except (ValueError, ModelError) as exc:
                send_error(self, api, 400, str(exc))
                return
            if asked.name not in endpoints:
                what = "Endpoint" if api == "invoke" else "Model"
                send_error(self, api, 404, f"{what} {asked.name} not found on this server.")
                return
            if not admission.enter():
                send_error(self, api, 429, "Too many requests in flight; retry later")
                return
            started = time.monotonic()
            try:
                result = generator.submit(asked.prompt, asked.params).result(timeout=timeout_s)
            except (ValueError, KeyError, TypeError, ModelError) as exc:
                send_error(self, asked.api, 400, repr(exc))
                return
            except TimeoutError:
                send_error(self, asked.api, 504 if api != "converse" else 408, "model timed out")
                return
            finally:
                admission.leave()
            self._send(200, _response(asked, {**result, "latency_ms": (time.monotonic() - started) * 1000}))

    return Handler


def serve(
    model_id: str, endpoints: set[str], ready_file: Path, port: int = 0, max_batch: int = 16, max_in_flight: int = 64
) -> None:
    from llmeval.evaluation.local_models import resolve_model_dir

    generator = Generator(resolve_model_dir(model_id), max_batch=max_batch)
    admission = Admission(max_in_flight)
    api_key = os.environ.get(API_KEY_ENV) or None
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(generator, endpoints, 600, admission, api_key))
    server.daemon_threads = True

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "endpoints": sorted(endpoints), "model_id": model_id}))
    tmp.replace(ready_file)
    log.info("serving %s as %s at %s", model_id, ", ".join(sorted(endpoints)), url)
    server.serve_forever()
    server.server_close()
    log.info("served %d requests, refused %d (throttled)", admission.served, admission.refused)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-id", required=True, help="catalog name or saved model folder")
    parser.add_argument("--endpoint-name", action="append", required=True, help="endpoint name(s) to serve")
    parser.add_argument("--ready-file", type=Path, required=True, help="written with the URL once serving")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-in-flight", type=int, default=64, help="more concurrent requests get 429")
    parser.add_argument("--owner", default="", help="the run and model it serves: how a teardown finds it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(args.model_id, set(args.endpoint_name), args.ready_file, args.port, args.max_batch, args.max_in_flight)
    return 0


if __name__ == "__main__":
    sys.exit(main())
