"""Local target: deploy = start a local model server, evaluate = run the evaluation entry
point in the worker environment, teardown = stop the server.

No Airflow import at module level: the factory wraps these functions in tasks. What a
step needs from another moves by XCom (the server's URL, PID and owner) or through the
run store (config, dataset, results, the tuned model, the response cache); each step works
in a scratch folder of its own. The servers listen on 127.0.0.1 and are stopped by PID, so
a model's steps must run on one host: under an executor with several hosts the config
names the queue of one worker (`local.queue`), else it is refused at load.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.evaluation import RELEASE_MARK
from llmeval.prices import usage
from llmeval.results import record_usage
from llmeval.runtime import PLUGINS_DIR, algorithms_dir, worker_python

log = logging.getLogger("llmeval.local")

READY_TIMEOUT_S = 900  # first start converts the GGUF model (~30-60 s) after imports
TRAINING_METRICS = "training_metrics.json"
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
        "started_at": datetime.now(timezone.utc).isoformat(),
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
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


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
            datetime.now(timezone.utc),
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


def run_finetune(cfg: EvalConfig, model: str, run_folder: Any) -> dict[str, Any]:
    """Fine-tune the model on this machine; the tuned model goes to the model's folder in the
    run store. Returns the training metrics (loss per step, weights digest)."""
    from llmeval.runtime import resolve_data_path

    spec = cfg.model(model)
    tuning = spec.finetuning
    params = tuning.parameters
    with tempfile.TemporaryDirectory(prefix="llmeval-finetune-") as scratch:
        out = Path(scratch) / store.TUNED
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
        dest = store.model_folder(run_folder, model) / store.TUNED
        store.upload_tree(out, dest)
        log.info("tuned model saved to %s", store.describe(dest))
        return json.loads((out / TRAINING_METRICS).read_text())


def stream_command(cmd: list[str], what: str, on_line: Callable[[str], None] | None = None) -> None:
    """Run a worker command, streaming its output into the task log (and to `on_line`); kill
    it if the task dies."""
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
                if on_line:
                    on_line(line)
        proc.wait()
    except BaseException:  # task killed or timed out: do not leave the worker behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n" + "\n".join(tail))


def run_evaluation(
    cfg: EvalConfig,
    model: str,
    run_folder: Any,
    endpoint: dict[str, Any] | None,
    cache: Any,
    training: dict[str, Any] | None = None,
    catalog_version: str = "",
    release: Callable[[], None] | None = None,
    judges: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the evaluation entry point for one model in a scratch folder, streaming its log
    into the task log; its outputs and the response cache go back to the run store, also
    when it fails. Returns the result summary (results.json). A model given by its outputs
    (no `endpoint`) has them scored. `release` is called when the entry point says the model
    is no longer needed (scoring may go on). `judges`: the judges' servers, by name."""
    with tempfile.TemporaryDirectory(prefix="llmeval-evaluate-") as tmp:
        scratch = Path(tmp)
        out, cache_file = scratch / "out", scratch / "cache" / store.RESPONSE_CACHE
        store.download(run_folder / store.CONFIG, scratch / store.CONFIG)
        store.download(run_folder / store.DATASET, scratch / store.DATASET)
        if cache.exists():
            store.download(cache, cache_file)
        cmd = [
            worker_python(),
            "-m",
            "llmeval.evaluation",
            "--config",
            str(scratch / store.CONFIG),
            "--model",
            model,
            "--dataset",
            str(scratch / store.DATASET),
            "--output-dir",
            str(out),
            "--cache-dir",
            str(cache_file.parent),
        ]
        if endpoint is None:
            from llmeval.steps import outputs_file

            cmd += ["--outputs", str(outputs_file(cfg, model, catalog_version, scratch))]
        else:
            cmd += ["--endpoint-name", endpoint["endpoint_name"], "--endpoint-url", endpoint["url"]]
        for name, judge in (judges or {}).items():
            cmd += ["--judge", f"{name}={judge['endpoint_name']}@{judge['url']}"]
        if training:
            (scratch / TRAINING_METRICS).write_text(json.dumps(training))
            cmd += [
                "--training-metrics",
                str(scratch / TRAINING_METRICS),
                "--model-identity",
                f"{cfg.model(model).model_id}+tuned:{training['weights_sha256'][:16]}",
            ]

        def released(line: str) -> None:
            if release and RELEASE_MARK in line:
                try:
                    release()
                except Exception:  # teardown stops it anyway
                    log.exception("could not stop the server of %s early", model)

        try:
            stream_command(cmd, f"evaluation of {model}", released)
        finally:
            if out.exists():
                store.upload_tree(out, store.model_folder(run_folder, model))
                record_usage(store.model_folder(run_folder, model), [])  # a server stopped early: in results.json
            if cache_file.exists():
                _checkpoint(cache_file)
                store.write_bytes(cache, cache_file.read_bytes())
        return json.loads((out / store.RESULTS).read_text())


