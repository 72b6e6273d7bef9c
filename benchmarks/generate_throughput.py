"""Generate stage throughput vs fmeval's own model-runner path, against the same endpoint.

A simulated SageMaker-runtime endpoint (its own process) answers after 50 ms and serves at
most 16 requests at once, so 2,000 prompts cannot take less than 2,000 x 0.05 / 16 = 6.25 s.
Sends 2,000 prompts through (a) this project's generate stage, with max_concurrency at
twice the endpoint's capacity (so the client's own per-request overhead is hidden behind
the endpoint's queue), as a SageMaker endpoint and as an OpenAI-compatible URL
(`/v1/chat/completions`), and (b) fmeval's SageMakerModelRunner inside
FactualKnowledge.evaluate(), in one run. The verdict is the slower of the project's two
paths. Run with the worker environment:

    PYTHONPATH=plugins .venv-worker/bin/python benchmarks/generate_throughput.py
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

N, LATENCY_S, CAPACITY, TARGET_RATIO = 2000, 0.05, 16, 1.3


@contextmanager
def endpoint_process(folder: Path, *flags: str):
    """The simulated endpoint in its own process (`flags` added to its command line); yields its URL."""
    ready = folder / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "tests" / "latency_server.py"),
            "--latency-s",
            str(LATENCY_S),
            "--capacity",
            str(CAPACITY),
            "--ready-file",
            str(ready),
            *flags,
        ]
    )
    try:
        while not (ready.exists() and ready.read_text()):
            if proc.poll() is not None:
                raise RuntimeError("the simulated endpoint did not start")
            time.sleep(0.05)
        yield ready.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bench_target(url: str, openai_compatible: bool = False):
    """The project's client settings for the simulated endpoint: max_concurrency at twice
    its capacity, so the client's per-request work hides behind the endpoint's queue."""
    from llmeval.contracts import Api
    from llmeval.evaluation.generate import Target

    if openai_compatible:
        return Target(
            endpoint_name="bench",
            model_identity="bench-openai@1",
            output_path="",
            content_template=None,
            inference_parameters={"max_tokens": 8},
            max_concurrency=2 * CAPACITY,
            provider="openai_compatible",
            api=Api.MESSAGES,
            model_name="bench",
            base_url=f"{url}/v1",
            api_key="bench-key",
        )
    return Target(
        endpoint_name="bench",
        model_identity="bench@1",
        output_path="[0].generated_text",
        content_template="PROMPT_PLACEHOLDER",
        inference_parameters={"max_new_tokens": 8},
        endpoint_url=url,
        region="us-east-1",
        max_concurrency=2 * CAPACITY,
    )


def fmeval_evaluate(algorithm, records: list[dict], url: str, folder: Path) -> float:
    """Seconds for fmeval's own `evaluate()` with its SageMakerModelRunner on the endpoint at `url`."""
    from fmeval.data_loaders.data_config import DataConfig
    from fmeval.model_runners.sm_model_runner import SageMakerModelRunner

    dataset = folder / "data.jsonl"
    dataset.write_text("".join(json.dumps({"q": r["model_input"], "a": r["target_output"]}) + "\n" for r in records))
    os.environ["SAGEMAKER_SERVICE_ENDPOINT_URL"] = url
    os.environ["SAGEMAKER_RUNTIME_ENDPOINT_URL"] = url
    started = time.perf_counter()
    runner = SageMakerModelRunner(
        endpoint_name="bench",
        output="[0].generated_text",
        content_template='{"inputs": $prompt, "parameters": {"max_new_tokens": 8}}',
    )
    outputs = algorithm.evaluate(
        model=runner,
        prompt_template="$model_input",
        num_records=len(records),
        save=False,
        dataset_config=DataConfig(
            dataset_name="bench",
            dataset_uri=str(dataset),
            dataset_mime_type="application/jsonlines",
            model_input_location="q",
            target_output_location="a",
        ),
    )
    elapsed = time.perf_counter() - started
    assert outputs[0].dataset_scores, "fmeval produced no scores"
    return elapsed


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.basicConfig(level=logging.WARNING)
    from fmeval.eval_algorithms.factual_knowledge import (
        FactualKnowledge,
        FactualKnowledgeConfig,
    )

    from llmeval.evaluation.generate import ModelClient, ResponseCache, generate_with

    limit = N * LATENCY_S / CAPACITY
    records = [
        {"record_id": str(i), "model_input": f"question number {i}?", "target_output": f"a{i}"} for i in range(N)
    ]
    with tempfile.TemporaryDirectory() as tmp, endpoint_process(Path(tmp)) as url:
        seconds = {}
        for path, openai in (("sagemaker", False), ("openai", True)):
            cache = ResponseCache(Path(tmp) / f"{path}.sqlite")
            started = time.perf_counter()
            rows = generate_with(ModelClient(bench_target(url, openai), "$feature", cache), records)
            seconds[path] = time.perf_counter() - started
            answers = [r["model_output"] for r in rows]
            assert answers == [f"answer to: {r['model_input']}" for r in records], f"{path}: lost or mixed records"

        fmeval = fmeval_evaluate(FactualKnowledge(FactualKnowledgeConfig()), records, url, Path(tmp))
    project = max(seconds.values())
    print(f"prompts: {N}, endpoint latency {LATENCY_S * 1000:.0f} ms, capacity {CAPACITY} concurrent requests")
    print(f"capacity limit:        {limit:.2f} s")
    print(f"project, SageMaker:    {seconds['sagemaker']:.2f} s ({seconds['sagemaker'] / limit:.2f}x the limit)")
    print(f"project, OpenAI URL:   {seconds['openai']:.2f} s ({seconds['openai'] / limit:.2f}x the limit)")
    print(f"fmeval model runner:   {fmeval:.2f} s ({fmeval / limit:.2f}x the limit)")
    print(f"project vs fmeval:     {fmeval / project:.1f}x faster")
    print(f"generate_throughput: {project / limit:.2f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
