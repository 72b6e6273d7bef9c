"""Against a real Airflow (`airflow standalone` on SQLite, started and stopped here): trigger
a run through the REST API with Params (a subset of models and a record limit), wait for
it, read its results; an invalid Params value is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, local_config

pytestmark = pytest.mark.slow

DAG_ID = "rest-local"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited:\n{log.read_text()[-3000:]}")
        try:
            value = predicate()
            if value:
                return value
        except (OSError, KeyError):
            pass
        time.sleep(2)
    raise TimeoutError(f"{what} not reached in {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("standalone")
    configs = home / "configs"
    configs.mkdir()
    chat = {
        "output": "[0].generation.content",
        "content_template": [[{"role": "user", "content": "PROMPT_PLACEHOLDER"}]],
        "inference_parameters": {"max_new_tokens": 6},
    }
    cfg = local_config(
        DAG_ID,
        models=[
            {"name": "rest-a", "model_id": "smollm2-135m-instruct", "evaluation_config": chat},
            {"name": "rest-b", "model_id": "smollm2-135m-instruct", "evaluation_config": chat},
        ],
    )
    (configs / "rest.yaml").write_text(yaml.safe_dump(cfg))
    port = _free_port()
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(home / "airflow"),
        LLM_EVAL_CONFIGS_DIR=str(configs),
        LLM_EVAL_ARTIFACTS_DIR=str(home / "artifacts"),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    log = home / "standalone.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
    base = f"http://127.0.0.1:{port}/api/v2"
    try:
        _wait(lambda: _call(f"{base}/monitor/health")[0] == 200, 240, "api-server health", proc, log)
        _wait(lambda: _call(f"{base}/dags/{DAG_ID}")[0] == 200, 180, f"DAG {DAG_ID} parsed", proc, log)
        yield base, home
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # standalone stops its components on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything that ignored SIGINT
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until no process of the group is left
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("processes of airflow standalone are still running")


def test_invalid_params_are_refused(airflow_server):
    base, _ = airflow_server
    status, body = _call(f"{base}/dags/{DAG_ID}/dagRuns", "POST", {"logical_date": None, "conf": {"models": ["nope"]}})
    assert status == 400, body
    assert "nope" in json.dumps(body) or "models" in json.dumps(body)
    status, _ = _call(f"{base}/dags/{DAG_ID}/dagRuns", "POST", {"logical_date": None, "conf": {"num_records": 0}})
    assert status == 400


def test_trigger_a_subset_with_params_and_read_the_results(airflow_server):
    base, home = airflow_server
    status, run = _call(
        f"{base}/dags/{DAG_ID}/dagRuns",
        "POST",
        {"logical_date": None, "conf": {"models": ["rest-b"], "num_records": 2}},
    )
    assert status == 200, run
    run_id = run["dag_run_id"]

    def finished():
        state = _call(f"{base}/dags/{DAG_ID}/dagRuns/{run_id}")[1]["state"]
        return state if state in ("success", "failed") else None

    state = _wait(finished, 600, f"run {run_id}", None, home / "standalone.log")
    assert state == "success"
    from llmeval.store import safe_segment

    folder = home / "artifacts" / "runs" / DAG_ID / safe_segment(run_id)
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["rest-b"]
    result = json.loads((folder / "models" / "rest-b" / "results.json").read_text())
    assert result["status"] == "succeeded" and result["generation"]["records_total"] == 2
    assert (folder / "leaderboard.html").exists()
