"""Local model servers: one process per model (`llmeval.evaluation.server`, speaking the
SageMaker runtime's API on 127.0.0.1), started for an owner (dag/run/model) and stopped by
PID, so a teardown without its deploy's XCom still finds the server on this host."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.prices import usage
from llmeval.results import record_usage
from llmeval.runtime import PLUGINS_DIR, algorithms_dir, worker_python

log = logging.getLogger("llmeval.local")

READY_TIMEOUT_S = 900  # first start converts the GGUF model (~30-60 s) after imports
MAX_IN_FLIGHT_ENV = "LLM_EVAL_SERVER_MAX_IN_FLIGHT"  # local server: more concurrent requests get 429


def worker_env() -> dict[str, str]:
    """Environment for worker processes: offline, dummy AWS credentials for the local server."""
    env = dict(os.environ)
    paths = (str(PLUGINS_DIR), str(algorithms_dir()), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def endpoint_name(cfg: EvalConfig, model: str) -> str:
    return cfg.model(model).endpoint_name or model


def owner(dag_id: str, run_id: str, model: str) -> str:
    """What a server is started for: a teardown without its deploy's XCom finds it by this."""
    return f"{dag_id}/{run_id}/{model}"


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _is_our_server(pid: int, who: str) -> bool:
    """True when `pid` is alive and is the server started for `who` (not a reused PID)."""
    cmdline = _cmdline(pid)
    return b"llmeval.evaluation.server" in cmdline and who.encode() in cmdline


def find_servers(who: str) -> list[int]:
    """PIDs of the live servers started for `who` on this host."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if _is_our_server(pid, who)]


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_endpoint(cfg: EvalConfig, model: str, run_folder: Any, who: str, previous: dict | None = None) -> dict:
    """Start (or reuse) the model's server; return its endpoint description (for XCom)."""
    name = endpoint_name(cfg, model)
    if previous and previous.get("url") and _is_our_server(previous["pid"], who) and _ping(previous["url"]):
        log.info("reusing live server pid %s for %s at %s", previous["pid"], name, previous["url"])
        return previous
    stop_servers(who)
    scratch = Path(tempfile.mkdtemp(prefix="llmeval-server-"))
    served = cfg.model(model).model_id
    if cfg.model(model).finetuning:  # the tuned model, from the run store
        tuned = scratch / store.TUNED
        store.download_tree(store.model_folder(run_folder, model) / store.TUNED, tuned)
        if not (tuned / "config.json").exists():
            raise FileNotFoundError(f"no fine-tuned model in {store.describe(store.model_folder(run_folder, model))}")
        served = str(tuned)
    ready, log_path = scratch / "server-ready.json", scratch / store.SERVER_LOG
    cmd = [
        worker_python(),
        "-m",
        "llmeval.evaluation.server",
        "--model-id",
        served,
        "--endpoint-name",
        name,
        "--ready-file",
        str(ready),
        "--max-in-flight",
        os.environ.get(MAX_IN_FLIGHT_ENV, "64"),
        "--owner",
        who,
    ]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=PLUGINS_DIR,
            env=worker_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    state = {
        "model": model,
        "endpoint_name": name,
        "pid": proc.pid,
        "url": None,
        "owner": who,
        "scratch": str(scratch),
        "started_at": datetime.now(UTC).isoformat(),
    }
    log.info("started model server pid %d for %s (log %s)", proc.pid, name, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"model server exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"model server not ready after {READY_TIMEOUT_S}s:\n{_tail(log_path)}")
            time.sleep(0.5)
        state["url"] = json.loads(ready.read_text())["url"]
    except BaseException:
        stop_servers(who)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    log.info("endpoint %s is serving at %s", name, state["url"])
    return state


def stop_server(pid: int, who: str, grace_s: float = 15.0) -> bool:
    """Stop the server `pid` if it is the one started for `who`; True if it was running."""
    if not _is_our_server(pid, who):
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _is_our_server(pid, who) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if _is_our_server(pid, who):
        log.warning("server pid %s did not stop in %.0fs: killing", pid, grace_s)
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    log.info("stopped model server pid %s (%s)", pid, who)
    return True


def stop_servers(who: str) -> int:
    """Stop every live server started for `who` on this host; how many there were."""
    return sum(stop_server(pid, who) for pid in find_servers(who))


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our child (it becomes a zombie otherwise)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_endpoint(
    cfg: EvalConfig, model: str, who: str, state: dict | None, run_folder: Any, keep: bool = False
) -> str:
    """Stop the model's server (the one its deploy handed on, else any started for `who`)
    and keep its log in the run store."""
    if keep or not cfg.model(model).cleanup_endpoint:
        log.warning("keeping the server of %s running (cleanup disabled): pid %s", model, (state or {}).get("pid"))
        return "kept"
    stopped = stop_server(state["pid"], who) if state else False
    stopped = stop_servers(who) > 0 or stopped  # also a server whose deploy never handed its PID on
    if stopped and state and state.get("started_at"):  # alive from its start until now, at no charge
        alive = usage(
            "local model server",
            state["endpoint_name"],
            "local",
            1,
            state["started_at"],
            datetime.now(UTC),
            0.0,
        )
        record_usage(store.model_folder(run_folder, model), [alive])
        log.info("%s: model server alive %.0f s", model, alive.seconds)
    if state and state.get("scratch"):
        server_log = Path(state["scratch"]) / store.SERVER_LOG
        if server_log.exists():
            store.write_bytes(store.model_folder(run_folder, model) / store.SERVER_LOG, server_log.read_bytes())
        shutil.rmtree(state["scratch"], ignore_errors=True)
    return "stopped" if stopped else "not running"
