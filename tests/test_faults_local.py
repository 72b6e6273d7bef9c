"""Injected faults on the local target, with the real model: a model server that cannot
start, throttles or dies mid-generate, an evaluation worker killed mid-generate, scoring
that raises, a registry that refuses the write. After each: no server or worker process left,
the other model's results intact, the report names the failed model and step; after a
kill, a re-run resumes from the response cache."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import local_config, run_dag, session_processes
from fault_matrix import record
from llmeval.results import read_model_result
from llmeval.store import cache_object, run_folder

pytestmark = [pytest.mark.faults, pytest.mark.slow]
GOOD, BAD = "local-good", "local-bad"
RECORDS = 16


def _config(name: str, **extra) -> dict:
    def model(model_name: str, template: str) -> dict:
        evaluation = {"inference_parameters": {"max_new_tokens": 16, "temperature": 0}, "prompt_template": template}
        evaluation["max_retries"] = 2
        return {"name": model_name, "model_id": "smollm2-135m-instruct", "evaluation_config": evaluation}

    # prompt templates per test and model: no answer is shared through the cache
    models = [model(GOOD, f"({name}) Q: $feature\nA:"), model(BAD, f"({name}) Question: $feature\nAnswer:")]
    return local_config(name, models=models, num_records=RECORDS, **extra)


def _run(tmp_path, name: str, **extra):
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(_config(name, **extra)))
    dag, dag_run = run_dag(name, folder)
    return dag_run, run_folder(dag.dag_id, dag_run.run_id)


def _processes(*parts: bytes) -> list[int]:
    return [pid for pid, args in session_processes().items() if all(part in args for part in parts)]


def _invariants(folder, failed: dict[str, str]) -> dict[str, str]:
    assert _processes(b"llmeval.evaluation.server") == [], "a model server is still running"
    assert _processes(b"llmeval.evaluation") == [], "an evaluation worker is still running"
    page = (folder / "leaderboard.html").read_text()
    for model, step in failed.items():
        result = read_model_result(folder / "models" / model, model)
        assert result.status == "failed" and result.failed_step == step, (model, result.failed_step, result.error)
        assert model in page and step in page
    for model in {GOOD, BAD} - set(failed):
        result = read_model_result(folder / "models" / model, model)
        assert result.succeeded and result.generation.records_evaluated == RECORDS
    return {
        "failed model / step": ", ".join(f"{m} / {s}" for m, s in failed.items()) or "none",
        "resources left": "none (no server or worker process)",
        "other models": "n/a (all affected)" if len(failed) == 2 else "intact",
        "report": "names model and step" if failed else "complete",
    }


def _rows(path) -> int:
    """Rows in a response cache; 0 while it is being created (no table yet, or locked)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def _stored_rows(dag_id: str, model: str, tmp_path) -> int:
    """Answers in the model's response cache in the run store."""
    from llmeval import store

    local = tmp_path / f"cache-{dag_id}-{model}.sqlite"
    cache = cache_object(dag_id, model)
    return _rows(store.download(cache, local)) if cache.exists() else 0


def _live_rows(worker_pid: int) -> int:
    """Answers in the response cache an evaluation worker is filling (its scratch copy)."""
    try:
        cmdline = Path(f"/proc/{worker_pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return 0
    return _rows(Path(cmdline[cmdline.index("--cache-dir") + 1]) / "responses.sqlite")


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
    record("deploy fails (server cannot start)", "local (real model)", **_invariants(folder, {BAD: "deploy"}))


def test_server_throttles_and_nothing_is_lost_or_duplicated(tmp_path, airflow_db, monkeypatch):
    """The servers admit 2 requests at a time and refuse the rest with 429, while each
    evaluation sends 8 at once: about 3 in 4 first attempts are throttled."""
    from llmeval.targets.local.servers import MAX_IN_FLIGHT_ENV

    monkeypatch.setenv(MAX_IN_FLIGHT_ENV, "2")
    cfg = _config("fault-local-throttle")
    for model in cfg["models"]:
        model["evaluation_config"].update(max_concurrency=8, max_retries=10)
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "throttle.yaml").write_text(yaml.safe_dump(cfg))
    dag, dag_run = run_dag("fault-local-throttle", folder)
    assert dag_run.state == "success"
    folder = run_folder(dag.dag_id, dag_run.run_id)
    cells = _invariants(folder, {})
    retried = 0
    for model in (GOOD, BAD):
        outputs = [json.loads(line) for line in (folder / "models" / model / "outputs.jsonl").read_text().splitlines()]
        assert len({r["record_id"] for r in outputs}) == len(outputs) == RECORDS
        assert all(r["error"] is None for r in outputs)
        served = re.findall(
            r"served (\d+) requests, refused (\d+)", (folder / "models" / model / "server.log").read_text()
        )
        assert int(served[-1][0]) == RECORDS, served  # each record answered exactly once: nothing duplicated
        assert int(served[-1][1]) > 0
        retries = read_model_result(folder / "models" / model, model).generation.retries
        assert retries >= int(served[-1][1])
        retried += retries
    record(
        "server throttles (429 past 2 in flight)",
        "local (real model)",
        **cells,
        retry=f"{retried} throttled requests retried; {2 * RECORDS} answered once each, none lost",
    )


