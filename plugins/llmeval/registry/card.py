"""The model card registered with every version.

`content()` follows SageMaker's model package model card schema (snake_case fields; for a
model package, `model_overview` holds only `model_creator` and `model_artifact`): one
evaluation with a metric group per algorithm (each score with its 95% interval in the
notes), each judge's agreement with people (kappa with its interval, and whether the judge's
scores were in the decision), the dataset and catalog version, the run, the champion gate and
the approval.
The local registry writes it as `model_card.json` and `model_card.md` beside the version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmeval.config import EvalConfig
from llmeval.html import fmt, render
from llmeval.results import GENERATION_METRICS, ModelResult


@dataclass
class CardFacts:
    """What the card says about one registered version, beyond the config and the result."""

    dag_id: str
    run_id: str
    catalog_version: str
    approval_status: str
    selection: str
    gate: str
    artifact: str  # the model's artifacts: a fine-tuned model's S3 data, else its model id
    review: str = ""  # who approved or rejected it in Airflow, when, and their comment
    agreement: list[dict[str, Any]] = field(default_factory=list)  # the judges against people (agreement.json)


def _metric(name: str, value: float, notes: str) -> dict[str, Any]:
    return {"name": name, "type": "number", "value": value, "notes": notes}


def content(cfg: EvalConfig, result: ModelResult, facts: CardFacts) -> dict[str, Any]:
    """The card's content (the JSON of CreateModelPackage's ModelCard.ModelCardContent)."""
    model = cfg.model(result.model)
    groups = [
        {
            "name": algo.algorithm,
            "metric_data": [
                _metric(s.name, s.value, f"95% interval [{fmt(s.ci_low)}, {fmt(s.ci_high)}] over {s.count} records")
                for s in algo.scores
                if s.value is not None
            ],
        }
        for algo in result.algorithms
        if not algo.error and any(s.value is not None for s in algo.scores)
    ]
    g = result.generation
    generation = [
        _metric(name, float(getattr(g, name)), f"over {g.records_total} records")
        for name in GENERATION_METRICS
        if getattr(g, name) is not None
    ]
    if generation:
        groups.append({"name": "generation", "metric_data": generation})
    trust = [
        _metric(
            f"{a['judge']} on {a.get('algorithm', 'LLMJudge')}/{a['rubric']}: kappa",
            a["kappa"][0],
            f"95% interval [{fmt(a['kappa'][1])}, {fmt(a['kappa'][2])}] over {a['labels']} labelled answers; "
            + ("in the decision" if a["trusted"] else f"left out: {a['reason']}"),
        )
        for a in facts.agreement
        if a["kappa"] and a["kappa"][0] is not None
    ]
    if trust:
        groups.append({"name": "judge agreement with people", "metric_data": trust})
    unmeasured = [
        f"{a['judge']} on {a.get('algorithm', 'LLMJudge')}/{a['rubric']}: {a['reason']}"
        for a in facts.agreement
        if not (a["kappa"] and a["kappa"][0] is not None)
    ]
    return {
        "model_overview": {
            "model_creator": f"llmeval pipeline {cfg.pipeline.name}",
            "model_artifact": [facts.artifact],
        },
        "intended_uses": {
            "purpose_of_model": cfg.pipeline.description
            or f"{model.model_id} selected by the LLM evaluation pipeline {cfg.pipeline.name}",
            "risk_rating": "Unknown",  # the schema's default: a reviewer rates the risk
        },
        "evaluation_details": [
            {
                "name": f"{cfg.dataset.dataset_name} (catalog version {facts.catalog_version})"[:63],
                "evaluation_observation": f"{facts.selection} Champion gate: {facts.gate} "
                f"Approval: {facts.approval_status}{f' ({facts.review})' if facts.review else ''}.",
                "datasets": [cfg.dataset.input_data_location],
                "metadata": {
                    "dag_id": facts.dag_id,
                    "run_id": facts.run_id,
                    "catalog_version": facts.catalog_version,
                    "model_id": model.model_id,
                    "model_version": model.model_version,
                    "records": f"{g.records_evaluated} of {g.records_total} answered",
                },
                "metric_groups": groups,
            }
        ],
        "additional_information": {
            "caveats_and_recommendations": "Scores hold for this dataset and catalog version; compare models "
            "only on the same catalog version." + "".join(f" Judge agreement {u}." for u in unmeasured),
            "custom_details": {
                "approval_status": facts.approval_status,
                **({"review": facts.review[:1000]} if facts.review else {}),
                "champion_gate": facts.gate[:1000],
                "run_id": facts.run_id,
            },
        },
    }


def markdown(card: dict[str, Any]) -> str:
    """A readable copy of the card."""
    return render("model_card.md", card=card)
