"""How far a judge agrees with people: human labels of answers (a JSON Lines file per rubric),
matched to the judge's rating of the same answer (same record, same output text), and the
agreement over the matched pairs: exact agreement, quadratic-weighted Cohen's kappa and
Spearman's correlation, each with a bootstrap 95% interval; and a bias diagnostic, the
correlation between the judge's rating and the answer's length. Fewer matched labels than a
rubric's `min_labels` is "not measured", never a number. Pure Python: the DAG's tasks use it.

A label line: {"record_id": "q001", "answer": "Paris" | "answer_sha256": "<hex>", "rating": 4,
"labeller": "ana"}. A preference line (Pairwise): {"record_id": "q001", "answer_a": ... |
"answer_a_sha256": ..., "answer_b": ... | "answer_b_sha256": ..., "winner": "A" | "B" | "tie",
"labeller": "ana"}; a preference is a point on the scale -1 (A better), 0 (a tie), 1 (B better).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LABEL_KEYS = {"record_id", "answer", "answer_sha256", "rating", "labeller", "at", "run_id"}  # at, run_id: a review's
PREFERENCE_KEYS = {"record_id", "answer_a", "answer_a_sha256", "answer_b", "answer_b_sha256", "winner", "labeller"}
PREFERENCE = "preference"  # Pairwise's "rubric": which of two answers is better
PREFERENCE_SCALE = (-1, 0, 1)  # A better, a tie, B better
WINNERS = {"A": -1, "tie": 0, "B": 1}
RESAMPLES = 2000


class LabelError(ValueError):
    """A label file that cannot be used; the message names the file and the line."""


def answer_hash(text: str) -> str:
    """The identity of an answer: the SHA-256 of its text without surrounding whitespace."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Label:
    record_id: str
    answer_sha256: str
    rating: int
    labeller: str


@dataclass(frozen=True)
class Preference:
    """A person's choice between two answers to one record (`winner` on PREFERENCE_SCALE)."""

    record_id: str
    a_sha256: str
    b_sha256: str
    winner: int
    labeller: str


def _rows(shown: str, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) of each non-empty line of a JSON Lines file."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{shown}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise LabelError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise LabelError(f"{where}: expected a JSON object")
        yield where, row


def _check_record(where: str, row: dict[str, Any], records: set[str] | None) -> None:
    if records is not None and str(row["record_id"]) not in records:
        raise LabelError(f"{where}: record_id {row['record_id']!r} is not a record of this run's dataset")


def read_preferences(shown: str, text: str, records: set[str] | None) -> list[Preference]:
    """The human preferences of one file, as `read_labels` reads ratings."""
    found = []
    for where, row in _rows(shown, text):
        unknown = sorted(set(row) - PREFERENCE_KEYS)
        missing = sorted({"record_id", "winner", "labeller"} - set(row))
        sides = [(f"answer_{x}" in row) != (f"answer_{x}_sha256" in row) for x in "ab"]
        if unknown or missing or not all(sides):
            raise LabelError(
                f"{where}: expected record_id, winner, labeller, one of answer_a or answer_a_sha256 and one of "
                "answer_b or answer_b_sha256"
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
                + (f"; missing {', '.join(missing)}" if missing else "")
            )
        if row["winner"] not in WINNERS:
            raise LabelError(f"{where}: winner {row['winner']!r} is not one of A, B, tie")
        _check_record(where, row, records)
        a, b = (row.get(f"answer_{x}_sha256") or answer_hash(str(row[f"answer_{x}"])) for x in "ab")
        found.append(Preference(str(row["record_id"]), str(a), str(b), WINNERS[row["winner"]], str(row["labeller"])))
    return found


def read_labels(shown: str, text: str, scale: Sequence[int], records: set[str] | None) -> list[Label]:
    """The labels of one file (`shown`: its name in errors); `records`: the run's record ids
    (None: not checked, as when the config loads)."""
    labels = []
    for where, row in _rows(shown, text):
        unknown = sorted(set(row) - LABEL_KEYS)
        missing = sorted({"record_id", "rating", "labeller"} - set(row))
        if unknown or missing or ("answer" in row) == ("answer_sha256" in row):
            raise LabelError(
                f"{where}: expected record_id, rating, labeller and one of answer or answer_sha256"
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
                + (f"; missing {', '.join(missing)}" if missing else "")
            )
        rating = row["rating"]
        if isinstance(rating, bool) or not isinstance(rating, int) or rating not in scale:
            raise LabelError(f"{where}: rating {rating!r} is not on the rubric's scale {list(scale)}")
        _check_record(where, row, records)
        digest = row.get("answer_sha256") or answer_hash(str(row["answer"]))
        labels.append(Label(str(row["record_id"]), str(digest), rating, str(row["labeller"])))
    return labels


