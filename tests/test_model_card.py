"""The model card registered with every version: its content is what the SageMaker SDK's
model card classes build from the same fields; the local registry keeps it beside the version."""

from __future__ import annotations

import json
import subprocess

from conftest import ROOT, WORKER_PYTHON, local_config
from helpers import failed, result
from llmeval import store
from llmeval.config import EvalConfig
from llmeval.registration import register_best
from llmeval.registry import APPROVED, LocalRegistry
from llmeval.registry.card import CardFacts, content
from llmeval.selection import select

FACTS = CardFacts(
    dag_id="card-dag",
    run_id="manual__2026-11-29T10:00:00+00:00",
    catalog_version="2026-11-29",
    approval_status=APPROVED,
    selection="highest composite score 1.000 over 2 eligible model(s).",
    gate="m-one beats champion m-two on every gate metric.",
    artifact="s3://bucket/training/output/model.tar.gz",
    review="Approved by alice at 2026-11-29T10:05:00+00:00: answers checked",
)


def _cfg(**extra) -> EvalConfig:
    return EvalConfig.model_validate(
        local_config(
            "card-dag",
            algorithms=[{"algorithm": "FactualKnowledge"}, {"algorithm": "SemanticSimilarity"}],
            pipeline={"name": "card-dag", "description": "QA models <compared>"},
            **extra,
        )
    )


def test_the_content_is_what_the_sdks_model_card_classes_build():
    card = content(_cfg(), result("m-one", fk=0.7, sim=0.8), FACTS)
    done = subprocess.run(
        [WORKER_PYTHON, str(ROOT / "tests" / "sdk_model_card.py")],
        input=json.dumps(card),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == card
    evaluation = card["evaluation_details"][0]
    assert [g["name"] for g in evaluation["metric_groups"]] == ["FactualKnowledge", "SemanticSimilarity", "generation"]
    factual = evaluation["metric_groups"][0]["metric_data"][0]
    assert factual == {
        "name": "factual_knowledge",
        "type": "number",
        "value": 0.7,
        "notes": "95% interval [0.600, 0.800] over 40 records",
    }
    assert (
        evaluation["metadata"]["catalog_version"] == "2026-11-29" and evaluation["metadata"]["run_id"] == FACTS.run_id
    )
    assert card["additional_information"]["custom_details"]["approval_status"] == APPROVED
    assert card["additional_information"]["custom_details"]["review"] == FACTS.review
    assert f"Approval: Approved ({FACTS.review})." in evaluation["evaluation_observation"]
    assert card["model_overview"]["model_artifact"] == [FACTS.artifact]


def test_the_local_registry_keeps_the_card_beside_the_version(tmp_path):
    cfg = _cfg()
    results = [result("m-one", fk=0.7), result("m-two", fk=0.4), failed("m-three")]
    folder = store.run_folder("card-dag", "run-1")
    registry = LocalRegistry(tmp_path / "registry")
    outcome = register_best(cfg, folder, registry, "run-1", select(cfg, results), results, "v7", dag_id="card-dag")
    assert outcome.registered and outcome.approval_status == APPROVED
    group = tmp_path / "registry" / cfg.registry_group
    card = json.loads((group / "v00001.model_card.json").read_text())
    assert card["evaluation_details"][0]["metadata"]["run_id"] == "run-1"
    assert (
        "Champion gate: no champion gate configured. Approval: Approved."
        in card["evaluation_details"][0]["evaluation_observation"]
    )
    page = (group / "v00001.model_card.md").read_text()
    assert "# Model card: smollm2-135m-instruct" in page and "QA models <compared>" in page
    assert "| factual_knowledge | 0.700 | 95% interval [0.600, 0.800] over 40 records |" in page
    assert "- Approval: Approved" in page and "(catalog version v7)" in page
    assert [v.version for v in registry.versions(cfg.registry_group)] == [1]  # the card is not a version


def test_the_judges_agreement_with_people_is_in_the_card():
    """A measured judge: its kappa, interval, labelled answers and whether it was in the decision
    (a metric group the SDK's classes accept); one not measured: why, in the caveats."""
    from dataclasses import replace

    measured = {
        "judge": "judge-a",
        "rubric": "correctness",
        "algorithm": "LLMJudge",
        "labels": 48,
        "kappa": [0.12, -0.05, 0.3],
        "trusted": False,
        "reason": "kappa 0.12 [-0.05, 0.3] with people on 48 answers: its lower bound is below min_agreement 0.4",
    }
    unmeasured = {**measured, "algorithm": "Pairwise", "rubric": "preference", "labels": 3, "kappa": []}
    unmeasured["reason"] = "not measured (n = 3 < 20 labelled answers)"
    card = content(_cfg(), result("m-one", fk=0.7, sim=0.8), replace(FACTS, agreement=[measured, unmeasured]))
    sdk = [WORKER_PYTHON, str(ROOT / "tests" / "sdk_model_card.py")]
    done = subprocess.run(sdk, input=json.dumps(card), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == card
    groups = {g["name"]: g["metric_data"] for g in card["evaluation_details"][0]["metric_groups"]}
    assert groups["judge agreement with people"] == [
        {
            "name": "judge-a on LLMJudge/correctness: kappa",
            "type": "number",
            "value": 0.12,
            "notes": "95% interval [-0.050, 0.300] over 48 labelled answers; left out: " + measured["reason"],
        }
    ]
    caveats = card["additional_information"]["caveats_and_recommendations"]
    assert "Judge agreement judge-a on Pairwise/preference: not measured (n = 3 < 20 labelled answers)." in caveats
