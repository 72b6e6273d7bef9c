"""Judges measured against people: the agreement statistics on known cases, label files that
cannot be used (named by file and line), a simulated judge whose agreement is known recovered
within its interval, and a run where an untrusted judge's rubric is left out of selection and
the gate while a trusted one is kept."""

from __future__ import annotations

import json
import random

import pytest

from conftest import local_config
from helpers import result
from llmeval import store
from llmeval.agreement import (
    LabelError,
    answer_hash,
    measure,
    quadratic_kappa,
    read_labels,
    read_preferences,
    spearman,
    with_interval,
)
from llmeval.config import EvalConfig, load_config
from llmeval.config.errors import ConfigError
from llmeval.results import AlgorithmResult, Score
from llmeval.steps import select_best

SCALE = (1, 2, 3, 4, 5)


def test_kappa_and_spearman_on_known_cases():
    assert quadratic_kappa([(1, 1), (3, 3), (5, 5), (2, 2)], SCALE) == 1.0
    assert quadratic_kappa([(1, 1), (1, 5), (1, 3)], SCALE) == 0.0  # a judge that always says 1 tells nothing
    assert quadratic_kappa([(3, 3), (3, 3)], SCALE) is None  # both raters constant: undefined, not a number
    # a 2x2 case by hand: O = [[1,1],[0,2]] on the scale (1, 2); E = [[0.5,1.5],[0.5,1.5]]; weights 0/1
    assert quadratic_kappa([(1, 1), (1, 2), (2, 2), (2, 2)], (1, 2)) == pytest.approx(1 - 1 / 2)
    assert spearman([(1, 10), (2, 20), (3, 30)]) == pytest.approx(1.0)
    assert spearman([(1, 3), (2, 2), (3, 1)]) == pytest.approx(-1.0)
    assert spearman([(1, 1), (1, 2)]) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"record_id": "r9", "answer": "x", "rating": 3, "labeller": "a"}', "record_id 'r9' is not a record"),
        ('{"record_id": "r1", "answer": "x", "rating": 7, "labeller": "a"}', "rating 7 is not on the rubric's scale"),
        ('{"record": "r1", "answer": "x", "rating": 3, "labeller": "a"}', "unknown record; missing record_id"),
        ('{"record_id": "r1", "rating": 3, "labeller": "a"}', "one of answer or answer_sha256"),
        ("not json", "not a JSON object"),
    ],
)
def test_an_unusable_label_names_its_file_and_line(line, message):
    good = json.dumps({"record_id": "r1", "answer": "Paris", "rating": 5, "labeller": "ana"})
    with pytest.raises(LabelError, match=f"^labels/c.jsonl:2: .*{message}"):
        read_labels("labels/c.jsonl", f"{good}\n{line}\n", SCALE, {"r1", "r2"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"record_id": "r9", "answer_a": "x", "answer_b": "y", "winner": "A", "labeller": "a"}',
            "'r9' is not a record",
        ),
        (
            '{"record_id": "r1", "answer_a": "x", "answer_b": "y", "winner": "C", "labeller": "a"}',
            "winner 'C' is not one",
        ),
        ('{"record_id": "r1", "answer_a": "x", "winner": "A", "labeller": "a"}', "one of answer_b or answer_b_sha256"),
        ('{"record_id": "r1", "answer_a": "x", "answer_b": "y", "rating": 3, "labeller": "a"}', "unknown rating"),
    ],
)
def test_an_unusable_preference_names_its_file_and_line(line, message):
    good = json.dumps({"record_id": "r1", "answer_a": "Paris", "answer_b": "Lyon", "winner": "A", "labeller": "ana"})
    with pytest.raises(LabelError, match=f"^prefs.jsonl:2: .*{message}"):
        read_preferences("prefs.jsonl", f"{good}\n{line}\n", {"r1", "r2"})
    (read,) = read_preferences("prefs.jsonl", good, {"r1"})
    assert (read.a_sha256, read.b_sha256, read.winner) == (answer_hash("Paris"), answer_hash("Lyon"), -1)


def test_too_few_labels_is_not_measured_never_a_number():
    found = measure("j", "correctness", SCALE, [(5, 5)] * 19, [], 20, 0.4)
    assert found.kappa == [] and found.trusted and found.reason == "not measured (n = 19 < 20 labelled answers)"


def _simulated(n: int, p: float, rng: random.Random) -> list[tuple[int, int]]:
    """People's ratings, and a judge that gives the same rating with probability p, else any."""
    people = [rng.choice(SCALE) for _ in range(n)]
    return [(h if rng.random() < p else rng.choice(SCALE), h) for h in people]


def test_a_simulated_judges_known_agreement_is_recovered_within_its_interval():
    truth = quadratic_kappa(_simulated(200_000, 0.7, random.Random(1)), SCALE)  # the judge's agreement, known
    rng = random.Random(2)
    covered = 0
    for _ in range(20):
        kappa = with_interval(lambda pairs: quadratic_kappa(pairs, SCALE), _simulated(200, 0.7, rng))
        covered += kappa[1] <= truth <= kappa[2]
    assert truth == pytest.approx(0.7, abs=0.02) and covered >= 17  # a 95% interval: about 19 of 20


