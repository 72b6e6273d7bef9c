"""The SageMaker-target DAG under `dag.test()` against a moto server (S3 + SageMaker), the
Processing step emulated by running the real entry point against a simulated runtime."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime

import pytest
import yaml

from conftest import CONFIGS, ROOT, run_dag
from latency_server import LatencyServer
from sagemaker_fixtures import (
    BUCKET,
    CLAUDE_JUDGE,
    EMULATOR_AGENT,
    EmulatedJobs,
    claude,
    clients,
    sagemaker_config,
    xcoms,
)

# botocore operations -> the IAM actions that allow them
S3_ACTIONS = {
    "PutObject": "s3:PutObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
}


def iam_actions(calls: list[str]) -> set[str]:
    """IAM actions behind the observed calls (+ AddTags for tagged creates, PassRole for RoleArn)."""
    found = {"sagemaker:AddTags", "iam:PassRole"}
    for call in calls:
        service, operation = call.split(".")
        found.add(S3_ACTIONS[operation] if service == "s3" else f"sagemaker:{operation}")
    return found


def assert_policy_matches(cfg_dict: dict, calls: list[str]) -> None:
    from llmeval.config import EvalConfig
    from llmeval.iam import ON_FAILURE_ACTIONS, actions, airflow_policy

    policy = airflow_policy(EvalConfig.model_validate(cfg_dict), "s3://llmeval-test/llmeval")
    expected = actions(policy) - set(ON_FAILURE_ACTIONS)  # those are exercised by the Stubber tests
    assert expected == iam_actions(calls), expected ^ iam_actions(calls)


MODELS = ["sm-alpha", "sm-beta", "sm-gamma"]


@pytest.fixture(autouse=True)
def every_request_is_validated(monkeypatch):
    """Check every botocore call made in this process against the AWS API model."""
    from botocore.client import BaseClient

    from aws_model import assert_valid

    original = BaseClient._make_api_call
    seen: list[str] = []
    problems: list[str] = []

    def checked(self, operation_name, api_params):
        if EMULATOR_AGENT not in (self.meta.config.user_agent_extra or ""):  # the DAG's calls, not the harness's
            seen.append(f"{self.meta.service_model.service_name}.{operation_name}")
        try:
            assert_valid(self, operation_name, api_params)
        except AssertionError as exc:
            problems.append(str(exc))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", checked)
    yield seen
    assert not problems, problems
    assert {
        "sagemaker.CreateModel",
        "sagemaker.CreateEndpoint",
        "sagemaker.CreateProcessingJob",
        "sagemaker.CreateModelPackage",
        "sagemaker.DeleteEndpoint",
        "s3.PutObject",
    } <= set(seen), set(seen)


def _config(name, models, overrides=None, security=None) -> dict:
    cfg = sagemaker_config(name, models)
    for model, extra in (overrides or {}).items():
        next(m for m in cfg["models"] if m["name"] == model).update(extra)
    if security:
        cfg["sagemaker"]["security"] = security
    return cfg


def _run(tmp_path, name, models, airflow_db, overrides=None, security=None):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(_config(name, models, overrides, security)))
    return run_dag(name, folder)


def test_three_models_deployed_evaluated_torn_down_and_registered(
    tmp_path, airflow_db, processing_emulator, aws_env, every_request_is_validated
):
    from llmeval.store import run_folder

    dag, dag_run = _run(tmp_path, "sm-three", MODELS, airflow_db)
    assert_policy_matches(_config("sm-three", MODELS), every_request_is_validated)
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    # each evaluation released its endpoint, config and model: the teardowns find nothing left
    assert list(xcoms(dag_run, "model.teardown_endpoint").values()) == [[], [], []]
    sm, s3 = clients(aws_env)
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    packages = sm.list_model_packages(ModelPackageGroupName="sm-three-models")["ModelPackageSummaryList"]
    assert len(packages) == 1
    package = sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"]["llmeval:run_id"] == dag_run.run_id
    metrics_uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    bucket, _, key = metrics_uri.removeprefix("s3://").partition("/")
    assert (
        "FactualKnowledge/factual_knowledge"
        in json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["metrics"]
    )
    folder = run_folder(dag.dag_id, dag_run.run_id)
    for model in MODELS:
        result = json.loads((folder / "models" / model / "results.json").read_text())
        assert result["status"] == "succeeded" and result["generation"]["records_evaluated"] == 6
        assert result["outputs_location"].startswith("s3://llmeval-test/llmeval/sm-three/")
        assert (folder / "models" / model / "report.html").exists()  # written in the job, copied from S3
        billed = {u["resource"]: u for u in result["usage"]}
        endpoint, job = billed["endpoint"], billed["processing job"]
        # the endpoint lived from before the job started until the job released it, and is priced
        assert endpoint["started"] <= job["started"] <= endpoint["ended"], billed
        assert endpoint["seconds"] > 0 and job["seconds"] > 0 and endpoint["instance_type"] == "ml.g4dn.xlarge"
        assert endpoint["usd"] == round(endpoint["seconds"] / 3600 * 0.736, 6)
    assert processing_emulator.requests == 18  # 3 models x 6 records, once each
    assert "cost/usd" in json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["metrics"]
    assert float(package["CustomerMetadataProperties"]["cost_usd"]) > 0
    board = (folder / "leaderboard.html").read_text()
    assert "<h2>Cost</h2>" in board and board.count("ml.g4dn.xlarge x1") == 3


def test_failed_evaluation_still_deletes_its_endpoint_and_keeps_the_others(
    tmp_path, airflow_db, processing_emulator, aws_env
):
    from llmeval.results import read_model_result
    from llmeval.store import run_folder

    dag, dag_run = _run(
        tmp_path, "sm-fault", MODELS, airflow_db, {"sm-gamma": {"endpoint_name": "llmeval-sm-gamma-failing"}}
    )
    states = {(t.task_id, t.map_index): t.state for t in dag_run.get_task_instances()}
    assert states[("model.evaluate", 2)] == "failed" and states[("model.teardown_endpoint", 2)] == "success"
    assert dag_run.state == "failed"  # verdict, after the report
    assert xcoms(dag_run, "model.teardown_endpoint")[2][0] == "endpoint llmeval-sm-gamma-failing"
    sm, _ = clients(aws_env)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    folder = run_folder(dag.dag_id, dag_run.run_id)
    selection = json.loads((folder / "selection.json").read_text())
    statuses = {c["model"]: c["status"] for c in selection["ranking"]}
    assert statuses["sm-gamma"] == "failed" and selection["best"] in ("sm-alpha", "sm-beta")
    gamma = read_model_result(folder / "models" / "sm-gamma", "sm-gamma")  # its failure is billed too
    assert {u.resource for u in gamma.usage} == {"endpoint", "processing job"} and gamma.cost_usd > 0
    assert "sm-gamma" in (folder / "leaderboard.html").read_text()
    assert len(sm.list_model_packages(ModelPackageGroupName="sm-fault-models")["ModelPackageSummaryList"]) == 1


def test_tuned_branch_trains_then_deploys_the_trained_artifacts(
    tmp_path, airflow_db, processing_emulator, aws_env, every_request_is_validated
):
    from llmeval.store import run_folder

    tuning = {
        "finetuning": {
            "train_data_path": "finetune_qa_train.jsonl",
            "validation_data_path": "finetune_qa_validation.jsonl",
            "parameters": {"instance_type": "ml.g4dn.xlarge", "epoch": 2},
        }
    }
    dag, dag_run = _run(tmp_path, "sm-tuned", ["sm-base", "sm-tuned"], airflow_db, {"sm-tuned": tuning})
    assert_policy_matches(
        _config("sm-tuned", ["sm-base", "sm-tuned"], {"sm-tuned": tuning}), every_request_is_validated
    )
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    assert "tuned_model.finetune" in dag.task_ids and "model.finetune" not in dag.task_ids
    teardown = dag.get_task("tuned_model.teardown_endpoint")  # runs (and stops the job) if fine-tuning fails
    assert teardown.is_teardown and "tuned_model.prepare_training_job" in teardown.upstream_task_ids
    sm, s3 = clients(aws_env)
    jobs = sm.list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 1
    job = sm.describe_training_job(TrainingJobName=jobs[0]["TrainingJobName"])
    channels = {c["ChannelName"] for c in job["InputDataConfig"]}
    assert channels == {"training", "validation", "model"} and job["HyperParameters"]["epoch"] == '"2"'
    # the fixture spec's script is not prepacked: it goes by its S3 URI, as JumpStartEstimator sends it
    assert json.loads(job["HyperParameters"]["sagemaker_submit_directory"]).startswith("s3://jumpstart-cache-prod-")
    uploaded = s3.list_objects_v2(Bucket="llmeval-test", Prefix="llmeval/sm-tuned/")["Contents"]
    assert any(o["Key"].endswith("training-data/finetune_qa_validation/finetune_qa_validation.jsonl") for o in uploaded)
    folder = run_folder(dag.dag_id, dag_run.run_id)
    container = xcoms(dag_run, "tuned_model.prepare", key="container")[0]
    assert container["ModelDataUrl"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    tuned = json.loads((folder / "models" / "sm-tuned" / "results.json").read_text())
    assert tuned["metadata"]["training"]["job_name"] == job["TrainingJobName"]
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    billed = {u["resource"]: u for u in tuned["usage"]}  # the training job is billed to the tuned model
    assert set(billed) == {"training job", "endpoint", "processing job"}
    assert billed["training job"]["name"] == job["TrainingJobName"]
    assert billed["training job"]["instance_type"] == "ml.g4dn.xlarge" and billed["training job"]["usd"] is not None


def test_bedrock_model_is_evaluated_without_deploying_anything(tmp_path, airflow_db, processing_emulator, aws_env):
    """Also: with output_kms_key_id, every object the DAG writes to S3 is SSE-KMS encrypted; and a
    second run is answered from the response cache the first run's jobs kept in S3."""
    from llmeval.store import run_folder

    kms = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    bedrock = claude("anthropic.claude-3-haiku-20240307-v1:0", 20)
    dag, dag_run = _run(
        tmp_path,
        "sm-bedrock",
        ["sm-jumpstart", "sm-claude"],
        airflow_db,
        {"sm-claude": bedrock},
        {"output_kms_key_id": kms},
    )
    folder = run_folder(dag.dag_id, dag_run.run_id)
    _scored_without_deploying(dag, dag_run, "bedrock_model", folder / "models" / "sm-claude")
    assert xcoms(dag_run, "bedrock_model.collect_results")[0]["model"] == "sm-claude"
    sm, _ = clients(aws_env)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert processing_emulator.requests == 12  # 6 records x (1 SageMaker endpoint + 1 Bedrock model)
    assert json.loads((folder / "selection.json").read_text())["best"] == "sm-claude"  # a tie, broken by name
    packages = sm.list_model_packages(ModelPackageGroupName="sm-bedrock-models")["ModelPackageSummaryList"]
    package = sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert "InferenceSpecification" not in package  # registered by reference: the Bedrock model id
    assert package["CustomerMetadataProperties"]["model_id"] == "anthropic.claude-3-haiku-20240307-v1:0"
    # The second run: new Processing jobs (fresh disks) pull each model's cache from S3.
    _, again = run_dag("sm-bedrock", tmp_path / "configs")
    assert again.state == "success" and processing_emulator.requests == 12  # not one request more
    for model in ("sm-jumpstart", "sm-claude"):
        result = json.loads((run_folder(dag.dag_id, again.run_id) / "models" / model / "results.json").read_text())
        assert result["generation"]["cache_hits"] == 6, model
    written = []  # by the DAG and its jobs: code and inputs, the registered metrics, the response caches
    _, s3 = clients(aws_env)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        written += [o["Key"] for o in page.get("Contents", []) if re.search(r"/(code|run|registry|cache)/", o["Key"])]
    assert any(re.search(r"/code/[0-9a-f]{16}/llmeval/", k) for k in written) and any(
        k.endswith("model_quality.json") for k in written
    )
    assert sum(k.endswith("/cache/sm-claude/responses.sqlite") for k in written) == 1
    for key in written:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", kms), key


