"""Generate stage against a simulated SageMaker-runtime endpoint (real HTTP, real boto3):
concurrency, throttling back-off without loss or duplicates, cache hits on re-run."""

from __future__ import annotations

import pytest

from helpers import generate, records
from latency_server import LatencyServer
from llmeval.evaluation.apis import build_payload, render_prompt
from llmeval.evaluation.generate import ResponseCache, Target

pytestmark = pytest.mark.usefixtures("fake_aws_credentials")


def _records(n: int) -> list[dict]:
    return records(n, "question")


def _target(url: str, concurrency: int = 8, **kw) -> Target:
    return Target(
        endpoint_name="sim",
        model_identity="sim@1",
        output_path="[0].generated_text",
        content_template="PROMPT_PLACEHOLDER",
        inference_parameters={"max_new_tokens": 8},
        endpoint_url=url,
        region="us-east-1",
        max_concurrency=concurrency,
        **kw,
    )


def test_prompt_rendering_and_payload():
    assert render_prompt("Q: $feature A:", "hi") == "Q: hi A:"
    assert render_prompt("$model_input?", "hi") == "hi?"
    payload = build_payload([[{"role": "user", "content": "PROMPT_PLACEHOLDER"}]], 'say "x"', {"t": 0})
    assert payload == {"inputs": [[{"role": "user", "content": 'say "x"'}]], "parameters": {"t": 0}}


def test_every_record_gets_its_own_answer_concurrently(tmp_path):
    with LatencyServer(latency_s=0.02, capacity=16) as server:
        rows = generate(_records(100), _target(server.url), "Q: $feature", ResponseCache(tmp_path / "c.sqlite"))
    assert [r["record_id"] for r in rows] == [str(i) for i in range(100)]
    assert all(r["model_output"] == f"answer to: Q: question {r['record_id']}" for r in rows)
    assert server.requests == 100 and server.max_in_flight > 1
    assert rows[0]["output_tokens"] == 3 and rows[0]["tokens_exact"]


def test_throttling_backs_off_without_losing_or_duplicating(tmp_path):
    with LatencyServer(latency_s=0.005, capacity=16, throttle_rate=0.1, seed=3) as server:
        rows = generate(
            _records(300), _target(server.url, max_retries=8), "$feature", ResponseCache(tmp_path / "c.sqlite")
        )
    assert server.throttled > 10
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]][:3]
    assert all(r["model_output"] == f"answer to: question {r['record_id']}" for r in rows)
    assert sum(server.answered.values()) == 300 and max(server.answered.values()) == 1


def test_rerun_hits_the_cache_and_calls_nothing(tmp_path):
    cache_path = tmp_path / "c.sqlite"
    with LatencyServer(latency_s=0.001) as server:
        first = generate(_records(40), _target(server.url), "$feature", ResponseCache(cache_path))
        calls = server.requests
        second = generate(_records(40), _target(server.url), "$feature", ResponseCache(cache_path))
        assert server.requests == calls == 40
        overlap = generate(_records(50), _target(server.url), "$feature", ResponseCache(cache_path))
        assert server.requests == 50  # only the 10 new prompts
    assert all(r["cached"] for r in second) and not any(r["cached"] for r in first)
    assert [r["model_output"] for r in second] == [r["model_output"] for r in first]
    assert sum(r["cached"] for r in overlap) == 40


def test_inference_parameters_are_part_of_the_cache_key(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    with LatencyServer(latency_s=0.001) as server:
        generate(_records(5), _target(server.url), "$feature", cache)
        other = _target(server.url)
        other.inference_parameters = {"max_new_tokens": 9}
        generate(_records(5), other, "$feature", cache)
        assert server.requests == 10


def test_unreachable_endpoint_marks_every_record_failed(tmp_path):
    target = _target("http://127.0.0.1:9", max_retries=1, timeout_s=2)  # nothing listens on port 9
    rows = generate(_records(3), target, "$feature", ResponseCache(tmp_path / "c.sqlite"))
    assert all(r["model_output"] is None and "Could not connect" in r["error"] for r in rows)


def test_bedrock_models_are_called_through_the_bedrock_runtime(tmp_path):
    from aws_model import assert_valid

    template = {
        "anthropic_version": "bedrock-2023-05-31",
        "messages": [{"role": "user", "content": "PROMPT_PLACEHOLDER"}],
    }
    body = build_payload(template, "hi", {"max_tokens": 20}, provider="bedrock")
    assert body == {
        "anthropic_version": "bedrock-2023-05-31",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 20,
    }
    with LatencyServer(latency_s=0.001) as server:
        target = Target(
            endpoint_name="anthropic.claude-3-haiku-20240307-v1:0",
            model_identity="bedrock:haiku",
            output_path="content[0].text",
            content_template=template,
            inference_parameters={"max_tokens": 20},
            endpoint_url=server.url,
            region="us-east-1",
            provider="bedrock",
        )
        rows = generate(_records(5), target, "$feature", ResponseCache(tmp_path / "c.sqlite"))
    assert [r["model_output"] for r in rows] == [f"answer to: question {i}" for i in range(5)]
    assert rows[0]["output_tokens"] == 3 and rows[0]["tokens_exact"]
    import boto3

    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    assert_valid(
        client,
        "InvokeModel",
        {
            "modelId": target.endpoint_name,
            "body": b"{}",
            "contentType": "application/json",
            "accept": "application/json",
        },
    )


SCORE_CUSTOM = """
import json, sys
from llmeval.config import AlgorithmSection
from llmeval.evaluation.score import score_outputs
rows = [{"record_id": "1", "model_input": "q", "target_output": "a", "model_output": "Paris"},
        {"record_id": "2", "model_input": "q", "target_output": "a", "model_output": "one two three four five six"},
        {"record_id": "3", "model_input": "q", "target_output": "a", "model_output": None}]
sections = [AlgorithmSection.model_validate({"algorithm": "custom:brevity:Brevity", "max_words": 3}),
            AlgorithmSection.model_validate({"algorithm": "custom:no_such_module:Nope"})]
results, scored = score_outputs(rows, sections, "loc")
print(json.dumps({"name": results[0].algorithm, "brevity": results[0].score("brevity").__dict__,
                  "record": scored[1]["scores"]["Brevity"], "error": results[1].error}))
"""


def test_custom_algorithm_class_scores_saved_outputs():
    """A user's class (include/algorithms/brevity.py), scored in the worker environment."""
    import json
    import os
    import subprocess

    from conftest import ROOT, WORKER_PYTHON

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include" / "algorithms")]))
    out = subprocess.run([WORKER_PYTHON, "-c", SCORE_CUSTOM], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["name"] == "Brevity" and got["record"] == {"brevity": 0.5}
    assert got["brevity"]["count"] == 2 and got["brevity"]["value"] == (1.0 + 0.5) / 2
    assert "cannot load custom algorithm 'no_such_module:Nope'" in got["error"]