def _judged_run(tmp_path, judge_rating, labels_rule, min_agreement=0.4):
    """Two models' judged records in a run folder, and people's labels of every answer."""
    folder = store.run_folder("agree", "run-1")
    rows = [{"record_id": f"r{i}", "model_input": f"q{i}", "target_output": "Paris"} for i in range(30)]
    store.write_text(folder / store.DATASET, "".join(json.dumps(r) + "\n" for r in rows))
    labels, results = [], []
    for model, right in (("good", 25), ("bad", 10)):
        records = []
        for i, row in enumerate(rows):
            answer = "Paris" if i < right else f"Lyon {i}"
            human = labels_rule(answer)
            rating = judge_rating(answer, human, i)
            judgement = {"correctness": {"rating": rating, "explanation": ""}}
            score = {
                "LLMJudge": {"correctness": (rating - 1) / 4},
                "FactualKnowledge": {"factual_knowledge": float(i < right)},
            }
            records.append({**row, "model_output": answer, "judgements": judgement, "scores": score})
            labels.append(
                {
                    "record_id": row["record_id"],
                    "answer_sha256": answer_hash(answer),
                    "rating": human,
                    "labeller": "ana",
                }
            )
        store.write_text(
            store.model_folder(folder, model) / store.RECORDS, "".join(json.dumps(r) + "\n" for r in records)
        )
        scored = result(model)
        judged = sum((r["judgements"]["correctness"]["rating"] - 1) / 4 for r in records) / 30
        scored.algorithms = [
            AlgorithmResult("FactualKnowledge", [Score("factual_knowledge", right / 30, count=30)]),
            AlgorithmResult("LLMJudge", [Score("correctness", judged, count=30)]),
        ]
        results.append(scored)
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(label) + "\n" for label in labels))
    rubric = {"name": "correctness", "labels": str(path), "min_agreement": min_agreement}
    cfg = EvalConfig.model_validate(
        local_config(
            "agree",
            judges=[{"name": "judge", "model_id": "smollm2-135m-instruct"}],
            algorithms=[
                {"algorithm": "FactualKnowledge"},
                {"algorithm": "LLMJudge", "judge": "judge", "rubrics": [rubric]},
            ],
            selection={
                "metrics": [
                    {"metric": "LLMJudge/correctness", "weight": 3},
                    {"metric": "FactualKnowledge/factual_knowledge"},
                ]
            },
        )
    )
    return cfg, folder, results


def _person(answer: str) -> int:
    return 5 if answer == "Paris" else 1


def test_an_untrusted_judge_is_left_out_of_selection_and_a_trusted_one_is_kept(tmp_path):
    cfg, folder, results = _judged_run(tmp_path, lambda answer, human, i: 1 + (i * 7) % 5, _person)  # rates at random
    selection = select_best(cfg, folder, results)
    assert list(selection.excluded) == ["LLMJudge/correctness"]
    assert "its lower bound is below min_agreement 0.4" in selection.excluded["LLMJudge/correctness"]
    assert [r["metric"] for r in selection.rules] == ["FactualKnowledge/factual_knowledge"]
    assert selection.best == "good"
    (agreement,) = json.loads((folder / store.AGREEMENT).read_text())
    assert agreement["labels"] == 60 and not agreement["trusted"] and agreement["kappa"][1] < 0.4

    cfg, folder, results = _judged_run(tmp_path, lambda answer, human, i: human if i % 10 else 3, _person)
    kept = select_best(cfg, folder, results)
    assert kept.excluded == {} and [r["metric"] for r in kept.rules][0] == "LLMJudge/correctness"
    (agreement,) = json.loads((folder / store.AGREEMENT).read_text())
    assert agreement["trusted"] and agreement["kappa"][1] >= 0.4


def test_a_judge_that_prefers_long_answers_shows_its_length_bias(tmp_path):
    cfg, folder, results = _judged_run(tmp_path, lambda answer, human, i: 5 if len(answer) > 5 else 1, _person)
    select_best(cfg, folder, results)
    (agreement,) = json.loads((folder / store.AGREEMENT).read_text())
    assert agreement["length_bias"] > 0.9  # it rates by length, not by correctness


def test_a_labels_file_that_cannot_be_used_is_refused_when_the_config_loads(write_config, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"record_id": "r1", "answer": "x", "rating": 9, "labeller": "a"}\n')
    rubric = {"name": "correctness", "labels": str(bad), "min_agreement": 0.4}
    cfg = local_config(
        "agree",
        judges=[{"name": "judge", "model_id": "smollm2-135m-instruct"}],
        algorithms=[{"algorithm": "LLMJudge", "judge": "judge", "rubrics": [rubric]}],
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config("agree.yaml", cfg))
    problem = caught.value.problems[0]
    assert problem.field == "algorithms[0].rubrics[0].labels" and f"{bad}:1: rating 9 is not on" in problem.message
    rubric.pop("labels")
    with pytest.raises(ConfigError, match="min_agreement measures the judge against people: give the labels"):
        load_config(write_config("agree.yaml", cfg))