def run_pairwise(
    cfg: EvalConfig, run_folder: Any, dag_id: str, models: list[str], judges: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Run the pairwise comparison (`llmeval.evaluation.pairwise`) over the models' outputs
    in the run store; pairwise.json and the judge's response cache go back to the store.
    Returns the Bradley-Terry ranking."""
    section = next(s for s in cfg.algorithms if s.compares_models)
    cache = store.cache_object(dag_id, f"pairwise-{section.options['judge']}", cfg.artifacts_url)
    with tempfile.TemporaryDirectory(prefix="llmeval-pairwise-") as tmp:
        scratch = Path(tmp)
        cache_file, output = scratch / "cache" / store.RESPONSE_CACHE, scratch / store.PAIRWISE
        store.download(run_folder / store.CONFIG, scratch / store.CONFIG)
        for model in models:
            outputs = store.model_folder(run_folder, model) / store.OUTPUTS
            if outputs.exists():
                store.download(outputs, scratch / "models" / model / store.OUTPUTS)
        if cache.exists():
            store.download(cache, cache_file)
        cmd = [worker_python(), "-m", "llmeval.evaluation.pairwise", "--config", str(scratch / store.CONFIG)]
        cmd += ["--runs-dir", str(scratch / "models"), "--output", str(output), "--cache-dir", str(cache_file.parent)]
        for name, judge in judges.items():
            cmd += ["--judge", f"{name}={judge['endpoint_name']}@{judge['url']}"]
        (scratch / "models").mkdir(exist_ok=True)
        try:
            stream_command(cmd, "pairwise comparison")
        finally:
            if cache_file.exists():
                _checkpoint(cache_file)
                store.write_bytes(cache, cache_file.read_bytes())
        store.write_bytes(run_folder / store.PAIRWISE, output.read_bytes())
        return {"bradley_terry": json.loads(output.read_text())["bradley_terry"]}


def _checkpoint(database: Path) -> None:
    """Fold SQLite's write-ahead log into the database file (a killed worker leaves answers
    there), so the one file pushed to the store holds every answer."""
    with closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# --------------------------------------------------------------------------- Airflow tasks


class LocalTarget:
    result_task = "evaluate"

    def validate(self, cfg: EvalConfig) -> list[str]:
        """Refuse a local config under an executor with several hosts unless it names the
        queue of one worker (its servers are on 127.0.0.1 and stopped by PID)."""
        from llmeval.runtime import multi_host_executors

        multi_host = multi_host_executors()
        if multi_host and not cfg.local.queue:
            return [
                f"the local target runs its model servers on the worker's 127.0.0.1 and stops them by PID, so a "
                f"model's deploy, evaluate and teardown must run on one host; the executor {multi_host[0]} runs "
                f"tasks on several hosts: set local.queue to a queue that one worker serves "
                f"(airflow celery worker --queues NAME), or use the SageMaker target"
            ]
        return []

    def registry(self, cfg: EvalConfig, run: Any):
        from llmeval.registry import LocalRegistry

        return LocalRegistry(store.registry_folder(cfg.artifacts_url))

    def model_steps(self, cfg: EvalConfig, model_name: Any, kind: str) -> None:
        """[finetune ->] deploy -> evaluate -> teardown for one (mapped) model, in the current task
        group; evaluate alone for a model given by its outputs."""
        from airflow.sdk import get_current_context, task

        from llmeval.tasks import GROUPS, JUDGES_UP, current_run, guarded, label

        def who(model: str) -> str:
            ti = get_current_context()["ti"]
            return owner(ti.dag_id, ti.run_id, model)

        @task(map_index_template="{{ model_label }}")
        def deploy(model: str) -> dict[str, Any]:
            """Start a local model server that speaks the SageMaker runtime API."""
            label(model)
            return guarded(
                "deploy",
                model,
                lambda cfg, run: start_endpoint(cfg, model, run.folder, who(model)),
                first=kind != "tuned",
            )

        timeout = timedelta(seconds=cfg.task_timeout_s)

        @task(map_index_template="{{ model_label }}", execution_timeout=timeout)
        def evaluate(model: str, endpoint: dict[str, Any] | None, training: dict[str, Any] | None) -> dict[str, Any]:
            """Generate with the model, then score the outputs (the evaluation entry point); a
            model given by its outputs has them scored."""
            label(model)

            def body(cfg: EvalConfig, run: Any) -> dict[str, Any]:
                cache = store.cache_object(run.dag_id, model, cfg.artifacts_url)
                keep = bool(run.params.get("keep_endpoints"))

                def release() -> None:  # the server goes as soon as the model is no longer needed
                    log.info("%s: %s", model, stop_endpoint(cfg, model, who(model), endpoint, run.folder, keep))

                return run_evaluation(
                    cfg,
                    model,
                    run.folder,
                    endpoint,
                    cache,
                    training,
                    run.catalog_version,
                    release if endpoint else None,
                    get_current_context()["ti"].xcom_pull(task_ids=JUDGES_UP) if cfg.judged_by else None,
                )

            return guarded("evaluate", model, body, first=kind == "provided")

        @task(map_index_template="{{ model_label }}")
        def teardown(model: str) -> str:
            """Stop the model's server, whatever happened upstream: the one its deploy handed
            on, else any this run started for the model on this host."""
            label(model)
            run, ti = current_run(), get_current_context()["ti"]
            state = ti.xcom_pull(task_ids=f"{GROUPS[kind]}.deploy", map_indexes=ti.map_index)
            keep = bool(run.params.get("keep_endpoints"))
            return stop_endpoint(run.config(), model, who(model), state, run.folder, keep)

        @task(map_index_template="{{ model_label }}", execution_timeout=timeout)
        def finetune(model: str) -> dict[str, Any]:
            """Fine-tune the base model on this machine (LoRA, CPU); loss per step in the log."""
            label(model)
            return guarded("finetune", model, lambda cfg, run: run_finetune(cfg, model, run.folder), first=True)

        if kind == "provided":  # served elsewhere: nothing to start or stop
            evaluate(model_name, None, None)
            return
        deploy_task = deploy(model_name)
        training = None
        if kind == "tuned":
            training = finetune(model_name)
            training >> deploy_task
        done = evaluate(model_name, deploy_task, training)
        stop = teardown(model_name)
        done >> stop.as_teardown(setups=deploy_task)

    def judge_steps(self, cfg: EvalConfig, after: Any) -> tuple[Any, Any, Any]:
        """(start the judges' servers, after `after`; compare the models pairwise or None; stop
        the servers): the model groups run between the first and the others."""
        from airflow.sdk import get_current_context, task

        from llmeval.tasks import JUDGES_UP, current_run

        def who(judge: str) -> str:
            ti = get_current_context()["ti"]
            return owner(ti.dag_id, ti.run_id, judge)

        @task(task_id=JUDGES_UP)
        def deploy_judges() -> dict[str, dict[str, Any]]:
            """Start a server for each judge the algorithms ask (LLMJudge)."""
            run = current_run()
            frozen = run.config()
            return {j.name: start_endpoint(frozen, j.name, run.folder, who(j.name)) for j in frozen.judged_by}

        @task(task_id="teardown_judges")
        def teardown_judges() -> dict[str, str]:
            """Stop the judges' servers, whatever happened upstream."""
            run = current_run()
            frozen, keep = run.config(), bool(run.params.get("keep_endpoints"))
            started = get_current_context()["ti"].xcom_pull(task_ids=JUDGES_UP) or {}
            return {
                j.name: stop_endpoint(frozen, j.name, who(j.name), started.get(j.name), run.folder, keep)
                for j in frozen.judged_by
            }

        @task(task_id="compare", trigger_rule="all_done", execution_timeout=timedelta(seconds=cfg.task_timeout_s))
        def compare() -> dict[str, Any]:
            """Pairwise: the judge compares the models' answers, in both orders (pairwise.json)."""
            run = current_run()
            frozen = run.config()
            started = get_current_context()["ti"].xcom_pull(task_ids=JUDGES_UP) or {}
            models = get_current_context()["ti"].xcom_pull(task_ids="plan") or []
            return run_pairwise(frozen, run.folder, run.dag_id, models, started)

        up = deploy_judges()
        after >> up
        compared = compare() if any(s.compares_models for s in cfg.algorithms) else None
        return up, compared, teardown_judges().as_teardown(setups=up)
