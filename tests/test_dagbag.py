"""DagBag integrity: example configs become DAGs; one broken config is one import error
for that config file while the other DAGs load; parsing imports nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIGS, ROOT, local_config

HEAVY = ("fmeval", "torch", "transformers", "ray", "sagemaker", "sentence_transformers", "s3fs", "inspect_ai")


def _dagbag(monkeypatch, folder=None):
    from airflow.dag_processing.dagbag import DagBag

    if folder is not None:
        monkeypatch.setenv("LLM_EVAL_CONFIGS_DIR", str(folder))
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_example_configs_produce_dags_without_import_errors(monkeypatch):
    bag = _dagbag(monkeypatch)
    assert bag.import_errors == {}
    expected = {p.stem for p in CONFIGS.glob("*.yaml") if p.name != "defaults.yaml"}
    assert len(bag.dags) == len(expected) >= 1
    assert "llm-eval-local-demo" in bag.dags


def test_one_broken_config_is_one_import_error_and_the_others_load(monkeypatch, write_config):
    write_config("good.yaml", local_config("good-one"))
    write_config("also_good.yaml", local_config("good-two"))
    broken = local_config("broken")
    broken["models"][0]["endpoint_name"] = "under_scores_are_rejected"
    write_config("broken.yaml", broken)
    bag = _dagbag(monkeypatch, write_config.folder)
    assert set(bag.dags) == {"good-one", "good-two"}
    assert len(bag.import_errors) == 1
    ((path, message),) = bag.import_errors.items()
    assert path.endswith("broken.yaml")
    assert "broken.yaml:" in message and "models[0].endpoint_name" in message and "should match pattern" in message


def test_bad_yaml_and_invalid_schedule_are_import_errors_too(monkeypatch, write_config):
    write_config("good.yaml", local_config("good-one"))
    write_config("syntax.yaml", "pipeline: [unclosed\n")
    write_config("cron.yaml", local_config("bad-cron", schedule="every tuesday-ish"))
    bag = _dagbag(monkeypatch, write_config.folder)
    assert set(bag.dags) == {"good-one"}
    assert sorted(os.path.basename(p) for p in bag.import_errors) == ["cron.yaml", "syntax.yaml"]


def test_dag_shape_mapped_group_with_setup_and_teardown(monkeypatch):
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    dag = _dagbag(monkeypatch).dags["llm-eval-local-demo"]
    assert isinstance(dag.task_group_dict["model"], MappedTaskGroup)
    deploy, evaluate, teardown = (dag.get_task(f"model.{t}") for t in ("deploy", "evaluate", "teardown"))
    assert deploy.is_setup and teardown.is_teardown and not evaluate.is_setup
    assert evaluate.task_id in deploy.downstream_task_ids and teardown.task_id in evaluate.downstream_task_ids
    assert dag.get_task("select").trigger_rule == "all_done"
    assert dag.get_task("report").trigger_rule == "all_done"
    assert set(dag.task_ids) == {
        "preprocess",
        "plan",
        "foundation_models",
        "model.deploy",
        "model.evaluate",
        "model.teardown",
        "tuned_models",
        "tuned_model.finetune",
        "tuned_model.deploy",
        "tuned_model.evaluate",
        "tuned_model.teardown",
        "deploy_judges",  # the demo's judge (LLMJudge)
        "teardown_judges",
        "select",
        "register",
        "report",
        "verdict",
    }
    schema = dag.params.get_param("models").schema
    assert schema["items"]["enum"] == [
        "smollm2-chat-greedy",
        "smollm2-completion",
        "smollm2-chat-sampled",
        "smollm2-chat-tuned",
    ]
    assert dag.catchup is False


def test_parsing_imports_nothing_heavy():
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        f"print(json.dumps({{'dags': len(bag.dags), 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dags"] >= 1 and result["heavy"] == []


def test_only_tuned_branches_have_a_finetune_task(monkeypatch, write_config):
    models = [
        {"name": "base-a", "model_id": "smollm2-135m-instruct"},
        {
            "name": "tuned-b",
            "model_id": "smollm2-135m-instruct",
            "finetuning": {"train_data_path": "finetune_qa_train.jsonl"},
        },
        {"name": "base-c", "model_id": "smollm2-135m-instruct"},
    ]
    write_config("mixed.yaml", local_config("mixed", models=models))
    write_config("plain.yaml", local_config("plain"))
    bag = _dagbag(monkeypatch, write_config.folder)
    mixed, plain = bag.dags["mixed"], bag.dags["plain"]
    assert "tuned_model.finetune" in mixed.task_ids and "model.finetune" not in mixed.task_ids
    assert mixed.get_task("tuned_model.finetune").downstream_task_ids == {"tuned_model.deploy", "tuned_model.evaluate"}
    assert not any("finetune" in t or t.startswith("tuned_model") for t in plain.task_ids)


@pytest.mark.parametrize("bad", [["nope"], [], ["smollm2-completion", "smollm2-completion"]])
def test_models_param_rejects_unknown_empty_and_duplicate(monkeypatch, bad):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = _dagbag(monkeypatch).dags["llm-eval-local-demo"]
    with pytest.raises(ParamValidationError):
        dag.params.get_param("models").resolve(bad)
    assert dag.params.get_param("models").resolve(["smollm2-completion"]) == ["smollm2-completion"]


def test_nightly_schedule_with_catchup_only_when_asked(monkeypatch, write_config):
    write_config("nightly.yaml", local_config("nightly", schedule="0 2 * * *"))
    write_config("catching.yaml", local_config("catching", schedule="@daily", catchup=True, start_date="2026-11-01"))
    bag = _dagbag(monkeypatch, write_config.folder)
    nightly, catching = bag.dags["nightly"], bag.dags["catching"]
    assert nightly.catchup is False and nightly.timetable.expression == "0 2 * * *"
    assert catching.catchup is True and catching.start_date.isoformat().startswith("2026-11-01")


def test_catalog_asset_schedules_the_dag_on_the_asset(monkeypatch, write_config):
    from airflow.sdk import Asset

    write_config("on_asset.yaml", local_config("on-asset", catalog_asset="s3://prompts/catalog"))
    write_config("both.yaml", local_config("both", catalog_asset="s3://prompts/catalog", schedule="@daily"))
    bag = _dagbag(monkeypatch, write_config.folder)
    assert bag.dags["on-asset"].timetable.asset_condition == Asset("s3://prompts/catalog")
    assert len(bag.import_errors) == 1 and "use either schedule or catalog_asset" in next(
        iter(bag.import_errors.values())
    )


def test_every_task_reports_failures_with_model_and_step(monkeypatch):
    from llmeval.taskrun import record_task_failure

    for dag in _dagbag(monkeypatch).dags.values():
        for t in dag.tasks:
            callbacks = t.on_failure_callback if isinstance(t.on_failure_callback, list) else [t.on_failure_callback]
            assert record_task_failure in callbacks, (dag.dag_id, t.task_id)
        if dag.dag_id.startswith("llm-eval-sm"):
            by_step = {t.task_id.rpartition(".")[2]: t for t in dag.tasks}
            assert by_step["deploy"].retries == 2 and by_step["evaluate"].retries == 2


def test_pool_per_instance_type_limits_deploys(monkeypatch, write_config):
    import yaml

    cfg = yaml.safe_load((CONFIGS / "seed_scenario1_foundation_models.yaml").read_text())
    cfg["sagemaker"] = {"pool_prefix": "llmeval-"}
    write_config("pooled.yaml", cfg)
    mixed = yaml.safe_load((CONFIGS / "seed_scenario1_foundation_models.yaml").read_text())
    mixed["pipeline"]["name"] = "mixed-types"
    mixed["sagemaker"] = {"pool_prefix": "llmeval-"}
    mixed["models"][1]["deployment_config"]["instance_type"] = "ml.g5.12xlarge"
    write_config("mixed.yaml", mixed)
    judged = yaml.safe_load((CONFIGS / "seed_scenario1_foundation_models.yaml").read_text())
    judged["pipeline"]["name"] = "judged"
    judged["sagemaker"] = {"pool_prefix": "llmeval-"}
    base = {k: v for k, v in judged["models"][0].items() if k != "endpoint_name"}  # the judge's own endpoint
    judge = {**base, "name": "judge"}
    judge["deployment_config"] = {**judge["deployment_config"], "instance_type": "ml.g5.12xlarge"}
    judged["judges"] = [judge]
    judged["algorithms"].append({"algorithm": "LLMJudge", "judge": "judge"})
    write_config("judged.yaml", judged)
    two_judges = {**judged, "pipeline": {"name": "two-judges"}}
    two_judges["judges"] = [judge, {**base, "name": "other-judge"}]
    champion = judged["models"][0]["name"]
    two_judges["algorithms"] = [
        *judged["algorithms"],
        {"algorithm": "Pairwise", "judge": "other-judge", "champion": champion},
    ]
    write_config("two_judges.yaml", two_judges)
    bag = _dagbag(monkeypatch, write_config.folder)
    dag = bag.dags["llm-eval-sm-foundation-models"]
    assert dag.get_task("model.deploy").pool == "llmeval-ml.g5.2xlarge"
    assert dag.get_task("model.evaluate").pool == dag.get_task("model.teardown_endpoint").pool == "default_pool"
    assert bag.dags["judged"].get_task("deploy_judges").pool == "llmeval-ml.g5.12xlarge"
    errors = {Path(path).name: error for path, error in bag.import_errors.items()}
    assert "pools are per instance type, and the foundation models" in errors["mixed.yaml"]
    assert "pools are per instance type, and the judges" in errors["two_judges.yaml"]


def test_local_target_under_a_multi_host_executor_needs_one_workers_queue(monkeypatch, write_config):
    """Model servers are on the worker's 127.0.0.1 and stopped by PID: under CeleryExecutor a
    local config without `local.queue` is refused (naming the executor); with it, every task
    of that DAG goes to the one worker's queue. SageMaker configs need nothing."""
    import yaml

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("LLM_EVAL_ARTIFACTS_URL", "s3://shared-bucket/llmeval")  # a store every host sees
    write_config("spread.yaml", local_config("spread"))
    write_config("pinned.yaml", local_config("pinned", local={"queue": "host-a"}))
    write_config("cloud.yaml", yaml.safe_load((CONFIGS / "seed_scenario1_foundation_models.yaml").read_text()))
    bag = _dagbag(monkeypatch, write_config.folder)
    assert set(bag.dags) == {"pinned", "llm-eval-sm-foundation-models"}
    (error,) = bag.import_errors.values()
    assert "spread.yaml" in error and "the executor CeleryExecutor runs tasks on several hosts" in error
    assert "set local.queue" in error
    assert {t.queue for t in bag.dags["pinned"].tasks} == {"host-a"}
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert "spread" in _dagbag(monkeypatch, write_config.folder).dags


