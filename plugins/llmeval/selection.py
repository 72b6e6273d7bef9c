"""Select the best model by a multi-metric policy.

Each metric is normalised across the eligible candidates (min-max, flipped when lower
is better), weighted and summed. A candidate is eligible when it succeeded, has every
metric, and meets every threshold. Ties break on the first metric's raw value, then on
the model name, so the choice is deterministic. With no metrics configured, the seed's
rule applies: the first score of the first algorithm, higher is better.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from llmeval.config import EvalConfig, GateRule, MetricRule
from llmeval.paired import METHOD, PairedTest, paired_test, record_scores
from llmeval.results import WIN_SHARE, ModelResult, Score


@dataclass
class Candidate:
    model: str
    status: str  # "selected" | "eligible" | "below threshold" | "missing metric" | "failed"
    metrics: dict[str, float | None] = field(default_factory=dict)
    composite: float | None = None
    reason: str = ""


@dataclass
class Selection:
    best: str | None
    rules: list[dict[str, Any]]
    ranking: list[Candidate]
    excluded: dict[str, str] = field(default_factory=dict)  # metric -> why this run left it out (untrusted judge)

    def to_dict(self) -> dict[str, Any]:
        ranking = [asdict(c) for c in self.ranking]
        return {"best": self.best, "rules": self.rules, "ranking": ranking, "excluded": self.excluded}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        candidates = [Candidate(**c) for c in data["ranking"]]
        return cls(data["best"], data["rules"], candidates, data.get("excluded", {}))


def is_excluded(metric: str, excluded: dict[str, str]) -> bool:
    """Whether a run left `metric` out: named, or its algorithm's every score (`Pairwise/*`)."""
    return metric in excluded or f"{metric.split('/', 1)[0]}/*" in excluded


def effective_rules(
    cfg: EvalConfig, results: list[ModelResult], excluded: dict[str, str] | None = None
) -> list[MetricRule]:
    """The config's selection metrics, less those `excluded`; with none configured, the first
    score of the first algorithm (the first one not excluded)."""
    left_out = excluded or {}
    if cfg.selection.metrics:
        return [r for r in cfg.selection.metrics if not is_excluded(r.metric, left_out)]
    for section in cfg.algorithms:
        scored = (a for r in results for a in r.algorithms if a.algorithm == section.name and a.scores)
        first = next((f"{a.algorithm}/{a.scores[0].name}" for a in scored), None)
        if first is None or not is_excluded(first, left_out):
            return [MetricRule(metric=first)] if first else []
    return []


def _known(value: float | None) -> float:
    """A metric of an eligible candidate (eligible means every rule's metric has a value)."""
    if value is None:
        raise ValueError("an eligible candidate lacks a metric value")
    return value


def _meets(rule: MetricRule, value: float) -> bool:
    if rule.threshold is None:
        return True
    return value >= rule.threshold if rule.direction == "higher" else value <= rule.threshold


def select(cfg: EvalConfig, results: list[ModelResult], excluded: dict[str, str] | None = None) -> Selection:
    """Rank the results by the selection rules (`excluded`: metrics this run leaves out, with why)."""
    rules = effective_rules(cfg, results, excluded)
    candidates: list[Candidate] = []
    for result in results:
        metrics = {r.metric: result.metric(r.metric) for r in rules}
        cand = Candidate(result.model, "eligible", metrics)
        if not result.succeeded:
            cand.status = "failed"
            cand.reason = f"{result.failed_step or 'evaluation'} failed: {result.error or 'no detail'}"
        elif not rules or any(v is None for v in metrics.values()):
            cand.status = "missing metric"
            missing = [m for m, v in metrics.items() if v is None] or ["(no scores)"]
            cand.reason = f"no value for {', '.join(missing)}"
        else:
            misses = [r for r in rules if not _meets(r, _known(metrics[r.metric]))]
            if misses:
                cand.status = "below threshold"
                cand.reason = "; ".join(
                    f"{r.metric}={metrics[r.metric]:.4g} {'<' if r.direction == 'higher' else '>'} {r.threshold}"
                    for r in misses
                )
        candidates.append(cand)

    eligible = [c for c in candidates if c.status == "eligible"]
    total_weight = sum(r.weight for r in rules) or 1.0
    for cand in eligible:
        composite = 0.0
        for rule in rules:
            values = [_known(c.metrics[rule.metric]) for c in eligible]
            low, high = min(values), max(values)
            norm = 1.0 if high == low else (_known(cand.metrics[rule.metric]) - low) / (high - low)
            composite += rule.weight * (norm if rule.direction == "higher" else 1.0 - norm)
        cand.composite = round(composite / total_weight, 6)

    def order(c: Candidate) -> tuple[Any, ...]:
        if c.composite is None:
            return (1, 0.0, 0.0, c.model)
        first = _known(c.metrics[rules[0].metric]) * (1 if rules[0].direction == "higher" else -1)
        return (0, -c.composite, -first, c.model)

    candidates.sort(key=order)
    best = eligible and candidates[0]
    if best:
        best.status = "selected"
        best.reason = f"highest composite score {best.composite:.3f} over {len(eligible)} eligible model(s)"
    return Selection(best.model if best else None, [r.model_dump() for r in rules], candidates, dict(excluded or {}))


