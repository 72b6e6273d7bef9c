"""`airflow standalone` (api-server, scheduler, dag-processor, triggerer; LocalExecutor on
SQLite) on a free port, with real users and DAG-level authorization: the Simple auth manager in
multi-team mode, the DAG bundle owned by team `evals`. Started and stopped by PID."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from celery_stack import PYTHON, Process, call_api, free_port, group_alive, wait_for
from conftest import ROOT

# name: (role, team or "", password); `reviewer` may answer required actions (role user), `reader`
# may only look, `outsider` is in another team and may read none of the evaluation DAGs
USERS = {
    "admin": ("admin", "", "admin-pw"),
    "reviewer": ("user", "evals", "reviewer-pw"),
    "reader": ("viewer", "evals", "reader-pw"),
    "outsider": ("viewer", "others", "outsider-pw"),
}


class Standalone:
    def __init__(
        self, root: Path, configs: Path, artifacts: Path, extra_env: dict[str, str] | None = None, teams: bool = True
    ):
        """`teams=False`: one team-less deployment (its triggerer serves every DAG's deferred
        tasks; in multi-team mode the standalone triggerer serves no team's)."""
        self.root, self.port, self.teams = root, free_port(), teams
        self.url = f"http://127.0.0.1:{self.port}"
        passwords = root / "passwords.json"
        passwords.write_text(json.dumps({name: pw for name, (_, _, pw) in USERS.items()}))
        bundle = {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
            "team_name": "evals",
        }
        self.env = {
            "PATH": f"{Path(PYTHON).parent}:/usr/bin:/bin",
            "HOME": str(Path.home()),
            "LANG": "C.UTF-8",
            "AIRFLOW_HOME": str(root / "home"),
            "PYTHONPATH": str(ROOT / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MULTI_TEAM": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{role}{':' + team if team else ''}" for name, (role, team, _) in USERS.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([bundle]),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": "llmeval-browser-jwt-secret-0123456789abcdef",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "LLM_EVAL_CONFIGS_DIR": str(configs),
            "LLM_EVAL_ARTIFACTS_DIR": str(artifacts),
            "LLM_EVAL_WORKER_PYTHON": str(ROOT / ".venv-worker" / "bin" / "python"),
            "HF_HUB_OFFLINE": "1",
            **(extra_env or {}),
        }
        if not teams:
            self.env["AIRFLOW__CORE__MULTI_TEAM"] = "False"
            self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = ",".join(
                f"{n}:{r}" for n, (r, _, _) in USERS.items()
            )
            self.env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps([{**bundle, "team_name": None}])
        self.process = Process(
            "standalone", [PYTHON, "-m", "airflow", "standalone"], self.env, root, root / "standalone.log"
        )
        self._token: str | None = None

    def start(self) -> None:
        teams = (["teams", "create", "evals"], ["teams", "create", "others"]) if self.teams else ()
        for argv in (["db", "migrate"], *teams):
            done = subprocess.run([PYTHON, "-m", "airflow", *argv], env=self.env, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        self.process.start()
        wait_for(lambda: self._health(), 180, "airflow standalone healthy", every_s=2)

    def _health(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=10) as resp:
            body = json.loads(resp.read())
        return all(body.get(part, {}).get("status") == "healthy" for part in ("scheduler", "dag_processor"))

    def stop(self) -> bool:
        """Stop the whole process group; True when nothing of it is left."""
        self.process.stop()
        deadline = time.monotonic() + 20  # the group's last members may still be exiting
        while any(group_alive(pid) for pid in self.process.pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        return not any(group_alive(pid) for pid in self.process.pids)

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
        """The public REST API as the admin."""
        if not self._token:
            status, body_ = call_api(
                f"{self.url}/auth/token", "POST", {"username": "admin", "password": USERS["admin"][2]}
            )
            assert status == 201, body_
            self._token = body_["access_token"]
        return call_api(f"{self.url}/api/v2{path}", method, body, self._token)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        status, run = self.api(f"/dags/{dag_id}/dagRuns", "POST", {"logical_date": None, "conf": conf or {}})
        assert status == 200, run
        return run["dag_run_id"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        from urllib.parse import quote

        status, body = self.api(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=1000")
        assert status == 200, body
        return {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in body["task_instances"]}

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 900) -> str:
        from urllib.parse import quote

        def ended():
            state = self.api(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")[1]["state"]
            return state if state in ("success", "failed") else None

        return wait_for(ended, timeout_s, f"run {dag_id}/{run_id} ended", every_s=2)

    def wait_task_state(self, dag_id: str, run_id: str, task: str, state: str, timeout_s: float = 900) -> None:
        def reached():
            states = self.task_states(dag_id, run_id)
            failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
            assert not failed, f"{failed} failed: {states}\n{self.process.tail()}"
            return states.get(task) == state

        wait_for(reached, timeout_s, f"{dag_id}: {task} {state}", every_s=2)
