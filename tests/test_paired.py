"""Paired significance: the gate and the leaderboard compare two models record by record."""

from __future__ import annotations

import json
import random

import pytest

from conftest import local_config
from helpers import result
from llmeval import history, store
from llmeval.config import EvalConfig, GateRule, load_config
from llmeval.config.errors import ConfigError
from llmeval.paired import paired_test, record_scores
from llmeval.registration import gate_decision
from llmeval.registry import APPROVED, LocalRegistry
from llmeval.report import ReportInput, render_html
from llmeval.results import AlgorithmResult, Score
from llmeval.selection import champion_gate, select

FK = "FactualKnowledge/factual_knowledge"
N = 60
# The champion's records range from hard to easy; the candidate does 0.04 better on each one.
CHAMPION = [round(0.95 * i / (N - 1), 6) for i in range(N)]
CANDIDATE = [round(v + 0.04, 6) for v in CHAMPION]


def _rows(values: list[float], ids: range = range(N)) -> list[dict]:
    return [
        {"record_id": f"r{i:03d}", "scores": {"FactualKnowledge": {"factual_knowledge": v}}}
        for i, v in zip(ids, values)
    ]


def _score(values: list[float]) -> Score:
    """Mean with its 95% percentile-bootstrap interval, as the evaluation reports it."""
    rng = random.Random(1)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(2000))
    return Score("factual_knowledge", sum(values) / len(values), means[50], means[1949], len(values))


def _result(model: str, values: list[float]):
    scored = result(model)
    scored.algorithms = [AlgorithmResult("FactualKnowledge", [_score(values)])]
    return scored


def test_overlapping_intervals_but_a_clearly_significant_paired_difference():
    mine, theirs = _score(CANDIDATE), _score(CHAMPION)
    assert mine.ci_low < theirs.ci_high  # the intervals overlap
    records = (_rows(CANDIDATE), _rows(CHAMPION))
    candidate = _result("cand", CANDIDATE)
    by_intervals = champion_gate([GateRule(metric=FK, require_ci_separation=True)], candidate, "champ", {FK: theirs})
    paired = champion_gate([GateRule(metric=FK, significance=0.05)], candidate, "champ", {FK: theirs}, records)
    assert not by_intervals.passed and "ci_separation not met" in by_intervals.reason
    assert paired.passed, paired.reason
    test = paired.comparisons[0]["paired"]
    assert (
        test["matched"] == N
        and test["p_value"] == pytest.approx(1 / 4001)
        and test["mean_delta"] == pytest.approx(0.04)
    )
    assert test["ci_low"] == pytest.approx(0.04) and test["note"] == ""
    assert "paired sign-flip test over 60 records: p=0.00025" in paired.reason


def test_a_difference_within_the_noise_is_not_significant():
    rng = random.Random(7)
    noisy = [min(1.0, max(0.0, v + rng.choice([-0.3, 0.3]))) for v in CHAMPION]
    decision = champion_gate(
        [GateRule(metric=FK, significance=0.05)],
        _result("cand", noisy),
        "champ",
        {FK: _score(CHAMPION)},
        (_rows(noisy), _rows(CHAMPION)),
    )
    assert not decision.passed and "paired_significance not met" in decision.reason
    assert decision.comparisons[0]["paired"]["p_value"] > 0.05


def test_lower_is_better_and_the_test_is_deterministic():
    faster = {f"r{i}": 100.0 - i % 3 for i in range(30)}
    slower = {f"r{i}": 100.0 for i in range(30)}
    test = paired_test("latency", faster, slower, higher_is_better=False)
    assert test.mean_delta > 0 and test.p_value < 0.001
    assert paired_test("latency", faster, slower, higher_is_better=False) == test
    assert paired_test("latency", slower, faster, higher_is_better=False).p_value == 1.0


def test_records_that_do_not_match_by_id_are_said_so():
    shifted = _rows(CANDIDATE[:40], range(20, 60))  # the candidate answered records 20..59 only
    decision = champion_gate(
        [GateRule(metric=FK, significance=0.05)],
        _result("cand", CANDIDATE),
        "champ",
        {FK: _score(CHAMPION)},
        (shifted, _rows(CHAMPION)),
    )
    note = decision.comparisons[0]["paired"]["note"]
    assert "33% of the records have no partner (0 only the candidate's, 20 only the reference's), more than 20%" in note
    assert not decision.passed
    lenient = GateRule(metric=FK, significance=0.05, max_unmatched=0.5)
    allowed = champion_gate(
        [lenient], _result("c", CANDIDATE), "champ", {FK: _score(CHAMPION)}, (shifted, _rows(CHAMPION))
    )
    assert (
        "0 record(s) only the candidate and 20 only the reference answered: compared on the 40"
        in (allowed.comparisons[0]["paired"]["note"])
    )
    disjoint = paired_test(FK, record_scores(_rows([1.0], range(99, 100)), FK), record_scores(_rows(CHAMPION), FK))
    assert disjoint.p_value is None and disjoint.mismatch() == "no record ids in common"
    no_records = champion_gate(
        [GateRule(metric=FK, significance=0.05)], _result("cand", CANDIDATE), "champ", {FK: _score(CHAMPION)}
    )
    assert not no_records.passed and "no per-record scores of both models to pair" in no_records.reason