@pytest.mark.parametrize("target", ["local", "sagemaker"])
def test_review_sits_between_selection_and_registration(monkeypatch, write_config, target):
    from sagemaker_fixtures import sagemaker_config

    cfg = local_config("reviewed") if target == "local" else sagemaker_config("reviewed", ["m-one", "m-two"])
    cfg["registry"] = {"model_package_group_name": "reviewed", "approval": "review", "review_timeout_minutes": 90}
    write_config("reviewed.yaml", cfg)
    dag = _dagbag(monkeypatch, write_config.folder).dags["reviewed"]
    review = dag.get_task("review")
    assert review.upstream_task_ids == {"select"} and "register" in review.downstream_task_ids
    assert review.options == ["Approve", "Reject"] and list(review.params) == ["comment"]
    assert review.response_timeout.total_seconds() == 90 * 60


def test_judges_are_up_before_the_model_groups_and_torn_down_after_the_comparison(monkeypatch, write_config):
    judge = {"name": "judge", "model_id": "smollm2-135m-instruct"}
    algorithms = [
        {"algorithm": "LLMJudge", "judge": "judge"},
        {"algorithm": "Pairwise", "judge": "judge", "champion": "m-one"},
    ]
    write_config("judged.yaml", local_config("judged", judges=[judge], algorithms=algorithms))
    write_config("plain.yaml", local_config("plain"))
    bag = _dagbag(monkeypatch, write_config.folder)
    assert bag.import_errors == {}
    dag = bag.dags["judged"]
    up, compare, down = (dag.get_task(t) for t in ("deploy_judges", "compare", "teardown_judges"))
    assert up.is_setup and down.is_teardown and compare.trigger_rule == "all_done"
    assert "model.deploy" in up.downstream_task_ids and "plan" in up.upstream_task_ids
    assert "model.evaluate" in compare.upstream_task_ids
    assert {"select", "teardown_judges"} <= compare.downstream_task_ids
    assert not {"deploy_judges", "compare", "teardown_judges"} & set(bag.dags["plain"].task_ids)
