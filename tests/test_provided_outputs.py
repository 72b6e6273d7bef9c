"""Bring-your-own outputs: a model served elsewhere, given by a file of its outputs keyed by
record id, is scored like the others with nothing deployed; records without an output fail."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT, local_config, run_dag
from llmeval.config import load_config
from llmeval.config.errors import ConfigError
from llmeval.evaluation.provided import provided_rows, read_outputs

QA = [json.loads(line) for line in (ROOT / "include" / "data" / "qa_general_knowledge.jsonl").read_text().splitlines()]


def _outputs(tmp_path, rows: list[dict], name: str = "given.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_outputs_are_matched_by_record_id_and_missing_ones_fail(tmp_path):
    given = _outputs(tmp_path, [{"record_id": "b", "model_output": "Tokyo"}, {"record_id": "a", "model_output": ""}])
    records = [{"record_id": r, "model_input": f"q {r}", "target_output": "x"} for r in ("a", "b", "c")]
    rows = provided_rows(records, read_outputs(given, "given.jsonl"), "given.jsonl")
    assert [r["model_output"] for r in rows] == ["", "Tokyo", None]
    assert [r["error"] for r in rows] == [None, None, "no output for this record in given.jsonl"]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", "given.jsonl, line 2: not JSON"),
        ('{"record_id": "x"}', 'given.jsonl, line 2: expected an object with "record_id" and a string "model_output"'),
        ('{"record_id": "a", "model_output": "again"}', "given.jsonl, line 2: record_id 'a' appears twice"),
    ],
)
def test_a_malformed_outputs_file_names_the_file_and_line(tmp_path, line, expected):
    path = tmp_path / "given.jsonl"
    path.write_text('{"record_id": "a", "model_output": "Paris"}\n' + line + "\n")
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_outputs(path, "given.jsonl")


@pytest.mark.parametrize(
    "extra, algorithms, field",
    [
        ({"finetuning": {"train_data_path": "train.jsonl"}}, None, "models[0].finetuning"),
        ({"model_provider": "local"}, None, "models[0].model_provider"),
        ({}, [{"algorithm": "QAAccuracySemanticRobustness"}], "algorithms[0].algorithm"),
    ],
)
def test_a_provided_model_that_would_need_serving_is_refused_at_load(tmp_path, extra, algorithms, field):
    model = {"name": "given", "model_id": "vendor-model", "outputs_location": "given.jsonl", **extra}
    cfg = local_config("bad-given", models=[model], **({"algorithms": algorithms} if algorithms else {}))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "bad.yaml:" in str(err.value) and field in str(err.value) and err.value.problems[0].line


def test_local_run_scores_the_given_outputs_with_nothing_served(tmp_path, airflow_db):
    from llmeval.store import run_folder

    answers = {r["id"]: r["answer"] for r in QA[:5]}
    answers[QA[1]["id"]] = "Kyoto"  # one wrong answer
    del answers[QA[4]["id"]]  # and one record not answered
    given = _outputs(tmp_path, [{"record_id": k, "model_output": v} for k, v in answers.items()])
    model = {"name": "elsewhere", "model_id": "vendor-model-v2", "outputs_location": str(given)}
    configs = tmp_path / "configs"
    configs.mkdir()
    cfg = local_config("given-outputs", models=[model], num_records=5, max_failed_ratio=0.25)
    (configs / "given-outputs.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    dag, dag_run = run_dag("given-outputs", configs)
    assert dag_run.state == "success", [(t.task_id, t.state) for t in dag_run.get_task_instances()]
    assert {t for t in dag.task_ids if t.startswith("provided_model.")} == {"provided_model.evaluate"}
    folder = run_folder(dag.dag_id, dag_run.run_id)
    result = json.loads((folder / "models" / "elsewhere" / "results.json").read_text())
    generation = result["generation"]
    assert (generation["records_total"], generation["records_evaluated"], generation["records_failed"]) == (5, 4, 1)
    assert result["status"] == "succeeded" and result["metadata"]["outputs_location"] == str(given)
    factual = result["algorithms"][0]["scores"][0]
    assert factual["name"] == "factual_knowledge" and factual["value"] == 0.75  # 3 of the 4 answered are right
    outputs = [
        json.loads(line) for line in (folder / "models" / "elsewhere" / "outputs.jsonl").read_text().splitlines()
    ]
    assert outputs[4]["error"] == f"no output for this record in {given}"
    assert json.loads((folder / "selection.json").read_text())["best"] == "elsewhere"


def test_a_missing_outputs_file_is_refused_when_the_config_loads(write_config):
    from llmeval.config import ConfigError, load_config

    models = [
        {"name": "m-one", "model_id": "smollm2-135m-instruct"},
        {"name": "given", "model_id": "vendor", "outputs_location": "no-such-outputs.jsonl"},
    ]
    path = write_config("given.yaml", local_config("given", models=models))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.field == "models[1].outputs_location" and problem.line is not None
    assert "no file at" in problem.message and "include/data" in problem.message
