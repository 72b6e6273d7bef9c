"""LLM-as-judge throughput and the cost of pairwise comparison, against a simulated judge.

The judge is the simulated endpoint of `generate_throughput` (its own process, 50 ms per
answer, at most 16 at once), answering with a rating and a winner that follow the prompt.
LLMJudge rates 1,000 answers by one rubric: that cannot take less than 1,000 x 0.05 / 16
= 3.1 s, and the verdict is the time over that limit. Pairwise then compares 4 models on
50 records, each against the champion, with an in-process judge that counts its requests:
exactly 2 calls (both orders) per pair and record, no prompt asked twice, and nothing asked
on a re-run. Run with the worker environment:

    PYTHONPATH=plugins .venv-worker/bin/python benchmarks/judge_throughput.py
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from generate_throughput import CAPACITY, LATENCY_S, bench_target, endpoint_process

N, PAIR_RECORDS, TARGET_RATIO = 1000, 50, 1.3
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def judged(cache: Path, url: str) -> float:
    """Seconds for LLMJudge over N answers."""
    from llmeval.config import AlgorithmSection
    from llmeval.evaluation.generate import ModelClient, ResponseCache
    from llmeval.evaluation.judge import judge_scorer

    section = AlgorithmSection.model_validate({"algorithm": "LLMJudge", "judge": "judge", "rubrics": ["correctness"]})
    records = [
        {"record_id": str(i), "model_input": f"question {i}?", "target_output": f"a{i}", "model_output": f"answer {i}"}
        for i in range(N)
    ]
    client = ModelClient(bench_target(url), "$feature", ResponseCache(cache))
    started = time.perf_counter()
    per_record, unparseable = judge_scorer(section, {"judge": client})(records)
    elapsed = time.perf_counter() - started
    assert all(scores["correctness"] is not None for scores in per_record), "a rating was lost"
    assert unparseable == {"correctness_unparseable": 0.0}
    return elapsed


def pairwise_calls(cache: Path) -> tuple[int, int, int]:
    """(judge calls, calls on a re-run, the most times one prompt was asked) for 4 models on
    PAIR_RECORDS records, each candidate against the champion."""
    from latency_server import LatencyServer, judge_reply
    from llmeval.config import AlgorithmSection
    from llmeval.evaluation.generate import ModelClient, ResponseCache
    from llmeval.evaluation.pairwise import compare

    section = AlgorithmSection.model_validate({"algorithm": "Pairwise", "judge": "judge", "champion": "m0"})
    answers = {
        f"m{m}": {
            f"r{i}": {"model_input": f"question {i}?", "target_output": f"a{i}", "model_output": f"m{m} says {i}"}
            for i in range(PAIR_RECORDS)
        }
        for m in range(4)
    }
    with LatencyServer(latency_s=0.001, capacity=CAPACITY, reply=judge_reply) as server:
        calls = []
        for _ in range(2):
            store = ResponseCache(cache)
            compare(section, answers, ModelClient(bench_target(server.url), "$feature", store))
            store.close()
            calls.append(server.requests)
        return calls[0], calls[1] - calls[0], max(server.answered.values())


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.basicConfig(level=logging.WARNING)
    limit = N * LATENCY_S / CAPACITY
    with tempfile.TemporaryDirectory() as tmp:
        with endpoint_process(Path(tmp), "--judge") as url:
            seconds = judged(Path(tmp) / "judge.sqlite", url)
        calls, again, most = pairwise_calls(Path(tmp) / "pairwise.sqlite")
    expected = 3 * PAIR_RECORDS * 2
    print(f"LLMJudge: {N} answers, judge latency {LATENCY_S * 1000:.0f} ms, capacity {CAPACITY} concurrent requests")
    print(f"capacity limit:        {limit:.2f} s")
    print(f"LLMJudge:              {seconds:.2f} s ({seconds / limit:.2f}x the limit)")
    print(f"pairwise judge calls:  {calls} for 3 pairs x {PAIR_RECORDS} records (expected {expected}: 2 per record)")
    print(f"pairwise re-run calls: {again}; most asks of one prompt: {most}")
    assert calls == expected and again == 0 and most == 1, (
        "pairwise asked the judge more than twice per pair and record"
    )
    print(f"judge_throughput: {seconds / limit:.2f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
