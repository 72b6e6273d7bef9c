"""Injected faults on the SageMaker target (moto + the emulated Processing container).
After each: no endpoint, endpoint config or model left; the other model's results intact;
the report names the failed model and the step. `pytest -m faults` prints the matrix."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import run_dag, session_processes
from fault_matrix import record
from latency_server import LatencyServer
from sagemaker_fixtures import EmulatedJobs, clients, sagemaker_config

pytestmark = pytest.mark.faults
GOOD, BAD = "fault-good", "fault-bad"
BAD_ENDPOINT = "llmeval-fault-bad-endpoint"


def _run(tmp_path, aws_env, monkeypatch, name, server, warm, bad=None, cfg_extra=None, slow_starts=None):
    from llmeval.store import run_folder

    cfg = sagemaker_config(name, [GOOD, BAD])
    cfg["sagemaker"]["retries"] = 0
    cfg["models"][1]["endpoint_name"] = BAD_ENDPOINT
    cfg["models"][1].update(bad or {})
    cfg.update(cfg_extra or {})
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    with server, EmulatedJobs(aws_env, server.url, 2, warm, slow_starts=slow_starts):
        dag, dag_run = run_dag(name, folder)
    return dag_run, run_folder(dag.dag_id, dag_run.run_id)


def _invariants(aws_env, folder, failed: dict[str, str]) -> dict[str, str]:
    """Check what must hold after every fault; return the matrix cells."""
    from llmeval.results import read_model_result

    sm, _ = clients(aws_env)
    left = (
        len(sm.list_endpoints()["Endpoints"])
        + len(sm.list_endpoint_configs()["EndpointConfigs"])
        + len(sm.list_models()["Models"])
    )
    assert left == 0, "resources left in SageMaker"
    page = (folder / "leaderboard.html").read_text()
    for model, step in failed.items():
        result = read_model_result(folder / "models" / model, model)
        assert result.status == "failed" and result.failed_step == step, (model, result.failed_step, result.error)
        assert model in page and step in page
    others = [m for m in (GOOD, BAD) if m not in failed]
    for model in others:
        assert read_model_result(folder / "models" / model, model).succeeded, model
    return {
        "failed model / step": ", ".join(f"{m} / {s}" for m, s in failed.items()) or "none",
        "resources left": "none",
        "other models": "intact" if others else "n/a (all affected)",
        "report": "names model and step" if failed else "complete",
    }


def test_deploy_fails(tmp_path, airflow_db, aws_env, monkeypatch, warm_container):
    # moto rejects ml.g5 instance types: the endpoint config cannot be created after the model was
    bad = {"deployment_config": {"instance_type": "ml.g5.2xlarge", "num_instances": 1}}
    dag_run, folder = _run(tmp_path, aws_env, monkeypatch, "fault-deploy", LatencyServer(0.001), warm_container, bad)
    assert dag_run.state == "failed"
    record("deploy fails", "sagemaker (moto)", **_invariants(aws_env, folder, {BAD: "deploy"}))


def test_judge_deploy_fails(tmp_path, airflow_db, aws_env, monkeypatch, warm_container):
    """The judge's endpoint cannot be created (moto rejects ml.g5): no model is evaluated, each
    model's report names the judges' step, and teardown_judges deletes the judge's model."""
    judge = sagemaker_config("judge", ["fault-judge"])["models"][0]
    judge["deployment_config"]["instance_type"] = "ml.g5.2xlarge"
    algorithms = [{"algorithm": "FactualKnowledge"}, {"algorithm": "LLMJudge", "judge": "fault-judge"}]
    extra = {"judges": [judge], "algorithms": algorithms}
    dag_run, folder = _run(
        tmp_path, aws_env, monkeypatch, "fault-judge", LatencyServer(0.001), warm_container, cfg_extra=extra
    )
    assert dag_run.state == "failed"
    states = {(t.task_id, t.map_index): t.state for t in dag_run.get_task_instances()}
    assert states[("deploy_judges", 0)] == "failed" and states[("teardown_judges", -1)] == "success"
    assert {s for (task, _), s in states.items() if task.startswith("model.")} == {"upstream_failed"}
    error = json.loads((folder / "models" / GOOD / "failure.json").read_text())["error"]
    assert "ml.g5.2xlarge" in error, error
    record(
        "judge's endpoint fails to deploy",
        "sagemaker (moto)",
        **_invariants(aws_env, folder, {GOOD: "deploy_judges", BAD: "deploy_judges"}),
    )


def test_endpoint_throttles_twenty_percent(tmp_path, airflow_db, aws_env, monkeypatch, warm_container):
    server = LatencyServer(0.001, throttle_rate=0.2, seed=5)
    dag_run, folder = _run(tmp_path, aws_env, monkeypatch, "fault-throttle", server, warm_container)
    assert dag_run.state == "success" and server.throttled > 0
    # both models send the same 6 prompts: each is answered exactly twice, once per model
    assert len(server.answered) == 6 and set(server.answered.values()) == {2}
    for model in (GOOD, BAD):
        stats = json.loads((folder / "models" / model / "results.json").read_text())["generation"]
        assert stats["records_evaluated"] == stats["records_total"] == 6
    record(
        "endpoint throttles 20%",
        "sagemaker (moto)",
        **_invariants(aws_env, folder, {}),
        retry=f"{server.throttled} throttled requests retried, none lost or duplicated",
    )


