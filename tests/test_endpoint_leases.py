"""Endpoint quotas: leases in the run store bound live endpoints per instance type, across
DAGs and concurrent deploys, survive a deploy's retry and are taken over when stale."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from llmeval import store
from llmeval.targets.sagemaker import leases

TYPE = "ml.g5.2xlarge"


def _never_exists(_name: str) -> bool:
    return False


def test_a_quota_of_two_holds_two_endpoints_and_frees_on_give_back(tmp_path):
    url = f"file://{tmp_path}"
    assert leases.take(url, TYPE, 2, "ep-a", _never_exists) == 0
    assert leases.take(url, TYPE, 2, "ep-b", _never_exists) == 1
    assert leases.take(url, TYPE, 2, "ep-c", _never_exists) is None
    assert leases.take(url, TYPE, 2, "ep-a", _never_exists) == 0  # a retry of a's deploy keeps its lease
    assert leases.take(url, "ml.g5.xlarge", 2, "ep-c", _never_exists) == 0  # another instance type
    assert leases.give_back(url, TYPE, "ep-a") is True
    assert leases.give_back(url, TYPE, "ep-a") is False
    assert leases.take(url, TYPE, 2, "ep-c", _never_exists) == 0
    assert sorted(p.name for p in (tmp_path / "leases" / TYPE).glob("slot-*")) == ["slot-0.json", "slot-1.json"]


def test_concurrent_deploys_never_exceed_the_quota(tmp_path):
    url = f"file://{tmp_path}"
    with ThreadPoolExecutor(max_workers=12) as pool:
        slots = list(pool.map(lambda i: leases.take(url, TYPE, 3, f"ep-{i}", _never_exists), range(12)))
    assert sorted(s for s in slots if s is not None) == [0, 1, 2]


def test_a_stale_lease_of_a_deleted_endpoint_is_taken_over_but_a_live_one_is_not(tmp_path):
    url = f"file://{tmp_path}"
    old = json.dumps({"endpoint": "ep-gone", "taken_at": time.time() - leases.STALE_AFTER_S - 1})
    assert store.create_new(store.root(url) / "leases" / TYPE / "slot-0.json", old)
    assert leases.take(url, TYPE, 1, "ep-new", lambda name: name == "ep-gone") is None  # it still exists
    assert leases.take(url, TYPE, 1, "ep-new", _never_exists) == 0
    held = json.loads((tmp_path / "leases" / TYPE / "slot-0.json").read_text())
    assert held["endpoint"] == "ep-new"


def test_a_freed_lease_wakes_the_oldest_waiting_deploy_only(tmp_path):
    import asyncio
    import importlib

    url = f"file://{tmp_path}"
    assert leases.take(url, TYPE, 1, "ep-a", _never_exists) == 0
    assert leases.take(url, TYPE, 1, "ep-first", _never_exists) is None  # queued first
    assert leases.take(url, TYPE, 1, "ep-second", _never_exists) is None

    def rebuilt(endpoint):  # as the triggerer rebuilds a trigger from its serialized form
        path, kwargs = leases.LeaseFreed(url, TYPE, 1, endpoint, 0.05).serialize()
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)(**kwargs)

    async def wait_for_the_events():
        first = asyncio.ensure_future(anext(rebuilt("ep-first").run()))
        second = asyncio.ensure_future(anext(rebuilt("ep-second").run()))
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done()  # all held: both wait
        leases.give_back(url, TYPE, "ep-a")
        event = await asyncio.wait_for(first, 60)
        await asyncio.sleep(0.3)
        assert not second.done()  # one lease freed: one deploy woken, the oldest
        assert leases.take(url, TYPE, 1, "ep-first", _never_exists) == 0
        leases.give_back(url, TYPE, "ep-first")
        await asyncio.wait_for(second, 60)
        return event

    assert asyncio.run(wait_for_the_events()).payload == {"instance_type": TYPE}
    assert leases.take(url, TYPE, 1, "ep-second", _never_exists) == 0
    assert [p.name for p in (tmp_path / "leases" / TYPE / "queue").iterdir()] == []  # tickets gone


def test_a_waiting_deploy_lists_the_leases_once_per_poll_and_reads_them_only_to_find_stale_ones(tmp_path, monkeypatch):
    url = f"file://{tmp_path}"
    assert leases.take(url, TYPE, 2, "ep-a", _never_exists) == 0
    assert leases.take(url, TYPE, 2, "ep-b", _never_exists) == 1
    assert leases.take(url, TYPE, 2, "ep-c", _never_exists) is None
    slot = tmp_path / "leases" / TYPE / "slot-0.json"
    slot.write_text(json.dumps({"endpoint": "ep-a", "taken_at": time.time() - leases.STALE_AFTER_S - 1}))
    read, reads = leases._read, []
    monkeypatch.setattr(leases, "_read", lambda path: reads.append(path.name) or read(path))
    assert not leases.my_turn(url, TYPE, 2, "ep-c", 60, refresh=False)  # a poll: one listing, no lease read
    assert reads == []
    assert leases.my_turn(url, TYPE, 2, "ep-c", 60, refresh=True)  # the stale lease counts as free
    assert {"slot-0.json", "slot-1.json"} <= set(reads)


def test_a_lease_given_back_by_another_process_is_seen_on_s3_at_the_next_poll(aws_env):
    from sagemaker_fixtures import BUCKET, clients

    url = f"s3://aws_moto@{BUCKET}/leases-test"
    assert leases.take(url, TYPE, 1, "ep-a", _never_exists) == 0
    assert leases.take(url, TYPE, 1, "ep-b", _never_exists) is None
    assert not leases.my_turn(url, TYPE, 1, "ep-b", 60, refresh=False)  # the listing is now in s3fs's cache
    _, s3 = clients(aws_env)
    s3.delete_object(Bucket=BUCKET, Key=f"leases-test/leases/{TYPE}/slot-0.json")  # not through this filesystem
    assert leases.my_turn(url, TYPE, 1, "ep-b", 60, refresh=False)
