"""Local registry: versions, approval status, idempotent per run, concurrent writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from llmeval.registry import APPROVED, PENDING, REJECTED, LocalRegistry


def test_versions_increment_and_persist(tmp_path):
    reg = LocalRegistry(tmp_path)
    v1 = reg.register("grp", "a", "run-1", APPROVED, {"m": 1}, {"dataset": "qa"})
    v2 = reg.register("grp", "b", "run-2", PENDING, {"m": 2}, {})
    assert (v1.version, v2.version) == (1, 2)
    again = LocalRegistry(tmp_path).versions("grp")
    assert [(v.model, v.approval_status, v.metrics) for v in again] == [
        ("a", APPROVED, {"m": 1}),
        ("b", PENDING, {"m": 2}),
    ]


def test_same_run_registers_once(tmp_path):
    reg = LocalRegistry(tmp_path)
    first = reg.register("grp", "a", "run-1", APPROVED, {}, {})
    second = reg.register("grp", "a", "run-1", APPROVED, {}, {})
    assert first == second and len(reg.versions("grp")) == 1


def test_latest_approved_skips_pending_and_rejected(tmp_path):
    reg = LocalRegistry(tmp_path)
    reg.register("grp", "a", "r1", APPROVED, {}, {})
    reg.register("grp", "b", "r2", REJECTED, {}, {})
    reg.register("grp", "c", "r3", PENDING, {}, {})
    assert reg.latest_approved("grp").model == "a"
    assert reg.latest_approved("other") is None


def test_invalid_status_and_group_are_refused(tmp_path):
    reg = LocalRegistry(tmp_path)
    with pytest.raises(ValueError, match="approval status"):
        reg.register("grp", "a", "r1", "approved", {}, {})
    with pytest.raises(ValueError, match="group name"):
        reg.register("../escape", "a", "r1", APPROVED, {}, {})


def test_concurrent_registrations_get_distinct_versions(tmp_path):
    reg = LocalRegistry(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda i: reg.register("grp", "m", f"run-{i}", APPROVED, {}, {}).version, range(16)))
    assert sorted(versions) == list(range(1, 17))