def test_a_bedrock_judge_rates_every_answer_in_the_processing_job(
    tmp_path, airflow_db, processing_emulator, aws_env, every_request_is_validated
):
    """LLMJudge on SageMaker: the judge is a Bedrock model (nothing deployed for it), asked from
    the Processing job; its ratings follow its answers record by record. Beside fmeval and the
    judge, an Inspect task (its file shipped with the job's code) that selection and the gate use."""
    from latency_server import judge_reply
    from llmeval.rubrics import BUILT_IN, Rubric
    from llmeval.store import run_folder

    def reply(prompt: str) -> str:  # a capital city for sm-beta's questions only; a rating otherwise
        return "Lima" if "capital of Peru" in prompt and "sm-beta" in prompt else judge_reply(prompt)

    processing_emulator.reply = reply  # the endpoint and the judge answer with a rating that follows the prompt
    cfg = _config("sm-judged", ["sm-alpha", "sm-beta", "sm-delta"])
    for model in cfg["models"]:  # each model's request names it, so their answers differ
        model["evaluation_config"]["content_template"] = f"{model['name']}: PROMPT_PLACEHOLDER"
    cfg["judges"] = [CLAUDE_JUDGE]
    cfg["algorithms"].append({"algorithm": "LLMJudge", "judge": "sm-judge", "rubrics": ["helpfulness"]})
    cfg["algorithms"].append({"algorithm": "Inspect", "task": "inspect_tasks.py@capitals"})
    cfg["selection"] = {"metrics": [{"metric": "Inspect/capitals/accuracy"}]}
    cfg["registry"]["gate"] = [{"metric": "Inspect/capitals/accuracy"}]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sm-judged.yaml").write_text(yaml.safe_dump(cfg))
    dag, dag_run = run_dag("sm-judged", tmp_path / "configs")
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    assert_policy_matches(cfg, every_request_is_validated)  # bedrock:InvokeModel on the judge, nothing more
    assert "deploy_judges" not in dag.task_ids  # a Bedrock judge has nothing to deploy
    assert processing_emulator.by_endpoint[CLAUDE_JUDGE["model_id"]] == 3 * 6  # one per model and record
    sm, _ = clients(aws_env)
    assert sm.list_endpoints()["Endpoints"] == []
    run = run_folder(dag.dag_id, dag_run.run_id)
    selection = json.loads((run / "selection.json").read_text())
    assert selection["best"] == "sm-beta" and selection["ranking"][0]["metrics"] == {
        "Inspect/capitals/accuracy": 1 / 12
    }
    gate = json.loads((run / "registration.json").read_text())
    assert gate["approval_status"] == "Approved", gate
    folder = run / "models" / "sm-alpha"
    assert (folder / "inspect" / "capitals.eval").exists()
    rubric = Rubric("helpfulness", BUILT_IN["helpfulness"])
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert len([r for r in records if r.get("task") == "Inspect/capitals"]) == 12
    records = [r for r in records if "task" not in r]
    expected = [int(judge_reply(rubric.prompt(r)).split("\n")[0].removeprefix("Rating: ")) for r in records]
    assert [r["judgements"]["helpfulness"]["rating"] for r in records] == expected
    result = json.loads((folder / "results.json").read_text())
    scores = {s["name"]: s["value"] for a in result["algorithms"] if a["algorithm"] == "LLMJudge" for s in a["scores"]}
    assert scores == {"helpfulness": sum((e - 1) / 4 for e in expected) / 6, "helpfulness_unparseable": 0.0}


