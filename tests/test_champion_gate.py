"""Champion gate and run history."""

from __future__ import annotations

from helpers import result
from llmeval.config import GateRule
from llmeval.results import Score
from llmeval.selection import champion_gate

FK = "FactualKnowledge/factual_knowledge"


def _champion(value: float, half_width: float = 0.1) -> dict[str, Score]:
    return {FK: Score("factual_knowledge", value, value - half_width, value + half_width, 40)}


def test_worse_candidate_beyond_threshold_is_not_approved():
    decision = champion_gate([GateRule(metric=FK, min_delta=0.02)], result("cand", fk=0.50), "champ", _champion(0.60))
    assert not decision.passed and "does not beat champion champ" in decision.reason
    assert decision.comparisons[0]["delta"] == -0.1


def test_better_candidate_is_approved():
    decision = champion_gate(
        [GateRule(metric=FK, min_delta=0.02, min_relative=0.1)], result("cand", fk=0.70), "champ", _champion(0.60)
    )
    assert decision.passed and decision.comparisons[0]["checks"] == {"min_delta": True, "min_relative": True}


def test_intervals_must_separate_when_asked():
    rule = GateRule(metric=FK, require_ci_separation=True)
    overlapping = champion_gate([rule], result("cand", fk=0.65), "champ", _champion(0.60))  # 0.55..0.75 vs 0.5..0.7
    separated = champion_gate([rule], result("cand", fk=0.85), "champ", _champion(0.60))
    assert not overlapping.passed and "ci_separation" in overlapping.reason
    assert separated.passed


def test_lower_is_better_gate():
    rule = GateRule(metric="generation/latency_p95_ms", direction="lower", min_delta=10)
    champion = {"generation/latency_p95_ms": Score("latency_p95_ms", 200.0)}
    assert champion_gate([rule], result("fast", p95=150), "champ", champion).passed
    assert not champion_gate([rule], result("slow", p95=195), "champ", champion).passed


def test_no_champion_or_no_comparable_scores_passes_with_a_reason():
    rules = [GateRule(metric=FK)]
    assert "no approved champion" in champion_gate(rules, result("c"), None, None).reason
    assert "no scores on this catalog version" in champion_gate(rules, result("c"), "champ", None).reason
    assert champion_gate([], result("c"), "champ", _champion(0.9)).passed


def test_history_keeps_one_entry_per_catalog_version_and_draws_trends():
    from llmeval import history

    history.record("hist-dag", "2026-01-01", "run-a", [result("m1", fk=0.4), result("m2", fk=0.5)])
    history.record("hist-dag", "2026-01-02", "run-b", [result("m1", fk=0.6), result("m2", fk=0.5)])
    history.record("hist-dag", "2026-01-02", "run-c", [result("m1", fk=0.7), result("m2", fk=0.5)])  # re-run
    entries = history.entries("hist-dag")
    assert [e["catalog_version"] for e in entries] == ["2026-01-01", "2026-01-02"]
    assert entries[1]["run_id"] == "run-c" and entries[1]["models"]["m1"]["metrics"][FK]["value"] == 0.7
    assert history.scores_on("hist-dag", "2026-01-01", "m2")[FK].value == 0.5
    page = history.write_trend("hist-dag").read_text()
    assert page.count("<svg") == len(entries[0]["models"]["m1"]["metrics"]) and page.count("<polyline") >= 2


def test_the_gate_takes_the_pairwise_win_rate_against_the_champion():
    """The pairwise champion's own win rate is 0.5, so min_delta asks for a preference above half."""
    from llmeval.results import pairwise_result

    document = {
        "champion": "champ",
        "bradley_terry": [{"model": "cand", "strength": 0.7}, {"model": "champ", "strength": 0.3}],
        "versus_champion": {
            "cand": {
                "win_rate_vs_champion": [0.6, 0.52, 0.68],
                "wins_vs_champion": [0.5, 0.4, 0.6],
                "ties_vs_champion": [0.2, 0.1, 0.3],
                "losses_vs_champion": [0.3, 0.2, 0.4],
                "records_vs_champion": 40,
            }
        },
    }
    metric = "Pairwise/win_rate_vs_champion"
    candidate = result("cand")
    candidate.algorithms.append(pairwise_result(document, "cand"))
    champion = {metric: pairwise_result(document, "champ").score("win_rate_vs_champion")}
    assert champion_gate([GateRule(metric=metric, min_delta=0.05)], candidate, "champ", champion).passed
    assert not champion_gate([GateRule(metric=metric, min_delta=0.15)], candidate, "champ", champion).passed
    separated = champion_gate([GateRule(metric=metric, require_ci_separation=True)], candidate, "champ", champion)
    assert separated.passed  # [0.52, 0.68] against the champion's 0.5
