"""Pairwise comparison: its checks at load, how verdicts combine across the order swap, and
the comparison command against simulated judges with known behaviour."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, WORKER_PYTHON, local_config
from latency_server import LatencyServer
from llmeval.config import load_config
from llmeval.config.errors import ConfigError
from llmeval.config.schema import MetricRule
from llmeval.evaluation.pairwise import PairResult, bradley_terry, outcome, read_verdict
from llmeval.results import ModelResult, pairwise_result

MODELS = ["m1", "m2", "m3", "m4"]  # m4 answers best, m1 worst
JUDGE = {"name": "judge", "model_id": "smollm2-135m-instruct"}


def _config(tmp_path: Path, models: list[str] = MODELS, **options) -> Path:
    algorithm = {"algorithm": "Pairwise", "judge": "judge", "champion": "m1", **options}
    entries = [{"name": m, "model_id": "vendor", "outputs_location": str(tmp_path / f"{m}.jsonl")} for m in models]
    for entry in entries:  # the outputs a config names must exist when it loads
        Path(entry["outputs_location"]).touch()
    cfg = local_config("pairwise", models=entries, judges=[dict(JUDGE)], algorithms=[algorithm])
    path = tmp_path / "pairwise.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "options, models, field, message",
    [
        ({"champion": None}, MODELS, "algorithms[0].champion", "Pairwise needs champion"),
        ({"champion": "m9"}, MODELS, "algorithms[0].champion", "unknown champion 'm9'"),
        ({}, ["m1"], "models", "list a second model"),
        ({"judge": "oracle"}, MODELS, "algorithms[0].judge", "unknown judge 'oracle'"),
        ({"all_pairs": "yes"}, MODELS, "algorithms[0].all_pairs", "expected true"),
    ],
)
def test_a_bad_pairwise_comparison_is_refused_at_load(tmp_path, options, models, field, message):
    path = _config(tmp_path, models, **options)
    if options.get("champion", "") is None:
        cfg = yaml.safe_load(path.read_text())
        del cfg["algorithms"][0]["champion"]
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems[0].line and field in str(err.value) and message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "first, swapped, expected",
    [
        ("A", "B", "a"),  # both orders prefer a's answer
        ("B", "A", "b"),
        ("A", "A", "tie"),  # the judge prefers whatever comes first: position bias cancels
        ("tie", "A", "tie"),
        ("tie", "tie", "tie"),
        (None, "A", None),  # unparseable: no outcome
    ],
)
def test_an_outcome_needs_both_orders_to_agree(first, swapped, expected):
    assert outcome(first, swapped) == expected


@pytest.mark.parametrize(
    "answer, verdict",
    [
        ("Winner: A\nExplanation: ...", "A"),
        ("**Winner**: tie", "tie"),
        ("winner :b", "B"),
        ("I think so.\nWinner: **B**", "B"),
        ("B. It is shorter.", None),  # only the asked-for form is a verdict
        ("A better answer is B.", None),  # not a vote for A
        ("both good", None),
    ],
)
def test_a_verdict_is_read_only_from_the_asked_for_form(answer, verdict):
    assert read_verdict(answer) == verdict


def _pair(a, b, wins_a, ties, wins_b):
    return PairResult(a, b, wins_a + ties + wins_b, wins_a, ties, wins_b, 0, {})


def test_bradley_terry_orders_models_by_their_wins():
    pairs = [_pair("x", "y", 8, 0, 2), _pair("y", "z", 7, 2, 1), _pair("x", "z", 9, 1, 0)]
    fitted = bradley_terry(pairs, ["x", "y", "z"])
    strengths = fitted.strength
    assert strengths["x"] > strengths["y"] > strengths["z"] > 0 and abs(sum(strengths.values()) - 1) < 1e-5
    assert fitted.converged and set(fitted.group.values()) == {0}


def test_bradley_terry_converges_on_lopsided_data_and_gives_no_strength_without_a_decided_comparison():
    """A lopsided chain needs far more than 500 MM steps; a model whose comparisons were all
    unparseable has no strength; two unconnected groups are normalised each on its own."""
    lopsided = [_pair("a", "b", 200, 0, 0), _pair("b", "c", 200, 0, 0), _pair("c", "d", 200, 0, 0)]
    fitted = bradley_terry(lopsided, ["a", "b", "c", "d"])
    assert fitted.converged and fitted.iterations > 500
    assert fitted.strength["a"] > fitted.strength["b"] > fitted.strength["c"] > fitted.strength["d"]
    capped = bradley_terry(lopsided, ["a", "b", "c", "d"], limit=50)
    assert not capped.converged and capped.iterations == 50
    unparseable = PairResult("champ", "mute", 0, 0, 0, 0, 12, {})
    star = [_pair("champ", "x", 6, 0, 6), unparseable, _pair("y", "z", 9, 0, 3)]
    fitted = bradley_terry(star, ["champ", "mute", "x", "y", "z"])
    assert fitted.strength["mute"] is None and fitted.group["mute"] is None
    assert fitted.group["champ"] == fitted.group["x"] != fitted.group["y"] == fitted.group["z"]
    assert fitted.strength["champ"] + fitted.strength["x"] == pytest.approx(1.0)
    assert fitted.strength["y"] + fitted.strength["z"] == pytest.approx(1.0)


def _quality(answer: str) -> int:
    return int(re.match(r"q(\d)", answer).group(1))


def _prefers_better(prompt: str) -> str:
    """Prefers the answer of higher quality, but for one comparison in six (noise that
    follows the prompt, so the same prompt gets the same verdict)."""
    a = _quality(re.search(r"Answer A: (.*)", prompt).group(1))
    b = _quality(re.search(r"Answer B: (.*)", prompt).group(1))
    noisy = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 6 == 0
    better = "A" if (a > b) != noisy else "B"
    return f"Winner: {better}\nExplanation: answer {better} is better."


def _compare(
    tmp_path: Path, url: str, config: Path, records: int = 12, without: str | None = None
) -> subprocess.CompletedProcess:
    runs = tmp_path / "models"
    for quality, model in enumerate(MODELS, start=1):
        if model == without:
            continue
        rows = [
            {"record_id": f"r{i}", "model_input": f"question {i}", "target_output": f"answer {i}"}
            | {"model_output": f"q{quality} answer {i} by {model}", "error": None}
            for i in range(records)
        ]
        (runs / model).mkdir(parents=True, exist_ok=True)
        (runs / model / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [WORKER_PYTHON, "-m", "llmeval.evaluation.pairwise", "--config", str(config), "--runs-dir", str(runs)]
    command += ["--output", str(tmp_path / "pairwise.json"), "--cache-dir", str(tmp_path / "cache")]
    command += ["--judge", f"judge=judge@{url}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"), AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_a_judge_preferring_the_first_answer_gives_only_ties_and_each_pair_costs_two_calls(tmp_path):
    with LatencyServer(latency_s=0.005, reply=lambda prompt: "Winner: A\nExplanation: the first one.") as server:
        done = _compare(tmp_path, server.url, _config(tmp_path))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert server.by_endpoint["judge"] == 3 * 12 * 2  # 3 candidates vs the champion, 12 records, 2 orders
        assert max(server.answered.values()) == 1  # no prompt asked twice
        again = _compare(tmp_path, server.url, _config(tmp_path))
        assert again.returncode == 0 and server.by_endpoint["judge"] == 72  # a re-run asks nothing
    document = json.loads((tmp_path / "pairwise.json").read_text())
    assert [(p["a"], p["b"]) for p in document["pairs"]] == [("m1", "m2"), ("m1", "m3"), ("m1", "m4")]
    assert all(p["ties"] == 12 and p["wins_a"] == p["wins_b"] == 0 for p in document["pairs"])
    assert all(p["order_disagreement"] == 1.0 for p in document["pairs"])  # its position bias, measured
    assert all(v["win_rate_vs_champion"][0] == 0.5 for v in document["versus_champion"].values())


def test_bradley_terry_recovers_a_known_preference_order_and_feeds_selection(tmp_path):
    with LatencyServer(latency_s=0.005, reply=_prefers_better) as server:
        done = _compare(tmp_path, server.url, _config(tmp_path, all_pairs=True), records=20)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert server.by_endpoint["judge"] == 6 * 20 * 2  # every pair of 4 models, 20 records, both orders
    document = json.loads((tmp_path / "pairwise.json").read_text())
    assert [row["model"] for row in document["bradley_terry"]] == ["m4", "m3", "m2", "m1"]
    assert document["bradley_terry_fit"]["converged"]
    assert all(p["order_disagreement"] < 0.5 for p in document["pairs"])  # a judge that follows the answers
    best = document["versus_champion"]["m4"]
    assert best["compared_vs_champion"] == 20 and 0 < best["win_share_vs_champion"][0] <= 1
    assert best["win_rate_vs_champion"][1] > 0.5  # clearly preferred to the champion: the interval is above half
    assert best["wins_vs_champion"][0] + best["ties_vs_champion"][0] + best["losses_vs_champion"][0] == 1.0
    scores = {m: pairwise_result(document, m) for m in MODELS}
    assert scores["m1"].score("win_rate_vs_champion").value == 0.5  # the champion, even with itself
    result = ModelResult(model="m4", status="succeeded", algorithms=[scores["m4"]])
    assert result.metric("Pairwise/win_rate_vs_champion") == best["win_rate_vs_champion"][0]
    assert result.metric("Pairwise/bradley_terry") == document["bradley_terry"][0]["strength"]
    assert result.metric("Pairwise/win_share_vs_champion") == best["win_share_vs_champion"][0]


def test_a_champion_without_answers_is_a_clear_error_not_a_crash(tmp_path):
    with LatencyServer(latency_s=0.001, reply=_prefers_better) as server:
        (tmp_path / "models").mkdir()
        done = _compare(tmp_path, server.url, _config(tmp_path), records=4, without="m1")
    assert done.returncode != 0 and "KeyError" not in done.stdout + done.stderr
    assert "compares every model with the champion 'm1', which has no answers in this run" in done.stdout + done.stderr


def test_a_models_param_that_leaves_the_champion_out_is_refused_at_plan(tmp_path):
    from llmeval.steps import plan_models

    cfg = load_config(_config(tmp_path))
    assert plan_models(cfg, ["m1", "m3"]) == ["m1", "m3"]
    with pytest.raises(ValueError, match="compares every model with its champion 'm1': add it to the models Param"):
        plan_models(cfg, ["m2", "m3"])


def _preferences(path: Path, records: int, tie_on: str = "r0") -> Path:
    """People's choices between the champion's and each candidate's answer: the better answer
    (higher quality) wins, shown in either order; one record is a tie for them."""
    rows = []
    for model in MODELS[1:]:
        for i in range(records):
            champion, candidate = f"q1 answer {i} by m1", f"q{_quality_of(model)} answer {i} by {model}"
            first, second = (champion, candidate) if i % 2 else (candidate, champion)
            winner = "tie" if f"r{i}" == tie_on else ("B" if second == candidate else "A")
            rows.append(
                {"record_id": f"r{i}", "answer_a": first, "answer_b": second, "winner": winner, "labeller": "ana"}
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _quality_of(model: str) -> int:
    return MODELS.index(model) + 1


@pytest.mark.parametrize(("reply", "trusted"), [(_prefers_better, True), (lambda prompt: "Winner: A", False)])
def test_the_judges_verdicts_are_measured_against_peoples_preferences(tmp_path, reply, trusted):
    """Each verdict matched to people's choice between the same two answers (in either order);
    a judge that follows the answers is kept, one that always names the first answer (only
    ties) has a kappa of zero and every Pairwise score leaves the decision."""
    from llmeval import store
    from llmeval.config import EvalConfig
    from llmeval.steps import judge_agreement, select_best

    records = 20
    labels = _preferences(tmp_path / "preferences.jsonl", records)
    config = _config(tmp_path, labels=str(labels), min_agreement=0.3)
    with LatencyServer(latency_s=0.001, reply=reply) as server:
        done = _compare(tmp_path, server.url, config, records=records)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads((tmp_path / store.PAIRWISE).read_text())
    assert len(document["verdicts"]) == 3 * records
    ids = [{"record_id": f"r{i}"} for i in range(records)]
    (tmp_path / store.DATASET).write_text("".join(json.dumps(r) + "\n" for r in ids))
    cfg = EvalConfig.model_validate(yaml.safe_load(config.read_text()))
    (found,) = judge_agreement(cfg, tmp_path, [])
    assert (found.algorithm, found.judge, found.rubric, found.labels) == ("Pairwise", "judge", "preference", 60)
    # people say the candidate wins everywhere but r0 (a tie): the judge agrees where it said so
    said = [(v["outcome"], v["record_id"]) for v in document["verdicts"] if v["outcome"] is not None]
    agreed = sum(outcome == ("tie" if rid == "r0" else "b") for outcome, rid in said) / len(said)
    assert found.exact_agreement[0] == round(agreed, 4) and found.trusted is trusted
    if not trusted:
        assert found.kappa[0] == 0.0 and "so Pairwise/* is left out of selection and the gate" in found.reason
        results = [pairwise_scored(document, m) for m in MODELS]
        cfg.selection.metrics = [MetricRule(metric="Pairwise/win_rate_vs_champion")]
        selection = select_best(cfg, tmp_path, results)
        assert list(selection.excluded) == ["Pairwise/*"] and selection.rules == []


def pairwise_scored(document: dict, model: str) -> ModelResult:
    return ModelResult(model=model, status="succeeded", algorithms=[pairwise_result(document, model)])


def test_a_preferences_file_that_cannot_be_used_is_refused_at_load(tmp_path):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text('{"record_id": "r1", "answer_a": "x", "answer_b": "y", "winner": "first", "labeller": "a"}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, labels=str(bad), min_agreement=0.4))
    problem = caught.value.problems[0]
    assert problem.field == "algorithms[0].labels"
    assert f"{bad}:1: winner 'first' is not one of A, B, tie" in problem.message
    with pytest.raises(ConfigError, match="min_agreement measures the judge against people: give the labels"):
        load_config(_config(tmp_path, min_agreement=0.4))
