"""Endpoint quotas per instance type (`sagemaker.endpoint_quotas`): at most N endpoints of an
instance type live at once across every DAG that shares the run store.

An Airflow pool bounds the tasks running at once, not the endpoints alive: an endpoint
outlives its deploy task. So deploy takes a lease before it creates an endpoint, an object in
the run store created only if absent (`leases/<instance type>/slot-<k>.json`), and the
teardown gives it back once the endpoint is deleted. A lease whose endpoint has been gone for
longer than STALE_AFTER_S (its teardown never ran) is taken over."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from llmeval import store

log = logging.getLogger(__name__)
STALE_AFTER_S = 900


def _folder(artifacts_url: str | None, instance_type: str) -> Any:
    return store.root(artifacts_url) / "leases" / store.safe_segment(instance_type)


def _holder(path: Any) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def take(
    artifacts_url: str | None,
    instance_type: str,
    quota: int,
    endpoint: str,
    endpoint_exists: Callable[[str], bool],
) -> int | None:
    """The slot this endpoint holds, taking a free one if needed; None when all are held."""
    folder = _folder(artifacts_url, instance_type)
    lease = json.dumps({"endpoint": endpoint, "taken_at": time.time()})
    holders = []
    for slot in range(quota):
        path = folder / f"slot-{slot}.json"
        if store.create_new(path, lease):
            log.info("endpoint %s took %s lease %d of %d", endpoint, instance_type, slot + 1, quota)
            return slot
        held = _holder(path)
        if held is None:  # given back meanwhile: the next deploy (or this one's retry) takes it
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
    log.info("all %d %s endpoint leases are held (by %s)", quota, instance_type, ", ".join(holders))
    return None


def give_back(artifacts_url: str | None, instance_type: str, endpoint: str) -> bool:
    """Release the lease `endpoint` holds (after its deletion); False if it held none."""
    folder = _folder(artifacts_url, instance_type)
    if not folder.exists():
        return False
    released = False
    for path in folder.iterdir():
        held = _holder(path) if path.name.startswith("slot-") else None
        if held and held["endpoint"] == endpoint:
            path.unlink()
            released = True
    return released
