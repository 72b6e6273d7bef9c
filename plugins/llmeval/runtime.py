"""Where things live at run time: project folders, the worker Python, run artifacts.

Every location has an environment variable so deployments can move it; the defaults
fit a checkout of this repository.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PLUGINS_DIR = PACKAGE_DIR.parent
PROJECT_DIR = PLUGINS_DIR.parent
CONFIGS_DIR = PROJECT_DIR / "include" / "configs"
DATA_DIR = PROJECT_DIR / "include" / "data"
ALGORITHMS_DIR = PROJECT_DIR / "include" / "algorithms"  # users' custom algorithm modules


def artifacts_root() -> Path:
    return Path(os.environ.get("LLM_EVAL_ARTIFACTS_DIR") or PROJECT_DIR / "artifacts")


def worker_python() -> str:
    """The worker environment's interpreter (fmeval, torch, transformers)."""
    configured = os.environ.get("LLM_EVAL_WORKER_PYTHON")
    if configured:
        return configured
    default = PROJECT_DIR / ".venv-worker" / "bin" / "python"
    if not default.exists():
        raise FileNotFoundError(
            f"worker environment not found at {default}; run `make worker-env` or set LLM_EVAL_WORKER_PYTHON"
        )
    return str(default)


def safe_segment(value: str) -> str:
    """A run id or name made safe as one path segment (no separators, no '..')."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]+", "_", value).strip(".")
    return cleaned or "_"


def run_dir(dag_id: str, run_id: str) -> Path:
    return artifacts_root() / "runs" / safe_segment(dag_id) / safe_segment(run_id)


def model_dir(run_folder: Path, model: str) -> Path:
    return run_folder / "models" / safe_segment(model)


def cache_dir() -> Path:
    return Path(os.environ.get("LLM_EVAL_CACHE_DIR") or artifacts_root() / "cache")


def registry_dir() -> Path:
    return artifacts_root() / "registry"


def resolve_data_path(location: str) -> Path:
    """Dataset location: absolute path, file:// URI, or relative to include/data."""
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    path = Path(location)
    return path if path.is_absolute() else DATA_DIR / path
