"""Builders for results used by several test modules."""

from __future__ import annotations

from llmeval.evaluation.generate import ModelClient, generate_with
from llmeval.results import AlgorithmResult, GenerationStats, ModelResult, Score


def generate(records, target, prompt_template, cache, invoker=None) -> list[dict]:
    """The generate stage over `records` with a fresh client (what the entry point does)."""
    return generate_with(ModelClient(target, prompt_template, cache, invoker), records)


def records(n: int, stem: str = "question") -> list[dict]:
    """Prepared dataset records `<stem> <i>` with ids 0..n-1."""
    return [{"record_id": str(i), "model_input": f"{stem} {i}", "target_output": "x"} for i in range(n)]


def result(model: str, fk: float | None = 0.5, sim: float | None = 0.6, p95: float = 100.0) -> ModelResult:
    algos = []
    if fk is not None:
        algos.append(AlgorithmResult("FactualKnowledge", [Score("factual_knowledge", fk, fk - 0.1, fk + 0.1, 40)]))
    if sim is not None:
        algos.append(
            AlgorithmResult("SemanticSimilarity", [Score("semantic_similarity", sim, sim - 0.05, sim + 0.05, 40)])
        )
    return ModelResult(
        model,
        "succeeded",
        algos,
        GenerationStats(
            records_total=40,
            records_evaluated=40,
            latency_p50_ms=50.0,
            latency_p95_ms=p95,
            input_tokens_total=400,
            output_tokens_total=800,
            wall_seconds=3.0,
        ),
    )


def failed(model: str, step: str = "evaluate", error: str = "boom") -> ModelResult:
    return ModelResult(model, "failed", failed_step=step, error=error)
