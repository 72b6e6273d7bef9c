"""A DAG drawn as text: the run-level tasks and the model groups in the order they run
(a line per step; tasks that run side by side on one line), then each group's own chain.

`llmeval graph CONFIG` prints it; the docs show it for the shipped configs, and a test
draws each shipped config's DAG and compares it with the docs, so the picture cannot drift.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG


def _node(task: Any) -> str:
    """A top-level node: the task itself, or the task group it belongs to."""
    group = task.task_group
    while group is not None and group.parent_group is not None and group.parent_group.group_id is not None:
        group = group.parent_group
    if group is None or group.group_id is None:
        return task.task_id
    return f"{group.group_id}[*]" if type(group).__name__ == "MappedTaskGroup" else group.group_id


def _layers(edges: dict[str, set[str]], nodes: list[str]) -> list[list[str]]:
    """Nodes by the length of the longest path that reaches them (a node after all its inputs)."""
    depth: dict[str, int] = {}

    def level(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((level(up) for up in edges[node]), default=-1)
        return depth[node]

    layers: list[list[str]] = [[] for _ in range(1 + max(level(n) for n in nodes))]
    for node in nodes:
        layers[level(node)].append(node)
    return layers


def _chain(tasks: list[Any]) -> str:
    """A group's tasks in the order they run (setups first, teardowns marked)."""
    inside = {t.task_id for t in tasks}
    edges = {t.task_id: {u for u in t.upstream_task_ids if u in inside} for t in tasks}
    names = {t.task_id: t.task_id.rpartition(".")[2] + (" (teardown)" if t.is_teardown else "") for t in tasks}
    return " -> ".join(" | ".join(names[t] for t in layer) for layer in _layers(edges, sorted(inside)))


def draw(dag: DAG) -> str:
    tasks = sorted(dag.tasks, key=lambda t: t.task_id)
    nodes = sorted({_node(t) for t in tasks}, key=lambda n: min(t.task_id for t in tasks if _node(t) == n))
    edges: dict[str, set[str]] = {n: set() for n in nodes}
    for task in tasks:
        for up in task.upstream_task_ids:
            if _node(dag.get_task(up)) != _node(task):
                edges[_node(task)].add(_node(dag.get_task(up)))
    lines = []
    for i, layer in enumerate(_layers(edges, nodes)):
        lines.append(("   " if i == 0 else "-> ") + " | ".join(layer))
    groups = [n for n in nodes if any(t.task_id != n for t in tasks if _node(t) == n)]
    width = max((len(g) for g in groups), default=0)
    if groups:
        lines.append("")
    for group in groups:
        inside = [t for t in tasks if _node(t) == group]
        lines.append(f"{group.ljust(width)}  {_chain(inside)}")
    return "\n".join(lines) + "\n"
