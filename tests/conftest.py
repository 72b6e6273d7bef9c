"""Test session: an isolated Airflow home (SQLite) and artifacts folder, set before
Airflow is imported, and the helpers tests share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="llmeval-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["LLM_EVAL_ARTIFACTS_DIR"] = str(_SESSION_DIR / "artifacts")
os.environ.setdefault("LLM_EVAL_WORKER_PYTHON", str(ROOT / ".venv-worker" / "bin" / "python"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])
os.environ.pop("LLM_EVAL_CONFIGS_DIR", None)

import pytest  # noqa: E402
import yaml  # noqa: E402

CONFIGS = ROOT / "include" / "configs"
pytest_plugins = ["sagemaker_fixtures"]  # the moto server and AWS fixtures
WORKER_PYTHON = os.environ["LLM_EVAL_WORKER_PYTHON"]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate a fresh SQLite metadata database once per session."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return home


API_USERS = {"admin": "admin", "reader": "viewer:evals", "outsider": "viewer:others"}  # name: role[:team]


@pytest.fixture(scope="module")
def airflow_api(airflow_db, tmp_path_factory):
    """Airflow's api-server app (with the plugins) in process, under the Simple auth manager in
    multi-team mode with the users of API_USERS (password: `<name>-pw`) and their teams."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from airflow.models.team import Team
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps({user: f"{user}-pw" for user in API_USERS}))
    with create_session() as session:
        for name in ("evals", "others"):
            if session.scalar(select(Team).where(Team.name == name)) is None:
                session.add(Team(name=name))
    with pytest.MonkeyPatch.context() as mp:
        simple = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        mp.setenv("AIRFLOW__CORE__AUTH_MANAGER", simple)
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{u}:{r}" for u, r in API_USERS.items()))
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        mp.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
        mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "test-secret-for-the-api-tests")
        purge_cached_app()
        with TestClient(create_app("core")) as client:
            yield client
        purge_cached_app()


def api_token(client, user: str) -> dict[str, str]:
    """Headers with a token of one of API_USERS."""
    response = client.post("/auth/token", json={"username": user, "password": f"{user}-pw"})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def put_bundles_in_team(team: str) -> None:
    """Put every DAG bundle in `team`'s keeping, as a bundle's `team_name` does."""
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.team import Team
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        owner = session.scalar(select(Team).where(Team.name == team))
        for bundle in session.scalars(select(DagBundleModel)):
            bundle.teams = [owner]


@pytest.fixture(scope="session", autouse=True)
def warm_worker(request, tmp_path_factory):
    """When the session runs the local model (tests marked slow), the product's worker
    interpreter is the warm worker's launcher (tests/warm_worker.py): torch, fmeval and the
    model are loaded once, not per model server and evaluation worker."""
    from warm_worker import SOCKET_ENV, WarmWorker

    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield None
        return
    warm = WarmWorker(WORKER_PYTHON, tmp_path_factory.mktemp("warm-worker"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_EVAL_WORKER_PYTHON", str(warm.launcher))
        mp.setenv(SOCKET_ENV, str(warm.socket))
        yield warm
    warm.stop()


@pytest.fixture(autouse=True)
def no_parsing_context():
    """Airflow's task runner sets the parsing context's variables and leaves them set when
    they were unset, so a later DagBag in this process would build only that task's DAG."""
    yield
    for name in ("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "_AIRFLOW_PARSING_CONTEXT_TASK_ID"):
        os.environ.pop(name, None)


@pytest.fixture
def fake_aws_credentials(monkeypatch):
    """Credentials for boto3 clients that talk only to local servers."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict (or raw text) as YAML into a fresh configs folder."""
    folder = tmp_path / "configs"
    folder.mkdir()

    def write(name: str, content: dict | str) -> Path:
        path = folder / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    write.folder = folder
    return write


DATASET = {  # the project's QA set, for test configs
    "dataset_name": "qa",
    "input_data_location": "qa_general_knowledge.jsonl",
    "model_input_key": "question",
    "target_output_key": "answer",
}


def local_config(name: str = "t-local", models: list[dict] | None = None, **extra) -> dict:
    """A small valid local-target config dict."""
    cfg = {
        "target": "local",
        "pipeline": {"name": name},
        "dataset": {**DATASET, "category_key": "category"},
        "models": models
        or [
            {"name": "m-one", "model_id": "smollm2-135m-instruct"},
            {"name": "m-two", "model_id": "smollm2-135m-instruct"},
        ],
        "algorithms": [{"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>"}],
    }
    cfg.update(extra)
    return cfg


def session_processes() -> dict[int, list[bytes]]:
    """Command lines (as argument lists) of the live processes this test session started,
    told apart from another session's (e.g. a parallel test worker's) by their artifacts folder."""
    mark = f"LLM_EVAL_ARTIFACTS_DIR={os.environ['LLM_EVAL_ARTIFACTS_DIR']}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if mark in environ.read().split(b"\0"):
                    found[int(pid)] = cmdline.read().split(b"\0")
        except OSError:
            continue
    return found


def run_dag(dag_id: str, configs_dir: Path, conf: dict | None = None):
    """Parse, sync and run a DAG the way `airflow dags test` does; return the DagRun."""
    from airflow.utils.cli import get_bagged_dag

    previous = os.environ.get("LLM_EVAL_CONFIGS_DIR")
    os.environ["LLM_EVAL_CONFIGS_DIR"] = str(configs_dir)
    try:
        dag = get_bagged_dag(None, dag_id)
    finally:
        os.environ.pop("LLM_EVAL_CONFIGS_DIR") if previous is None else os.environ.update(LLM_EVAL_CONFIGS_DIR=previous)
    return dag, dag.test(run_conf=conf)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the fault-matrix rows the test recorded to its reports."""
    from fault_matrix import PENDING

    yield
    item.user_properties.extend(("fault_row", row) for row in PENDING)  # in every later report
    PENDING.clear()


def pytest_runtest_logreport(report):
    from fault_matrix import ROWS

    if report.when == "teardown":  # the last of the test's reports holds every row it recorded
        ROWS.extend(row for name, row in report.user_properties if name == "fault_row")


def pytest_terminal_summary(terminalreporter):
    from fault_matrix import ROWS, table

    if ROWS:
        terminalreporter.write_sep("=", "fault matrix")
        terminalreporter.write_line(table())


def pytest_unconfigure(config):
    """Remove the session's Airflow home and artifacts (keep them with LLM_EVAL_KEEP_TEST_ARTIFACTS=1)."""
    import shutil

    if not os.environ.get("LLM_EVAL_KEEP_TEST_ARTIFACTS"):
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)
