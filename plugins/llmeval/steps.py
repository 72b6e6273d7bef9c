"""The target-agnostic steps of a run, as plain functions over the run's store folder.

The factory wraps them in Airflow tasks and hands them what other tasks returned (the
frozen config, the models' results, the selection); tests call them directly. What they
write to the run folder is for people and later runs (the names are in `llmeval.store`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.agreement import (
    PREFERENCE,
    PREFERENCE_SCALE,
    Agreement,
    Label,
    LabelError,
    answer_hash,
    measure,
    read_labels,
    read_preferences,
)
from llmeval.config import AlgorithmSection, EvalConfig
from llmeval.dataset import read_dataset, read_jsonl
from llmeval.inputs import catalog_file, dataset_file
from llmeval.registration import Registration
from llmeval.report import ReportInput, render_html, render_markdown
from llmeval.results import ModelResult, read_usage
from llmeval.rubrics import Rubric
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
    published = None  # a versioned catalog: when this version's file was written
    with tempfile.TemporaryDirectory(prefix="llmeval-") as scratch:
        if cfg.versioned:
            source, published = catalog_file(cfg, catalog_version, Path(scratch))
        else:
            source = dataset_file(cfg, location, Path(scratch))
        prepared = read_dataset(
            source,
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
        "published": published,
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


def judge_agreement(cfg: EvalConfig, run_folder: Any, models: list[str]) -> list[Agreement]:
    """Each labelled rubric's judge against people on this run's answers (agreement.json); for a
    panel, each of its judges (reported) and the panel (whose agreement decides)."""
    from llmeval.paired import read_records

    rated: list[dict[str, Any]] = []
    for model in models:
        rated += read_records(store.model_folder(run_folder, model)) or []
    ids = {str(r["record_id"]) for r in read_jsonl(run_folder / store.DATASET)}
    answered = {(str(r["record_id"]), answer_hash(str(r["model_output"]))) for r in rated if r.get("model_output")}
    people: dict[str, list[dict[str, Any]]] = {}  # rubric -> the labels of this run's answers
    found = []
    for section in [s for s in cfg.algorithms if s.compares_models and s.options.get("labels")]:
        found.append(_preference_agreement(cfg, section, run_folder, ids))
    for section in [s for s in cfg.algorithms if s.asks_judge and not s.compares_models]:
        names = section.judge_names
        for rubric in section.rubrics:
            reviewed = store.labels_file(cfg.pipeline.name, rubric.name, cfg.artifacts_url)
            if not rubric.labels and not reviewed.exists():
                continue
            labels, problem = _labels(cfg, rubric, ids) if rubric.labels else ([], "")
            if reviewed.exists():  # the reviewers' ratings, given in earlier runs' review forms
                try:
                    labels += read_labels(
                        store.describe(reviewed), reviewed.read_text(encoding="utf-8"), rubric.scale, None
                    )
                except LabelError as exc:
                    problem = problem or f"labels unusable: {exc}"

            people[rubric.name] = [asdict(x) for x in labels if (x.record_id, x.answer_sha256) in answered]
            raters: list[tuple[str, Callable[[dict[str, Any]], Any], float | None]] = []
            if len(names) > 1:
                raters += [(name, _rating_by(rubric.name, name), None) for name in names]
            whole = f"panel ({', '.join(names)})" if len(names) > 1 else names[0]
            raters.append((whole, _rating_by(rubric.name, None), rubric.min_agreement))
            for who, rating_of, floor in raters:
                found.append(_agreement_of(who, rubric, rating_of, rated, labels, problem, floor))
    if found:
        store.write_text(run_folder / store.AGREEMENT, json.dumps([a.to_dict() for a in found], indent=2))
    if any(people.values()):  # shown beside the judge's rating in the records view
        store.write_text(run_folder / store.HUMAN_LABELS, json.dumps(people, indent=2))
    for agreement in found:
        level = logging.INFO if agreement.trusted else logging.WARNING
        log.log(
            level, "judge %s on %s: kappa %s %s", agreement.judge, agreement.rubric, agreement.kappa, agreement.reason
        )
    return found


def _rating_by(rubric: str, judge: str | None) -> Callable[[dict[str, Any]], Any]:
    """A record's rating on `rubric` from its judgements: one judge's of a panel, else the rating."""

    def rating(judgements: dict[str, Any]) -> Any:
        verdict = judgements.get(rubric) or {}
        return (
            verdict.get("rating") if judge is None else ((verdict.get("by_judge") or {}).get(judge) or {}).get("rating")
        )

    return rating


def _read_labels_file(cfg: EvalConfig, location: str) -> str:
    with tempfile.TemporaryDirectory(prefix="llmeval-labels-") as scratch:
        return dataset_file(cfg, location, Path(scratch), "labels.jsonl").read_text(encoding="utf-8")


def _labels(cfg: EvalConfig, rubric: Rubric, ids: set[str]) -> tuple[list[Label], str]:
    """The rubric's labels, or why they cannot be used."""
    location = rubric.labels or ""
    try:
        return read_labels(location, _read_labels_file(cfg, location), rubric.scale, ids), ""
    except (LabelError, OSError) as exc:
        return [], f"labels unusable: {exc}"