def _kill_mid_generate(victim: bytes, stop: threading.Event, killed: dict) -> None:
    """When the bad model's evaluation worker has stored 6 answers, SIGKILL `victim` (the
    model server's or the worker's process group)."""
    while not stop.is_set():
        workers = _processes(b"llmeval.evaluation", BAD.encode())
        if workers:
            count = _live_rows(workers[0])
            targets = _processes(victim, BAD.encode())
            if count >= 6 and targets:
                os.killpg(targets[0], signal.SIGKILL)
                killed["after_answers"] = count
                return
        time.sleep(0.05)


KILLS = {  # victim process, the step the report names, what the failure says
    "server": (b"llmeval.evaluation.server", "generate", "Connection"),  # refused, or closed in flight
    "worker": (b"llmeval.evaluation", "evaluate", "exited with -9"),
}


@pytest.mark.parametrize("victim", KILLS)
def test_killed_mid_generate_then_the_rerun_resumes_from_the_cache(tmp_path, airflow_db, victim):
    process, step, message = KILLS[victim]
    name = f"fault-local-kill-{victim}"
    stop, killed = threading.Event(), {}
    watcher = threading.Thread(target=_kill_mid_generate, args=(process, stop, killed), daemon=True)
    watcher.start()
    try:
        dag_run, folder = _run(tmp_path, name)
    finally:
        stop.set()
        watcher.join()
    assert killed, f"the {victim} was not killed: the fault was not injected"
    assert dag_run.state == "failed"
    cells = _invariants(folder, {BAD: step})
    error = read_model_result(folder / "models" / BAD, BAD).error
    assert message in error, error
    assert _stored_rows(name, GOOD, tmp_path) == RECORDS
    stored = _stored_rows(name, BAD, tmp_path)  # kept in the run store although its worker failed
    assert 6 <= stored < RECORDS

    # The re-run (nothing killed) asks the model only for what was not answered before the kill.
    dag_run, folder = _run(tmp_path, name)
    assert dag_run.state == "success"
    bad = read_model_result(folder / "models" / BAD, BAD)
    assert bad.succeeded and bad.generation.cache_hits == stored  # every stored answer reused, none re-sent
    assert read_model_result(folder / "models" / GOOD, GOOD).generation.cache_hits == RECORDS
    record(
        f"{'model server dies' if victim == 'server' else 'worker killed'} mid-generate, re-run",
        "local (real model)",
        **cells,
        retry=f"re-run: {stored} stored answers reused, 0 re-sent; {RECORDS - stored} asked",
    )


def test_scoring_raises(tmp_path, airflow_db):
    algorithms = [{"algorithm": "FactualKnowledge", "target_output_delimiter": ""}]  # fmeval refuses ""
    dag_run, folder = _run(tmp_path, "fault-local-score", algorithms=algorithms)
    assert dag_run.state == "failed"
    cells = _invariants(folder, {GOOD: "score", BAD: "score"})
    assert "Empty target_output_delimiter" in read_model_result(folder / "models" / BAD, BAD).error
    record("scoring raises", "local (real model)", **cells)


def test_registry_write_fails(tmp_path, airflow_db, monkeypatch):
    from llmeval.registry import LocalRegistry

    def refuse(*args, **kwargs):
        raise OSError("registry volume is read-only (injected fault)")

    monkeypatch.setattr(LocalRegistry, "register", refuse)
    dag_run, folder = _run(tmp_path, "fault-local-registry")
    states = {t.task_id: t.state for t in dag_run.get_task_instances() if t.map_index < 0}
    assert states["register"] == "failed" and states["report"] == "success" and dag_run.state == "failed"
    assert "register step did not complete" in (folder / "leaderboard.html").read_text()
    record(
        "registry write fails",
        "local (real model)",
        **{**_invariants(folder, {}), "report": "says the register step did not complete; run fails"},
    )
