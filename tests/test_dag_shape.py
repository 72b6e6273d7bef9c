"""The factory builds the same DAGs as the snapshot taken before its code moved into
`llmeval.dag`: task ids, classes, dependencies, trigger rules, setup/teardown flags, mapping."""

from __future__ import annotations

import json

import pytest

from dag_shapes import SNAPSHOT, build_all


@pytest.fixture(scope="module")
def shapes() -> dict[str, dict]:
    return build_all()


def test_the_same_dags_are_built(shapes):
    assert sorted(shapes) == sorted(json.loads(SNAPSHOT.read_text()))


@pytest.mark.parametrize("dag_id", sorted(json.loads(SNAPSHOT.read_text())))
def test_each_dag_has_the_snapshot_shape(shapes, dag_id):
    expected = json.loads(SNAPSHOT.read_text())[dag_id]
    built = shapes[dag_id]
    assert built["groups"] == expected["groups"]
    assert sorted(built["tasks"]) == sorted(expected["tasks"])
    for task_id, task in expected["tasks"].items():
        assert built["tasks"][task_id] == task, task_id
    assert {k: v for k, v in built.items() if k not in ("tasks", "groups")} == {
        k: v for k, v in expected.items() if k not in ("tasks", "groups")
    }