@dataclass
class GateDecision:
    passed: bool
    reason: str
    champion: str | None = None
    comparisons: list[dict[str, Any]] = field(default_factory=list)


def _compare(rule: GateRule, scores: dict[str, Score], theirs: Score, paired: PairedTest | None) -> dict[str, Any]:
    mine = scores[rule.metric]
    sign = 1 if rule.direction == "higher" else -1
    delta = sign * (_known(mine.value) - _known(theirs.value))
    # a champion at 0 has no relative scale: any improvement is infinitely large, any loss infinitely bad
    relative = delta / abs(theirs.value) if theirs.value else math.copysign(math.inf, delta) if delta else 0.0
    checks = {"min_delta": delta >= rule.min_delta, "min_relative": relative >= rule.min_relative}
    if not rule.allow_equal and rule.min_delta == 0 and rule.min_relative == 0:
        checks["improves"] = delta > 0  # equal to the champion is not an improvement
    if rule.min_win_share is not None:
        share = scores.get(f"Pairwise/{WIN_SHARE}")
        checks["min_win_share"] = share is not None and _known(share.value) >= rule.min_win_share
    if rule.require_ci_separation:
        low, high, their_low, their_high = mine.ci_low, mine.ci_high, theirs.ci_low, theirs.ci_high
        if low is None or high is None or their_low is None or their_high is None:
            checks["ci_separation"] = False
        elif rule.direction == "higher":
            checks["ci_separation"] = low > their_high
        else:
            checks["ci_separation"] = high < their_low
    if rule.significance is not None:
        p_value = paired.p_value if paired else None
        checks["paired_significance"] = p_value is not None and p_value <= rule.significance
    return {
        "metric": rule.metric,
        "candidate": mine.value,
        "champion": theirs.value,
        "delta": round(delta, 6),
        "relative": round(relative, 6) if math.isfinite(relative) else None,
        "checks": checks,
        "passed": all(checks.values()),
        **({"paired": _paired_summary(paired)} if rule.significance is not None else {}),
    }


def _paired_summary(paired: PairedTest | None) -> dict[str, Any]:
    if paired is None:
        return {"method": METHOD, "p_value": None, "note": "no per-record scores of both models to pair"}
    return paired.to_dict() | {"note": paired.mismatch()}


def _paired_text(paired: dict[str, Any]) -> str:
    if paired["p_value"] is None:
        return f" ({paired['method']}: {paired['note']})"
    return f" ({paired['method']} over {paired['matched']} records: p={paired['p_value']:.3g})"


def champion_gate(
    rules: list[GateRule],
    candidate: ModelResult,
    champion: str | None,
    champion_scores: dict[str, Score] | None,
    records: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
) -> GateDecision:
    """Does the candidate beat the champion by the configured margins (same catalog version)?
    `records`: the candidate's and the champion's scored records, for rules with a significance."""
    if not rules:
        return GateDecision(True, "no champion gate configured")
    if champion is None:
        return GateDecision(True, "no approved champion yet: the first approved version sets the bar")
    if champion_scores is None:
        return GateDecision(
            True, f"champion {champion} has no scores on this catalog version: gate not applied", champion
        )
    mine = candidate.scores_by_metric()
    comparisons: list[dict[str, Any]] = []
    for rule in rules:
        if rule.metric not in mine or rule.metric not in champion_scores:
            comparisons.append({"metric": rule.metric, "passed": False, "checks": {"available": False}})
            continue
        paired = None
        if rule.significance is not None and records is not None:
            paired = paired_test(
                rule.metric,
                record_scores(records[0], rule.metric, candidate.model),
                record_scores(records[1], rule.metric, champion),
                higher_is_better=rule.direction == "higher",
                min_matched=rule.min_matched,
                max_unmatched=rule.max_unmatched,
            )
        comparisons.append(_compare(rule, mine, champion_scores[rule.metric], paired))
    failed = [c for c in comparisons if not c["passed"]]
    if failed:
        detail = "; ".join(
            f"{c['metric']}: {', '.join(k for k, ok in c['checks'].items() if not ok)} not met"
            + (f" (delta {c['delta']:+.4g})" if "delta" in c else "")
            + (_paired_text(c["paired"]) if "paired" in c else "")
            for c in failed
        )
        return GateDecision(
            False, f"{candidate.model} does not beat champion {champion}: {detail}", champion, comparisons
        )
    tested = "".join(f"; {c['metric']}{_paired_text(c['paired'])}" for c in comparisons if "paired" in c)
    return GateDecision(
        True, f"{candidate.model} beats champion {champion} on every gate metric{tested}", champion, comparisons
    )