def test_a_jumpstart_judge_is_deployed_for_the_run_and_deleted_after_the_comparison(
    tmp_path, airflow_db, processing_emulator, aws_env, every_request_is_validated
):
    """LLMJudge and Pairwise with a JumpStart judge: one endpoint for the run, InService before
    any model's job asks it, asked from every model's job and from the comparison job, deleted
    once the comparison is done."""
    from latency_server import judge_reply
    from llmeval.config import EvalConfig
    from llmeval.store import run_folder
    from llmeval.targets.sagemaker.requests import endpoint_name

    processing_emulator.reply = judge_reply
    cfg = _config("sm-js-judged", ["sm-alpha", "sm-beta"])
    cfg["judges"] = [{**cfg["models"][0], "name": "sm-judge"}]
    cfg["models"][1]["evaluation_config"]["prompt_template"] = "Question: $feature"  # its answers differ
    cfg["algorithms"].append({"algorithm": "LLMJudge", "judge": "sm-judge"})
    cfg["algorithms"].append({"algorithm": "Pairwise", "judge": "sm-judge", "champion": "sm-alpha"})
    cfg["selection"] = {"metrics": [{"metric": "Pairwise/win_rate_vs_champion"}]}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sm-js-judged.yaml").write_text(yaml.safe_dump(cfg))
    dag, dag_run = run_dag("sm-js-judged", tmp_path / "configs")
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    assert_policy_matches(cfg, every_request_is_validated)  # the jobs may invoke the judge's endpoint
    validated = EvalConfig.model_validate(cfg)
    judge = endpoint_name(validated, validated.model("sm-judge"))
    # LLMJudge: 6 records x 2 models; Pairwise: 6 records x 2 orders for the one pair
    assert processing_emulator.by_endpoint[judge] == 12 + 12
    sm, _ = clients(aws_env)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    tis = {(ti.task_id, ti.map_index): ti for ti in dag_run.get_task_instances()}
    evaluations = [ti for (task, _), ti in tis.items() if task == "model.evaluate"]
    assert len(evaluations) == 2 and all(ti.state == "success" for ti in evaluations)
    assert tis[("deploy_judges", 0)].end_date <= min(ti.start_date for ti in evaluations)
    assert tis[("compare.job", -1)].start_date >= max(ti.end_date for ti in evaluations)
    assert tis[("teardown_judges", -1)].start_date >= tis[("compare.collect", -1)].end_date
    folder = run_folder(dag.dag_id, dag_run.run_id)
    (pair,) = json.loads((folder / "pairwise.json").read_text())["pairs"]
    assert (pair["a"], pair["b"], pair["records"] + pair["unparseable"]) == ("sm-alpha", "sm-beta", 6)
    selection = json.loads((folder / "selection.json").read_text())
    ranked = {c["model"]: c["metrics"]["Pairwise/win_rate_vs_champion"] for c in selection["ranking"]}
    assert ranked["sm-alpha"] == 0.5 and 0.0 <= ranked["sm-beta"] <= 1.0
    assert "<h2>Pairwise</h2>" in (folder / "leaderboard.html").read_text()
    usage = json.loads((run_folder(dag.dag_id, dag_run.run_id) / "models" / "sm-judge" / "usage.json").read_text())
    assert [u["resource"] for u in usage] == ["endpoint"] and usage[0]["usd"] > 0
    billed = [
        u["usd"]
        for m in ("sm-alpha", "sm-beta")
        for u in json.loads((run_folder(dag.dag_id, dag_run.run_id) / "models" / m / "usage.json").read_text())
    ]
    summary = (run_folder(dag.dag_id, dag_run.run_id) / "summary.md").read_text()
    total = round(sum(billed + [usage[0]["usd"]]), 6)  # added in the order run_cost adds them
    assert f"Cost: ${total:.4f}" in summary  # the run's cost includes the judge's endpoint
    assert "sm-judge (judge)" in (run_folder(dag.dag_id, dag_run.run_id) / "leaderboard.html").read_text()
    for model in ("sm-alpha", "sm-beta"):
        result = json.loads((run_folder(dag.dag_id, dag_run.run_id) / "models" / model / "results.json").read_text())
        (judged,) = [a for a in result["algorithms"] if a["algorithm"] == "LLMJudge"]
        assert {s["name"]: s["count"] for s in judged["scores"]}["correctness"] == 6


