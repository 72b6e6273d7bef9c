"""The SageMaker-target DAG on a run store in S3 (moto), with every task in an empty, fresh
local working folder that is wiped when the task ends: a failed evaluation still deletes its
endpoint. Also: teardown without the deploy's XCom, the frozen config, the local demo's
store on S3. (The full three-model DAG on an S3 store runs on the Celery stack.)"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import local_config, run_dag
from llmeval import store
from sagemaker_fixtures import BUCKET, REGION, clients, sagemaker_config, xcoms

STORE_URL = f"s3://aws_moto@{BUCKET}/store"


@pytest.fixture
def fresh_host_per_task(monkeypatch, tmp_path):
    """Each task runs in a new empty working folder and temp folder, deleted when it ends;
    a local run store would land in `local_store`, which must stay absent."""
    from airflow.sdk.execution_time import supervisor

    original = supervisor.run_task_in_process
    counter = itertools.count()
    hosts: list[str] = []
    local_store = tmp_path / "local-store-must-stay-empty"
    monkeypatch.setenv(store.ARTIFACTS_DIR_ENV, str(local_store))

    def run_on_a_fresh_host(ti, task):
        host = Path(tempfile.mkdtemp(prefix=f"host-{next(counter)}-", dir=tmp_path))
        hosts.append(f"{ti.task_id}[{ti.map_index}]")
        cwd, tmpdir = os.getcwd(), tempfile.tempdir
        os.chdir(host)
        tempfile.tempdir = str(host)
        try:
            return original(ti=ti, task=task)
        finally:
            os.chdir(cwd)
            tempfile.tempdir = tmpdir
            shutil.rmtree(host)

    monkeypatch.setattr(supervisor, "run_task_in_process", run_on_a_fresh_host)
    yield hosts
    assert not local_store.exists(), "a task wrote to a local run store"


def _store_keys(s3, prefix: str = "store/") -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _nothing_left(sm) -> None:
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


def _write(tmp_path, cfg: dict) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    (folder / f"{cfg['pipeline']['name']}.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def test_failed_evaluation_with_wiped_disks_still_deletes_its_endpoint(
    tmp_path,
    airflow_db,
    processing_emulator,
    aws_env,
    fresh_host_per_task,
    monkeypatch,
):
    monkeypatch.setenv(store.ARTIFACTS_URL_ENV, STORE_URL)
    cfg = sagemaker_config("sm-store-fault", ["sm-alpha", "sm-gamma"])
    cfg["models"][1]["endpoint_name"] = "llmeval-sm-gamma-failing"  # the emulated endpoint fails every call
    _, dag_run = run_dag("sm-store-fault", _write(tmp_path, cfg))
    states = {(t.task_id, t.map_index): t.state for t in dag_run.get_task_instances()}
    assert states[("model.evaluate", 1)] == "failed" and states[("model.teardown_endpoint", 1)] == "success"
    assert xcoms(dag_run, "model.teardown_endpoint")[1][0] == "endpoint llmeval-sm-gamma-failing"
    sm, s3 = clients(aws_env)
    _nothing_left(sm)
    run_prefix = f"store/runs/sm-store-fault/{store.safe_segment(dag_run.run_id)}/"
    failure = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{run_prefix}models/sm-gamma/failure.json")["Body"].read())
    assert failure["step"] == "evaluate"
    selection = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{run_prefix}selection.json")["Body"].read())
    assert selection["best"] == "sm-alpha"  # the other model's result is not lost


def test_teardown_without_the_deploys_xcom_finds_resources_by_name_and_tag(aws_env):
    """The deploy handed nothing on (its XCom is gone): the teardown finds the endpoint by its
    deterministic name, its config and model through it, and an orphaned model and config by
    prefix and tags; another pipeline's resources are left alone."""
    from llmeval.config import EvalConfig
    from llmeval.targets.sagemaker import requests as req
    from llmeval.targets.sagemaker.resources import teardown

    sm, _ = clients(aws_env)
    cfg = EvalConfig.model_validate(sagemaker_config("sm-orphans", ["sm-alpha", "sm-beta"]))
    resolved = {"image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/tgi:1", "model_data": "s3://b/model/"}
    role = "arn:aws:iam::123456789012:role/x"
    live = req.endpoint_config(cfg, cfg.model("sm-alpha"), resolved, role)
    sm.create_model(**live["Model"])
    sm.create_endpoint_config(**live["EndpointConfig"])
    sm.create_endpoint(**live["Endpoint"])
    # an earlier try created a model and config under other hashes, and no endpoint
    orphan = req.endpoint_config(cfg, cfg.model("sm-alpha"), dict(resolved, image_uri="other:2"), role)
    sm.create_model(**orphan["Model"])
    sm.create_endpoint_config(**orphan["EndpointConfig"])
    # the same names, created by another pipeline, for a model of the same name
    other = EvalConfig.model_validate(sagemaker_config("someone-else", ["sm-beta"]))
    foreign = req.endpoint_config(other, other.model("sm-beta"), resolved, role)
    sm.create_model(**foreign["Model"])

    deleted = teardown(cfg, "sm-alpha", keep=False, endpoint=None)
    assert sorted(deleted) == sorted(
        [
            f"endpoint {live['Endpoint']['EndpointName']}",
            f"endpoint config {live['EndpointConfig']['EndpointConfigName']}",
            f"model {live['Model']['ModelName']}",
            f"endpoint config {orphan['EndpointConfig']['EndpointConfigName']}",
            f"model {orphan['Model']['ModelName']}",
        ]
    )
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [foreign["Model"]["ModelName"]]
    assert teardown(cfg, "sm-alpha", keep=False, endpoint=None) == []  # nothing left, nothing to do


