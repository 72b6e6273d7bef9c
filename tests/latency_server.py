"""A simulated SageMaker-runtime endpoint for benchmarks and fault tests.

Answers `POST /endpoints/<name>/invocations` after a fixed latency, at most `capacity`
requests at once per endpoint (others wait, as on a real instance), and throttles a chosen fraction
of requests with ThrottlingException (HTTP 429), and fails every request to the endpoints
named in `failing_endpoints`. The answer echoes the prompt (or is `reply(prompt)`), so a test
can check that every record got its own answer. Bedrock's InvokeModel path
(`/model/<id>/invoke`, Anthropic messages body) and Converse (`/model/<id>/converse`), the
Messages API on the invocations path, and OpenAI-compatible chat (`/v1/chat/completions`,
429s with `Retry-After`) are answered too, with tool calls when a chat request offers tools and
`tool_calls(request)` gives some. It also answers DescribeEndpoint
(InService), which fmeval's SageMakerModelRunner calls. Loopback only.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from llmeval.evaluation.server import send_json


def _api(path: str, request: dict[str, Any]) -> str:
    if path == "/v1/chat/completions":
        return "chat"
    if path.startswith("/model/"):
        return "converse" if path.endswith("/converse") else "bedrock"
    return "messages" if "messages" in request else "invoke"


def _prompt(api: str, request: dict[str, Any]) -> Any:
    """The last user message (the record's prompt), whichever API asked."""
    if api == "invoke":
        return request["inputs"]
    content = request["messages"][-1]["content"]
    return content[0]["text"] if api == "converse" else content


def _answer_of(api: str, text: str) -> Any:
    if api == "bedrock":  # the Anthropic messages shape Bedrock returns
        return {"content": [{"type": "text", "text": text}], "usage": {"input_tokens": 5, "output_tokens": 3}}
    if api == "converse":
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8},
            "metrics": {"latencyMs": 1},
        }
    if api in ("chat", "messages"):
        return {
            "model": "simulated",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
    return [{"generated_text": text, "details": {"prompt_tokens": 5, "generated_tokens": 3}}]


class LatencyServer:
    def __init__(
        self,
        latency_s: float = 0.05,
        capacity: int = 16,
        throttle_rate: float = 0.0,
        seed: int = 0,
        failing_endpoints: frozenset[str] = frozenset(),
        dies_after: dict[str, int] | None = None,
        reply: Callable[[str], str] | None = None,
        retry_after_s: float = 0.0,
        tool_calls: Callable[[dict[str, Any]], list[dict[str, Any]] | None] | None = None,
    ):
        self.reply = reply  # the answer to a prompt; default: it echoes the prompt
        self.tool_calls = tool_calls  # the tool calls a chat request is answered with (None: a text answer)
        self.with_tools: list[dict[str, Any]] = []  # the chat requests that offered tools
        self.retry_after_s = retry_after_s  # the Retry-After of an OpenAI-compatible 429
        self.failing_endpoints = failing_endpoints
        self.dies_after = dict(dies_after or {})  # endpoint -> requests answered before it starts failing
        self.latency_s = latency_s
        self.capacity = capacity  # requests served at once, per endpoint (each is its own instance)
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self.throttle_rate = throttle_rate
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.throttled = 0
        self.answered: Counter[str] = Counter()  # prompt -> answers given
        self.by_endpoint: Counter[str] = Counter()  # endpoint (or Bedrock model) -> answers given
        self.asked: dict[str, list[float]] = {}  # endpoint -> [first request, last answer] (monotonic)
        self.max_in_flight = self._in_flight = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> LatencyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _describe(name: str) -> dict[str, Any]:
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}"
        return {
            "EndpointName": name,
            "EndpointArn": arn,
            "EndpointConfigName": name,
            "EndpointStatus": "InService",
            "CreationTime": 0,
            "LastModifiedTime": 0,
        }

    def _answer(self, path: str, body: bytes) -> tuple[int, Any, str | None]:
        if any(f"/endpoints/{name}/" in path or f"/model/{name}/" in path for name in self.failing_endpoints):
            return 400, {"message": "Endpoint is failing (injected fault)"}, "ValidationError"
        for name, budget in self.dies_after.items():
            if f"/endpoints/{name}/" in path:
                with self.lock:
                    self.dies_after[name] = budget - 1
                if budget <= 0:
                    return 500, {"message": "the model container died (injected fault)"}, "InternalFailure"
        with self.lock:
            self.requests += 1
            throttle = self.random.random() < self.throttle_rate
            self.throttled += throttle
        if throttle:
            return 429, {"message": "Rate exceeded"}, "ThrottlingException"
        request = json.loads(body)
        api = _api(path, request)
        inputs = _prompt(api, request)
        endpoint = request["model"] if api == "chat" else unquote(path.split("/")[2])
        asked_at = time.monotonic()
        with self.lock:
            slots = self._slots.setdefault(endpoint, threading.BoundedSemaphore(self.capacity))
        with slots:
            with self.lock:
                self.asked.setdefault(endpoint, [asked_at, asked_at])
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            time.sleep(self.latency_s)
            with self.lock:
                self._in_flight -= 1
                self.answered[str(inputs)] += 1
                self.by_endpoint[endpoint] += 1
                self.asked[endpoint][1] = time.monotonic()
        if api in ("chat", "messages") and "tools" in request:
            with self.lock:
                self.with_tools.append(request)
            calls = self.tool_calls(request) if self.tool_calls else None
            if calls:
                answer = _answer_of(api, "")
                answer["choices"][0].update(
                    message={"role": "assistant", "tool_calls": calls}, finish_reason="tool_calls"
                )
                return 200, answer, None
        text = self.reply(str(inputs)) if self.reply else f"answer to: {inputs}"
        return 200, _answer_of(api, text), None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("X-Amz-Target", "").endswith(".DescribeEndpoint"):  # control plane
                    send_json(self, 200, server._describe(json.loads(body)["EndpointName"]))
                elif self.path == "/v1/chat/completions":  # OpenAI's errors, and Retry-After on a 429
                    status, payload, _ = server._answer(self.path, body)
                    if status != 200:
                        payload = {"error": {"message": payload["message"], "type": "rate_limit_error"}}
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", str(server.retry_after_s))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    send_json(self, *server._answer(self.path, body))

        return Handler


def judge_reply(prompt: str) -> str:
    """A judge's answer that follows the prompt: a rating (1-5) and a winner (A or B)."""
    digest = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    return f"Rating: {digest % 5 + 1}\nWinner: {'AB'[digest % 2]}\nExplanation: simulated."


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM, in its own process (as a real endpoint would be)."""
    import argparse
    import signal
    from pathlib import Path

    parser = argparse.ArgumentParser(description="simulated SageMaker-runtime endpoint")
    parser.add_argument("--latency-s", type=float, default=0.05)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    parser.add_argument("--ready-file", type=Path, required=True, help="receives the URL once serving")
    parser.add_argument("--judge", action="store_true", help="answer as a judge: a rating, a winner, a reason")
    args = parser.parse_args(argv)
    server = LatencyServer(args.latency_s, args.capacity, args.throttle_rate, reply=judge_reply if args.judge else None)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown).start())
    args.ready_file.write_text(server.url)
    server.httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
