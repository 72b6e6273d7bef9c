"""The three ways Airflow finds the plugin: `pip install .` into a fresh virtualenv beside an
Airflow (the `airflow.plugins` entry point and the `llmeval` command), this repository's plugins
folder, and MWAA's plugins.zip unpacked into a plugins folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

PLUGIN = "llm_evaluation"


def _airflow(python: str, home: Path, plugins: Path, extra: dict[str, str] | None = None) -> list[dict]:
    """`airflow plugins` as JSON, in a fresh Airflow home, with no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins), **(extra or {}))
    done = subprocess.run(
        [python, "-m", "airflow", "plugins", "--output", "json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout[done.stdout.index("[") :])


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv that sees the Airflow environment's packages (a .pth file) and has the
    project pip-installed from a copy of its sources, offline and without build isolation."""
    root = tmp_path_factory.mktemp("dist")
    source = root / "source"
    shutil.copytree(ROOT / "plugins", source / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(site.decode().strip()) / "airflow-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps"]
    done = subprocess.run(
        [*install, "--no-build-isolation", "--no-index", str(source)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv


def test_pip_install_registers_the_plugin_through_its_entry_point(installed, tmp_path):
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    plugins = _airflow(str(installed / "bin" / "python"), tmp_path / "home", empty)
    (ours,) = [p for p in plugins if p["name"] == PLUGIN]
    assert "llmeval_plugin" in json.dumps(ours) and "Leaderboard" in json.dumps(ours)


def test_pip_install_gives_the_llmeval_command(installed):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    configs = sorted(str(p) for p in (ROOT / "include" / "configs").glob("*.yaml"))
    done = subprocess.run(
        [str(installed / "bin" / "llmeval"), "validate", *configs], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == len(configs)


def test_the_repositorys_plugins_folder_still_works(tmp_path):
    plugins = _airflow(sys.executable, tmp_path / "home", ROOT / "plugins")
    assert [p["name"] for p in plugins].count(PLUGIN) == 1


def test_plugins_zip_holds_the_plugin_module_and_the_package_and_loads_unpacked(tmp_path):
    spec = ROOT / "scripts" / "plugins_zip.py"
    done = subprocess.run([sys.executable, str(spec), str(tmp_path / "plugins.zip")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(tmp_path / "plugins.zip") as archive:
        names = archive.namelist()
        assert {"llmeval_plugin.py", ".airflowignore", "llmeval/__init__.py", "llmeval/web/app.py"} <= set(names)
        assert "llmeval/templates/leaderboard.html" in names and not any("__pycache__" in n for n in names)
        archive.extractall(tmp_path / "mwaa-plugins")  # what MWAA does with it
    plugins = _airflow(sys.executable, tmp_path / "home", tmp_path / "mwaa-plugins")
    assert [p["name"] for p in plugins].count(PLUGIN) == 1


def test_mwaas_requirements_name_nothing_mwaa_provides():
    import re

    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-mwaa.txt").read_text().splitlines()]
    names = {re.split(r"[\[<>=!~ ]", line)[0].lower() for line in lines if line}
    assert names == {"apache-airflow-providers-amazon", "pydantic", "pyyaml"}
    assert not any(re.search(r"==", line) for line in lines if line.startswith("apache-airflow-providers"))


def test_the_shipped_configs_name_training_data_that_exists():
    from llmeval.config import load_config
    from llmeval.runtime import resolve_data_path

    for path in sorted((ROOT / "include" / "configs").glob("*.yaml")):
        for model in load_config(path).models:
            for location in filter(
                None,
                [
                    model.finetuning and model.finetuning.train_data_path,
                    model.finetuning and model.finetuning.validation_data_path,
                ],
            ):
                assert location.startswith("s3://") or resolve_data_path(location).is_file(), (path.name, location)