def test_deploy_refuses_an_endpoint_of_another_pipeline(aws_env):
    from llmeval.targets.sagemaker import requests as req

    sm, _ = clients(aws_env)
    sm.create_model(
        ModelName="m", PrimaryContainer={"Image": "img:1"}, ExecutionRoleArn="arn:aws:iam::123456789012:role/x"
    )
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[
            {"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName="shared-endpoint", EndpointConfigName="c", Tags=[{"Key": "team", "Value": "x"}])
    with pytest.raises(RuntimeError, match="not created by pipeline mine .*has no llmeval:pipeline tag"):
        req.check_owner(sm, "shared-endpoint", "mine")
    sm.create_endpoint(
        EndpointName="theirs", EndpointConfigName="c", Tags=[{"Key": req.OWNER_TAG, "Value": "other-pipeline"}]
    )
    with pytest.raises(RuntimeError, match="tag says 'other-pipeline'"):
        req.check_owner(sm, "theirs", "mine")
    req.check_owner(sm, "absent", "mine")  # nothing to refuse


def test_the_run_uses_the_config_its_dag_was_parsed_from(tmp_path, airflow_db, monkeypatch):
    """The YAML edited after the DAG was parsed: the run's frozen config is the parsed one,
    and no task reads the YAML again (each reads the frozen copy from the store)."""
    from airflow.utils.cli import get_bagged_dag

    import llmeval.config

    cfg = local_config("t-frozen", num_records=3)
    cfg["models"] = cfg["models"][:1]
    folder = _write(tmp_path, cfg)
    monkeypatch.setenv("LLM_EVAL_CONFIGS_DIR", str(folder))
    dag = get_bagged_dag(None, "t-frozen")
    cfg["num_records"] = 40
    (folder / "t-frozen.yaml").write_text(yaml.safe_dump(cfg))

    def no_yaml(*args, **kwargs):
        raise AssertionError("a task read the YAML again")

    monkeypatch.setattr(llmeval.config, "load_config", no_yaml)
    dag_run = dag.test(run_conf={"register": False})
    assert dag_run.state == "success", [(t.task_id, t.state) for t in dag_run.get_task_instances()]
    run = store.run_folder("t-frozen", dag_run.run_id)
    assert json.loads((run / "config.json").read_text())["num_records"] == 3
    assert len((run / "dataset.jsonl").read_text().splitlines()) == 3
    result = json.loads((run / "models" / "m-one" / "results.json").read_text())
    assert result["generation"]["records_total"] == 3


@pytest.mark.slow
def test_local_demo_writes_its_store_to_s3(tmp_path, airflow_db, aws_env, monkeypatch):
    monkeypatch.setenv(store.ARTIFACTS_URL_ENV, STORE_URL)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    demo = yaml.safe_load((Path(__file__).parents[1] / "include/configs/local_demo.yaml").read_text())
    demo["pipeline"]["name"] = "demo-on-s3"
    demo["num_records"] = 4
    next(a for a in demo["algorithms"] if a["algorithm"] == "Inspect")["limit"] = 2
    _, dag_run = run_dag("demo-on-s3", _write(tmp_path, demo), conf={"models": [demo["models"][0]["name"]]})
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    _, s3 = clients(aws_env)
    keys = _store_keys(s3)
    run_prefix = f"store/runs/demo-on-s3/{store.safe_segment(dag_run.run_id)}/"
    assert run_prefix + "leaderboard.html" in keys and run_prefix + "summary.md" in keys
    assert any(k.startswith("store/history/demo-on-s3/") and k.endswith(".json") for k in keys)
    assert any(k.startswith("store/registry/") for k in keys)
    assert any(k.startswith("store/cache/demo-on-s3/") for k in keys)
    assert any(k == f"{run_prefix}models/{demo['models'][0]['name']}/server.log" for k in keys)
    assert f"{run_prefix}models/{demo['models'][0]['name']}/inspect/capitals.eval" in keys  # Inspect's log