def test_tiny_samples_get_exact_p_values_and_too_few_pairs_are_refused():
    """Every difference positive is p = 0.5**n (an exact sign-flip test), not 0; below
    min_matched the test says why and gives no p-value, so the gate fails."""
    three = {f"r{i}": 1.0 + i for i in range(3)}
    zeros = {f"r{i}": 0.0 for i in range(3)}
    assert paired_test(FK, three, zeros, min_matched=1).p_value == 0.125
    assert paired_test(FK, {"r0": 1.0}, {"r0": 0.0}, min_matched=1).p_value == 0.5
    refused = paired_test(FK, three, zeros)
    assert (
        refused.p_value is None and refused.mismatch() == "only 3 record(s) pair up, fewer than the 10 the test needs"
    )
    one_shared = (_rows([1.0], range(1)), _rows(CHAMPION[:1] + CHAMPION[1:51], range(51)))
    decision = champion_gate(
        [GateRule(metric=FK, significance=0.05)], _result("cand", [1.0]), "champ", {FK: _score(CHAMPION)}, one_shared
    )
    assert not decision.passed and "fewer than the 10 the test needs" in decision.reason


def test_a_nan_score_is_missing_and_a_duplicate_record_id_is_an_error():
    rows = _rows([0.5, float("nan"), 0.7])
    assert record_scores(rows, FK) == {"r000": 0.5, "r002": 0.7}
    with pytest.raises(ValueError, match="cand: record_id 'r001' appears twice"):
        record_scores(rows + _rows([0.1], range(1, 2)), FK, "cand")


def test_the_paired_test_rejects_no_more_often_than_its_level_under_no_difference():
    """2,000 null datasets of 30 records: continuous scores and right/wrong (Bernoulli) scores
    with equal means; type I error at most alpha + 0.01. Power on a real difference is reported."""
    from llmeval.paired import sign_flip_p

    rng = random.Random(20261206)
    alpha, datasets, n = 0.05, 2000, 30

    def rejection_rate(draw) -> float:
        return sum(sign_flip_p(draw(), 999, rng) <= alpha for _ in range(datasets)) / datasets

    continuous = rejection_rate(lambda: [rng.gauss(0, 0.2) for _ in range(n)])
    bernoulli = rejection_rate(lambda: [float(rng.random() < 0.6) - float(rng.random() < 0.6) for _ in range(n)])
    assert continuous <= alpha + 0.01 and bernoulli <= alpha + 0.01, (continuous, bernoulli)
    power = rejection_rate(lambda: [rng.gauss(0.1, 0.2) for _ in range(n)])
    print(f"type I error: continuous {continuous:.3f}, Bernoulli {bernoulli:.3f}; power at d=0.5: {power:.2f}")
    assert power > 0.7  # a half-standard-deviation improvement on 30 records is found most of the time


def test_a_candidate_equal_to_the_champion_is_no_improvement_and_a_zero_champion_has_no_relative_scale():
    same = champion_gate([GateRule(metric=FK)], _result("cand", CHAMPION), "champ", {FK: _score(CHAMPION)})
    assert not same.passed and "improves not met" in same.reason
    allowed = champion_gate(
        [GateRule(metric=FK, allow_equal=True)], _result("cand", CHAMPION), "champ", {FK: _score(CHAMPION)}
    )
    assert allowed.passed
    zero = Score("factual_knowledge", 0.0, 0.0, 0.0, N)
    worse_lower = GateRule(metric=FK, direction="lower", min_relative=0.05)  # lower is better: 0 is unbeatable
    worse = champion_gate([worse_lower], _result("cand", CANDIDATE), "champ", {FK: zero})
    assert not worse.passed and worse.comparisons[0]["relative"] is None
    better = champion_gate([GateRule(metric=FK, min_relative=0.05)], _result("cand", CANDIDATE), "champ", {FK: zero})
    assert better.passed


