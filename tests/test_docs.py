"""The documentation is part of the product: the generated pages (the configuration reference,
the benchmarks page, the DAG pictures) equal what the code makes of them, the README stays a
front page, its minimal config is valid, and the site builds with --strict."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

spec = importlib.util.spec_from_file_location("docs_pages", ROOT / "scripts" / "docs_pages.py")
docs_pages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_pages)
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def expected() -> dict:
    return docs_pages.expected_pages()


def test_the_configuration_reference_is_the_schema(expected):
    page = docs_pages.REFERENCE
    assert page.read_text() == expected[page], "run `python scripts/docs_pages.py` after changing the schema"
    from llmeval.config import json_schema

    schema = json_schema()
    for name, section in schema["$defs"].items():
        for field in section.get("properties", {}):
            assert f"| `{field}` |" in expected[page], f"{name}.{field} is missing from the reference"


def test_every_field_is_described(expected):
    empty = [line for line in expected[docs_pages.REFERENCE].splitlines() if line.endswith("|  |")]
    assert empty == []


def test_the_dag_pictures_are_the_built_dags(expected):
    drawn = [path for path in docs_pages.pages_with_pictures() if docs_pages.PICTURE.search(path.read_text())]
    assert README in drawn and len(drawn) >= 3
    for path in drawn:
        assert path.read_text() == expected[path], f"{path.relative_to(ROOT)}: the DAG picture drifted"


def test_the_benchmarks_page_is_the_last_measurement(expected):
    assert docs_pages.BENCHMARKS.read_text() == expected[docs_pages.BENCHMARKS]


def test_the_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for heading in ("## Two commands", "## The DAG", "## A minimal config", "## Documentation"):
        assert heading in text


def test_no_page_keeps_a_lab_notebook():
    """Figures live in the benchmarks page; no commit ids or dated measurements in prose."""
    for path in [README, *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        assert not re.search(r"\bat [0-9a-f]{7}\b", text), path
        assert not re.search(r"\b(on|at) 20\d\d-\d\d-\d\d\b", text), path


def test_the_readmes_minimal_config_is_valid(tmp_path):
    from llmeval.config import load_config

    block = README.read_text().split("## A minimal config", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "minimal.yaml"
    path.write_text(block)
    cfg = load_config(path)
    assert cfg.pipeline.name == "my-eval" and len(cfg.models) == 2 and yaml.safe_load(block)["target"] == "local"


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "reference" / "index.html").exists()
