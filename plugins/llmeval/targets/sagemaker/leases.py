"""Endpoint quotas per instance type (`sagemaker.endpoint_quotas`): at most N endpoints of an
instance type live at once across every DAG that shares the run store.

An Airflow pool bounds the tasks running at once, not the endpoints alive: an endpoint
outlives its deploy task. So deploy takes a lease before it creates an endpoint, an object in
the run store created only if absent (`leases/<instance type>/slot-<k>.json`), and the
teardown gives it back once the endpoint is deleted. While all are held, deploy queues a
ticket (`queue/<endpoint>.json`) and waits in the triggerer (`LeaseFreed`), holding no worker
slot; a freed lease wakes the oldest waiting deploy only, not all of them. A lease taken more
than STALE_AFTER_S ago whose endpoint does not exist now (its teardown never ran) is taken over;
a ticket its trigger stopped refreshing is passed over."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from llmeval import store

log = logging.getLogger(__name__)
STALE_AFTER_S = 900


def _folder(artifacts_url: str | None, instance_type: str) -> Any:
    return store.root(artifacts_url) / "leases" / store.safe_segment(instance_type)


def _read(path: Any) -> dict[str, Any] | None:
    """The object's content in one GET (a ticket may be rewritten at any moment), or None."""
    try:
        return json.loads(path.fs.cat_file(path.path))
    except FileNotFoundError:
        return None


def _ticket(artifacts_url: str | None, instance_type: str, endpoint: str) -> Any:
    return _folder(artifacts_url, instance_type) / "queue" / f"{store.safe_segment(endpoint)}.json"


def take(
    artifacts_url: str | None,
    instance_type: str,
    quota: int,
    endpoint: str,
    endpoint_exists: Callable[[str], bool],
) -> int | None:
    """The slot this endpoint holds, taking a free one if needed; None (and a place in the
    queue) when all are held."""
    folder = _folder(artifacts_url, instance_type)
    lease = json.dumps({"endpoint": endpoint, "taken_at": time.time()})
    ticket = _ticket(artifacts_url, instance_type, endpoint)
    holders = []
    for slot in range(quota):
        path = folder / f"slot-{slot}.json"
        if store.create_new(path, lease):
            log.info("endpoint %s took %s lease %d of %d", endpoint, instance_type, slot + 1, quota)
            if ticket.exists():
                ticket.unlink()
            return slot
        held = _read(path)
        if held is None:  # given back meanwhile: the next waiting deploy takes it
            continue
        if held["endpoint"] == endpoint:  # taken by an earlier try of this deploy
            return slot
        if time.time() - held["taken_at"] > STALE_AFTER_S and not endpoint_exists(held["endpoint"]):
            log.warning(
                "lease %d of %s held by %s, which no longer exists: taking it over",
                slot,
                instance_type,
                held["endpoint"],
            )
            path.unlink()
            if store.create_new(path, lease):
                return slot
        holders.append(held["endpoint"])
    log.info("all %d %s endpoint leases are held (by %s): %s waits", quota, instance_type, ", ".join(holders), endpoint)
    _queue(ticket)
    return None


def _queue(ticket: Any) -> None:
    """Join the queue (keeping the place an earlier wait of this deploy had), or refresh it."""
    held = _read(ticket)
    store.write_text(ticket, json.dumps({"since": held["since"] if held else time.time(), "seen": time.time()}))


def give_back(artifacts_url: str | None, instance_type: str, endpoint: str) -> bool:
    """Release the lease `endpoint` holds (after its deletion); False if it held none."""
    folder = _folder(artifacts_url, instance_type)
    if not folder.exists():
        return False
    released = False
    for path in folder.iterdir():
        held = _read(path) if path.name.startswith("slot-") else None
        if held and held["endpoint"] == endpoint:
            path.unlink()
            released = True
    return released


def _held(folder: Any, quota: int) -> list[int]:
    """The slots held now, from one fresh listing of the folder (not one read per slot)."""
    try:
        names = {PurePosixPath(p).name for p in folder.fs.ls(folder.path, detail=False, refresh=True)}
    except FileNotFoundError:
        return []
    return [slot for slot in range(quota) if f"slot-{slot}.json" in names]


def my_turn(
    artifacts_url: str | None, instance_type: str, quota: int, endpoint: str, fresh_s: float, refresh: bool
) -> bool:
    """Whether more leases are free than deploys queued before this one. Each call lists the
    leases once; with `refresh` it also renews this deploy's ticket and counts a lease held
    past STALE_AFTER_S as free (`take` then checks its endpoint). Tickets not renewed within
    `fresh_s` are passed over."""
    folder = _folder(artifacts_url, instance_type)
    mine = _ticket(artifacts_url, instance_type, endpoint)
    if refresh:
        _queue(mine)
    held = _held(folder, quota)
    free = quota - len(held)
    if refresh:
        free += sum(
            1
            for slot in held
            if (lease := _read(folder / f"slot-{slot}.json")) is None or time.time() - lease["taken_at"] > STALE_AFTER_S
        )
    if not free:
        return False
    _queue(mine)
    ticket_of_mine = _read(mine)
    if ticket_of_mine is None:  # our ticket was removed by a taker: ask again
        return False
    me = ticket_of_mine["since"], mine.name
    ahead = 0
    for path in (folder / "queue").iterdir():
        ticket = None if path.name.startswith(".") else _read(path)  # not a ticket being written aside
        if ticket and time.time() - ticket["seen"] < fresh_s and (ticket["since"], path.name) < me:
            ahead += 1
    return free > ahead


class LeaseFreed(BaseTrigger):
    """Fires once a lease of `instance_type` is free for this deploy (its turn in the queue)."""

    def __init__(
        self, artifacts_url: str | None, instance_type: str, quota: int, endpoint: str, poll_interval_s: float
    ):
        super().__init__()
        self.artifacts_url, self.instance_type, self.quota = artifacts_url, instance_type, quota
        self.endpoint, self.poll_interval_s = endpoint, poll_interval_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.LeaseFreed",
            {
                "artifacts_url": self.artifacts_url,
                "instance_type": self.instance_type,
                "quota": self.quota,
                "endpoint": self.endpoint,
                "poll_interval_s": self.poll_interval_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        fresh_s = 3 * self.poll_interval_s + 60
        args = (self.artifacts_url, self.instance_type, self.quota, self.endpoint, fresh_s)
        renewed = 0.0
        while True:
            refresh = time.monotonic() - renewed > fresh_s / 3
            if await asyncio.to_thread(my_turn, *args, refresh):
                break
            renewed = time.monotonic() if refresh else renewed
            await asyncio.sleep(self.poll_interval_s)
        yield TriggerEvent({"instance_type": self.instance_type})