def _write_records(folder, values):
    store.write_text(folder / store.RECORDS, "".join(json.dumps(r) + "\n" for r in _rows(values)))


def test_the_gate_pairs_with_the_champions_records_from_its_earlier_run(tmp_path):
    """The champion was evaluated on this catalog version by an earlier run: its records are
    read from that run's folder (found through the history), the candidate's from this run."""
    cfg = EvalConfig.model_validate(
        local_config("paired-gate", registry={"gate": [{"metric": FK, "min_delta": 0.0, "significance": 0.05}]})
    )
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(cfg.registry_group, "champ", "run-1", APPROVED, {}, {})
    earlier, now = store.run_folder("paired-gate", "run-1"), store.run_folder("paired-gate", "run-2")
    _write_records(store.model_folder(earlier, "champ"), CHAMPION)
    _write_records(store.model_folder(now, "cand"), CANDIDATE)
    history.record("paired-gate", "v1", "run-1", [_result("champ", CHAMPION)])
    candidate = _result("cand", CANDIDATE)
    decision = gate_decision(cfg, registry, "paired-gate", "v1", candidate, [candidate], now)
    assert decision.passed and decision.champion == "champ", decision.reason
    assert decision.comparisons[0]["paired"]["matched"] == N


def test_the_leaderboard_compares_with_the_selected_model_by_the_paired_test():
    cfg = EvalConfig.model_validate(local_config(algorithms=[{"algorithm": "FactualKnowledge"}]))
    results = [_result("better", CANDIDATE), _result("worse", CHAMPION), _result("unpaired", CHAMPION)]
    page = render_html(
        ReportInput(
            "t",
            "run",
            "qa",
            results,
            select(cfg, results),
            "",
            records={"better": _rows(CANDIDATE), "worse": _rows(CHAMPION)},
        )
    )
    ranking = page[page.index('<table class="ranking">') :].split("</table>")[0]
    row = {
        m: ranking[ranking.index(f'<td class="name">{m}</td>') :].split("</tr>")[0]
        for m in ("better", "worse", "unpaired")
    }
    assert '<span class="chip selected" title="the selected model">selected</span>' in row["better"]
    paired = "different (paired sign-flip test, 60 records: -0.040 [-0.040, -0.040])"
    assert f'title="{paired}">different -0.040</span>' in row["worse"]  # the chip; the sentence in its title
    assert 'title="not distinguishable (95% intervals)">not distinguishable 95% CI</span>' in row["unpaired"]
    assert f"worse vs the selected model: {paired}" in page  # and in the notes under the ranking


@pytest.mark.parametrize("level", [0, 0.5, 1.2, "often"])
def test_a_significance_level_outside_0_to_0_5_is_refused_at_load(tmp_path, level):
    gate = [{"metric": FK, "significance": level}]
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(local_config("bad-level", registry={"gate": gate}), indent=1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problem = err.value.problems[0]
    assert problem.file == str(path) and "registry.gate[0].significance" in str(err.value) and problem.line


def test_an_inspect_metric_is_gated_on_the_task_samples_both_models_answered():
    """`Inspect/<task>/<metric>` has two slashes: the gate's paired test reads each sample's score
    from the task's records, beside the dataset's records (which have none on it)."""
    metric = "Inspect/capitals/accuracy"
    wins = [1.0 if i % 4 else 0.0 for i in range(N)]  # the candidate answers 3 in 4 samples
    loses = [1.0 if i % 4 == 0 else 0.0 for i in range(N)]  # the champion 1 in 4

    def rows(values: list[float]) -> list[dict]:
        samples = [
            {"record_id": f"capitals:c{i}", "task": "Inspect/capitals", "scores": {"Inspect/capitals": {"accuracy": v}}}
            for i, v in enumerate(values)
        ]
        return _rows(CHAMPION) + samples  # the dataset's records have no score on the task

    assert record_scores(rows(wins), metric) == {f"capitals:c{i}": v for i, v in enumerate(wins)}
    candidate = result("cand")
    candidate.algorithms = [AlgorithmResult("Inspect/capitals", [Score("accuracy", sum(wins) / N, count=N)])]
    theirs = Score("accuracy", sum(loses) / N, count=N)
    rule = GateRule(metric=metric, significance=0.05)
    gate = champion_gate([rule], candidate, "champ", {metric: theirs}, (rows(wins), rows(loses)))
    assert gate.passed, gate.reason
    assert gate.comparisons[0]["paired"]["matched"] == N and gate.comparisons[0]["paired"]["mean_delta"] == 0.5
