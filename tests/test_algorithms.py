"""The config layer's algorithm table matches fmeval's own config dataclasses (read from
the worker environment's fmeval sources, since several modules cannot be imported offline)."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
from conftest import WORKER_PYTHON

from llmeval.algorithms import ALGORITHMS


@pytest.fixture(scope="module")
def fmeval_configs() -> dict[str, set[str]]:
    out = subprocess.run(
        [
            WORKER_PYTHON,
            "-c",
            "import importlib.util, json; "
            "print(json.dumps(list(importlib.util.find_spec('fmeval').submodule_search_locations)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    root = Path(json.loads(out.stdout)[0]) / "eval_algorithms"
    classes: dict[str, tuple[list[str], set[str]]] = {}
    for path in root.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                fields = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
                classes[node.name] = ([getattr(b, "id", "") for b in node.bases], fields)

    def all_fields(name: str) -> set[str]:
        bases, fields = classes[name]
        return fields.union(*(all_fields(b) for b in bases if b in classes))

    return {name: all_fields(name) for name in classes}


@pytest.mark.parametrize("name", [n for n, s in ALGORITHMS.items() if s.fmeval_module])
def test_options_match_fmeval_config_dataclass(name, fmeval_configs):
    spec = ALGORITHMS[name]
    if spec.fmeval_config_class is None:
        assert not spec.options and f"{name}Config" not in fmeval_configs
        return
    assert spec.fmeval_config_class in fmeval_configs, f"fmeval has no {spec.fmeval_config_class}"
    assert set(spec.options) == fmeval_configs[spec.fmeval_config_class]
