"""Generate-stage faults against a simulated endpoint: 10,000 prompts with 1% injected
errors lose and duplicate nothing; a worker killed mid-generate (SIGKILL) resumes from the
cache: no cached answer is requested again, only the requests that were in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fault_matrix import record
from helpers import generate, records
from latency_server import LatencyServer
from llmeval.evaluation.generate import ResponseCache, Target

pytestmark = pytest.mark.usefixtures("fake_aws_credentials")


def _records(n: int) -> list[dict]:
    return records(n, "prompt")


def _target(url: str, concurrency: int) -> Target:
    return Target(
        endpoint_name="sim",
        model_identity="sim@1",
        output_path="[0].generated_text",
        content_template="PROMPT_PLACEHOLDER",
        inference_parameters={},
        endpoint_url=url,
        region="us-east-1",
        max_concurrency=concurrency,
        max_retries=8,
    )


@pytest.mark.faults
def test_ten_thousand_prompts_with_one_percent_errors_lose_and_duplicate_nothing(tmp_path):
    with LatencyServer(latency_s=0.001, capacity=64, throttle_rate=0.01, seed=11) as server:
        rows = generate(_records(10_000), _target(server.url, 64), "$feature", ResponseCache(tmp_path / "c.sqlite"))
    assert server.throttled > 50
    assert [r["record_id"] for r in rows] == [str(i) for i in range(10_000)]
    assert all(r["error"] is None and r["model_output"] == f"answer to: prompt {r['record_id']}" for r in rows)
    assert len(server.answered) == 10_000 and max(server.answered.values()) == 1
    record(
        "1% of 10,000 requests throttled",
        "generate stage",
        **{"failed model / step": "none", "retry": f"{server.throttled} retried; 0 lost, 0 duplicated"},
    )


CHILD = """
import os, sys
from llmeval.evaluation.generate import ModelClient, ResponseCache, Target, generate_with
records = [{"record_id": str(i), "model_input": f"prompt {i}", "target_output": "x"} for i in range(int(sys.argv[3]))]
target = Target("sim", "sim@1", "[0].generated_text", "PROMPT_PLACEHOLDER", {}, endpoint_url=sys.argv[1],
                region="us-east-1", max_concurrency=16, max_retries=8)
generate_with(ModelClient(target, "$feature", ResponseCache(__import__("pathlib").Path(sys.argv[2]))), records)
"""


@pytest.mark.faults
def test_killed_worker_resumes_from_the_cache(tmp_path):
    n, cache = 2000, tmp_path / "c.sqlite"
    with LatencyServer(latency_s=0.01, capacity=16) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.url, str(cache), str(n)],
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while len(server.answered) < n // 2 and time.monotonic() < deadline:
            if child.poll() is not None:
                raise AssertionError(f"the worker exited early: {child.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)  # the worker dies mid-generate
        child.wait()
        answered_before = set(server.answered)
        assert n // 2 <= len(answered_before) < n
        server.answered.clear()
        rows = generate(_records(n), _target(server.url, 16), "$feature", ResponseCache(cache))  # the retry
    assert all(r["error"] is None for r in rows) and [r["record_id"] for r in rows] == [str(i) for i in range(n)]
    resent = answered_before & set(server.answered)
    stored = {r["model_input"] for r in rows if r["cached"]}  # answers that had reached the cache before the kill
    assert not (stored & set(server.answered)), "a cached answer was requested again"
    assert len(resent) <= 16, f"{len(resent)} sent again: more than the requests in flight (max_concurrency 16)"
    assert len(stored) >= len(answered_before) - 16
    print(
        json.dumps(
            {
                "answered_by_server_before_kill": len(answered_before),
                "cached": len(stored),
                "sent_again": len(resent),
                "sent_again_of_cached": 0,
            }
        )
    )
    record(
        "worker killed mid-generate, retried",
        "generate stage",
        **{
            "failed model / step": "(the task)",
            "retry": f"{len(stored)} cached answers reused, 0 re-sent; {len(resent)} in-flight re-sent",
        },
    )
