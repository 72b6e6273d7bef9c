"""Injected faults on the local target, with the real model: a model server that cannot
start, and one that dies mid-generate. After each: no server or worker process left, the
other model's results intact, the report names the failed model and step; after the
server died, a re-run resumes from the response cache."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
import yaml
from conftest import local_config, run_dag
from fault_matrix import record

from llmeval.results import read_model_result
from llmeval.runtime import cache_dir, run_dir

pytestmark = [pytest.mark.faults, pytest.mark.slow]
GOOD, BAD = "local-good", "local-bad"


def _config(name: str) -> dict:
    def model(model_name: str, template: str) -> dict:
        evaluation = {"inference_parameters": {"max_new_tokens": 32, "temperature": 0}, "prompt_template": template}
        evaluation["max_retries"] = 2
        return {"name": model_name, "model_id": "smollm2-135m-instruct", "evaluation_config": evaluation}

    # different prompt templates: the two models never share a cached answer
    return local_config(name, models=[model(GOOD, "Q: $feature\nA:"), model(BAD, "Question: $feature\nAnswer:")])


def _run(tmp_path, name: str):
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({**_config(name), "num_records": 24}))
    dag, dag_run = run_dag(name, folder)
    return dag_run, run_dir(dag.dag_id, dag_run.run_id)


def _processes(*parts: bytes) -> list[int]:
    found = []
    for proc in os.listdir("/proc"):
        if proc.isdigit():
            try:
                cmdline = open(f"/proc/{proc}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if all(part in cmdline for part in parts):
                found.append(int(proc))
    return found


def _invariants(folder, failed_step: str) -> dict[str, str]:
    assert _processes(b"llmeval.evaluation.server") == [], "a model server is still running"
    assert _processes(b"llmeval.evaluation") == [], "an evaluation worker is still running"
    bad = read_model_result(folder / "models" / BAD, BAD)
    assert bad.status == "failed" and bad.failed_step == failed_step, (bad.failed_step, bad.error)
    good = read_model_result(folder / "models" / GOOD, GOOD)
    assert good.succeeded and good.generation.records_evaluated == 24
    page = (folder / "leaderboard.html").read_text()
    assert BAD in page and failed_step in page
    return {
        "failed model / step": f"{BAD} / {failed_step}",
        "resources left": "none (no server or worker process)",
        "other models": "intact",
        "report": "names model and step",
    }


def test_model_server_cannot_start(tmp_path, airflow_db, monkeypatch):
    """The bad model's server process exits while loading (its weights are missing)."""
    real_popen = subprocess.Popen

    def popen(cmd, *args, **kwargs):
        if isinstance(cmd, list) and "llmeval.evaluation.server" in cmd and BAD in cmd:
            cmd = list(cmd)
            cmd[cmd.index("--model-id") + 1] = str(tmp_path / "weights-gone")
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    dag_run, folder = _run(tmp_path, "fault-local-deploy")
    assert dag_run.state == "failed"
    failure = json.loads((folder / "models" / BAD / "failure.json").read_text())
    assert "model server exited" in failure["error"] and "weights-gone" in failure["error"], failure["error"]
    record("deploy fails (server cannot start)", "local (real model)", **_invariants(folder, "deploy"))


def _kill_server_mid_generate(stop: threading.Event, killed: dict) -> None:
    """When the bad model's evaluation worker has stored 6 answers, SIGKILL its model server."""
    cache = cache_dir() / "responses.sqlite"
    baseline = None
    while not stop.is_set():
        if _processes(b"llmeval.evaluation", BAD.encode()) and cache.exists():
            with sqlite3.connect(cache) as db:
                count = db.execute("SELECT count(*) FROM responses").fetchone()[0]
            baseline = count if baseline is None else baseline
            servers = _processes(b"llmeval.evaluation.server", BAD.encode())
            if count - baseline >= 6 and servers:
                os.killpg(servers[0], signal.SIGKILL)
                killed["after_answers"] = count - baseline
                return
        time.sleep(0.05)


def test_model_server_dies_mid_generate_and_the_rerun_resumes(tmp_path, airflow_db):
    stop, killed = threading.Event(), {}
    watcher = threading.Thread(target=_kill_server_mid_generate, args=(stop, killed), daemon=True)
    watcher.start()
    try:
        dag_run, folder = _run(tmp_path, "fault-local-dies")
    finally:
        stop.set()
        watcher.join()
    assert killed, "the server was not killed: the fault was not injected"
    assert dag_run.state == "failed"
    cells = _invariants(folder, "generate")  # the evaluation entry point names the stage inside the task
    error = read_model_result(folder / "models" / BAD, BAD).error
    assert "records failed" in error and "EndpointConnectionError" in error, error
    answered = [r for r in map(json.loads, (folder / "models" / BAD / "outputs.jsonl").open()) if r["error"] is None]
    assert len(answered) >= killed["after_answers"] >= 6

    # The re-run (the server healthy again) sends only what was not answered before the kill.
    dag_run, folder = _run(tmp_path, "fault-local-dies")
    assert dag_run.state == "success"
    bad = read_model_result(folder / "models" / BAD, BAD)
    assert bad.succeeded and bad.generation.cache_hits == len(answered)
    assert read_model_result(folder / "models" / GOOD, GOOD).generation.cache_hits == 24
    record(
        "model server dies mid-generate, re-run",
        "local (real model)",
        **cells,
        retry=f"re-run: {len(answered)} answered before the kill from the cache, 0 re-sent",
    )
