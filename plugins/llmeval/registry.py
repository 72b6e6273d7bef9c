"""Model registries behind one interface.

`LocalRegistry` keeps SageMaker Model Registry's shape on disk: a model package group is
a folder, each version a JSON file with its approval status, metrics and metadata.
Registering is idempotent per (group, run id): re-running a run's register step returns
the version that run already created instead of adding another.
"""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

APPROVED = "Approved"
PENDING = "PendingManualApproval"
REJECTED = "Rejected"


@dataclass
class ModelVersion:
    group: str
    version: int
    model: str
    run_id: str
    approval_status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    location: str = ""


class Registry(Protocol):
    def register(
        self,
        group: str,
        model: str,
        run_id: str,
        approval_status: str,
        metrics: dict[str, Any],
        metadata: dict[str, Any],
    ) -> ModelVersion: ...

    def versions(self, group: str) -> list[ModelVersion]: ...

    def latest_approved(self, group: str) -> ModelVersion | None: ...


class LocalRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _group_dir(self, group: str) -> Path:
        if not group or "/" in group or group.startswith("."):
            raise ValueError(f"invalid model package group name {group!r}")
        return self.root / group

    def versions(self, group: str) -> list[ModelVersion]:
        folder = self._group_dir(group)
        if not folder.exists():
            return []
        found = [ModelVersion(**json.loads(p.read_text())) for p in folder.glob("v*.json")]
        return sorted(found, key=lambda v: v.version)

    def latest_approved(self, group: str) -> ModelVersion | None:
        approved = [v for v in self.versions(group) if v.approval_status == APPROVED]
        return approved[-1] if approved else None

    def register(
        self,
        group: str,
        model: str,
        run_id: str,
        approval_status: str,
        metrics: dict[str, Any],
        metadata: dict[str, Any],
    ) -> ModelVersion:
        if approval_status not in (APPROVED, PENDING, REJECTED):
            raise ValueError(f"approval status must be {APPROVED}, {PENDING} or {REJECTED}")
        folder = self._group_dir(group)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = self.versions(group)
            for version in existing:
                if version.run_id == run_id:
                    return version
            number = (existing[-1].version if existing else 0) + 1
            path = folder / f"v{number:05d}.json"
            version = ModelVersion(
                group, number, model, run_id, approval_status, metrics, metadata, time.time(), str(path)
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(version), indent=2, sort_keys=True))
            tmp.replace(path)
            return version
