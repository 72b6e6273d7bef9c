"""Selection policy: weights, directions, thresholds, deterministic ties, failures kept."""

from __future__ import annotations

from conftest import local_config
from helpers import failed, result
from llmeval.config import EvalConfig
from llmeval.selection import select


def _cfg(metrics=None, algorithms=None) -> EvalConfig:
    extra = {"selection": {"metrics": metrics}} if metrics is not None else {}
    cfg = local_config(**extra)
    cfg["algorithms"] = algorithms or [
        {"algorithm": "FactualKnowledge"},
        {"algorithm": "SemanticSimilarity"},
    ]
    return EvalConfig.model_validate(cfg)


def test_default_rule_is_first_score_of_first_algorithm():
    sel = select(_cfg(), [result("a", fk=0.4, sim=0.9), result("b", fk=0.6, sim=0.1)])
    assert sel.best == "b"
    assert sel.rules[0]["metric"] == "FactualKnowledge/factual_knowledge"


def test_weights_trade_metrics_off():
    runs = [result("a", fk=0.50, sim=0.90), result("b", fk=0.55, sim=0.20)]
    by_fk = select(
        _cfg(
            [
                {"metric": "FactualKnowledge/factual_knowledge", "weight": 3},
                {"metric": "SemanticSimilarity/semantic_similarity", "weight": 1},
            ]
        ),
        runs,
    )
    by_sim = select(
        _cfg(
            [
                {"metric": "FactualKnowledge/factual_knowledge", "weight": 1},
                {"metric": "SemanticSimilarity/semantic_similarity", "weight": 3},
            ]
        ),
        runs,
    )
    assert (by_fk.best, by_sim.best) == ("b", "a")


def test_lower_is_better_metrics_are_flipped():
    metrics = [{"metric": "generation/latency_p95_ms", "direction": "lower"}]
    sel = select(_cfg(metrics), [result("slow", p95=900), result("fast", p95=90)])
    assert sel.best == "fast"
    assert [c.model for c in sel.ranking] == ["fast", "slow"]


def test_threshold_makes_a_model_ineligible_with_reason():
    metrics = [{"metric": "FactualKnowledge/factual_knowledge", "threshold": 0.5}]
    sel = select(_cfg(metrics), [result("weak", fk=0.3), result("ok", fk=0.6)])
    weak = next(c for c in sel.ranking if c.model == "weak")
    assert sel.best == "ok" and weak.status == "below threshold" and "< 0.5" in weak.reason


def test_no_model_meets_threshold_selects_none():
    metrics = [{"metric": "FactualKnowledge/factual_knowledge", "threshold": 0.9}]
    assert select(_cfg(metrics), [result("a", fk=0.3), result("b", fk=0.6)]).best is None


def test_ties_break_deterministically_by_name():
    runs = [result("zeta", fk=0.5, sim=0.5), result("alpha", fk=0.5, sim=0.5)]
    assert select(_cfg(), runs).best == "alpha"
    assert select(_cfg(), list(reversed(runs))).best == "alpha"


def test_failed_model_is_reported_not_dropped():
    sel = select(_cfg(), [result("a"), failed("b", "deploy", "quota exceeded")])
    b = next(c for c in sel.ranking if c.model == "b")
    assert sel.best == "a" and b.status == "failed" and "deploy failed: quota exceeded" in b.reason
    assert [c.model for c in sel.ranking if c.status == "failed"] == ["b"]


def test_model_missing_a_metric_is_not_selected():
    metrics = [{"metric": "SemanticSimilarity/semantic_similarity"}]
    sel = select(_cfg(metrics), [result("a", sim=None), result("b", sim=0.2)])
    assert sel.best == "b"
    assert next(c for c in sel.ranking if c.model == "a").status == "missing metric"


def test_selection_round_trips_through_json():
    from llmeval.selection import Selection

    sel = select(_cfg(), [result("a"), failed("b")])
    assert Selection.from_dict(sel.to_dict()) == sel