def test_endpoint_dies_mid_generate(tmp_path, airflow_db, aws_env, monkeypatch, warm_container):
    server = LatencyServer(0.001, dies_after={BAD_ENDPOINT: 2})
    dag_run, folder = _run(tmp_path, aws_env, monkeypatch, "fault-dies", server, warm_container)
    assert dag_run.state == "failed"
    failure = json.loads((folder / "models" / BAD / "failure.json").read_text())
    assert failure["step"] == "evaluate" and "container exited 3" in failure["error"]
    assert server.by_endpoint[BAD_ENDPOINT] == 2  # 2 answered, then the model container died
    record("endpoint dies mid-generate", "sagemaker (moto)", **_invariants(aws_env, folder, {BAD: "evaluate"}))


def test_scoring_raises(tmp_path, airflow_db, aws_env, monkeypatch, warm_container):
    algorithms = [{"algorithm": "FactualKnowledge", "target_output_delimiter": ""}]  # str.split("") raises
    dag_run, folder = _run(
        tmp_path,
        aws_env,
        monkeypatch,
        "fault-score",
        LatencyServer(0.001),
        warm_container,
        cfg_extra={"algorithms": algorithms},
    )
    assert dag_run.state == "failed"
    record("scoring raises", "sagemaker (moto)", **_invariants(aws_env, folder, {GOOD: "evaluate", BAD: "evaluate"}))


def test_registry_write_fails(tmp_path, airflow_db, aws_env, monkeypatch, warm_container):
    from llmeval.registry import SageMakerModelRegistry

    def refuse(*args, **kwargs):
        raise RuntimeError("registry unavailable (injected fault)")

    monkeypatch.setattr(SageMakerModelRegistry, "register", refuse)
    dag_run, folder = _run(tmp_path, aws_env, monkeypatch, "fault-registry", LatencyServer(0.001), warm_container)
    states = {t.task_id: t.state for t in dag_run.get_task_instances() if t.map_index < 0}
    assert states["register"] == "failed" and states["report"] == "success" and states["verdict"] == "failed"
    assert dag_run.state == "failed"
    assert "register step did not complete" in (folder / "leaderboard.html").read_text()
    record(
        "registry write fails",
        "sagemaker (moto)",
        **{**_invariants(aws_env, folder, {}), "report": "says the register step did not complete; run fails"},
    )


def _processes(pattern: bytes) -> list[int]:
    return [pid for pid, args in session_processes().items() if pattern in b" ".join(args)]


@pytest.mark.slow
def test_evaluate_times_out_on_the_local_target(tmp_path, airflow_db):
    """The evaluate task exceeds its timeout: its worker process is killed, the model server
    is stopped by teardown, and the report names the model and the step."""
    from conftest import local_config
    from llmeval.results import read_model_result
    from llmeval.store import run_folder

    chat = {
        "output": "[0].generation.content",
        "content_template": [[{"role": "user", "content": "PROMPT_PLACEHOLDER"}]],
        "inference_parameters": {"max_new_tokens": 64},
    }
    cfg = local_config(
        "fault-timeout",
        models=[{"name": "slow-model", "model_id": "smollm2-135m-instruct", "evaluation_config": chat}],
        task_timeout_s=4,
        num_records=40,
    )
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "timeout.yaml").write_text(yaml.safe_dump(cfg))
    dag, dag_run = run_dag("fault-timeout", folder)
    states = {t.task_id: t.state for t in dag_run.get_task_instances()}
    assert states["model.evaluate"] == "failed" and states["model.teardown"] == "success"
    run = run_folder(dag.dag_id, dag_run.run_id)
    result = read_model_result(run / "models" / "slow-model", "slow-model")
    assert result.failed_step == "evaluate" and "Timeout" in result.error, result.error
    assert _processes(b"llmeval.evaluation") == []  # neither the worker nor the model server is left
    page = (run / "leaderboard.html").read_text()
    assert "slow-model" in page and "evaluate" in page
    record(
        "evaluate task times out",
        "local (real model)",
        **{
            "failed model / step": "slow-model / evaluate",
            "resources left": "none (worker killed, server stopped)",
            "other models": "n/a (one model)",
            "report": "names model and step",
        },
    )


def test_evaluate_times_out(tmp_path, airflow_db, aws_env, monkeypatch, warm_container):
    """The bad model's evaluate task outlives task_timeout_s: the task fails, a job still
    running would be stopped, teardown deletes the endpoint, the good model is intact."""
    import time

    from llmeval.targets.sagemaker.operators import ReusingProcessingOperator

    processing_operator = ReusingProcessingOperator
    original = processing_operator.wait_for_release

    def hangs_for_the_bad_model(self, context):  # its job was created and runs
        if f"eval-{BAD}" in self.config["ProcessingJobName"]:
            time.sleep(600)  # interrupted by the task's execution timeout
        return original(self, context)

    monkeypatch.setattr(processing_operator, "wait_for_release", hangs_for_the_bad_model)
    dag_run, folder = _run(
        tmp_path,
        aws_env,
        monkeypatch,
        "fault-timeout-sm",
        LatencyServer(0.001),
        warm_container,
        cfg_extra={"task_timeout_s": 25},
        slow_starts={f"eval-{BAD}": 600},  # still running when its task times out
    )
    assert dag_run.state == "failed"
    failure = json.loads((folder / "models" / BAD / "failure.json").read_text())
    assert "Timeout" in failure["error"], failure["error"]
    sm, _ = clients(aws_env)
    jobs = sm.list_processing_jobs()["ProcessingJobSummaries"]
    assert [j["ProcessingJobStatus"] for j in jobs if j["ProcessingJobName"].startswith(f"eval-{BAD}")] == ["Stopped"]
    record("evaluate task times out", "sagemaker (moto)", **_invariants(aws_env, folder, {BAD: "evaluate"}))
