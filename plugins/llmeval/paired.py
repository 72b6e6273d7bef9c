"""Paired significance: two models scored on the same records, compared record by record.

Each model's 95% interval carries the spread between records (easy and hard questions),
which both models share. The difference on each record cancels it, so a paired test sees
an improvement that two overlapping intervals hide. Records are matched by `record_id`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from llmeval import store
from llmeval.dataset import read_jsonl

METHOD = "paired bootstrap"
RESAMPLES = 4000


@dataclass
class PairedTest:
    """`mean_delta` is candidate minus reference, signed so that positive is better; `p_value`
    is one-sided: how often the resampled mean improvement is not above zero."""

    metric: str
    matched: int
    only_candidate: int
    only_reference: int
    mean_delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    method: str = METHOD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mismatch(self) -> str:
        """Why the records do not pair up, or '' when every record has a partner."""
        if not self.matched:
            return "no record ids in common"
        if self.only_candidate or self.only_reference:
            return (
                f"{self.only_candidate} record(s) only the candidate and {self.only_reference} only the "
                f"reference answered: compared on the {self.matched} both did"
            )
        return ""


def score_of(row: dict[str, Any], metric: str) -> float | None:
    """A scored record's score on `metric` ("Algorithm/score"), or None when it has none."""
    algorithm, _, name = metric.partition("/")
    value = (row.get("scores") or {}).get(algorithm, {}).get(name)
    return None if value is None else float(value)


def record_scores(rows: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """record_id -> the record's score on `metric`, for scored records."""
    return {
        str(row["record_id"]): value
        for row in rows
        if row.get("record_id") is not None and (value := score_of(row, metric)) is not None
    }


def read_records(model_folder: Any) -> list[dict[str, Any]] | None:
    """A model's scored records from the run store, or None when it has none."""
    path = model_folder / store.RECORDS
    return read_jsonl(path) if path.exists() else None


def paired_test(
    metric: str,
    candidate: dict[str, float],
    reference: dict[str, float],
    higher_is_better: bool = True,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap of the mean per-record difference (95% interval, one-sided p-value)."""
    common = sorted(candidate.keys() & reference.keys())
    test = PairedTest(
        metric, len(common), len(candidate.keys() - reference.keys()), len(reference.keys() - candidate.keys())
    )
    if not common:
        return test
    sign = 1.0 if higher_is_better else -1.0
    deltas = [sign * (candidate[k] - reference[k]) for k in common]
    rng = random.Random(seed)
    n = len(deltas)
    means = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(resamples))
    test.mean_delta = sum(deltas) / n
    test.ci_low, test.ci_high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    test.p_value = sum(1 for m in means if m <= 0) / resamples
    return test