def _scored_without_deploying(dag, dag_run, group: str, model_folder) -> dict:
    """The run succeeded; the group only prepares, evaluates and collects; the model's result."""
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    steps = {t.removeprefix(f"{group}.") for t in dag.task_ids if t.startswith(f"{group}.")}
    assert steps == {"prepare", "evaluate", "collect_results"}
    result = json.loads((model_folder / "results.json").read_text())
    assert result["status"] == "succeeded" and result["generation"]["records_evaluated"] == 6
    return result


def test_a_model_given_by_its_outputs_is_scored_in_processing_without_an_endpoint(
    tmp_path, airflow_db, processing_emulator, aws_env, every_request_is_validated
):
    """Its outputs file goes to S3 with the run's inputs; the Processing job scores it, asks
    nothing, and the model is registered by reference."""
    from llmeval.store import run_folder

    rows = [json.loads(line) for line in (CONFIGS.parent / "data" / "qa_general_knowledge.jsonl").open()][:6]
    given = tmp_path / "given.jsonl"
    given.write_text("".join(json.dumps({"record_id": r["id"], "model_output": r["answer"]}) + "\n" for r in rows))
    provided = {"model_id": "vendor-model", "outputs_location": str(given)}
    dag, dag_run = _run(tmp_path, "sm-given", ["sm-jumpstart", "sm-given"], airflow_db, {"sm-given": provided})
    folder = run_folder(dag.dag_id, dag_run.run_id)
    result = _scored_without_deploying(dag, dag_run, "provided_model", folder / "models" / "sm-given")
    assert result["algorithms"][0]["scores"][0]["value"] == 1.0  # the reference answers, given as outputs
    assert processing_emulator.requests == 6  # only the JumpStart model was asked
    sm, _ = clients(aws_env)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert json.loads((folder / "selection.json").read_text())["best"] == "sm-given"
    packages = sm.list_model_packages(ModelPackageGroupName="sm-given-models")["ModelPackageSummaryList"]
    package = sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert "InferenceSpecification" not in package


