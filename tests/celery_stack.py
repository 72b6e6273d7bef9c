"""A real distributed Airflow on this machine, without Docker: PostgreSQL and Redis from the
OS packages, then Airflow's api-server, scheduler, dag-processor, triggerer and two Celery
workers. Each process has its own home and working folder; they share only the metadata
database, the broker, the configs folder and the run store URL (S3 on a moto server).
Every process is started here and stopped by PID."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import ROOT, WORKER_PYTHON

PYTHON = sys.executable
PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]) if glob.glob("/usr/lib/postgresql/*/bin") else None
LOCAL_QUEUE = "llmeval-local"
WORKERS = {"worker-a": f"default,{LOCAL_QUEUE}", "worker-b": "default"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 1.0):
    """Poll `predicate` until it returns something truthy; raise naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not reached in {timeout_s:.0f}s (last error: {last})")


def call_api(url: str, method: str = "GET", body: dict | None = None, token: str = "") -> tuple[int, dict]:
    """(status, JSON body) of a REST call, as the user of `token` if given."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@dataclass
class Process:
    """One long-running process of the stack, in its own session (so its children go with it)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    user: str | None = None
    popen: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)  # every PID this process ever had

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user,
            )
        self.pids.append(self.popen.pid)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        """Send `sig` to the process group, then SIGKILL whatever is left of it."""
        if self.popen is None:
            return
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(self.popen.pid, s)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                continue
            if not group_alive(self.popen.pid):
                break
        self.popen.wait(timeout=10)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class Stack:
    """The services and Airflow's processes; `api` calls the REST API."""

    def __init__(self, root: Path, configs: Path, extra_env: dict[str, str]):
        self.root, self.configs = root, configs
        self.pg_port, self.redis_port, self.api_port = free_port(), free_port(), free_port()
        self.processes: dict[str, Process] = {}
        pg_url = f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{self.pg_port}/airflow"
        self.env = {
            "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{ROOT / 'plugins'}{os.pathsep}{ROOT / 'tests'}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "llmeval.celery_config.CELERY_CONFIG",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "llmeval-stack-jwt-secret-0123456789abcdef",
            "AIRFLOW__API__SECRET_KEY": "llmeval-stack-secret",
            "AIRFLOW__CORE__FERNET_KEY": "8Wg1v4l1f1hYxqj3tQ0R3nq6Q3h9yX1mZk2Qe6jV0kU=",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",  # configs are written before start
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "LLM_EVAL_CONFIGS_DIR": str(configs),
            "LLM_EVAL_WORKER_PYTHON": WORKER_PYTHON,  # each worker starts its own (no warm worker)
            "HF_HUB_OFFLINE": "1",
            **extra_env,
        }

    # ------------------------------------------------------------------ processes
    def _process(self, name: str, argv: list[str], env: dict[str, str] | None = None, user: str | None = None):
        home = self.root / name
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        proc_env = {"AIRFLOW_HOME": str(home), "TMPDIR": str(home / "tmp"), **self.env, **(env or {})}
        proc = Process(name, argv, proc_env, home, self.root / f"{name}.log", user=user)
        self.processes[name] = proc
        return proc

    def start(self) -> None:
        self._start_postgres()
        self._start_redis()
        migrate = subprocess.run(
            [PYTHON, "-m", "airflow", "db", "migrate"],
            env={**self.env, "AIRFLOW_HOME": str(self.root / "migrate")},
            capture_output=True,
            text=True,
        )
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self._process(name, [PYTHON, "-m", "airflow", name]).start()
        for worker in WORKERS:
            self.worker(worker).start()
        wait_for(lambda: self.api("/monitor/health")[0] == 200, 120, "api-server health", every_s=2)

    def worker(self, name: str) -> Process:
        """A Celery worker with a distinct Celery hostname and task-instance hostname."""
        return self._process(
            name,
            [
                PYTHON,
                "-m",
                "airflow",
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--queues",
                WORKERS[name],
                "--skip-serve-logs",
            ],
            env={"AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack_hostname.hostname", "LLM_EVAL_TEST_HOSTNAME": name},
        )

    def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop `name` with `sig` (SIGKILL: no clean-up at all) and start it again."""
        proc = self.processes[name]
        proc.stop(sig)
        proc.start()

    def _start_postgres(self) -> None:
        assert PG_BIN is not None, "PostgreSQL is not installed: run `make services`"
        data = Path(tempfile.mkdtemp(prefix="llmeval-pg-"))  # outside the test's 0700 folders
        user = "postgres" if os.geteuid() == 0 else None  # the server refuses to run as root
        if user:
            shutil.chown(data, user, user)
        self._pg_dir = data
        init = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            capture_output=True,
            text=True,
            user=user,
            cwd=data,
        )
        assert init.returncode == 0, init.stderr
        argv = [str(PG_BIN / "postgres"), "-D", str(data / "db"), "-p", str(self.pg_port), "-k", str(data)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=300"]
        proc = Process("postgres", argv, {"PATH": os.environ["PATH"]}, data, self.root / "postgres.log", user=user)
        self.processes["postgres"] = proc
        proc.start()
        psql = [
            str(PG_BIN / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.pg_port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        wait_for(lambda: subprocess.run(psql + ["-c", "select 1"], capture_output=True).returncode == 0, 60, "postgres")
        for sql in ("CREATE USER airflow PASSWORD 'airflow'", "CREATE DATABASE airflow OWNER airflow"):
            subprocess.run(psql + ["-c", sql], check=True, capture_output=True)

    def _start_redis(self) -> None:
        argv = [
            "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        (self.root / "redis").mkdir(exist_ok=True)
        self.processes["redis"] = Process(
            "redis", argv, {"PATH": os.environ["PATH"]}, self.root / "redis", self.root / "redis.log"
        )
        self.processes["redis"].start()
        wait_for(
            lambda: socket.create_connection(("127.0.0.1", self.redis_port), timeout=1).close() or True, 30, "redis"
        )

    def stop(self) -> list[str]:
        """Stop everything (Airflow first, the services last); return the names of processes
        whose group outlived SIGKILL (none expected)."""
        order = [n for n in self.processes if n not in ("redis", "postgres")] + ["redis", "postgres"]
        for name in order:
            if name in self.processes:
                self.processes[name].stop()
        left = [n for n, p in self.processes.items() if any(group_alive(pid) for pid in p.pids)]
        shutil.rmtree(getattr(self, "_pg_dir", self.root / "none"), ignore_errors=True)
        return left

    # ------------------------------------------------------------------ REST API
    def api(self, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
        return call_api(f"http://127.0.0.1:{self.api_port}/api/v2{path}", method, body)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        status, run = self.api(f"/dags/{dag_id}/dagRuns", "POST", {"logical_date": None, "conf": conf or {}})
        assert status == 200, run
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api(f"/dags/{dag_id}/dagRuns/{run_id}")[1]["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 600) -> str:
        def ended():
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        try:
            return wait_for(ended, timeout_s, f"run {dag_id}/{run_id} ended", every_s=2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.task_states(dag_id, run_id)}\n{self.diagnostics()}") from None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        status, body = self.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        assert status == 200, body
        return body["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
        return {(t["task_id"], t["map_index"]): t["state"] for t in self.task_instances(dag_id, run_id)}

    def fired_triggers(self, dag_id: str, run_id: str) -> set[str]:
        """The tasks of a run whose deferred wait fired in the triggerer (from its task logs)."""
        runs = self.root / "triggerer" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        return {
            path.parts[-3].removeprefix("task_id=")
            for path in runs.glob("task_id=*/map_index=*/*.trigger.*.log")
            if "Trigger fired event" in path.read_text(errors="replace")
        }

    def diagnostics(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.tail(1500)}" for n, p in self.processes.items())
