"""The target-agnostic steps of a run, as plain functions over the run folder.

The factory wraps them in Airflow tasks; tests call them directly. A run folder holds
config.json (the resolved config, frozen for the run), dataset.jsonl, one folder per
model (results.json or failure.json), selection.json, registration.json and the report.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmeval.config import EvalConfig, load_config, load_defaults
from llmeval.dataset import read_dataset, write_jsonl
from llmeval.registry import APPROVED, PENDING, REJECTED, Registry
from llmeval.report import ReportInput, write_report
from llmeval.results import ModelResult, read_model_result, write_json_atomic
from llmeval.runtime import model_dir, resolve_data_path
from llmeval.selection import Selection, champion_gate, select

log = logging.getLogger("llmeval.steps")


def run_config(run_folder: Path) -> EvalConfig:
    return EvalConfig.model_validate_json((run_folder / "config.json").read_text(encoding="utf-8"))


def run_info(run_folder: Path) -> dict[str, Any]:
    return json.loads((run_folder / "run.json").read_text(encoding="utf-8"))


def prepare_run(config_path: Path, run_folder: Path, num_records: int | None, catalog_version: str) -> dict[str, Any]:
    """Freeze the config for the run and write the prepared dataset of this catalog version."""
    cfg = load_config(config_path, load_defaults(config_path.parent))
    run_folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_folder / "config.json", cfg.model_dump_json(indent=2))
    write_json_atomic(run_folder / "run.json", json.dumps({"catalog_version": catalog_version}))
    ds = cfg.dataset
    limit = num_records if num_records is not None else cfg.num_records
    source = resolve_data_path(ds.input_data_location.replace("{catalog_version}", catalog_version))
    pairs = {"sent_more_input": ds.sent_more_input_key, "sent_less_input": ds.sent_less_input_key}
    prepared = read_dataset(
        source,
        ds.model_input_key,
        ds.target_output_key,
        ds.category_key,
        limit,
        text_columns={name: column for name, column in pairs.items() if column},
    )
    write_jsonl(run_folder / "dataset.jsonl", prepared.records)
    write_json_atomic(run_folder / "bad_rows.json", json.dumps(prepared.bad_rows, indent=2))
    log.info(
        "dataset %s: %d records from %s (%d bad rows skipped%s)",
        ds.dataset_name,
        len(prepared.records),
        source,
        len(prepared.bad_rows),
        f", limited to {limit}" if limit else "",
    )
    return {
        "records": len(prepared.records),
        "bad_rows": len(prepared.bad_rows),
        "source": str(source),
        "catalog_version": catalog_version,
    }


def plan_models(cfg: EvalConfig, requested: list[str] | None) -> list[str]:
    names = [m.name for m in cfg.models]
    if not requested:
        return names
    unknown = sorted(set(requested) - set(names))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; this config has {names}")
    return [n for n in names if n in requested]


def collect_results(run_folder: Path, models: list[str]) -> list[ModelResult]:
    return [read_model_result(model_dir(run_folder, m), m) for m in models]


def select_best(run_folder: Path, models: list[str]) -> Selection:
    cfg = run_config(run_folder)
    results = collect_results(run_folder, models)
    selection = select(cfg, results)
    write_json_atomic(run_folder / "selection.json", json.dumps(selection.to_dict(), indent=2))
    for cand in selection.ranking:
        level = logging.WARNING if cand.status == "failed" else logging.INFO
        log.log(level, "%s: %s (composite %s) %s", cand.model, cand.status, cand.composite, cand.reason)
    return selection


def gate_decision(cfg: EvalConfig, registry: Registry, run_folder: Path, dag_id: str, best: ModelResult):
    """The champion gate for the selected model, on this run's catalog version."""
    from llmeval.history import scores_on

    champion = registry.latest_approved(cfg.registry_group) if cfg.registry.gate else None
    champion_scores = None
    if champion is not None:
        evaluated = read_model_result(model_dir(run_folder, champion.model), champion.model)
        if evaluated.succeeded and (run_folder / "models" / champion.model).exists():
            champion_scores = evaluated.scores_by_metric()
        else:
            champion_scores = scores_on(dag_id, run_info(run_folder)["catalog_version"], champion.model)
    return champion_gate(cfg.registry.gate, best, champion.model if champion else None, champion_scores)