def quadratic_kappa(pairs: Sequence[tuple[int, int]], scale: Sequence[int]) -> float | None:
    """Cohen's kappa with quadratic weights over (judge, person) ratings; None when undefined
    (both raters gave one single rating)."""
    index = {r: i for i, r in enumerate(scale)}
    k, n = len(scale), len(pairs)
    if not n:
        return None
    judged, labelled = [0] * k, [0] * k
    observed = 0.0
    for a, b in pairs:
        judged[index[a]] += 1
        labelled[index[b]] += 1
        observed += (index[a] - index[b]) ** 2
    expected = sum(judged[i] * labelled[j] * (i - j) ** 2 for i in range(k) for j in range(k)) / n
    return None if expected == 0 else 1.0 - observed / expected


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):  # ties share their mean rank
            ranks[order[m]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(pairs: Sequence[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation; None when either side is constant."""
    if len(pairs) < 2:
        return None
    x, y = _ranks([a for a, _ in pairs]), _ranks([b for _, b in pairs])
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def exact(pairs: Sequence[tuple[int, int]]) -> float | None:
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def with_interval(
    statistic: Callable[[Sequence[Any]], float | None], pairs: Sequence[Any], seed: int = 0
) -> list[float | None]:
    """[value, low, high]: the statistic and its percentile-bootstrap 95% interval (resamples
    where it is undefined are left out; none defined: no interval)."""
    value = statistic(pairs)
    rng = random.Random(seed)
    found = sorted(v for _ in range(RESAMPLES) if (v := statistic(rng.choices(pairs, k=len(pairs)))) is not None)
    if value is None or not found:
        return [None if value is None else round(value, 4), None, None]
    low, high = found[int(0.025 * len(found))], found[max(0, math.ceil(0.975 * len(found)) - 1)]
    return [round(value, 4), round(low, 4), round(high, 4)]


@dataclass
class Agreement:
    """One judge's agreement with people on one rubric in one run."""

    judge: str
    rubric: str
    labels: int  # labelled answers the judge rated in this run
    min_labels: int
    min_agreement: float | None
    exact_agreement: list[float | None] = field(default_factory=list)  # [value, low, high]
    kappa: list[float | None] = field(default_factory=list)
    spearman: list[float | None] = field(default_factory=list)
    length_bias: float | None = None  # Spearman of the judge's rating and the answer's length
    trusted: bool = True
    reason: str = ""
    algorithm: str = "LLMJudge"  # or Pairwise: the rubric is "preference", people's choices between two answers

    @property
    def metrics(self) -> str:
        """The scores this agreement vouches for: `LLMJudge/<rubric>`, or every `Pairwise/` score."""
        return f"LLMJudge/{self.rubric}" if self.algorithm == "LLMJudge" else "Pairwise/*"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    judge: str,
    rubric: str,
    scale: Sequence[int],
    pairs: list[tuple[int, int]],
    rated_lengths: list[tuple[float, int]],
    min_labels: int,
    min_agreement: float | None,
    algorithm: str = "LLMJudge",
) -> Agreement:
    """The agreement over (judge rating, person's rating) pairs; `rated_lengths`: (rating,
    answer length) of every answer the judge rated. A rubric with `min_agreement` is trusted
    only when the kappa's lower bound reaches it."""
    found = Agreement(judge, rubric, len(pairs), min_labels, min_agreement, algorithm=algorithm)
    found.length_bias = None if (bias := spearman(rated_lengths)) is None else round(bias, 4)
    if len(pairs) < min_labels:
        found.reason = f"not measured (n = {len(pairs)} < {min_labels} labelled answers)"
        return found
    found.exact_agreement = with_interval(exact, pairs)
    found.kappa = with_interval(lambda p: quadratic_kappa(p, scale), pairs)
    found.spearman = with_interval(spearman, pairs)
    low = found.kappa[1]
    if min_agreement is not None and (low is None or low < min_agreement):
        found.trusted = False
        shown = "undefined" if found.kappa[0] is None else f"{found.kappa[0]:.2f} [{low}, {found.kappa[2]}]"
        found.reason = (
            f"kappa {shown} with people on {len(pairs)} answers: its lower bound is below min_agreement "
            f"{min_agreement}, so {found.metrics} is left out of selection and the gate in this run"
        )
    return found
