"""Runs over three logical dates (as a backfill creates them) evaluate three prompt-catalog
versions with overlapping prompts: one history entry per version and model, and the
response cache keeps overlapping prompts from being generated again. Real local model.
A champion gate then keeps a worse re-run from being approved."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml
from conftest import local_config

pytestmark = pytest.mark.slow

QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Egypt?", "Cairo"),
]
DATES = ["2026-01-01", "2026-01-02", "2026-01-03"]


def test_three_catalog_versions_history_and_cache(airflow_db, tmp_path):
    from airflow.utils.cli import get_bagged_dag
    from llmeval import history, store
    from llmeval.store import run_folder

    for i, day in enumerate(DATES):  # version i holds questions i..i+2: each overlaps the previous by two
        folder = tmp_path / "catalog" / day
        folder.mkdir(parents=True)
        rows = [{"id": f"q{j}", "question": q, "answer": a} for j, (q, a) in enumerate(QUESTIONS) if i <= j <= i + 2]
        (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chat = {
        "output": "[0].generation.content",
        "content_template": [[{"role": "user", "content": "PROMPT_PLACEHOLDER"}]],
        "inference_parameters": {"max_new_tokens": 6},
    }
    cfg = local_config(
        "backfill-local",
        models=[{"name": "bf-chat", "model_id": "smollm2-135m-instruct", "evaluation_config": chat}],
        registry={
            "model_package_group_name": "backfill-group",
            "gate": [{"metric": "FactualKnowledge/factual_knowledge", "min_delta": 0.0}],
        },
    )
    cfg["dataset"]["input_data_location"] = str(tmp_path / "catalog" / "{catalog_version}" / "qa.jsonl")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "backfill.yaml").write_text(yaml.safe_dump(cfg))
    import os

    os.environ["LLM_EVAL_CONFIGS_DIR"] = str(configs)
    try:
        dag = get_bagged_dag(None, "backfill-local")
        runs = [dag.test(logical_date=datetime.fromisoformat(d).replace(tzinfo=timezone.utc)) for d in DATES]
    finally:
        del os.environ["LLM_EVAL_CONFIGS_DIR"]
    assert [r.state for r in runs] == ["success"] * 3
    entries = history.entries("backfill-local")
    assert [e["catalog_version"] for e in entries] == DATES
    assert all(set(e["models"]) == {"bf-chat"} for e in entries)
    stats = [
        json.loads((run_folder("backfill-local", r.run_id) / "models" / "bf-chat" / "results.json").read_text())[
            "generation"
        ]
        for r in runs
    ]
    assert [s["records_total"] for s in stats] == [3, 3, 3]
    assert [s["cache_hits"] for s in stats] == [0, 2, 2]  # only the one new prompt per version was generated
    registrations = [
        json.loads((run_folder("backfill-local", r.run_id) / "registration.json").read_text()) for r in runs
    ]
    assert registrations[0]["approval_status"] == "Approved"
    assert "no approved champion yet" in registrations[0]["gate"]["reason"]
    assert "trend" in (run_folder("backfill-local", runs[-1].run_id) / "leaderboard.html").read_text().lower()
    trend = store.history_folder("backfill-local") / store.TREND
    assert trend.exists() and trend.read_text().count("<circle") >= 3
