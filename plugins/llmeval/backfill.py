"""`llmeval backfill CONFIG`: one partitioned run per prompt-catalog version, triggered through
Airflow's REST API (the scheduler runs them; nothing runs here), at most `--concurrency` at a
time, with a line per change of a run's state. Idempotent: a version that already has a
successful run is skipped unless `--rerun`; one queued or running is waited for, not triggered
again. The versions: given, read from a file (one per line), or every version under the
catalog's prefix that has no result in the history yet (`--missing`)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmeval.config import EvalConfig

DONE = ("success", "failed")


class ApiError(RuntimeError):
    pass


@dataclass
class Api:
    """Airflow's REST API (v2) with a bearer token."""

    url: str
    token: str

    @classmethod
    def login(cls, url: str, token: str | None, username: str | None, password: str | None) -> Api:
        if token:
            return cls(url.rstrip("/"), token)
        if not (username and password):
            raise ApiError("give --token (or AIRFLOW_API_TOKEN), or a username and password for /auth/token")
        found = cls(url.rstrip("/"), "").call("POST", "/auth/token", {"username": username, "password": password})
        return cls(url.rstrip("/"), found["access_token"])

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}") from None

    def runs_by_version(self, dag_id: str) -> dict[str, str]:
        """partition key -> the state of its latest run."""
        found: dict[str, str] = {}
        offset = 0
        while True:
            query = urllib.parse.urlencode({"limit": 100, "offset": offset, "order_by": "run_after"})
            page = self.call("GET", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns?{query}")
            for run in page["dag_runs"]:
                if run.get("partition_key"):
                    found[run["partition_key"]] = run["state"]
            offset += len(page["dag_runs"])
            if not page["dag_runs"] or offset >= page["total_entries"]:
                return found

    def trigger(self, dag_id: str, version: str) -> None:
        body: dict[str, Any] = {"logical_date": None, "partition_key": version, "conf": {}}
        self.call("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns", body)


def versions_without_results(cfg: EvalConfig) -> list[str]:
    """Every version under the catalog's prefix (the dataset location before {catalog_version})
    whose dataset exists, less those the history already has a result for."""
    from airflow.sdk import ObjectStoragePath

    from llmeval.history import entries
    from llmeval.runtime import resolve_data_path

    before, _, after = cfg.dataset.input_data_location.partition("{catalog_version}")
    if "://" in before and not before.startswith("file://"):
        named = "@" in before.split("://", 1)[1].split("/", 1)[0]
        folder: Any = (
            ObjectStoragePath(before) if named else ObjectStoragePath(before, conn_id=cfg.sagemaker.aws_conn_id)
        )
    else:
        folder = resolve_data_path(before.removeprefix("file://") or ".")
    done = {e["catalog_version"] for e in entries(cfg.pipeline.name, cfg.artifacts_url)}
    found = []
    for child in folder.iterdir():
        name = child.name.rstrip("/")
        if name not in done and cfg.version_problem(name) is None and (folder / (name + after)).exists():
            found.append(name)
    return sorted(found)


def read_versions(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def backfill(
    cfg: EvalConfig,
    api: Api,
    versions: list[str],
    concurrency: int = 1,
    rerun: bool = False,
    poll_s: float = 5.0,
    say: Callable[[str], None] = print,
) -> dict[str, str]:
    """Trigger a run per version not done yet and wait for all; each version's final state."""
    problems = [p for v in versions if (p := cfg.version_problem(v))]
    if problems:
        raise ValueError("; ".join(problems))
    dag_id = cfg.pipeline.name
    states = api.runs_by_version(dag_id)
    todo = [v for v in dict.fromkeys(versions) if rerun or states.get(v) != "success"]
    for version in sorted(set(versions) - set(todo)):
        say(f"{version}: skipped, it already has a successful run (--rerun to run it again)")
    waiting = [v for v in todo if rerun or states.get(v) not in ("queued", "running")]
    watched = {v: states.get(v, "") if v not in waiting else "" for v in todo}
    while True:
        live = [v for v, s in watched.items() if s and s not in DONE]
        while waiting and len(live) < concurrency:
            version = waiting.pop(0)
            api.trigger(dag_id, version)
            watched[version] = "queued"
            live.append(version)
            say(f"{version}: triggered")
        now = api.runs_by_version(dag_id)
        for version in [v for v, state in watched.items() if state]:
            latest = now.get(version, watched[version])
            if latest != watched[version]:
                watched[version] = latest
                say(f"{version}: {latest} ({sum(s in DONE for s in watched.values())}/{len(todo)} done)")
        if not waiting and all(s in DONE for s in watched.values()):
            return {v: watched.get(v) or states.get(v, "") for v in versions}
        time.sleep(poll_s)
