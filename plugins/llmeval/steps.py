"""The target-agnostic steps of a run, as plain functions over the run's store folder.

The factory wraps them in Airflow tasks and hands them what other tasks returned (the
frozen config, the models' results, the selection); tests call them directly. What they
write to the run folder is for people and later runs (the names are in `llmeval.store`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.dataset import read_dataset
from llmeval.inputs import dataset_file
from llmeval.registration import Registration
from llmeval.report import ReportInput, render_html, render_markdown
from llmeval.results import ModelResult, read_usage
from llmeval.selection import Selection, select

log = logging.getLogger("llmeval.steps")


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
            dataset_file(cfg, location, Path(scratch)),
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
    for section in cfg.algorithms:
        champion = section.options.get("champion") if section.compares_models else None
        if champion and champion not in requested:
            raise ValueError(
                f"Pairwise compares every model with its champion {champion!r}: add it to the models Param "
                f"({', '.join(requested)}), or leave the Param empty for every model"
            )
    return [n for n in names if n in requested]


def select_best(cfg: EvalConfig, run_folder: Any, results: list[ModelResult]) -> Selection:
    selection = select(cfg, results)
    store.write_text(run_folder / store.SELECTION, json.dumps(selection.to_dict(), indent=2))
    for cand in selection.ranking:
        level = logging.WARNING if cand.status == "failed" else logging.INFO
        log.log(level, "%s: %s (composite %s) %s", cand.model, cand.status, cand.composite, cand.reason)
    return selection


def report_input(
    title: str,
    dataset: str,
    run_folder: Any,
    run_id: str,
    results: list[ModelResult],
    catalog_version: str,
    selection: Selection,
    registration: Registration | None,
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
        registration=registration.text() if registration else "register step did not complete",
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
    registration: Registration | None = None,
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