def slow_scoring_include(tmp_path, monkeypatch) -> None:
    """An include folder whose algorithms hold the slow scorer (data and prices: the project's)."""
    include = tmp_path / "include"
    (include / "algorithms").mkdir(parents=True)
    for name in ("data", "instance_prices.yaml"):
        (include / name).symlink_to(ROOT / "include" / name)
    shutil.copy(ROOT / "tests" / "data" / "algorithms" / "slow_scorer.py", include / "algorithms")
    monkeypatch.setenv("LLM_EVAL_INCLUDE_DIR", str(include))


def test_the_endpoint_lives_from_creation_until_the_job_stops_asking_it(
    tmp_path, airflow_db, aws_env, warm_container, monkeypatch
):
    """The job starts while the endpoint is Creating and waits for InService; when generation is
    done it writes its release object and the evaluate task deletes the endpoint while the slow
    scorer goes on: the endpoint is gone seconds before the job completes."""
    from llmeval.store import run_folder

    slow_scoring_include(tmp_path, monkeypatch)
    cfg = _config("sm-release", ["sm-alpha"])
    cfg["algorithms"].append({"algorithm": "custom:slow_scorer:SlowScorer", "seconds": 1})  # 6 records: 6 s
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "sm-release.yaml").write_text(yaml.safe_dump(cfg))
    with (
        LatencyServer(latency_s=0.001) as runtime,
        EmulatedJobs(aws_env, runtime.url, 1, warm_container, creating_s=3) as jobs,
    ):
        dag, dag_run = run_dag("sm-release", folder)
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    (created, _, endpoint), (deleted, _, _) = sorted(jobs.endpoint_events)
    [(job_name, job_ended)] = jobs.jobs_ended.items()
    assert job_ended - deleted > 3, (job_ended - deleted, "the endpoint outlived the model's use")
    assert xcoms(dag_run, "model.teardown_endpoint")[0] == []  # nothing left for the teardown task
    sm, s3 = clients(aws_env)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    result = json.loads((run_folder(dag.dag_id, dag_run.run_id) / "models" / "sm-alpha" / "results.json").read_text())
    assert {a["algorithm"]: a["error"] for a in result["algorithms"]}["SlowScorer"] is None
    billed = {u["resource"]: u for u in result["usage"]}
    # the job was created while the endpoint was still Creating (3 s), and outlived it
    job = sm.describe_processing_job(ProcessingJobName=job_name)
    endpoint_created = datetime.fromisoformat(billed["endpoint"]["started"])
    assert (job["CreationTime"] - endpoint_created).total_seconds() < 3, (job["CreationTime"], endpoint_created)
    assert billed["endpoint"]["ended"] < billed["processing job"]["ended"], billed
    released = s3.list_objects_v2(Bucket=BUCKET, Prefix="llmeval/sm-release/")["Contents"]
    assert sum(o["Key"].endswith("/released/sm-alpha.json") for o in released) == 1
    assert endpoint.startswith("llm")


