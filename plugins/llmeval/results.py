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

from llmeval.store import FAILURE, PAIRWISE, RESULTS, USAGE, model_folder, write_text

SCHEMA_VERSION = 1
COST_METRICS = ("usd", "endpoint_seconds")  # 'cost/<figure>' in selection and the gate (lower is better)
UNPARSEABLE = "_unparseable"  # '<rubric>_unparseable': a judge's answers without a rating (a count)
MISSING = "_missing"  # '<score>_missing': records whose score was not a number (NaN), left out (a count)
COUNT_SUFFIXES = (UNPARSEABLE, MISSING)  # scores that count records: shown as counts, never charted as scores
WIN_SHARE = "win_share_vs_champion"  # Pairwise: wins over every record compared with the champion
# 'generation/<figure>' in selection and the gate: attributes of GenerationStats
GENERATION_METRICS = ("latency_p50_ms", "latency_p95_ms", "output_tokens_mean", "failure_rate")


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
class ResourceUsage:
    """One billed resource of a model: its endpoint (or local model server), its Processing
    job or its training job, from the API's timestamps, priced per instance-hour."""

    resource: str  # "endpoint", "processing job", "training job", "local model server", "tokens"
    name: str
    instance_type: str
    instance_count: int
    started: str  # ISO 8601, UTC
    ended: str
    seconds: float
    usd_per_hour: float | None  # None: no price known for the instance type
    usd: float | None


TOKENS = "tokens"  # the resource of a model billed by the token: its answers that were not cached


def token_usage(
    model_id: str,
    tokens_in: int,
    tokens_out: int,
    usd_in: float,
    usd_out: float,
    seconds: float,
    started: str,
    ended: str,
) -> ResourceUsage:
    """What a model billed by the token cost for the answers it gave (USD per million tokens)."""
    usd = round((tokens_in * usd_in + tokens_out * usd_out) / 1e6, 6)
    return ResourceUsage(TOKENS, model_id, f"{tokens_in} in / {tokens_out} out", 1, started, ended, seconds, None, usd)


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
    usage: list[ResourceUsage] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def cost_usd(self) -> float | None:
        """What the model's resources cost; None when one of them has no price (or none was used)."""
        prices = [u.usd for u in self.usage]
        priced = [p for p in prices if p is not None]
        return None if not prices or len(priced) < len(prices) else round(sum(priced), 6)

    @property
    def endpoint_seconds(self) -> float | None:
        """How long the model's endpoints (or local servers) were alive."""
        alive = [u.seconds for u in self.usage if u.resource in ("endpoint", "local model server")]
        return round(sum(alive), 3) if alive else None

    def metric(self, metric: str) -> float | None:
        """Value of '<Algorithm>/<score>', 'generation/<figure>' or 'cost/<figure>'."""
        score = self.scores_by_metric().get(metric)
        return score.value if score else None

    def scores_by_metric(self) -> dict[str, Score]:
        """Every dataset score as '<Algorithm>/<score>', plus the generation and cost figures."""
        found = {f"{a.algorithm}/{s.name}": s for a in self.algorithms for s in a.scores if s.value is not None}
        for figure in GENERATION_METRICS:
            value = getattr(self.generation, figure)
            if value is not None:
                found[f"generation/{figure}"] = Score(figure, float(value), count=self.generation.records_total)
        for figure, value in {"usd": self.cost_usd, "endpoint_seconds": self.endpoint_seconds}.items():
            if value is not None:
                found[f"cost/{figure}"] = Score(figure, float(value), count=len(self.usage))
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
        known = {k: v for k, v in data.items() if k not in ("algorithms", "generation", "usage")}
        return cls(
            algorithms=algos,
            generation=GenerationStats(**data.get("generation", {})),
            usage=[ResourceUsage(**u) for u in data.get("usage", [])],
            **known,
        )


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


def read_usage(model_dir: Any) -> list[ResourceUsage]:
    """What a model's resources were billed for, as recorded so far (usage.json)."""
    path = model_dir / USAGE
    return [ResourceUsage(**u) for u in json.loads(path.read_text(encoding="utf-8"))] if path.exists() else []


def record_usage(model_dir: Any, items: list[ResourceUsage]) -> list[ResourceUsage]:
    """Keep what a model's resources were billed for in its usage.json (a resource measured
    again replaces its earlier entry), and in its results.json when it has one; return all
    of it. With no items: put what was recorded into a results.json written since."""
    replaced = {(u.resource, u.name) for u in items}
    usage = [u for u in read_usage(model_dir) if (u.resource, u.name) not in replaced] + items
    if not usage:
        return usage
    if items:
        write_text(model_dir / USAGE, json.dumps([asdict(u) for u in usage], indent=2))
    results = model_dir / RESULTS
    if results.exists():
        result = ModelResult.from_dict(json.loads(results.read_text(encoding="utf-8")))
        result.usage = usage
        write_text(results, result.to_json())
    return usage


def pairwise_result(document: dict[str, Any], model: str) -> AlgorithmResult | None:
    """A model's `Pairwise` scores from the run's pairwise document: its win rate against the
    champion (wins plus half the ties, over the records with a verdict; the champion's own is
    0.5), the rates of wins, ties and losses, its win share (wins over every record compared,
    unparseable verdicts included) and its Bradley-Terry strength (none without a decided
    comparison). None for a model that was not compared."""
    strengths = {row["model"]: row["strength"] for row in document["bradley_terry"]}
    if model not in strengths:
        return None
    scores = []
    if model == document["champion"]:
        scores.append(Score("win_rate_vs_champion", 0.5, 0.5, 0.5))
    elif model in document["versus_champion"]:
        versus = document["versus_champion"][model]
        for name in ("win_rate_vs_champion", "wins_vs_champion", "ties_vs_champion", "losses_vs_champion", WIN_SHARE):
            if name not in versus:  # a document written before the share was reported
                continue
            value, low, high = versus[name]
            counted = versus["compared_vs_champion"] if name == WIN_SHARE else versus["records_vs_champion"]
            scores.append(Score(name, value, low, high, count=counted))
    scores.append(Score("bradley_terry", strengths[model]))
    return AlgorithmResult("Pairwise", scores)


def read_model_result(model_dir: Any, model: str) -> ModelResult:
    """The model's result in a folder (local or in the run store), with what its resources
    cost; a failed result when it has none (naming the step if a failure was recorded)."""
    results = model_dir / RESULTS
    failure = model_dir / FAILURE
    if results.exists():
        result = ModelResult.from_dict(json.loads(results.read_text(encoding="utf-8")))
    elif failure.exists():
        info = json.loads(failure.read_text(encoding="utf-8"))
        result = ModelResult(model=model, status="failed", failed_step=info["step"], error=info["error"])
    else:
        result = ModelResult(model=model, status="failed", failed_step="unknown", error="no result was written")
    result.usage = read_usage(model_dir) or result.usage
    return result


def model_result(run_folder: Any, model: str, summary: dict[str, Any] | None) -> ModelResult:
    """A model's result in a run: the summary its evaluation handed on, else what the store
    says (the failure a step recorded, or that nothing was written); with what its resources
    cost (recorded in the store until its teardown) and its pairwise scores (pairwise.json)."""
    folder = model_folder(run_folder, model)
    if not summary:
        result = read_model_result(folder, model)
    else:
        result = ModelResult.from_dict(summary)
        result.usage = read_usage(folder) or result.usage
    pairwise = run_folder / PAIRWISE
    compared = pairwise_result(json.loads(pairwise.read_text()), model) if pairwise.exists() else None
    if compared and result.succeeded:
        result.algorithms.append(compared)
    return result
