"""An Inspect task in a config, checked when the config loads without importing Inspect:
the task's form, its file's @task function and arguments (read from the source, errors with
the config's file, line and field and the task file's line), tools, and multi-turn tasks for
models asked through one prompt."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import local_config
from llmeval.config import ConfigError, load_config

TASKS = """from inspect_ai import Task, task
from inspect_ai.solver import generate, self_critique, use_tools


@task
def single(instructions: str = "Be brief.") -> Task:
    return Task(solver=[generate()])


@task()
def critiqued() -> Task:
    return Task(solver=[generate(), self_critique()])


@task
def with_tools() -> Task:
    return Task(solver=[use_tools([]), generate()])


def helper():
    pass
"""
CHAT = {"api": "messages", "inference_parameters": {"max_tokens": 8}}


@pytest.fixture
def include(tmp_path, monkeypatch):
    folder = tmp_path / "include"
    (folder / "algorithms").mkdir(parents=True)
    (folder / "data").symlink_to(Path(__file__).parents[1] / "include" / "data")
    (folder / "algorithms" / "my_tasks.py").write_text(TASKS)
    monkeypatch.setenv("LLM_EVAL_INCLUDE_DIR", str(folder))
    return folder


def _load(tmp_path: Path, *inspect: dict, chat: bool = True, **extra):
    models = [{"name": "m-one", "model_id": "smollm2-135m-instruct", **({"evaluation_config": CHAT} if chat else {})}]
    cfg = local_config("t-inspect", models=models, algorithms=[{"algorithm": "FactualKnowledge"}, *inspect], **extra)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, load_config(path)


def _problem(tmp_path: Path, *inspect: dict, chat: bool = True):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, *inspect, chat=chat)
    return info.value.problems[0], str(info.value)


def test_a_file_task_and_an_inspect_evals_task_load_with_their_metrics_usable_in_selection(tmp_path, include):
    path, cfg = _load(
        tmp_path,
        {"algorithm": "Inspect", "task": "my_tasks.py@single", "task_args": {"instructions": "One word."}},
        {"algorithm": "Inspect", "task": "inspect_evals/gsm8k", "task_args": {"fewshot": 0}, "limit": 5, "epochs": 2},
        selection={"metrics": [{"metric": "Inspect/single/accuracy"}, {"metric": "Inspect/gsm8k/accuracy"}]},
        registry={"gate": [{"metric": "Inspect/gsm8k/accuracy", "significance": 0.05}]},
    )
    assert [a.name for a in cfg.algorithms] == ["FactualKnowledge", "Inspect/single", "Inspect/gsm8k"]
    assert cfg.algorithms[2].options == {
        "task": "inspect_evals/gsm8k",
        "task_args": {"fewshot": 0},
        "limit": 5,
        "epochs": 2,
    }
    assert "inspect_ai" not in sys.modules  # read from the source, not imported


@pytest.mark.parametrize(
    "inspect,field,fragment",
    [
        ({"task": "gsm8k"}, "algorithms[1].task", "expected inspect_evals/<task> (e.g. inspect_evals/gsm8k)"),
        ({"task": "nothere.py@single"}, "algorithms[1].task", "no task file"),
        (
            {"task": "my_tasks.py@nothing"},
            "algorithms[1].task",
            "no @task function named 'nothing' (its tasks: single,",
        ),
        ({"task": "my_tasks.py@helper"}, "algorithms[1].task", "my_tasks.py:20: helper() is not decorated with @task"),
        ({"task": "my_tasks.py@single", "limit": 0}, "algorithms[1].limit", "at least 1; got 0"),
        ({"task": "my_tasks.py@single", "task_args": ["x"]}, "algorithms[1].task_args", "mapping"),
        (
            {"task": "my_tasks.py@single", "task_args": {"fewshot": 3}},
            "algorithms[1].task_args",
            "my_tasks.py:6: single() has no parameter 'fewshot' (its parameters: instructions)",
        ),
    ],
)
def test_a_task_that_cannot_run_is_refused_with_file_line_and_field(tmp_path, include, inspect, field, fragment):
    problem, text = _problem(tmp_path, {"algorithm": "Inspect", **inspect})
    lines = (tmp_path / "cfg.yaml").read_text().splitlines()
    entry = lines.index("- algorithm: Inspect")
    key = field.rsplit(".", 1)[1]
    line = next(n for n, text in enumerate(lines[entry:], entry + 1) if text.lstrip("- ").startswith(f"{key}:"))
    assert (problem.field, problem.line) == (field, line), text
    assert fragment in problem.message, text


def test_a_task_with_tools_needs_a_model_said_to_take_them(tmp_path, include, monkeypatch):
    tools = {"algorithm": "Inspect", "task": "my_tasks.py@with_tools"}
    problem, text = _problem(tmp_path, tools)
    assert problem.field == "models[0].evaluation_config.tools", text
    assert "my_tasks.py:16: with_tools hands the model tools, and m-one is not said to take them" in problem.message
    monkeypatch.setitem(CHAT, "tools", True)
    _load(tmp_path, tools)  # a Messages-API model whose server answers tool calls
    monkeypatch.setitem(CHAT, "api", "invoke")
    problem, text = _problem(tmp_path, tools)
    assert problem.field == "models[0].evaluation_config.tools", text
    assert "tool calls are sent in OpenAI's form, through api messages" in problem.message


def test_a_multi_turn_task_is_refused_for_a_model_asked_through_one_prompt(tmp_path, include):
    critiqued = {"algorithm": "Inspect", "task": "my_tasks.py@critiqued"}
    problem, text = _problem(tmp_path, critiqued, chat=False)
    assert problem.field.startswith("models[0]"), text
    assert "asks the model more than once" in problem.message and "api: messages" in problem.message
    _load(tmp_path, critiqued, chat=True)  # a chat model takes the conversation
    single = {"algorithm": "Inspect", "task": "my_tasks.py@single"}
    _load(tmp_path, single, chat=False)  # a single-turn task is rendered into its one prompt


def test_a_model_given_by_its_outputs_cannot_answer_an_inspect_task(tmp_path, include):
    cfg = local_config(
        "t-inspect",
        models=[{"name": "m-given", "model_id": "given", "outputs_location": "file:///tmp/outputs.jsonl"}],
        algorithms=[{"algorithm": "Inspect", "task": "my_tasks.py@single"}],
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="Inspect/single asks the model again while scoring"):
        load_config(path)


def test_inspect_evals_tasks_need_the_hub_on_sagemaker(tmp_path, include):
    from sagemaker_fixtures import sagemaker_config

    cfg = sagemaker_config("t-sm-inspect", ["m-one"])
    cfg["algorithms"].append({"algorithm": "Inspect", "task": "inspect_evals/gsm8k"})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    load_config(path)  # the job downloads it (hub_access is on by default)
    cfg["sagemaker"]["hub_access"] = False
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="downloads its dataset from the Hugging Face Hub"):
        load_config(path)


def test_validate_loads_each_task_in_the_worker_environment(tmp_path, include):
    """`llmeval validate` loads the tasks as the evaluation would: registry names and arguments
    that only Inspect can check are reported at the config's line."""
    import subprocess

    from conftest import ROOT

    (include / "configs").mkdir()
    good = {"algorithm": "Inspect", "task": "my_tasks.py@single"}
    cfg = local_config("t-validate", algorithms=[{"algorithm": "FactualKnowledge"}, good])
    (include / "configs" / "good.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cfg = local_config(
        "t-validate-bad",
        algorithms=[{"algorithm": "FactualKnowledge"}, {"algorithm": "Inspect", "task": "inspect_evals/no_such_task"}],
    )
    (include / "configs" / "bad.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    found = subprocess.run(
        [sys.executable, "-m", "llmeval", "validate", *sorted(map(str, (include / "configs").iterdir()))],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        timeout=600,
    )
    lines = (include / "configs" / "bad.yaml").read_text().splitlines()
    line = lines.index("  task: inspect_evals/no_such_task") + 1
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"bad.yaml:{line}: algorithms[1].task: inspect_evals/no_such_task: no such Inspect task" in found.stdout
    assert "ok      " in found.stdout and "good.yaml" in found.stdout