def test_panel_ratings_aggregate_their_judges():
    from llmeval.rubrics import panel_rating

    assert panel_rating([1, 2, 5], "mean") == pytest.approx(8 / 3)
    assert panel_rating([1, 2, 5], "median") == 2 and panel_rating([1, 2, 4, 5], "median") == 3
    assert panel_rating([4, 4, 1], "majority") == 4 and panel_rating([1, 5], "majority") == 3  # a tie: the middle
    assert panel_rating([], "mean") is None  # no judge of the panel gave a rating


def test_a_median_panel_of_three_judges_agrees_at_least_as_well_as_its_best_judge(tmp_path):
    """Three simulated judges of different quality (right with probability 0.85, 0.7, 0.55, else
    any rating) on 400 labelled answers: each judge's kappa is reported, and the panel's (the
    median of the three) is at least the best one's."""
    from llmeval.rubrics import panel_rating

    rng = random.Random(0)
    folder = store.run_folder("panel", "run-1")
    rows = [
        {"record_id": f"r{i}", "model_input": f"q{i}", "target_output": "x", "model_output": f"a{i}"}
        for i in range(400)
    ]
    store.write_text(folder / store.DATASET, "".join(json.dumps(r) + "\n" for r in rows))
    people = [rng.choice(SCALE) for _ in rows]
    names, quality = ["j1", "j2", "j3"], (0.85, 0.7, 0.55)
    ratings = [[h if rng.random() < p else rng.choice(SCALE) for h in people] for p in quality]
    for i, row in enumerate(rows):
        by_judge = {n: {"rating": ratings[k][i], "explanation": ""} for k, n in enumerate(names)}
        panel = panel_rating([ratings[k][i] for k in range(3)], "median")
        row["judgements"] = {"correctness": {"rating": panel, "by_judge": by_judge}}
    store.write_text(store.model_folder(folder, "m") / store.RECORDS, "".join(json.dumps(r) + "\n" for r in rows))
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(
            json.dumps({"record_id": r["record_id"], "answer": r["model_output"], "rating": h, "labeller": "p"}) + "\n"
            for r, h in zip(rows, people)
        )
    )
    judges = [{"name": n, "model_id": "smollm2-135m-instruct"} for n in names]
    rubric = {"name": "correctness", "labels": str(labels), "min_agreement": 0.5}
    algorithm = {"algorithm": "LLMJudge", "judges": names, "aggregate": "median", "rubrics": [rubric]}
    cfg = EvalConfig.model_validate(local_config("panel", judges=judges, algorithms=[algorithm]))
    from llmeval.steps import judge_agreement

    found = {a.judge: a for a in judge_agreement(cfg, folder, ["m"])}
    assert list(found) == ["j1", "j2", "j3", "panel (j1, j2, j3)"]
    best = max(found[n].kappa[0] for n in names)
    assert found["j1"].kappa[0] > found["j2"].kappa[0] > found["j3"].kappa[0]  # each judge's own, reported
    assert found["panel (j1, j2, j3)"].kappa[0] >= best and found["panel (j1, j2, j3)"].trusted
    assert all(found[n].min_agreement is None for n in names)  # the panel's agreement decides, not each judge's


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"judges": ["a", "nobody"]}, "algorithms[0].judges[1]", "unknown judge 'nobody'"),
        ({"judges": ["a"]}, "algorithms[0].judges", "at least 2 different judges"),
        ({"judge": "a", "judges": ["a", "b"]}, "algorithms[0].judge", "or judges: a panel"),
        ({"judge": "a", "aggregate": "mean"}, "algorithms[0].aggregate", "combines a panel's ratings"),
        (
            {"judges": ["a", "b"], "aggregate": "mode"},
            "algorithms[0].aggregate",
            "must be one of mean, median, majority",
        ),
    ],
)
def test_a_bad_judge_panel_names_the_field(write_config, options, field, message):
    judges = [{"name": n, "model_id": "smollm2-135m-instruct"} for n in ("a", "b")]
    cfg = local_config("panel", judges=judges, algorithms=[{"algorithm": "LLMJudge", **options}])
    with pytest.raises(ConfigError) as caught:
        load_config(write_config("panel.yaml", cfg))
    problem = caught.value.problems[0]
    assert problem.field == field and message in problem.message, problem


def test_an_untrusted_judge_fails_the_run_only_when_the_config_asks(tmp_path, write_config):
    from llmeval.dag.run_tasks import run_problems

    cfg, folder, results = _judged_run(tmp_path, lambda answer, human, i: 1 + (i * 7) % 5, _person)
    selection = select_best(cfg, folder, results).to_dict()
    assert run_problems(cfg, results, selection, {"registered": True}) == []  # left out, the run goes on
    cfg.selection.untrusted_judge = "fail"
    (problem,) = run_problems(cfg, results, selection, {"registered": True})
    assert problem.startswith("untrusted judge, LLMJudge/correctness left out: kappa ")
    with pytest.raises(ConfigError) as caught:
        load_config(write_config("agree.yaml", local_config("agree", selection={"untrusted_judge": "warn"})))
    assert caught.value.problems[0].field == "selection.untrusted_judge"