def _preference_agreement(cfg: EvalConfig, section: AlgorithmSection, run_folder: Any, ids: set[str]) -> Agreement:
    """Pairwise's judge against people's preferences between the same two answers to a record
    (either order): its outcome and their choice as points on -1 (A better), 0 (tie), 1 (B better)."""
    options = section.options
    location, floor, least = options["labels"], options.get("min_agreement"), options.get("min_labels", 20)
    document = run_folder / store.PAIRWISE
    judged: dict[tuple[str, str, str], int] = {}
    for verdict in json.loads(document.read_text()).get("verdicts", []) if document.exists() else []:
        if verdict["outcome"] is None or verdict["a_sha256"] == verdict["b_sha256"]:
            continue  # no verdict, or nothing to prefer
        value = {"a": -1, "tie": 0, "b": 1}[verdict["outcome"]]
        rid = str(verdict["record_id"])
        judged[(rid, verdict["a_sha256"], verdict["b_sha256"])] = value
        judged[(rid, verdict["b_sha256"], verdict["a_sha256"])] = -value
    try:
        preferences = read_preferences(location, _read_labels_file(cfg, location), ids)
    except (LabelError, OSError) as exc:
        unusable = measure(options["judge"], PREFERENCE, PREFERENCE_SCALE, [], [], least, None, "Pairwise")
        unusable.trusted, unusable.reason = floor is None, f"labels unusable: {exc}"
        return unusable
    pairs = [(judged[key], p.winner) for p in preferences if (key := (p.record_id, p.a_sha256, p.b_sha256)) in judged]
    return measure(options["judge"], PREFERENCE, PREFERENCE_SCALE, pairs, [], least, floor, "Pairwise")


def _agreement_of(
    judge: str,
    rubric: Rubric,
    rating_of: Callable[[dict[str, Any]], Any],
    rated: list[dict[str, Any]],
    labels: list[Label],
    problem: str,
    floor: float | None,
) -> Agreement:
    """One rater's agreement with the labels (a panel's rating rounded to the scale's nearest point)."""
    ratings: dict[tuple[str, str], int] = {}
    lengths: list[tuple[float, int]] = []
    for row in rated:
        rating = rating_of(row.get("judgements") or {})
        if rating is not None and row.get("model_output") is not None:
            on_scale = min(rubric.scale, key=lambda point: (abs(point - rating), -point))
            ratings[(str(row["record_id"]), answer_hash(str(row["model_output"])))] = on_scale
            lengths.append((rating, len(str(row["model_output"]))))
    if problem:
        unusable = measure(judge, rubric.name, rubric.scale, [], lengths, rubric.min_labels, None)
        unusable.trusted, unusable.reason = floor is None, problem
        return unusable
    pairs = [
        (ratings[key], label.rating) for label in labels if (key := (label.record_id, label.answer_sha256)) in ratings
    ]
    return measure(judge, rubric.name, rubric.scale, pairs, lengths, rubric.min_labels, floor)


def select_best(cfg: EvalConfig, run_folder: Any, results: list[ModelResult]) -> Selection:
    """Rank the models; a rubric whose judge people do not trust (agreement below its
    min_agreement) is left out of the ranking and the gate for this run."""
    agreements = judge_agreement(cfg, run_folder, [r.model for r in results if r.succeeded])
    excluded = {a.metrics: a.reason for a in agreements if not a.trusted}
    selection = select(cfg, results, excluded)
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
        agreement=json.loads(found.read_text()) if (found := run_folder / store.AGREEMENT).exists() else [],
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
    published: float | None = None,
) -> Any:
    """The leaderboard; also records the run in the history and redraws the trend page."""
    from llmeval import history

    dag_id = dag_id or cfg.pipeline.name
    if results:  # a run that evaluated nothing (stopped at preflight) leaves its version's history alone
        history.record(dag_id, catalog_version, run_id, results, cfg.artifacts_url, published)
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
