"""The run store: URLs, whole-object writes, exclusive creates (the registry's version
numbers) on a local disk and on S3 (moto), and a clear error for an unwritable store."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import local_config
from llmeval import store
from llmeval.config import EvalConfig
from llmeval.registry import APPROVED, LocalRegistry
from sagemaker_fixtures import BUCKET


def _s3_root(prefix: str):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(f"s3://aws_moto@{BUCKET}/{prefix}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://aws_moto@my-bucket/llmeval", "s3://my-bucket/llmeval"),
        ("s3://my-bucket", "s3://my-bucket"),
        ("file:///tmp/llmeval-store", "/tmp/llmeval-store"),
        ("/tmp/llmeval-store", "/tmp/llmeval-store"),
    ],
)
def test_root_forms(monkeypatch, url, expected):
    monkeypatch.setenv(store.ARTIFACTS_URL_ENV, url)
    root = store.root()
    assert str(root).rstrip("/").endswith(expected.removeprefix("s3://")) or str(root) == expected
    if "@" in url:
        assert root.conn_id == "aws_moto"
    assert store.root("s3://other-bucket/x").path.startswith("other-bucket/x")  # the config's URL wins


def test_default_is_the_local_artifacts_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(store.ARTIFACTS_URL_ENV, raising=False)
    monkeypatch.setenv(store.ARTIFACTS_DIR_ENV, str(tmp_path))
    assert store.root().protocol in ("file", "local") and store.root().path.rstrip("/") == str(tmp_path)


def test_malformed_environment_url_names_the_url(monkeypatch):
    monkeypatch.setenv(store.ARTIFACTS_URL_ENV, "s3:/broken")
    with pytest.raises(ValueError, match="'s3:/broken' is not supported: expected file:///absolute/path"):
        store.root()


def test_local_writes_are_whole_and_leave_no_temporary_file(tmp_path):
    target = tmp_path / "a" / "results.json"
    seen: list[str] = []
    stop = threading.Event()

    def read_while_writing():
        while not stop.is_set():
            if target.exists():
                seen.append(target.read_text())

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    for i in range(200):
        store.write_text(target, json.dumps({"i": i, "pad": "x" * 20000}))
    stop.set()
    reader.join()
    assert all(json.loads(text)["pad"] for text in seen)  # never a half-written file
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


def test_create_new_claims_a_name_once_locally(tmp_path):
    path = tmp_path / "v00001.json"
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: store.create_new(path, f"writer {i}"), range(16)))
    assert won.count(True) == 1 and path.read_text() == f"writer {won.index(True)}"
    assert [p.name for p in tmp_path.iterdir()] == ["v00001.json"]


def test_create_new_is_a_conditional_put_on_s3(aws_env):
    path = _s3_root("claims") / "v00001.json"
    assert store.create_new(path, "first") is True
    assert store.create_new(path, "second") is False
    assert path.read_text() == "first"


def test_registry_versions_stay_distinct_under_concurrent_runs_on_s3(aws_env):
    registry = LocalRegistry(_s3_root("registry"))
    with ThreadPoolExecutor(6) as pool:
        numbers = list(
            pool.map(lambda i: registry.register("grp", "m", f"run-{i}", APPROVED, {}, {}).version, range(12))
        )
    assert sorted(numbers) == list(range(1, 13))
    assert sorted(v.run_id for v in registry.versions("grp")) == sorted(f"run-{i}" for i in range(12))


def test_trees_go_to_s3_and_back(aws_env, tmp_path):
    local = tmp_path / "out"
    (local / "sub").mkdir(parents=True)
    (local / "results.json").write_text("{}")
    (local / "sub" / "model.safetensors").write_bytes(b"\0" * 1000)
    dest = _s3_root("tree")
    assert store.upload_tree(local, dest) == ["results.json", "sub/model.safetensors"]
    back = tmp_path / "back"
    assert sorted(store.download_tree(dest, back)) == ["results.json", "sub/model.safetensors"]
    assert (back / "sub" / "model.safetensors").read_bytes() == b"\0" * 1000


def test_an_unwritable_store_fails_the_first_task_naming_url_connection_and_permission(aws_env):
    from llmeval.steps import prepare_run

    cfg = EvalConfig.model_validate(local_config("t-store"))
    folder = store.root("s3://aws_moto@no-such-bucket/llmeval") / "runs" / "t-store" / "run-1"
    with pytest.raises(PermissionError) as err:
        prepare_run(cfg, folder, 2, "2025-01-01")
    text = str(err.value)
    assert "s3://aws_moto@no-such-bucket/llmeval/runs/t-store/run-1 (connection 'aws_moto')" in text
    assert "s3:PutObject" in text and "The specified bucket does not exist" in text


def test_include_is_found_in_the_dags_folder_airflow_cfg_names(tmp_path):
    """MWAA-style layout with the DAGs folder set in airflow.cfg, not in the environment."""
    import subprocess
    import sys

    from conftest import ROOT

    dags = tmp_path / "dags"
    (dags / "include" / "configs").mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "airflow.cfg").write_text(f"[core]\ndags_folder = {dags}\n")
    env = {"AIRFLOW_HOME": str(home), "PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin"}
    code = "from llmeval.runtime import configs_dir; print(configs_dir())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(dags / "include" / "configs")


def test_an_s3_catalog_is_read_through_the_configs_connection(aws_env, monkeypatch):
    """The prompt catalog in S3 is read with `sagemaker.aws_conn_id`'s credentials and endpoint,
    not with whatever default credentials the worker has (here: none that reach moto)."""
    from conftest import ROOT
    from llmeval.steps import prepare_run
    from sagemaker_fixtures import clients

    _, s3 = clients(aws_env)
    rows = (ROOT / "include" / "data" / "qa_general_knowledge.jsonl").read_bytes()
    s3.put_object(Bucket=BUCKET, Key="catalog/v3/qa.jsonl", Body=rows)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dataset = {
        "dataset_name": "qa",
        "input_data_location": f"s3://{BUCKET}/catalog/{{catalog_version}}/qa.jsonl",
        "model_input_key": "question",
        "target_output_key": "answer",
    }
    cfg = EvalConfig.model_validate(local_config("t-catalog", dataset=dataset, sagemaker={"aws_conn_id": "aws_moto"}))
    folder = store.root(f"s3://aws_moto@{BUCKET}/llmeval") / "runs" / "t-catalog" / "run-1"
    prepared = prepare_run(cfg, folder, 5, "v3")
    assert prepared["records"] == 5 and prepared["source"] == f"s3://{BUCKET}/catalog/v3/qa.jsonl"
