"""What every registry shares: approval statuses, a registered version, the Registry interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

APPROVED = "Approved"
PENDING = "PendingManualApproval"
REJECTED = "Rejected"
# ModelCardStatus of the card for each approval status of the version
CARD_STATUS = {APPROVED: "Approved", PENDING: "PendingReview", REJECTED: "Archived"}


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


class Registry(ABC):
    """A model registry: versions per model package group, each with an approval status."""

    @abstractmethod
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
        """Add a version (or return the one this run already added), with its model card
        (`llmeval.registry.card.content`) when given."""

    @abstractmethod
    def versions(self, group: str) -> list[ModelVersion]:
        """All versions of `group`, oldest first."""

    def latest_approved(self, group: str) -> ModelVersion | None:
        approved = [v for v in self.versions(group) if v.approval_status == APPROVED]
        return approved[-1] if approved else None
