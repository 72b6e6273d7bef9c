"""Local target: deploy = start a local model server, evaluate = run the evaluation entry
point in the worker environment, teardown = stop the server (by its recorded PID).

No Airflow import here: the factory wraps these functions in tasks. The server's PID is
written to the model's folder before anything can fail, so teardown finds it whatever
happened in between, and a re-run deploy reuses a live server instead of starting two.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from llmeval.config import EvalConfig
from llmeval.runtime import ALGORITHMS_DIR, PLUGINS_DIR, cache_dir, model_dir, worker_python

log = logging.getLogger("llmeval.local")

READY_TIMEOUT_S = 900  # first start converts the GGUF model (~30-60 s) after imports
ENDPOINT_FILE = "endpoint.json"
TUNED_DIR = "finetuned"
TRAINING_METRICS = "training_metrics.json"
MAX_IN_FLIGHT_ENV = "LLM_EVAL_SERVER_MAX_IN_FLIGHT"  # local server: more concurrent requests get 429


def worker_env() -> dict[str, str]:
    """Environment for worker processes: offline, dummy AWS credentials for the local server."""
    env = dict(os.environ)
    paths = (str(PLUGINS_DIR), str(ALGORITHMS_DIR), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def endpoint_name(cfg: EvalConfig, model: str) -> str:
    return cfg.model(model).endpoint_name or model


def _is_our_server(pid: int, endpoint: str) -> bool:
    """True when `pid` is alive and is the server we started for `endpoint` (not a reused PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"llmeval.evaluation.server" in cmdline and endpoint.encode() in cmdline


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


def start_endpoint(cfg: EvalConfig, model: str, run_folder: Path) -> dict[str, Any]:
    """Start (or reuse) the model's server; return its endpoint description."""
    folder = model_dir(run_folder, model)
    folder.mkdir(parents=True, exist_ok=True)
    name = endpoint_name(cfg, model)
    state_file = folder / ENDPOINT_FILE
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state.get("url") and _is_our_server(state["pid"], name) and _ping(state["url"]):
            log.info("reusing live server pid %s for %s at %s", state["pid"], name, state["url"])
            return state
        stop_server(state_file)
    ready = folder / "server-ready.json"
    ready.unlink(missing_ok=True)
    log_path = folder / "server.log"
    served = str(folder / TUNED_DIR) if cfg.model(model).finetuning else cfg.model(model).model_id
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
    state = {"model": model, "endpoint_name": name, "pid": proc.pid, "url": None, "log": str(log_path)}
    state_file.write_text(json.dumps(state))
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
        stop_server(state_file)
        raise
    state_file.write_text(json.dumps(state))
    log.info("endpoint %s is serving at %s", name, state["url"])
    return state


def stop_server(state_file: Path, grace_s: float = 15.0) -> bool:
    """Stop the server recorded in `state_file`; True if one was running."""
    if not state_file.exists():
        return False
    state = json.loads(state_file.read_text())
    pid, name = state["pid"], state["endpoint_name"]
    if not _is_our_server(pid, name):
        log.info("server pid %s for %s is not running", pid, name)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _is_our_server(pid, name) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if _is_our_server(pid, name):
        log.warning("server pid %s did not stop in %.0fs: killing", pid, grace_s)
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    log.info("stopped model server pid %s (%s)", pid, name)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our child (it becomes a zombie otherwise)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_endpoint(cfg: EvalConfig, model: str, run_folder: Path, keep: bool = False) -> str:
    state_file = model_dir(run_folder, model) / ENDPOINT_FILE
    if keep or not cfg.model(model).cleanup_endpoint:
        log.warning("keeping endpoint for %s running (cleanup disabled); state in %s", model, state_file)
        return "kept"
    return "stopped" if stop_server(state_file) else "not running"


def run_finetune(cfg: EvalConfig, model: str, run_folder: Path) -> Path:
    """Fine-tune the model on this machine; the tuned model is saved in the model's folder."""
    from llmeval.runtime import resolve_data_path

    spec = cfg.model(model)
    tuning = spec.finetuning
    params = tuning.parameters
    out = model_dir(run_folder, model) / TUNED_DIR
    cmd = [
        worker_python(),
        "-m",
        "llmeval.evaluation.finetune",
        "--model-id",
        spec.model_id,
        "--train",
        str(resolve_data_path(tuning.train_data_path)),
        "--output-dir",
        str(out),
        "--epochs",
        str(params.epoch),
        "--max-input-length",
        str(params.max_input_length),
        "--instruction-tuned" if params.instruction_tuned else "--no-instruction-tuned",
    ]
    if tuning.validation_data_path:
        cmd += ["--validation", str(resolve_data_path(tuning.validation_data_path))]
    for key, value in (params.model_extra or {}).items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    stream_command(cmd, f"fine-tune of {model}")
    return out / TRAINING_METRICS


def stream_command(cmd: list[str], what: str) -> None:
    """Run a worker command, streaming its output into the task log; kill it if the task dies."""
    log.info("running %s", " ".join(cmd))
    proc = subprocess.Popen(
        cmd,
        cwd=PLUGINS_DIR,
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    tail: list[str] = []
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line and not line.startswith("sagemaker.config INFO"):
                log.info("%s", line)
                tail = (tail + [line])[-20:]
        proc.wait()
    except BaseException:  # task killed or timed out: do not leave the worker behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n" + "\n".join(tail))


def run_evaluation(cfg: EvalConfig, model: str, run_folder: Path, endpoint: dict[str, Any]) -> Path:
    """Run the evaluation entry point for one model, streaming its log into the task log."""
    out = model_dir(run_folder, model)
    cmd = [
        worker_python(),
        "-m",
        "llmeval.evaluation",
        "--config",
        str(run_folder / "config.json"),
        "--model",
        model,
        "--dataset",
        str(run_folder / "dataset.jsonl"),
        "--output-dir",
        str(out),
        "--endpoint-name",
        endpoint["endpoint_name"],
        "--endpoint-url",
        endpoint["url"],
        "--cache-dir",
        str(cache_dir()),
    ]
    metrics = out / TUNED_DIR / TRAINING_METRICS
    if cfg.model(model).finetuning and metrics.exists():
        digest = json.loads(metrics.read_text())["weights_sha256"]
        cmd += [
            "--training-metrics",
            str(metrics),
            "--model-identity",
            f"{cfg.model(model).model_id}+tuned:{digest[:16]}",
        ]
    stream_command(cmd, f"evaluation of {model}")
    return out / "results.json"


# --------------------------------------------------------------------------- Airflow tasks


def registry(cfg: EvalConfig, run_folder: Path):
    from llmeval.registry import LocalRegistry
    from llmeval.runtime import registry_dir

    return LocalRegistry(registry_dir())


def model_steps(cfg: EvalConfig, model_name: Any, kind: str) -> None:
    """[finetune ->] deploy -> evaluate -> teardown for one (mapped) model, in the current task group."""
    from airflow.sdk import task

    from llmeval.factory import guarded, label

    @task(map_index_template="{{ model_label }}")
    def deploy(model: str) -> dict[str, Any]:
        """Start a local model server that speaks the SageMaker runtime API."""
        label(model)

        return guarded("deploy", model, lambda cfg, run, _: start_endpoint(cfg, model, run), first=kind != "tuned")

    timeout = timedelta(seconds=cfg.task_timeout_s)

    @task(map_index_template="{{ model_label }}", execution_timeout=timeout)
    def evaluate(model: str, endpoint: dict[str, Any]) -> str:
        """Generate with the model, then score the outputs (the evaluation entry point)."""
        label(model)
        return str(guarded("evaluate", model, lambda cfg, run, _: run_evaluation(cfg, model, run, endpoint)))

    @task(map_index_template="{{ model_label }}")
    def teardown(model: str) -> str:
        """Stop the model's server, whatever happened upstream."""
        label(model)
        from llmeval.factory import current_run
        from llmeval.steps import run_config

        run_folder, _, params = current_run()
        return stop_endpoint(run_config(run_folder), model, run_folder, bool(params.get("keep_endpoints")))

    @task(map_index_template="{{ model_label }}", execution_timeout=timeout)
    def finetune(model: str) -> str:
        """Fine-tune the base model on this machine (LoRA, CPU); loss per step in the log."""
        label(model)
        return str(guarded("finetune", model, lambda cfg, run, _: run_finetune(cfg, model, run), first=True))

    endpoint = deploy(model_name)
    if kind == "tuned":
        finetune(model_name) >> endpoint
    done = evaluate(model_name, endpoint)
    stop = teardown(model_name)
    done >> stop.as_teardown(setups=endpoint)