def register_best(
    run_folder: Path, registry: Registry, run_id: str, enabled: bool = True, dag_id: str = ""
) -> dict[str, Any]:
    """Register the selected model, gated against the champion; the outcome is saved."""
    cfg = run_config(run_folder)
    selection = Selection.from_dict(json.loads((run_folder / "selection.json").read_text()))
    if not enabled:
        outcome: dict[str, Any] = {"registered": False, "reason": "registration disabled for this run"}
    elif selection.best is None:
        outcome = {"registered": False, "reason": "no model was eligible for selection"}
    else:
        best = read_model_result(model_dir(run_folder, selection.best), selection.best)
        model = cfg.model(selection.best)
        decision = gate_decision(cfg, registry, run_folder, dag_id or cfg.pipeline.name, best)
        log.info("champion gate: %s", decision.reason)
        status = APPROVED if cfg.registry.approval == "auto" else PENDING
        if not decision.passed:
            status = REJECTED
        metrics = {m: asdict(s) for m, s in best.scores_by_metric().items()}
        metadata = {
            "model_id": model.model_id,
            "model_version": model.model_version,
            "dataset": cfg.dataset.dataset_name,
            "pipeline": cfg.pipeline.name,
            "selection_composite": next(c.composite for c in selection.ranking if c.model == selection.best),
            "records_evaluated": best.generation.records_evaluated,
            "catalog_version": run_info(run_folder)["catalog_version"],
            "gate": decision.reason[:250],
        }
        training = best.metadata.get("training")
        if training:  # a tuned model: reference its training run and metrics
            metadata["training_job"] = training.get("job_name") or training.get("artifact", "local fine-tune")
            metadata["base_model"] = training.get("base_model", model.model_id)
            metrics.update(
                {
                    f"training/{k}": v
                    for k, v in training.items()
                    if k in ("train_loss_last", "validation_loss_before", "validation_loss_after", "steps")
                }
            )
        if decision.passed or cfg.registry.on_gate_fail == "reject":
            version = registry.register(cfg.registry_group, selection.best, run_id, status, metrics, metadata)
            outcome = {"registered": True, **asdict(version), "gate": asdict(decision)}
            log.info("registered %s as %s v%d (%s)", selection.best, version.group, version.version, status)
        else:
            outcome = {"registered": False, "reason": decision.reason, "gate": asdict(decision)}
    write_json_atomic(run_folder / "registration.json", json.dumps(outcome, indent=2, default=str))
    return outcome


def _registration_text(run_folder: Path) -> str:
    path = run_folder / "registration.json"
    if not path.exists():
        return "register step did not complete"
    info = json.loads(path.read_text())
    if not info.get("registered"):
        return f"not registered: {info.get('reason')}"
    gate = info.get("gate", {}).get("reason")
    text = f"{info['model']} registered as {info['group']} version {info['version']} ({info['approval_status']})"
    return f"{text}; champion gate: {gate}" if gate else text


def write_run_report(run_folder: Path, run_id: str, models: list[str], dag_id: str = "") -> Path:
    """The leaderboard; also records the run in the history and redraws the trend page."""
    from llmeval import history

    cfg = run_config(run_folder)
    dag_id = dag_id or cfg.pipeline.name
    version = run_info(run_folder)["catalog_version"]
    results = collect_results(run_folder, models)
    history.record(dag_id, version, run_id, results)
    trend = history.write_trend(dag_id)
    selection_file = run_folder / "selection.json"
    if selection_file.exists():
        selection = Selection.from_dict(json.loads(selection_file.read_text()))
    else:
        selection = select(cfg, results)
    data = ReportInput(
        title=cfg.pipeline.name,
        run_id=run_id,
        dataset=cfg.dataset.dataset_name,
        results=results,
        selection=selection,
        registration=_registration_text(run_folder),
        catalog_version=version,
        trend_link=os.path.relpath(trend, run_folder),
    )
    html, md = write_report(run_folder, data)
    log.info("leaderboard: %s\n%s", html, md.read_text())
    return html
