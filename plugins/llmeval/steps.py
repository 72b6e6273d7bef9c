"""The target-agnostic steps of a run, as plain functions over the run's store folder.

The factory wraps them in Airflow tasks and hands them what other tasks returned (the
frozen config, the models' results, the selection); tests call them directly. What they
write to the run folder is for people and later runs (the names are in `llmeval.store`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.dataset import read_dataset
from llmeval.model_card import CardFacts
from llmeval.model_card import content as card_content
from llmeval.registry import APPROVED, PENDING, REJECTED, Registry
from llmeval.report import ReportInput, render_html, render_markdown
from llmeval.results import ModelResult, pairwise_result, read_model_result, read_usage
from llmeval.runtime import resolve_data_path
from llmeval.selection import Selection, champion_gate, select

log = logging.getLogger("llmeval.steps")


def _dataset_file(location: str, scratch: Path, name: str = "dataset-source.jsonl") -> Path:
    """A local file with the dataset: include/data, a local path, or a copy of a remote object."""
    if "://" in location and not location.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        return store.download(ObjectStoragePath(location), scratch / name)
    return resolve_data_path(location)


def outputs_file(cfg: EvalConfig, model: str, catalog_version: str, scratch: Path) -> Path:
    """A local file with a model's provided outputs (its outputs_location, this catalog version's)."""
    location = (cfg.model(model).outputs_location or "").replace("{catalog_version}", catalog_version)
    return _dataset_file(location, scratch, f"outputs-{store.safe_segment(model)}.jsonl")


def prepare_run(cfg: EvalConfig, run_folder: Any, num_records: int | None, catalog_version: str) -> dict[str, Any]:
    """Freeze the config for the run and write the prepared dataset of this catalog version."""
    try:
        store.write_text(run_folder / store.CONFIG, cfg.model_dump_json(indent=2))
    except Exception as exc:
        raise PermissionError(
            f"cannot write to the run store at {store.describe(run_folder)}: {type(exc).__name__}: {exc}. "
            "Check the URL (LLM_EVAL_ARTIFACTS_URL or the config's artifacts_url), that the bucket exists, "
            "and that the connection's role may s3:PutObject, s3:GetObject and s3:ListBucket there"
        ) from exc
    ds = cfg.dataset
    limit = num_records if num_records is not None else cfg.num_records
    location = ds.input_data_location.replace("{catalog_version}", catalog_version)
    columns = {
        "sent_more_input": ds.sent_more_input_key,
        "sent_less_input": ds.sent_less_input_key,
        "context": ds.context_key,
    }
    with tempfile.TemporaryDirectory(prefix="llmeval-") as scratch:
        prepared = read_dataset(
            _dataset_file(location, Path(scratch)),
            ds.model_input_key,
            ds.target_output_key,
            ds.category_key,
            limit,
            text_columns={name: column for name, column in columns.items() if column},
        )
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in prepared.records)
    store.write_text(run_folder / store.DATASET, lines)
    store.write_text(run_folder / store.BAD_ROWS, json.dumps(prepared.bad_rows, indent=2))
    log.info(
        "dataset %s: %d records from %s (%d bad rows skipped%s); run folder %s",
        ds.dataset_name,
        len(prepared.records),
        location,
        len(prepared.bad_rows),
        f", limited to {limit}" if limit else "",
        store.describe(run_folder),
    )
    return {
        "records": len(prepared.records),
        "bad_rows": len(prepared.bad_rows),
        "source": location,
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


def model_result(run_folder: Any, model: str, summary: dict[str, Any] | None) -> ModelResult:
    """A model's result: the summary its evaluation handed on, else what the store says
    (the failure a step recorded, or that nothing was written); with what its resources cost
    (recorded in the store until its teardown) and its pairwise scores (pairwise.json)."""
    folder = store.model_folder(run_folder, model)
    if not summary:
        result = read_model_result(folder, model)
    else:
        result = ModelResult.from_dict(summary)
        result.usage = read_usage(folder) or result.usage
    pairwise = run_folder / store.PAIRWISE
    compared = pairwise_result(json.loads(pairwise.read_text()), model) if pairwise.exists() else None
    if compared and result.succeeded:
        result.algorithms.append(compared)
    return result


def select_best(cfg: EvalConfig, run_folder: Any, results: list[ModelResult]) -> Selection:
    selection = select(cfg, results)
    store.write_text(run_folder / store.SELECTION, json.dumps(selection.to_dict(), indent=2))
    for cand in selection.ranking:
        level = logging.WARNING if cand.status == "failed" else logging.INFO
        log.log(level, "%s: %s (composite %s) %s", cand.model, cand.status, cand.composite, cand.reason)
    return selection


def gate_decision(
    cfg: EvalConfig,
    registry: Registry,
    dag_id: str,
    catalog_version: str,
    best: ModelResult,
    results: list[ModelResult],
    run_folder: Any,
):
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
) -> dict[str, Any]:
    """Register the selected model, gated against the champion and, with `approval: review`,
    as the reviewer decided (`review.outcome`); the outcome is saved."""
    from llmeval.review import APPROVE, REJECT, review_text

    if not enabled:
        outcome: dict[str, Any] = {"registered": False, "reason": "registration disabled for this run"}
    elif selection.best is None:
        outcome = {"registered": False, "reason": "no model was eligible for selection"}
    else:
        best = next(r for r in results if r.model == selection.best)
        model = cfg.model(selection.best)
        decision = gate_decision(cfg, registry, dag_id or cfg.pipeline.name, catalog_version, best, results, run_folder)
        log.info("champion gate: %s", decision.reason)
        status = APPROVED if cfg.registry.approval == "auto" else PENDING
        decided = (review or {}).get("decision")
        if decided == APPROVE:
            status = APPROVED
        rejected = not decision.passed or decided == REJECT
        if rejected:
            status = REJECTED
        reviewed = review_text(review)
        if reviewed:
            log.info("review: %s", reviewed)
        metrics = {m: asdict(s) for m, s in best.scores_by_metric().items()}
        metadata = {
            "model_id": model.model_id,
            "model_version": model.model_version,
            "dataset": cfg.dataset.dataset_name,
            "pipeline": cfg.pipeline.name,
            "selection_composite": next(c.composite for c in selection.ranking if c.model == selection.best),
            "records_evaluated": best.generation.records_evaluated,
            "catalog_version": catalog_version,
            "gate": decision.reason[:250],
            **({"cost_usd": best.cost_usd} if best.cost_usd is not None else {}),
            **({"review": reviewed[:250]} if reviewed else {}),
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
        if not rejected or cfg.registry.on_gate_fail == "reject":
            facts = CardFacts(
                dag_id=dag_id or cfg.pipeline.name,
                run_id=run_id,
                catalog_version=catalog_version,
                approval_status=status,
                selection=next(c.reason for c in selection.ranking if c.model == selection.best) + ".",
                gate=decision.reason + ".",
                artifact=(training or {}).get("artifact") or model.model_id,
                review=reviewed,
            )
            version = registry.register(
                cfg.registry_group, selection.best, run_id, status, metrics, metadata, card_content(cfg, best, facts)
            )
            outcome = {"registered": True, **asdict(version), "gate": asdict(decision), "review": review}
            log.info("registered %s as %s v%d (%s)", selection.best, version.group, version.version, status)
        else:
            reason = decision.reason if not decision.passed else f"rejected in review: {reviewed}"
            outcome = {"registered": False, "reason": reason, "gate": asdict(decision), "review": review}
    store.write_text(run_folder / store.REGISTRATION, json.dumps(outcome, indent=2, default=str))
    return outcome


def registration_text(outcome: dict[str, Any] | None) -> str:
    if outcome is None:
        return "register step did not complete"
    if not outcome.get("registered"):
        return f"not registered: {outcome.get('reason')}"
    from llmeval.review import review_text

    gate = outcome.get("gate", {}).get("reason")
    text = (
        f"{outcome['model']} registered as {outcome['group']} version {outcome['version']} "
        f"({outcome['approval_status']})"
    )
    text = f"{text}; champion gate: {gate}" if gate else text
    reviewed = review_text(outcome.get("review"))
    return f"{text}; review: {reviewed}" if reviewed else text


def report_input(
    title: str,
    dataset: str,
    run_folder: Any,
    run_id: str,
    results: list[ModelResult],
    catalog_version: str,
    selection: Selection,
    registration: dict[str, Any] | None,
    trend_link: str,
    record_links: dict[str, str] | None = None,
    judges: list[str] | None = None,
) -> ReportInput:
    """What the leaderboard shows, with each succeeded model's scored records for the paired test
    and what the `judges` were billed for."""
    from llmeval.paired import read_records

    return ReportInput(
        title=title,
        run_id=run_id,
        dataset=dataset,
        results=results,
        selection=selection,
        registration=registration_text(registration),
        catalog_version=catalog_version,
        trend_link=trend_link,
        records={
            r.model: rows
            for r in results
            if r.succeeded and (rows := read_records(store.model_folder(run_folder, r.model)))
        },
        record_links=record_links or {},
        pairwise=json.loads(pairwise.read_text()) if (pairwise := run_folder / store.PAIRWISE).exists() else None,
        judge_usage={j: usage for j in judges or [] if (usage := read_usage(store.model_folder(run_folder, j)))},
    )


def write_run_report(
    cfg: EvalConfig,
    run_folder: Any,
    run_id: str,
    results: list[ModelResult],
    catalog_version: str,
    selection: Selection | None = None,
    registration: dict[str, Any] | None = None,
    dag_id: str = "",
) -> Any:
    """The leaderboard; also records the run in the history and redraws the trend page."""
    from llmeval import history

    dag_id = dag_id or cfg.pipeline.name
    history.record(dag_id, catalog_version, run_id, results, cfg.artifacts_url)
    history.write_trend(dag_id, cfg.artifacts_url)
    data = report_input(
        cfg.pipeline.name,
        cfg.dataset.dataset_name,
        run_folder,
        run_id,
        results,
        catalog_version,
        selection or select(cfg, results),
        registration,
        trend_link=f"../../../history/{store.safe_segment(dag_id)}/{store.TREND}",
        judges=[j.name for j in cfg.judged_by],
    )
    html, md = render_html(data), render_markdown(data)
    store.write_text(run_folder / store.LEADERBOARD, html)
    store.write_text(run_folder / store.SUMMARY, md)
    log.info("leaderboard: %s\n%s", store.describe(run_folder / store.LEADERBOARD), md)
    return run_folder / store.LEADERBOARD
