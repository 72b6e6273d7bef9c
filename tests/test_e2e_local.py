"""End to end on the local target with the real SmolLM2 model, under `dag.test()`.

One run evaluates two working variants and one whose output path matches nothing in the
responses (so every record fails and its evaluate task fails). The run must keep the
good models' results, select and register one of them, report the failure, fail the
run at the end (for alerting) and leave no model server running.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from conftest import local_config, run_dag
from sagemaker_fixtures import xcoms

pytestmark = pytest.mark.slow

GOOD = ["e2e-chat", "e2e-plain"]
BAD = "e2e-bad-output"
JUDGE = "e2e-judge"
# people's ratings of e2e-chat's four answers (a reference rule standing in for people)
CORRECTNESS = {
    "name": "correctness",
    "labels": str(Path(__file__).parent / "data" / "e2e_labels.jsonl"),
    "min_agreement": 0.4,
    "min_labels": 2,
}


def _servers_running(names: list[str]) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"llmeval.evaluation.server" in cmd and any(n.encode() in cmd for n in names):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def e2e_run(airflow_db, tmp_path_factory):
    from llmeval.store import run_folder

    chat = {
        "output": "[0].generation.content",
        "content_template": [[{"role": "user", "content": "PROMPT_PLACEHOLDER"}]],
        "inference_parameters": {"max_new_tokens": 8, "temperature": 0},
        "prompt_template": "Answer briefly. $feature",
    }
    plain = {
        "output": "[0].generated_text",
        "content_template": "PROMPT_PLACEHOLDER",
        "inference_parameters": {"max_new_tokens": 8},
        "prompt_template": "Question: $feature\nAnswer:",
    }
    bad = dict(plain, output="[0].no_such_field")
    judging = dict(  # the answer starts with "Rating:" (prefill): the judge's number comes first
        chat,
        content_template=[
            [{"role": "user", "content": "PROMPT_PLACEHOLDER"}, {"role": "assistant", "content": "Rating:"}]
        ],
        inference_parameters={"max_new_tokens": 16, "temperature": 0},
        prompt_template="$feature",
    )
    cfg = local_config(
        "e2e-local",
        models=[
            {"name": GOOD[0], "model_id": "smollm2-135m-instruct", "evaluation_config": chat},
            {"name": GOOD[1], "model_id": "smollm2-135m-instruct", "evaluation_config": plain},
            {"name": BAD, "model_id": "smollm2-135m-instruct", "evaluation_config": bad},
        ],
        num_records=4,
        algorithms=[
            {"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>"},
            {"algorithm": "SemanticSimilarity"},
            {"algorithm": "custom:brevity:Brevity", "max_words": 4},  # a user's class from include/algorithms
            {"algorithm": "LLMJudge", "judge": JUDGE, "rubrics": [CORRECTNESS]},
            {"algorithm": "Pairwise", "judge": JUDGE, "champion": GOOD[0]},
            {"algorithm": "Inspect", "task": "inspect_tasks.py@capitals", "limit": 4},  # shipped in include/
        ],
        judges=[{"name": JUDGE, "model_id": "smollm2-135m-instruct", "evaluation_config": judging}],
        registry={
            "model_package_group_name": "e2e-local-group",
            "gate": [{"metric": "Inspect/capitals/accuracy", "allow_equal": True}],
        },
        selection={
            "metrics": [
                {"metric": "FactualKnowledge/factual_knowledge", "weight": 2},
                {"metric": "Pairwise/win_rate_vs_champion", "weight": 1},
                {"metric": "Inspect/capitals/accuracy", "weight": 1},
            ]
        },
    )
    import yaml

    folder = tmp_path_factory.mktemp("configs")
    (folder / "e2e.yaml").write_text(yaml.safe_dump(cfg))
    dag, dag_run = run_dag("e2e-local", folder)
    return dag_run, run_folder(dag.dag_id, dag_run.run_id)


def test_good_models_are_scored_in_range(e2e_run):
    from llmeval.results import read_model_result

    _, folder = e2e_run
    for name in GOOD:
        res = read_model_result(folder / "models" / name, name)
        assert res.succeeded, res.error
        assert res.generation.records_evaluated == 4 and res.generation.records_failed == 0
        assert res.generation.latency_p50_ms > 0 and res.generation.output_tokens_total > 0
        fk = res.metric("FactualKnowledge/factual_knowledge")
        sim = res.metric("SemanticSimilarity/semantic_similarity")
        assert 0.0 <= fk <= 1.0 and 0.0 <= sim <= 1.0
        assert 0.0 < res.metric("Brevity/brevity") <= 1.0
        assert 0.0 < res.metric("Brevity/brevity") <= 1.0
        score = res.algorithms[1].scores[0]
        assert score.ci_low <= score.value <= score.ci_high and score.count == 4
        assert set(res.algorithms[0].category_scores) == {"geography"}
        records = [json.loads(line) for line in (folder / "models" / name / "records.jsonl").read_text().splitlines()]
        rows = [r for r in records if "task" not in r]
        assert len(rows) == 4 and all("FactualKnowledge" in r["scores"] and r["model_output"] is not None for r in rows)
        # the Inspect task's own samples, scored, beside the dataset's records; Inspect's log in the store
        samples = [r for r in records if r.get("task") == "Inspect/capitals"]
        accuracy = res.algorithms[-1].score("accuracy")
        assert res.algorithms[-1].algorithm == "Inspect/capitals" and accuracy.count == len(samples) == 4
        assert accuracy.value == sum(r["scores"]["Inspect/capitals"]["accuracy"] for r in samples) / 4
        assert res.algorithms[-1].score("stderr") is not None and res.metadata["inspect"]["requests"] == 4
        assert (folder / "models" / name / "inspect" / "capitals.eval").stat().st_size > 0
        page = (folder / "models" / name / "report.html").read_text()
        assert "FactualKnowledge" in page and "95% interval" in page and rows[0]["model_input"] in page
        (server,) = res.usage  # the local model server, alive from its start to its stop, at no charge
        assert server.resource == "local model server" and server.seconds > 0 and server.usd == 0.0
        assert json.loads((folder / "models" / name / "results.json").read_text())["usage"][0]["seconds"] > 0
    assert "<h2>Cost</h2>" in (folder / "leaderboard.html").read_text()
    assert "Cost: $0.0000" in (folder / "summary.md").read_text()
    ranking = json.loads((folder / "selection.json").read_text())["ranking"]
    assert all(0 <= c["metrics"]["Inspect/capitals/accuracy"] <= 1 for c in ranking if c["model"] in GOOD)


@pytest.mark.faults
def test_failed_model_is_reported_and_the_run_fails_at_the_end(e2e_run):
    from llmeval.results import read_model_result

    dag_run, folder = e2e_run
    assert dag_run.state == "failed"  # the verdict task, after the report was written
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert states[("select", -1)] == "success" and states[("report", -1)] == "success"
    assert states[("verdict", -1)] == "failed"
    bad = read_model_result(folder / "models" / BAD, BAD)
    assert bad.status == "failed" and bad.failed_step == "generate" and "no_such_field" in bad.error
    assert bad.endpoint_seconds > 0  # its server's time is counted although it produced nothing
    selection = json.loads((folder / "selection.json").read_text())
    assert selection["best"] in GOOD
    assert {c["model"]: c["status"] for c in selection["ranking"]}[BAD] == "failed"
    assert BAD in (folder / "leaderboard.html").read_text() and "Failures" in (folder / "leaderboard.html").read_text()
    assert _servers_running(GOOD + [BAD]) == []
    from fault_matrix import record

    record(
        "every generation fails (bad output path)",
        "local (real model)",
        **{
            "failed model / step": f"{BAD} / generate",
            "resources left": "none (servers stopped)",
            "other models": "intact",
            "report": "names model and step",
        },
    )


def test_registry_holds_a_new_version_for_the_selected_model(e2e_run):
    from llmeval.registry import LocalRegistry
    from llmeval.store import registry_folder

    dag_run, folder = e2e_run
    versions = LocalRegistry(registry_folder()).versions("e2e-local-group")
    assert len(versions) == 1 and versions[0].run_id == dag_run.run_id
    assert versions[0].model == json.loads((folder / "selection.json").read_text())["best"]
    assert versions[0].approval_status == "Approved"
    assert "FactualKnowledge/factual_knowledge" in versions[0].metrics


def test_smollm2_judges_each_answer_and_its_server_lives_only_for_the_run(e2e_run):
    """SmolLM2's ratings are weak: shapes and counts, not values."""
    from llmeval.results import read_model_result

    dag_run, folder = e2e_run
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["deploy_judges"] == "success" and states["teardown_judges"] == "success"
    rated = 0
    for name in GOOD:
        res = read_model_result(folder / "models" / name, name)
        (judged,) = [a for a in res.algorithms if a.algorithm == "LLMJudge"]
        scores = {s.name: s for s in judged.scores}
        unparseable = int(scores["correctness_unparseable"].value)
        assert scores["correctness"].count + unparseable == 4, scores
        rated += scores["correctness"].count
        if scores["correctness"].count:
            assert 0.0 <= scores["correctness"].value <= 1.0
        rows = [json.loads(line) for line in (folder / "models" / name / "records.jsonl").read_text().splitlines()]
        verdicts = [r["judgements"]["correctness"] for r in rows if "task" not in r]  # not Inspect's samples
        assert sum(v["rating"] is None for v in verdicts) == unparseable
        assert all(v["rating"] in (1, 2, 3, 4, 5) and "explanation" in v for v in verdicts if v["rating"] is not None)
        assert "<th>judge</th>" in (folder / "models" / name / "report.html").read_text()
    assert rated > 0  # with the "Rating:" prefill, SmolLM2's answers start with a number
    pairwise = json.loads((folder / "pairwise.json").read_text())  # the bad model answered nothing: not compared
    (pair,) = pairwise["pairs"]
    assert (pair["a"], pair["b"]) == tuple(GOOD) and pair["records"] + pair["unparseable"] == 4
    assert pair["wins_a"] + pair["ties"] + pair["wins_b"] == pair["records"]
    assert sorted(row["model"] for row in pairwise["bradley_terry"]) == sorted(GOOD)
    (agreement,) = json.loads((folder / "agreement.json").read_text())  # SmolLM2 against the labels
    assert agreement["judge"] == JUDGE and agreement["labels"] >= 2 and not agreement["trusted"], agreement
    people = json.loads((folder / "human_labels.json").read_text())["correctness"]  # for the records view
    assert len(people) >= agreement["labels"] and {p["labeller"] for p in people} == {"reference-rule"}, people
    excluded = json.loads((folder / "selection.json").read_text())["excluded"]
    assert "its lower bound is below min_agreement 0.4" in excluded["LLMJudge/correctness"]
    leaderboard = (folder / "leaderboard.html").read_text()
    assert (
        "<h2>Judges</h2>" in leaderboard
        and "Left out of selection and the gate:</b> LLMJudge/correctness" in leaderboard
    )
    ranking = {c["model"]: c for c in json.loads((folder / "selection.json").read_text())["ranking"]}
    assert ranking[GOOD[0]]["metrics"]["Pairwise/win_rate_vs_champion"] == 0.5, ranking  # merged in for selection
    assert "<h2>Pairwise</h2>" in (folder / "leaderboard.html").read_text()
    assert states["compare"] == "success"
    (judge,) = read_model_result(folder / "models" / JUDGE, JUDGE).usage  # the judge's server, start to stop
    assert judge.resource == "local model server" and judge.seconds > 0
    assert "e2e-judge (judge)" in (folder / "leaderboard.html").read_text()  # in the run's cost
    tis = {(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances()}
    ended = datetime.fromisoformat(judge.ended)
    assert max(ti.end_date for (task, _), ti in tis.items() if task == "model.evaluate") < ended
    assert ended < tis[("teardown_judges", -1)].end_date
    assert _servers_running([JUDGE]) == []


def test_no_model_server_is_left_running(e2e_run):
    _, folder = e2e_run
    assert _servers_running(GOOD + [BAD, JUDGE]) == []
    for name in GOOD + [BAD]:
        assert "serving" in (folder / "models" / name / "server.log").read_text()  # each was started, its log kept


def test_each_server_stops_when_its_model_is_no_longer_needed_not_at_teardown(e2e_run):
    """The evaluation says when generation (and any scorer that asks the model) is done; the
    evaluate task stops the server then, while scoring goes on; teardown finds it gone."""
    from llmeval.results import read_model_result

    dag_run, folder = e2e_run
    tis = {(ti.task_id, ti.rendered_map_index): ti for ti in dag_run.get_task_instances()}
    for name in GOOD:
        (server,) = read_model_result(folder / "models" / name, name).usage
        evaluate = tis[("model.evaluate", name)]
        assert evaluate.start_date < datetime.fromisoformat(server.ended) < evaluate.end_date, (server, evaluate)
    teardowns = xcoms(dag_run, "model.teardown")  # the bad model never got that far: teardown stopped it
    assert sorted(teardowns.values()) == ["not running", "not running", "stopped"], teardowns
