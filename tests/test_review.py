"""Human review before promotion (`registry.approval: review`): the run waits in Airflow's
human-in-the-loop task until a reviewer answers through the api-server (Airflow's own HITL
REST API, as the Required Actions page does), and the version is registered as they decided,
with their name, time and comment in the registry, the model card and the report."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
import yaml

from conftest import api_token, local_config, run_dag
from helpers import result
from llmeval import store
from llmeval.config import EvalConfig
from llmeval.dag.review import ReviewOperator
from llmeval.registration import Registration, register_best
from llmeval.registry import APPROVED, PENDING, REJECTED, LocalRegistry
from llmeval.review import APPROVE, REJECT, flagged_records, outcome
from llmeval.selection import select

QA = [("q1", "Capital of France?", "Paris"), ("q2", "Capital of Japan?", "Tokyo"), ("q3", "Capital of Peru?", "Lima")]


def _given(folder, name: str, answers: list[str]) -> dict:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"record_id": q[0], "model_output": a}) + "\n" for q, a in zip(QA, answers)))
    return {"name": name, "model_id": f"vendor-{name}", "outputs_location": str(path)}


def _wait_for(check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("timed out waiting")


def test_a_reviewer_approves_in_airflow_and_the_version_says_so(tmp_path, airflow_api):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in QA))
    models = [_given(tmp_path, "good", ["Paris", "Tokyo", "Cusco"]), _given(tmp_path, "poor", ["Lyon", "Tokyo", "no"])]
    dataset = {
        "dataset_name": "qa3",
        "input_data_location": str(data),
        "model_input_key": "question",
        "target_output_key": "answer",
    }
    cfg = local_config(
        "review-dag",
        models=models,
        dataset=dataset,
        registry={"model_package_group_name": "review-group", "approval": "review"},
    )
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "review.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    seen: dict = {}

    def reviewer():  # answers as a person would, from another thread; dag.test runs tasks in this one
        headers = api_token(airflow_api, "admin")
        try:

            def waiting():
                found = airflow_api.get("/api/v2/dags/review-dag/dagRuns/~/hitlDetails", headers=headers).json()
                return [d for d in found.get("hitl_details", []) if d["task_instance"]["state"] == "awaiting_input"]

            (seen["detail"],) = _wait_for(waiting)
            choice, comment = APPROVE, "checked <q3> by hand"
        except BaseException as exc:  # still answer, so that the run ends and the test can fail
            seen["error"], choice, comment = exc, REJECT, "the test failed"
        run = quote(seen.get("detail", {}).get("task_instance", {}).get("dag_run_id", "~"), safe="")
        seen["answer"] = airflow_api.patch(
            f"/api/v2/dags/review-dag/dagRuns/{run}/taskInstances/review/-1/hitlDetails",
            json={"chosen_options": [choice], "params_input": {"comment": comment}},
            headers=headers,
        )

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    dag, dag_run = run_dag("review-dag", tmp_path / "configs")
    thread.join(timeout=30)
    assert "error" not in seen, seen.get("error")
    assert seen["answer"].status_code == 200, seen["answer"].text
    assert dag_run.state == "success", [(t.task_id, t.state) for t in dag_run.get_task_instances()]
    detail, run_id = seen["detail"], dag_run.run_id
    body = detail["body"]
    assert detail["options"] == [APPROVE, REJECT] and "**Selected: good.**" in body
    assert "| 1 | good | selected | 0.667 |" in body and "| 2 | poor | eligible | 0.333 |" in body
    assert "**Champion gate:** passed: no champion gate configured." in body
    assert (
        "`q3` (lowest FactualKnowledge/factual_knowledge, score 0.000): prompt `Capital of Peru?`; answer `Cusco`"
        in body
    )
    assert f"/dags/review-dag/runs/{quote(run_id, safe='')}/plugin/llm-leaderboard" in body

    registry = LocalRegistry(store.registry_folder())
    (version,) = registry.versions("review-group")
    assert version.approval_status == APPROVED and version.model == "good"
    assert version.metadata["review"].startswith("Approved by admin at ")
    assert version.metadata["review"].endswith(": checked <q3> by hand")
    card = (store.registry_folder() / "review-group" / "v00001.model_card.md").read_text()
    assert "checked <q3> by hand" in card and "Approved by admin" in card
    leaderboard = (store.run_folder("review-dag", run_id) / store.LEADERBOARD).read_text()
    assert "review: Approved by admin at" in leaderboard and "checked &lt;q3&gt; by hand" in leaderboard


def _decide(tmp_path, review: dict | None, on_gate_fail: str = "reject") -> Registration:
    cfg = EvalConfig.model_validate(local_config("rev", registry={"approval": "review", "on_gate_fail": on_gate_fail}))
    results = [result("m-one", fk=0.8), result("m-two", fk=0.4)]
    registry = LocalRegistry(tmp_path / "registry")
    folder = store.run_folder("rev", "run-1")
    return register_best(
        cfg, folder, registry, "run-1", select(cfg, results), results, "v1", dag_id="rev", review=review
    )


APPROVED_BY = {"decision": APPROVE, "by": "alice", "at": "2026-11-30T02:00:00+00:00", "comment": "fine"}


@pytest.mark.parametrize(
    "review, on_gate_fail, status",
    [
        (APPROVED_BY, "reject", APPROVED),
        ({**APPROVED_BY, "decision": REJECT, "comment": "too verbose"}, "reject", REJECTED),
        ({**APPROVED_BY, "decision": REJECT, "comment": "too verbose"}, "skip", None),
        ({"decision": None, "why": "no review answer: timeout"}, "reject", PENDING),
    ],
)
def test_the_decision_sets_the_approval_status(tmp_path, review, on_gate_fail, status):
    decided = _decide(tmp_path, review, on_gate_fail)
    if status is None:
        assert (
            not decided.registered
            and decided.reason == "rejected in review: Rejected by alice at 2026-11-30T02:00:00+00:00: too verbose"
        )
    else:
        assert decided.approval_status == status and decided.review == review
    assert Registration.from_dict(decided.to_dict()) == decided  # as XCom and registration.json carry it


def test_a_timeout_leaves_the_version_pending_instead_of_failing_the_task():
    operator = ReviewOperator(task_id="review", subject="s", flagged=3)
    timed_out = operator.execute_complete({}, {"error": "no response", "error_type": "timeout"})
    assert timed_out == {"decision": None, "why": "no review answer: timeout"}
    when = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    event = {
        "chosen_options": [REJECT],
        "params_input": {"comment": "no"},
        "responded_at": when,
        "responded_by_user": {"id": "7", "name": "bob"},
    }
    assert outcome(event) == {"decision": REJECT, "by": "bob", "at": "2026-11-30T02:00:00+00:00", "comment": "no"}


def test_flagged_records_are_the_lowest_then_the_most_disagreeing():
    def rows(scores):
        return [
            {"record_id": k, "prompt": f"p{k}", "model_output": "`x`\nline", "scores": {"A": {"s": v}}}
            for k, v in scores.items()
        ]

    records = {
        "best": rows({"1": 0.0, "2": 1.0, "3": 0.5, "4": 1.0}),
        "other": rows({"1": 0.0, "2": 0.0, "3": 0.5, "4": 1.0}),
    }
    flags = flagged_records(records, "best", "A/s", higher_is_better=True, limit=3)
    assert [(f.record_id, f.why) for f in flags] == [
        ("1", "lowest A/s"),
        ("3", "lowest A/s"),
        ("2", "differs from the other models by 1.00"),
    ]
    assert flags[0].output == "'x' line"  # safe inside a Markdown code span


def test_the_review_form_asks_a_rating_per_flagged_answer_and_keeps_them_as_labels():
    from llmeval.dag.review import review_task
    from llmeval.review import rated_rubric, reviewer_labels

    cfg = EvalConfig.model_validate(
        local_config(
            "rev",
            judges=[{"name": "judge", "model_id": "smollm2-135m-instruct"}],
            algorithms=[
                {"algorithm": "LLMJudge", "judge": "judge", "rubrics": [{"name": "helpfulness", "scale": [1, 2, 3]}]}
            ],
        )
    )
    rubric = rated_rubric(cfg)
    form = review_task(30, 3, rubric).serialized_params
    assert list(form) == ["comment", "rating_1", "rating_2", "rating_3"]
    assert form["rating_2"]["schema"] == {
        "type": ["null", "integer"],
        "minimum": 1,
        "maximum": 3,
        "title": "helpfulness of record 2",
    }
    assert list(review_task(30, 3, None).serialized_params) == ["comment"]  # no LLMJudge: nothing to rate
    asked = {
        "rubric": "helpfulness",
        "answers": [{"record_id": "q1", "answer_sha256": "a"}, {"record_id": "q2", "answer_sha256": "b"}],
    }
    labels = reviewer_labels(
        asked, {"comment": "ok", "rating_1": None, "rating_2": 3}, "ana", "2026-12-06T05:00:00", "run-1"
    )
    assert labels == [
        {
            "record_id": "q2",
            "answer_sha256": "b",
            "rating": 3,
            "labeller": "ana",
            "at": "2026-12-06T05:00:00",
            "run_id": "run-1",
        }
    ]
