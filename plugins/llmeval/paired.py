"""Paired significance: two models scored on the same records, compared record by record.

Each model's 95% interval carries the spread between records (easy and hard questions),
which both models share. The difference on each record cancels it, so a paired test sees
an improvement that two overlapping intervals hide. Records are matched by `record_id`.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from llmeval import store
from llmeval.dataset import read_jsonl

METHOD = "paired sign-flip test"
RESAMPLES = 4000
EXACT_UP_TO = 12  # records: every sign assignment is enumerated (2**12 = 4096), else RESAMPLES random ones
MIN_MATCHED = 10
MAX_UNMATCHED = 0.2


@dataclass
class PairedTest:
    """`mean_delta` is candidate minus reference, signed so that positive is better, with a
    paired-bootstrap 95% interval; `p_value` is one-sided, from a sign-flip (randomisation)
    test: under no difference each record's delta is as likely negative as positive, so the
    share of sign assignments whose mean is at least the observed one is the p-value (exact
    for up to 12 records, Monte Carlo with the observed assignment counted beyond that). Its
    size is at most the level for any sample size. None with `refused` saying why when too few
    records pair up."""

    metric: str
    matched: int
    only_candidate: int
    only_reference: int
    mean_delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    method: str = METHOD
    refused: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mismatch(self) -> str:
        """Why the records do not pair up (or too few do), or '' when every record has a partner."""
        if self.refused:
            return self.refused
        if self.only_candidate or self.only_reference:
            return (
                f"{self.only_candidate} record(s) only the candidate and {self.only_reference} only the "
                f"reference answered: compared on the {self.matched} both did"
            )
        return ""


def score_of(row: dict[str, Any], metric: str) -> float | None:
    """A scored record's score on `metric` ("Algorithm/score", "Inspect/<task>/<metric>"), or None
    when it has none (a NaN is no score either)."""
    algorithm, _, name = metric.rpartition("/")
    value = (row.get("scores") or {}).get(algorithm, {}).get(name)
    return None if value is None or math.isnan(float(value)) else float(value)


def record_scores(rows: list[dict[str, Any]], metric: str, model: str = "the model") -> dict[str, float]:
    """record_id -> the record's score on `metric`, for scored records; a record id twice is an
    error naming the model and the id."""
    found: dict[str, float] = {}
    seen: set[str] = set()
    for row in rows:
        if row.get("record_id") is None:
            continue
        rid = str(row["record_id"])
        if rid in seen:
            raise ValueError(f"{model}: record_id {rid!r} appears twice in its scored records")
        seen.add(rid)
        if (value := score_of(row, metric)) is not None:
            found[rid] = value
    return found


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
    min_matched: int = MIN_MATCHED,
    max_unmatched: float = MAX_UNMATCHED,
) -> PairedTest:
    """The mean per-record difference, its paired-bootstrap 95% interval and the one-sided
    sign-flip p-value; refused (no p-value) when fewer than `min_matched` records pair up or
    more than `max_unmatched` of all the records have no partner."""
    common = sorted(candidate.keys() & reference.keys())
    test = PairedTest(
        metric, len(common), len(candidate.keys() - reference.keys()), len(reference.keys() - candidate.keys())
    )
    unmatched = (test.only_candidate + test.only_reference) / max(1, len(candidate.keys() | reference.keys()))
    if not common:
        test.refused = "no record ids in common"
    elif len(common) < min_matched:
        test.refused = f"only {len(common)} record(s) pair up, fewer than the {min_matched} the test needs"
    elif unmatched > max_unmatched:
        test.refused = (
            f"{unmatched:.0%} of the records have no partner ({test.only_candidate} only the candidate's, "
            f"{test.only_reference} only the reference's), more than {max_unmatched:.0%}"
        )
    if test.refused:
        return test
    sign = 1.0 if higher_is_better else -1.0
    deltas = [sign * (candidate[k] - reference[k]) for k in common]
    rng = random.Random(seed)
    n = len(deltas)
    means = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(resamples))
    test.mean_delta = sum(deltas) / n
    test.ci_low, test.ci_high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    test.p_value = sign_flip_p(deltas, resamples, rng)
    return test


def sign_flip_p(deltas: list[float], resamples: int, rng: random.Random) -> float:
    """One-sided p-value of a mean above zero: the share of sign assignments to |delta| whose
    sum is at least the observed sum (every assignment for few records, else random ones with
    the observed one counted, so the test never rejects more often than its level)."""
    sizes = [abs(d) for d in deltas]
    n, total = len(sizes), sum(sizes)
    # an assignment's sum is 2 * (the sizes given +) - total: compare that half-sum, looked up 8 records at a time
    needed = (sum(deltas) + total) / 2 - 1e-12 * max(1.0, total)  # ties with the observed sum count as reaching it
    tables = [_subset_sums(sizes[i : i + 8]) for i in range(0, n, 8)]

    def half_sum(bits: int) -> float:
        found = 0.0
        for table in tables:
            found += table[bits & 255]
            bits >>= 8
        return found

    if n <= EXACT_UP_TO:
        return sum(1 for bits in range(2**n) if half_sum(bits) >= needed) / 2**n
    reached = sum(1 for _ in range(resamples) if half_sum(rng.getrandbits(n)) >= needed)
    return (1 + reached) / (1 + resamples)


def _subset_sums(sizes: list[float]) -> list[float]:
    """The sum of the sizes each bit pattern picks (bit i: sizes[i])."""
    table = [0.0] * (1 << len(sizes))
    for bits in range(1, len(table)):
        lowest = bits & -bits
        table[bits] = table[bits ^ lowest] + sizes[lowest.bit_length() - 1]
    return table
