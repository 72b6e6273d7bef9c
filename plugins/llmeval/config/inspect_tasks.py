"""Inspect AI tasks named by a config (`{algorithm: Inspect, task: ...}`), checked without
importing Inspect: parse time stays cheap and the Airflow environment does not install it.

A task is `inspect_evals/<name>` (a task of the `inspect_evals` package) or
`<file>.py@<task>` (a `@task` function in a file under include/algorithms). A file task is
read from its source: the function exists, is decorated with `@task`, accepts the given
`task_args`, and whether it gives the model tools or asks it more than once (a model asked
through a content template has one prompt, so it can only answer single-turn tasks). The
worker loads the task itself before it asks anything (`llmeval.evaluation.inspect_run`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

INSPECT = "Inspect"
EVALS_PREFIX = "inspect_evals/"
_EVALS_TASK = re.compile(r"^inspect_evals/(?P<task>[a-z][a-z0-9_]*)$")
TASK_NAME = r"[A-Za-z_]\w*"  # a @task function's name; its log is inspect/<name>.eval
_FILE_TASK = re.compile(rf"^(?P<file>(?:[\w-]+/)*[\w-]+\.py)@(?P<task>{TASK_NAME})$")
FORMS = "inspect_evals/<task> (e.g. inspect_evals/gsm8k) or <file>.py@<task> (a file in include/algorithms)"
# solvers and agents that hand the model tools, and those that ask it more than once
TOOL_CALLS = frozenset({"use_tools", "basic_agent", "react", "bash", "python", "web_search", "text_editor"})
TURN_CALLS = frozenset({"self_critique", "multi_turn", "user_message"})


@dataclass(frozen=True)
class TaskRef:
    """A task as a config names it."""

    spec: str  # as written
    name: str  # the task's name: its metrics are Inspect/<name>/<metric>
    file: str | None = None  # relative to include/algorithms; None for an inspect_evals task

    @property
    def algorithm(self) -> str:
        return f"{INSPECT}/{self.name}"


def parse_task(spec: object) -> TaskRef:
    if isinstance(spec, str):
        if found := _EVALS_TASK.match(spec):
            return TaskRef(spec, found["task"])
        if found := _FILE_TASK.match(spec):
            return TaskRef(spec, found["task"], found["file"])
    raise ValueError(f"expected {FORMS}; got {spec!r}")


@dataclass(frozen=True)
class TaskSource:
    """What a file task's source says about it."""

    line: int
    parameters: tuple[str, ...]
    any_keyword: bool  # **kwargs
    uses_tools: bool
    multi_turn: bool


def read_task(path: Path, name: str) -> TaskSource:
    """The `@task` function `name` of a task file, read from its source (ValueError naming the
    file and line when it is not there)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid Python ({exc.msg})") from None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            if not any(_decorator_name(d) == "task" for d in node.decorator_list):
                raise ValueError(f"{path}:{node.lineno}: {name}() is not decorated with @task")
            args = node.args
            named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            calls = {_call_name(c) for c in ast.walk(node) if isinstance(c, ast.Call)}
            keywords = {k.arg for c in ast.walk(node) if isinstance(c, ast.Call) for k in c.keywords}
            generates = sum(1 for c in ast.walk(node) if isinstance(c, ast.Call) and _call_name(c) == "generate")
            tools = bool(calls & TOOL_CALLS) or "tools" in keywords
            return TaskSource(
                node.lineno,
                tuple(named),
                args.kwarg is not None,
                tools,
                tools or generates > 1 or bool(calls & TURN_CALLS),
            )
    tasks = [
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        and any(_decorator_name(d) == "task" for d in n.decorator_list)
    ]
    found = f"its tasks: {', '.join(tasks)}" if tasks else "it defines no @task function"
    raise ValueError(f"{path}: no @task function named {name!r} ({found})")


def check_arguments(path: Path, name: str, source: TaskSource, task_args: dict[str, object]) -> None:
    unknown = [a for a in task_args if a not in source.parameters]
    if unknown and not source.any_keyword:
        accepted = ", ".join(source.parameters) or "none"
        raise ValueError(
            f"{path}:{source.line}: {name}() has no parameter {', '.join(map(repr, unknown))} "
            f"(its parameters: {accepted})"
        )


def _decorator_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    return target.attr if isinstance(target, ast.Attribute) else None


def _call_name(call: ast.Call) -> str | None:
    return _decorator_name(call.func)
