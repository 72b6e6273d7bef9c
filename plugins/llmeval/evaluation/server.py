"""A local model server that speaks the SageMaker runtime invocation API.

`POST /endpoints/<name>/invocations` with a JumpStart text-generation payload
(`{"inputs": ..., "parameters": {...}}`) answers like a JumpStart endpoint, so the
generate stage uses the same boto3 `sagemaker-runtime` client for both targets.
String inputs are completed as raw text; chat inputs (a list of role/content messages,
or the JumpStart Llama form `[[...]]`) go through the model's chat template. With
`"decoder_input_details": true` the response carries the log probability of every input
token under `details.prefill`, as TGI-based JumpStart endpoints do.

Concurrent requests with the same inference parameters are generated as one batch
(greedy batched generation is ~10x the throughput of single streams on 2 cores).
The server binds to loopback only and serves only the endpoint names it was given.
Past `--max-in-flight` concurrent requests it refuses more with 429 ThrottlingException,
as an overloaded SageMaker endpoint does, rather than queueing without bound.

    python -m llmeval.evaluation.server --model-id smollm2-135m-instruct \
        --endpoint-name demo-a --ready-file /tmp/ready.json
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import re
import signal
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("llmeval.server")

MAX_NEW_TOKENS_CAP = 512
_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
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


def _response(prompt: Any, result: dict[str, Any]) -> list[dict[str, Any]]:
    details: dict[str, Any] = {"prompt_tokens": result["prompt_tokens"], "generated_tokens": result["generated_tokens"]}
    if "prefill" in result:
        details["prefill"] = result["prefill"]
    body: dict[str, Any] = {"generated_text": result["text"], "details": details}
    if _as_messages(prompt) is not None:
        body["generation"] = {"role": "assistant", "content": result["text"]}
    return [body]


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


def make_handler(generator: Generator, endpoints: set[str], timeout_s: float, admission: Admission):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet access log
            log.debug(fmt, *args)

        def _send(self, status: int, payload: Any, error_type: str | None = None) -> None:
            send_json(self, status, payload, error_type)

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(200, {"status": "ok", "endpoints": sorted(endpoints)})
            else:
                self._send(404, {"message": "not found"}, "ValidationError")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            match = _PATH.match(self.path.split("?")[0])
            if not match or match.group(1) not in endpoints:
                name = match.group(1) if match else self.path
                self._send(400, {"message": f"Endpoint {name} not found on this server."}, "ValidationError")
                return
            if not admission.enter():
                self._send(429, {"message": "Too many requests in flight; retry later"}, "ThrottlingException")
                return
            try:
                payload = json.loads(raw)
                prompt = payload["inputs"]
                params = payload.get("parameters") or {}
                if not isinstance(params, dict):
                    raise ModelError("'parameters' must be an object")
                result = generator.submit(prompt, params).result(timeout=timeout_s)
            except (ValueError, KeyError, TypeError, ModelError) as exc:
                message = f"Received client error (400) from primary with message: {exc!r}"
                self._send(424, {"message": message, "OriginalStatusCode": 400}, "ModelError")
                return
            except TimeoutError:
                self._send(424, {"message": "model timed out", "OriginalStatusCode": 504}, "ModelError")
                return
            finally:
                admission.leave()
            self._send(200, _response(prompt, result))

    return Handler


def serve(
    model_id: str, endpoints: set[str], ready_file: Path, port: int = 0, max_batch: int = 16, max_in_flight: int = 64
) -> None:
    from llmeval.evaluation.local_models import resolve_model_dir

    generator = Generator(resolve_model_dir(model_id), max_batch=max_batch)
    admission = Admission(max_in_flight)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(generator, endpoints, 600, admission))
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
