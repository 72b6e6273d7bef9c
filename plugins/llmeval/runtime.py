"""Where things live on a host: the project's include/ folder and the worker Python.

Run artifacts are not here: they live in the run store (`llmeval.store`). Every location
has an environment variable so deployments can move it; the defaults fit a checkout of
this repository and an MWAA-style layout (include/ inside the DAGs folder).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PLUGINS_DIR = PACKAGE_DIR.parent
PROJECT_DIR = PLUGINS_DIR.parent
INCLUDE_DIR_ENV = "LLM_EVAL_INCLUDE_DIR"


def include_dir() -> Path:
    """`LLM_EVAL_INCLUDE_DIR`, else `include/` in Airflow's DAGs folder (MWAA: dags/ and plugins.zip
    are deployed apart), else `include/` beside plugins/ (a checkout)."""
    configured = os.environ.get(INCLUDE_DIR_ENV)
    if configured:
        return Path(configured)
    dags_folder = _dags_folder()
    if dags_folder and (Path(dags_folder) / "include").is_dir():
        return Path(dags_folder) / "include"
    return PROJECT_DIR / "include"


def _dags_folder() -> str | None:
    """Airflow's DAGs folder as Airflow sees it (airflow.cfg or AIRFLOW__CORE__DAGS_FOLDER)."""
    try:
        from airflow.configuration import conf
    except ImportError:  # the worker environment and the Processing container have no Airflow
        return os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    return conf.get("core", "dags_folder", fallback=None)


def configs_dir() -> Path:
    return include_dir() / "configs"


def data_dir() -> Path:
    return include_dir() / "data"


def algorithms_dir() -> Path:
    """Users' custom algorithm modules."""
    return include_dir() / "algorithms"


SINGLE_HOST_EXECUTORS = ("LocalExecutor", "SequentialExecutor", "DebugExecutor")


def multi_host_executors() -> list[str]:
    """The configured executors that run tasks on several hosts (Celery, Kubernetes, Edge...)."""
    from airflow.configuration import conf

    names = [e.strip().split(".")[-1] for e in conf.get("core", "executor", fallback="").split(",") if e.strip()]
    return [e.split(":")[-1] for e in names if e.split(":")[-1] not in SINGLE_HOST_EXECUTORS]


def worker_python() -> str:
    """The worker environment's interpreter (fmeval, torch, transformers): local target only."""
    configured = os.environ.get("LLM_EVAL_WORKER_PYTHON")
    if configured:
        return configured
    default = PROJECT_DIR / ".venv-worker" / "bin" / "python"
    if not default.exists():
        raise FileNotFoundError(
            f"worker environment not found at {default}; run `make worker-env` or set LLM_EVAL_WORKER_PYTHON"
        )
    return str(default)


def resolve_data_path(location: str) -> Path:
    """A local dataset location: absolute path, file:// URI, or relative to include/data."""
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    path = Path(location)
    return path if path.is_absolute() else data_dir() / path
