"""Registering the selected model: the champion gate on this run's catalog version, the
approval status (auto, the review's decision, or rejected by the gate), the version's
metrics and metadata, its model card, and the outcome (`Registration`) the report shows."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.registry import APPROVED, PENDING, REJECTED, ModelVersion, Registry
from llmeval.registry.card import CardFacts
from llmeval.registry.card import content as card_content
from llmeval.results import ModelResult
from llmeval.review import APPROVE, REJECT, review_text
from llmeval.selection import GateDecision, Selection, champion_gate, is_excluded

log = logging.getLogger("llmeval.registration")
TRAINING_METRICS = ("train_loss_last", "validation_loss_before", "validation_loss_after", "steps")


@dataclass
class Registration:
    """What the register step decided: the version it registered, or why it registered none."""

    registered: bool
    reason: str = ""
    version: ModelVersion | None = None
    gate: GateDecision | None = None
    review: dict[str, Any] | None = None

    @property
    def approval_status(self) -> str | None:
        return self.version.approval_status if self.version else None

    @property
    def model(self) -> str | None:
        return self.version.model if self.version else None

    def to_dict(self) -> dict[str, Any]:
        """The outcome as XCom and registration.json hold it (the version's fields at the top)."""
        head: dict[str, Any] = {"registered": self.registered}
        head |= asdict(self.version) if self.version else {"reason": self.reason}
        return head | {"gate": asdict(self.gate) if self.gate else None, "review": self.review}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Registration:
        fields = ModelVersion.__dataclass_fields__
        version = ModelVersion(**{k: v for k, v in data.items() if k in fields}) if data.get("registered") else None
        gate = GateDecision(**data["gate"]) if data.get("gate") else None
        return cls(bool(data.get("registered")), data.get("reason", ""), version, gate, data.get("review"))

    def text(self) -> str:
        """One line for the leaderboard and the evaluations page."""
        if not self.registered or self.version is None:
            return f"not registered: {self.reason}"
        v = self.version
        text = f"{v.model} registered as {v.group} version {v.version} ({v.approval_status})"
        text = f"{text}; champion gate: {self.gate.reason}" if self.gate and self.gate.reason else text
        reviewed = review_text(self.review)
        return f"{text}; review: {reviewed}" if reviewed else text


def gate_decision(
    cfg: EvalConfig,
    registry: Registry,
    dag_id: str,
    catalog_version: str,
    best: ModelResult,
    results: list[ModelResult],
    run_folder: Any,
) -> GateDecision:
    """The champion gate for the selected model, on this run's catalog version: the champion's
    scores (and scored records, for a paired test) from this run when it was evaluated here,
    else from the history and the champion's run folder in the store."""
    from llmeval.history import run_of, scores_on
    from llmeval.paired import read_records

    champion = registry.latest_approved(cfg.registry_group) if cfg.registry.gate else None
    champion_scores, champion_folder = None, None
    if champion is not None:
        here = next((r for r in results if r.model == champion.model and r.succeeded), None)
        if here is not None:
            champion_scores, champion_folder = here.scores_by_metric(), run_folder
        else:
            champion_scores = scores_on(dag_id, catalog_version, champion.model, cfg.artifacts_url)
            recorded_run = run_of(dag_id, catalog_version, cfg.artifacts_url)
            if recorded_run:
                champion_folder = store.run_folder(dag_id, recorded_run, cfg.artifacts_url)
    records = None
    if champion is not None and champion_folder is not None and any(r.significance for r in cfg.registry.gate):
        mine = read_records(store.model_folder(run_folder, best.model))
        theirs = read_records(store.model_folder(champion_folder, champion.model))
        records = (mine, theirs) if mine is not None and theirs is not None else None
    return champion_gate(cfg.registry.gate, best, champion.model if champion else None, champion_scores, records)


def approval_status(cfg: EvalConfig, gate: GateDecision, review: dict[str, Any] | None) -> str:
    """Rejected when the gate fails or the reviewer rejects; approved on `auto` or when the
    reviewer approves; else pending a manual approval."""
    decided = (review or {}).get("decision")
    if not gate.passed or decided == REJECT:
        return REJECTED
    if cfg.registry.approval == "auto" or decided == APPROVE:
        return APPROVED
    return PENDING


def version_metrics(best: ModelResult) -> dict[str, Any]:
    """Every score of the model, and a tuned model's training figures."""
    metrics: dict[str, Any] = {m: asdict(s) for m, s in best.scores_by_metric().items()}
    training = best.metadata.get("training") or {}
    return metrics | {f"training/{k}": v for k, v in training.items() if k in TRAINING_METRICS}


def version_metadata(
    cfg: EvalConfig, selection: Selection, best: ModelResult, catalog_version: str, gate: GateDecision, reviewed: str
) -> dict[str, Any]:
    """What the registry keeps beside the version: where it comes from and how it was decided."""
    model = cfg.model(best.model)
    metadata: dict[str, Any] = {
        "model_id": model.model_id,
        "model_version": model.model_version,
        "dataset": cfg.dataset.dataset_name,
        "pipeline": cfg.pipeline.name,
        "selection_composite": next(c.composite for c in selection.ranking if c.model == best.model),
        "records_evaluated": best.generation.records_evaluated,
        "catalog_version": catalog_version,
        "gate": gate.reason[:250],
        **({"cost_usd": best.cost_usd} if best.cost_usd is not None else {}),
        **({"review": reviewed[:250]} if reviewed else {}),
        **({"warnings": "; ".join(best.metadata["warnings"])[:250]} if best.metadata.get("warnings") else {}),
    }
    training = best.metadata.get("training")
    if training:  # a tuned model: reference its training run
        metadata["training_job"] = training.get("job_name") or training.get("artifact", "local fine-tune")
        metadata["base_model"] = training.get("base_model", model.model_id)
    return metadata


def register_best(
    cfg: EvalConfig,
    run_folder: Any,
    registry: Registry,
    run_id: str,
    selection: Selection,
    results: list[ModelResult],
    catalog_version: str,
    enabled: bool = True,
    dag_id: str = "",
    review: dict[str, Any] | None = None,
) -> Registration:
    """Register the selected model, gated against the champion and, with `approval: review`,
    as the reviewer decided; the outcome is saved as registration.json."""
    dag_id = dag_id or cfg.pipeline.name
    if not enabled:
        outcome = Registration(False, "registration disabled for this run")
    elif selection.best is None:
        outcome = Registration(False, "no model was eligible for selection")
    else:
        best = next(r for r in results if r.model == selection.best)
        trusted = cfg.registry.model_copy(
            update={"gate": [r for r in cfg.registry.gate if not is_excluded(r.metric, selection.excluded)]}
        )  # an untrusted judge's rubric is out of the gate too
        gate = gate_decision(
            cfg.model_copy(update={"registry": trusted}), registry, dag_id, catalog_version, best, results, run_folder
        )
        log.info("champion gate: %s", gate.reason)
        status, reviewed = approval_status(cfg, gate, review), review_text(review)
        if reviewed:
            log.info("review: %s", reviewed)
        if status == REJECTED and cfg.registry.on_gate_fail != "reject":
            reason = gate.reason if not gate.passed else f"rejected in review: {reviewed}"
            outcome = Registration(False, reason, gate=gate, review=review)
        else:
            training = best.metadata.get("training") or {}
            facts = CardFacts(
                dag_id=dag_id,
                run_id=run_id,
                catalog_version=catalog_version,
                approval_status=status,
                selection=next(c.reason for c in selection.ranking if c.model == selection.best) + ".",
                gate=gate.reason + ".",
                artifact=training.get("artifact") or cfg.model(best.model).model_id,
                review=reviewed,
                agreement=json.loads(found.read_text()) if (found := run_folder / store.AGREEMENT).exists() else [],
            )
            version = registry.register(
                cfg.registry_group,
                best.model,
                run_id,
                status,
                version_metrics(best),
                version_metadata(cfg, selection, best, catalog_version, gate, reviewed),
                card_content(cfg, best, facts),
            )
            outcome = Registration(True, version=version, gate=gate, review=review)
            log.info("registered %s as %s v%d (%s)", best.model, version.group, version.version, status)
    store.write_text(run_folder / store.REGISTRATION, json.dumps(outcome.to_dict(), indent=2, default=str))
    return outcome