def test_deprecated_versions_are_refused_before_anything_is_created_and_allowed_vulnerable_ones_flagged(
    tmp_path, airflow_db, processing_emulator, aws_env, every_request_is_validated
):
    """A deprecated JumpStart version fails its model at `prepare` with the spec's message, before
    any request that creates something; a vulnerable one with `allow_vulnerable: true` is
    evaluated, and the leaderboard and the registry say so."""
    from llmeval.results import read_model_result
    from llmeval.store import run_folder

    overrides = {"sm-old": {"model_version": "1.0.0"}, "sm-risky": {"model_version": "1.1.0", "allow_vulnerable": True}}
    dag, dag_run = _run(tmp_path, "sm-versions", ["sm-old", "sm-risky"], airflow_db, overrides)
    assert dag_run.state == "failed"  # verdict: sm-old failed
    folder = run_folder(dag.dag_id, dag_run.run_id)
    old = read_model_result(folder / "models" / "sm-old", "sm-old")
    assert old.failed_step == "deploy" and "its container is no longer patched" in old.error
    assert "pin another model_version" in old.error
    created = [call for call in every_request_is_validated if call.split(".")[1].startswith("Create")]
    assert created.count("sagemaker.CreateModel") == 1 and created.count("sagemaker.CreateEndpoint") == 1
    assert created.count("sagemaker.CreateProcessingJob") == 1  # only sm-risky's
    risky = json.loads((folder / "models" / "sm-risky" / "results.json").read_text())
    assert risky["status"] == "succeeded" and "transformers==4.30.0" in risky["metadata"]["warnings"][0]
    page = (folder / "leaderboard.html").read_text()
    assert '<h2 class="failed">Warnings</h2>' in page and "let through by allow_vulnerable" in page
    sm, _ = clients(aws_env)
    (package,) = sm.list_model_packages(ModelPackageGroupName="sm-versions-models")["ModelPackageSummaryList"]
    described = sm.describe_model_package(ModelPackageName=package["ModelPackageArn"])
    assert "transformers==4.30.0" in described["CustomerMetadataProperties"]["warnings"]


