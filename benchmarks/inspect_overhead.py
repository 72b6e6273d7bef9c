"""Inspect task overhead: the same task through this project's model path vs plain Inspect.

A simulated OpenAI-compatible endpoint (its own process) answers after 50 ms and serves at most
16 requests at once. After a warm-up evaluation, one Inspect task of 400 single-turn samples (a
system message, a question, `generate()`, an `includes()` scorer) runs (a) through the project
(`llmeval/<model>`: the project's client with a fresh response cache, max_concurrency 16) and
(b) through Inspect's own `openai-api` provider at max_connections 16, each run twice in turn,
the faster of each kept. Both must give the same accuracy. On 2 cores both are bound by Inspect's
own work per sample, not by the endpoint. Run with the worker environment:

    PYTHONPATH=plugins .venv-worker/bin/python benchmarks/inspect_overhead.py
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from generate_throughput import endpoint_process

N, LATENCY_S, CAPACITY, TARGET_RATIO = 400, 0.05, 16, 1.1
TASK = """
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate, system_message


@task
def echo(n: int = 10):
    samples = [
        Sample(id=i, input=f"question number {i}?", target=f"number {i}" if i % 2 else "never") for i in range(n)
    ]
    solver = [system_message("Answer briefly."), generate()]
    return Task(dataset=MemoryDataset(samples), solver=solver, scorer=includes())
"""


def through_project(task, url: str, folder: Path, run: int) -> tuple[float, float]:
    from llmeval.config import AlgorithmSection
    from llmeval.contracts import Api
    from llmeval.evaluation import inspect_run
    from llmeval.evaluation.generate import ModelClient, ResponseCache, Target

    target = Target(
        endpoint_name="bench",
        model_identity=f"bench-inspect-{run}",  # a fresh cache identity: every sample is asked
        output_path="",
        content_template=None,
        inference_parameters={"max_tokens": 8},
        max_concurrency=CAPACITY,
        provider="openai_compatible",
        api=Api.MESSAGES,
        model_name="bench",
        base_url=f"{url}/v1",
        api_key="bench-key",
    )
    client = ModelClient(target, "$feature", ResponseCache(folder / f"cache-{run}.sqlite"))
    section = AlgorithmSection.model_validate({"algorithm": "Inspect", "task": "bench_task.py@echo"})
    out = folder / f"project-{run}"
    out.mkdir()
    started = time.perf_counter()
    result, _, answers = inspect_run.run_task(section, task, "bench", client, out, 0.0)
    elapsed = time.perf_counter() - started
    assert len(answers) == N and result.error is None, result
    return elapsed, next(s.value for s in result.scores if s.name == "accuracy")


def through_inspect(task, url: str, folder: Path, run: int) -> tuple[float, float]:
    from inspect_ai import eval as inspect_eval

    os.environ["BENCH_API_KEY"] = "bench-key"
    started = time.perf_counter()
    (log,) = inspect_eval(
        task,
        model="openai-api/bench/bench",
        model_base_url=f"{url}/v1",
        max_tokens=8,
        max_connections=CAPACITY,
        log_dir=str(folder / f"inspect-{run}"),
        display="none",
        log_level="warning",
        score_display=False,
    )
    elapsed = time.perf_counter() - started
    assert log.status == "success" and log.results is not None, log.error
    return elapsed, log.results.scores[0].metrics["accuracy"].value


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    from llmeval.config import AlgorithmSection
    from llmeval.evaluation import inspect_run

    floor = N * LATENCY_S / CAPACITY
    with tempfile.TemporaryDirectory() as tmp, endpoint_process(Path(tmp)) as url:
        folder = Path(tmp)
        (folder / "bench_task.py").write_text(TASK)
        sys.path.insert(0, str(folder))
        section = AlgorithmSection.model_validate(
            {"algorithm": "Inspect", "task": "bench_task.py@echo", "task_args": {"n": N}}
        )
        (task,) = inspect_run.load([(0, section)]).values()
        through_inspect(task, url, folder, -1)  # warm-up: Inspect's first evaluation in a process pays its start
        project, plain = [], []
        for run in range(2):
            project.append(through_project(task, url, folder, run))
            plain.append(through_inspect(task, url, folder, run))
    ours, theirs = min(s for s, _ in project), min(s for s, _ in plain)
    assert {a for _, a in project} == {a for _, a in plain}, (project, plain)  # the same scores
    print(f"{N} samples, endpoint floor {floor:.2f}s (50 ms, {CAPACITY} at once)")
    print(
        f"through the project (llmeval provider, cache, client): {ours:.2f}s  runs {[round(s, 2) for s, _ in project]}"
    )
    print(
        f"plain inspect eval (openai-api provider):             {theirs:.2f}s  runs {[round(s, 2) for s, _ in plain]}"
    )
    print(f"inspect_overhead: {ours / theirs:.2f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
