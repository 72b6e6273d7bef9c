"""The one result schema: written by the evaluation entry point, read by selection,
registry and report. Plain dataclasses and JSON, so it imports in every environment
(Airflow, worker, Processing container) without Airflow or fmeval.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmeval.store import FAILURE, RESULTS

SCHEMA_VERSION = 1


@dataclass
class Score:
    """One dataset-level (or category-level) score with its bootstrap 95% interval."""

    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    count: int = 0


@dataclass
class AlgorithmResult:
    algorithm: str
    scores: list[Score]
    category_scores: dict[str, list[Score]] = field(default_factory=dict)
    records_location: str = ""
    error: str | None = None

    def score(self, name: str) -> Score | None:
        return next((s for s in self.scores if s.name == name), None)


@dataclass
class GenerationStats:
    records_total: int = 0
    records_evaluated: int = 0
    records_failed: int = 0
    cache_hits: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    input_tokens_total: int = 0
    output_tokens_total: int = 0
    wall_seconds: float = 0.0
    retries: int = 0  # requests sent again after throttling or a transient error

    @property
    def output_tokens_mean(self) -> float | None:
        return self.output_tokens_total / self.records_evaluated if self.records_evaluated else None

    @property
    def failure_rate(self) -> float | None:
        return self.records_failed / self.records_total if self.records_total else None


@dataclass
class ModelResult:
    """Everything one model's evaluation produced, or why it has nothing."""

    model: str
    status: str  # "succeeded" | "failed"
    algorithms: list[AlgorithmResult] = field(default_factory=list)
    generation: GenerationStats = field(default_factory=GenerationStats)
    outputs_location: str = ""
    failed_step: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def metric(self, metric: str) -> float | None:
        """Value of '<Algorithm>/<score>' or 'generation/<figure>'."""
        score = self.scores_by_metric().get(metric)
        return score.value if score else None

    def scores_by_metric(self) -> dict[str, Score]:
        """Every dataset score as '<Algorithm>/<score>', plus the generation figures."""
        found = {f"{a.algorithm}/{s.name}": s for a in self.algorithms for s in a.scores if s.value is not None}
        for figure in ("latency_p50_ms", "latency_p95_ms", "output_tokens_mean", "failure_rate"):
            value = getattr(self.generation, figure)
            if value is not None:
                found[f"generation/{figure}"] = Score(figure, float(value), count=self.generation.records_total)
        return found

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResult:
        algos = [
            AlgorithmResult(
                algorithm=a["algorithm"],
                scores=[Score(**s) for s in a["scores"]],
                category_scores={k: [Score(**s) for s in v] for k, v in a.get("category_scores", {}).items()},
                records_location=a.get("records_location", ""),
                error=a.get("error"),
            )
            for a in data.get("algorithms", [])
        ]
        known = {k: v for k, v in data.items() if k not in ("algorithms", "generation")}
        return cls(algorithms=algos, generation=GenerationStats(**data.get("generation", {})), **known)


def write_json_atomic(path: Path, text: str) -> None:
    """Write a local file aside, then rename it: readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_result(model_dir: Path, result: ModelResult) -> Path:
    path = model_dir / RESULTS
    write_json_atomic(path, result.to_json())
    return path


def read_model_result(model_dir: Any, model: str) -> ModelResult:
    """The model's result in a folder (local or in the run store); a failed result when it
    has none (naming the step if a failure was recorded)."""
    results = model_dir / RESULTS
    failure = model_dir / FAILURE
    if results.exists():
        return ModelResult.from_dict(json.loads(results.read_text(encoding="utf-8")))
    if failure.exists():
        info = json.loads(failure.read_text(encoding="utf-8"))
        return ModelResult(model=model, status="failed", failed_step=info["step"], error=info["error"])
    return ModelResult(model=model, status="failed", failed_step="unknown", error="no result was written")
