"""Semantic robustness (model calls while scoring) vs fmeval's own path, same endpoint.

ClassificationAccuracySemanticRobustness over 200 records with 4 perturbations asks the
model 1,000 times (each original once, each perturbed input once). Against the simulated
endpoint of generate_throughput.py (50 ms, 16 requests at once) that cannot take less than
1,000 x 0.05 / 16 = 3.1 s. Runs, in one process: (a) this project's generate stage then
score stage, whose robustness calls go through the cached, concurrent client (the
originals are cache hits), and (b) fmeval's `evaluate()` with its SageMakerModelRunner.
Run with the worker environment:

    PYTHONPATH=plugins .venv-worker/bin/python benchmarks/robustness_throughput.py
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from generate_throughput import (
    CAPACITY,
    LATENCY_S,
    bench_target,
    endpoint_process,
    fmeval_evaluate,
)

N, PERTURBATIONS, TARGET_RATIO = 200, 4, 1.3  # the bound of generate_throughput: same endpoint
OPTIONS = {"perturbation_type": "whitespace_add_remove", "num_perturbations": PERTURBATIONS, "valid_labels": ["1"]}


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.basicConfig(level=logging.WARNING)
    from fmeval.eval_algorithms.classification_accuracy_semantic_robustness import (
        ClassificationAccuracySemanticRobustness,
        ClassificationAccuracySemanticRobustnessConfig,
    )

    from llmeval.config import AlgorithmSection
    from llmeval.evaluation.generate import ModelClient, ResponseCache, generate_with
    from llmeval.evaluation.score import score_outputs

    calls = N * (1 + PERTURBATIONS)
    limit = calls * LATENCY_S / CAPACITY
    records = [
        {"record_id": str(i), "model_input": f"the review number {i} says it was fine", "target_output": "1"}
        for i in range(N)
    ]
    section = AlgorithmSection.model_validate({"algorithm": "ClassificationAccuracySemanticRobustness", **OPTIONS})
    with tempfile.TemporaryDirectory() as tmp, endpoint_process(Path(tmp)) as url:
        client = ModelClient(bench_target(url), "$feature", ResponseCache(Path(tmp) / "cache.sqlite"))
        started = time.perf_counter()
        rows = generate_with(client, records)
        results, _ = score_outputs(rows, [section], "bench", client)
        project = time.perf_counter() - started
        assert results[0].error is None and results[0].scores[0].count == N, results[0].error

        algorithm = ClassificationAccuracySemanticRobustness(ClassificationAccuracySemanticRobustnessConfig(**OPTIONS))
        fmeval = fmeval_evaluate(algorithm, records, url, Path(tmp))
    print(f"records: {N} x (1 + {PERTURBATIONS} perturbations) = {calls} model calls")
    print(f"capacity limit:        {limit:.2f} s (endpoint {LATENCY_S * 1000:.0f} ms, {CAPACITY} at once)")
    print(f"project generate+score: {project:.2f} s ({project / limit:.2f}x the limit)")
    print(f"fmeval evaluate():      {fmeval:.2f} s ({fmeval / limit:.2f}x the limit)")
    print(f"project {fmeval / project:.1f}x faster than fmeval")
    print(f"robustness_throughput: {project / limit:.2f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
