"""`LocalRegistry` keeps SageMaker Model Registry's shape in the run store: a model package
group is a folder, each version a JSON object with its approval status, metrics and metadata,
and its model card beside it. Registering is idempotent per (group, run id)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from llmeval.registry.base import APPROVED, PENDING, REJECTED, ModelVersion, Registry
from llmeval.registry.card import markdown
from llmeval.store import create_new, write_text


class LocalRegistry(Registry):
    """Model Registry's shape in the run store: a folder per group, a JSON object per version.
    A version number is claimed by creating its object only if it does not exist yet (O_EXCL
    locally, a conditional PUT on S3), so two runs registering at once get two numbers."""

    def __init__(self, root: Any):
        self.root = root

    def _group_dir(self, group: str) -> Any:
        if not group or "/" in group or group.startswith("."):
            raise ValueError(f"invalid model package group name {group!r}")
        return self.root / group

    @staticmethod
    def _write_card(version_path: Any, card: dict[str, Any]) -> None:
        """`v00001.model_card.json` and `.md` beside the version's object."""
        stem = version_path.name.removesuffix(".json")
        write_text(version_path.parent / f"{stem}.model_card.json", json.dumps(card, indent=2))
        write_text(version_path.parent / f"{stem}.model_card.md", markdown(card))

    def versions(self, group: str) -> list[ModelVersion]:
        folder = self._group_dir(group)
        if not folder.exists():
            return []
        found = [
            ModelVersion(**json.loads(p.read_text()))
            for p in folder.glob("v*.json")
            if p.name[1:].removesuffix(".json").isdigit()  # not a version's model card
        ]
        return sorted(found, key=lambda v: v.version)

    def register(
        self,
        group: str,
        model: str,
        run_id: str,
        approval_status: str,
        metrics: dict[str, Any],
        metadata: dict[str, Any],
        card: dict[str, Any] | None = None,
    ) -> ModelVersion:
        if approval_status not in (APPROVED, PENDING, REJECTED):
            raise ValueError(f"approval status must be {APPROVED}, {PENDING} or {REJECTED}")
        folder = self._group_dir(group)
        while True:
            existing = self.versions(group)
            for version in existing:
                if version.run_id == run_id:
                    return version
            number = (existing[-1].version if existing else 0) + 1
            path = folder / f"v{number:05d}.json"
            version = ModelVersion(
                group, number, model, run_id, approval_status, metrics, metadata, time.time(), str(path)
            )
            if create_new(path, json.dumps(asdict(version), indent=2, sort_keys=True)):
                if card is not None:
                    self._write_card(path, card)
                return version
            # another run took this number between our listing and our write: list again