@pytest.fixture
def smollm2_runtime(aws_env, warm_container, tmp_path):
    """SageMaker Processing emulated against the project's local server (SmolLM2) as the runtime of
    the SageMaker endpoints, of Bedrock and of the OpenAI-compatible URL."""
    from model_servers import project_server

    names = ["sm-classic-ep", "sm-messages-ep", SERVED_PROFILE, "smollm2"]
    with project_server(names, tmp_path) as url, EmulatedJobs(aws_env, url, parallel=1, warm=warm_container) as jobs:
        yield url, jobs


SERVED_PROFILE = "us.anthropic.claude-3-haiku-20240307-v1:0"  # a Bedrock cross-region inference profile


def test_models_served_four_ways_are_evaluated_in_one_run(
    tmp_path, airflow_db, smollm2_runtime, aws_env, monkeypatch, every_request_is_validated
):
    """A classic seed model and a Messages-API model on SageMaker endpoints, a Bedrock model by
    Converse and an OpenAI-compatible URL whose key is in Secrets Manager: one leaderboard, tokens
    and latency for each, nothing deployed for the two served elsewhere, no key in the job."""
    import boto3

    from llmeval.store import run_folder
    from model_servers import API_KEY

    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=aws_env,
        region_name="us-east-1",
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    arn = secrets.create_secret(Name="llmeval/my-vllm", SecretString=API_KEY)["ARN"]
    url, _ = smollm2_runtime
    connection = {"conn_type": "http", "host": f"{url}/v1", "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_MY_VLLM", json.dumps({**connection, "extra": {"api_key_secret_arn": arn}}))
    prices = {"input": 0.25, "output": 1.25}
    cfg = _config("sm-served", ["sm-classic", "sm-messages"])
    cfg["models"][0]["endpoint_name"] = "sm-classic-ep"
    cfg["models"][1].update(
        endpoint_name="sm-messages-ep",
        evaluation_config={
            "api": "messages",
            "system_prompt": "Answer briefly.",
            "inference_parameters": {"max_tokens": 8},
        },
    )
    cfg["models"] += [
        {
            "name": "sm-claude",
            "model_id": SERVED_PROFILE,
            "model_provider": "bedrock",
            "price_per_million_tokens": prices,
            "evaluation_config": {"system_prompt": "Answer briefly.", "inference_parameters": {"maxTokens": 8}},
        },
        {
            "name": "sm-vllm",
            "model_id": "smollm2",
            "model_provider": "openai_compatible",
            "connection_id": "my_vllm",
            "price_per_million_tokens": prices,
            "evaluation_config": {"inference_parameters": {"max_tokens": 8}},
        },
    ]
    # an Inspect task: its conversation (a system message, the question) asked through each API
    cfg["algorithms"].append({"algorithm": "Inspect", "task": "inspect_tasks.py@capitals", "limit": 3})
    cfg["selection"] = {"metrics": [{"metric": "Inspect/capitals/accuracy"}]}
    cfg["registry"]["gate"] = [{"metric": "Inspect/capitals/accuracy", "allow_equal": True}]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sm-served.yaml").write_text(yaml.safe_dump(cfg))
    dag, dag_run = run_dag("sm-served", tmp_path / "configs")
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    assert {"bedrock_model.evaluate", "openai_model.evaluate"} <= set(dag.task_ids)
    assert not any(t.startswith(("bedrock_model.deploy", "openai_model.deploy")) for t in dag.task_ids)
    folder = run_folder(dag.dag_id, dag_run.run_id)
    results = {
        m: json.loads((folder / "models" / m / "results.json").read_text())
        for m in ("sm-classic", "sm-messages", "sm-claude", "sm-vllm")
    }
    for model, result in results.items():
        generation = result["generation"]
        assert result["status"] == "succeeded" and generation["records_evaluated"] == 6, model
        assert generation["output_tokens_total"] > 0 and generation["latency_p50_ms"] > 0, model
        assert [a["algorithm"] for a in result["algorithms"]] == ["FactualKnowledge", "Inspect/capitals"], model
        accuracy = result["algorithms"][1]["scores"][0]
        assert accuracy["name"] == "accuracy" and accuracy["count"] == 3 and result["metadata"]["inspect"]["requests"]
        log = folder / "models" / model / "inspect" / "capitals.eval"  # written in the job, kept in S3
        assert log.read_bytes()[:2] == b"PK", model
    for model in ("sm-claude", "sm-vllm"):  # billed by the token, beside the Processing job
        billed = {u["resource"]: u for u in results[model]["usage"]}
        assert set(billed) == {"processing job", "tokens"} and billed["tokens"]["usd"] > 0, model
    ranked = json.loads((folder / "selection.json").read_text())["ranking"]
    assert sorted(c["model"] for c in ranked) == ["sm-classic", "sm-claude", "sm-messages", "sm-vllm"]
    assert all(0 <= c["metrics"]["Inspect/capitals/accuracy"] <= 1 for c in ranked)
    _, jobs = smollm2_runtime
    assert {name for _, delta, name in jobs.endpoint_events if delta > 0} == {"sm-classic-ep", "sm-messages-ep"}
    sm, _ = clients(aws_env)
    job = xcoms(dag_run, "openai_model.prepare", "processing")[0]  # the CreateProcessingJob request
    served = json.loads(job["Environment"]["LLMEVAL_SERVED_AT"])
    assert served == {"sm-vllm": {"base_url": f"{url}/v1", "api_key_secret_arn": arn}}
    assert API_KEY not in json.dumps(job)  # the key never goes into the job's request
    assert results["sm-vllm"]["metadata"]["endpoint"] == "sm-vllm"  # no SageMaker endpoint named for it
    assert sm.list_endpoints()["Endpoints"] == []
