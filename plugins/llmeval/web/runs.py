"""What the Airflow plugin shows, read from Airflow's metadata database and the run store.

A run's folder is where its `preprocess` task put it (its XCom), so a config that names its
own `artifacts_url` is found too. Nothing here trusts a path segment from a request: DAGs
and runs are looked up in the database, models in the run's own selection or folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.contracts import TaskId
from llmeval.registration import Registration
from llmeval.report import ReportInput
from llmeval.results import ModelResult
from llmeval.selection import Selection
from llmeval.taskrun import open_folder

log = logging.getLogger("llmeval.web")
TAG = "llm-eval"  # the factory tags every evaluation DAG with it


class NotFound(LookupError):
    """The DAG, run or model asked for is not there (the message says which)."""


@dataclass(frozen=True)
class RunRef:
    """One run of an evaluation DAG and where its artifacts are."""

    dag_id: str
    run_id: str
    state: str
    folder: Any  # ObjectStoragePath
    catalog_version: str
    partition_key: str | None  # Airflow's key of the run's partition (a versioned catalog's version)


@dataclass(frozen=True)
class DagSummary:
    dag_id: str
    latest: RunRef | None
    selected: str | None
    champion: str | None
    registration: str


def evaluation_dag_ids() -> set[str]:
    from airflow.models.dag import DagModel, DagTag
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(DagModel.dag_id).join(DagTag, DagTag.dag_id == DagModel.dag_id).where(DagTag.name == TAG)
        )
        return set(rows)


def _preprocess_xcom(dag_id: str, run_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=run_id, key="return_value", task_ids=TaskId.PREPROCESS, dag_ids=dag_id, map_indexes=-1, limit=1
        )
        row = session.scalars(query).first()
        value = XComModel.deserialize_value(row) if row is not None else None
    return value if isinstance(value, dict) else {}


def _ref(dag_id: str, run_id: str, state: str, partition_key: str | None) -> RunRef:
    prepared = _preprocess_xcom(dag_id, run_id)
    folder = open_folder(prepared["run_folder"]) if prepared.get("run_folder") else store.run_folder(dag_id, run_id)
    return RunRef(dag_id, run_id, state, folder, str(prepared.get("catalog_version", "")), partition_key)


def find_run(dag_id: str, run_id: str) -> RunRef:
    """The run of an evaluation DAG; NotFound when the DAG is not one or has no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if dag_id not in evaluation_dag_ids():
        raise NotFound(f"{dag_id!r} is not an LLM evaluation DAG")
    with create_session() as session:
        found = session.execute(
            select(DagRun.state, DagRun.partition_key).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).first()
    if found is None:
        raise NotFound(f"DAG {dag_id!r} has no run {run_id!r}")
    return _ref(dag_id, run_id, str(found.state), found.partition_key)


def recent_runs(dag_id: str, limit: int = 20, version: str = "") -> list[RunRef]:
    """The DAG's latest runs; with `version`, those of that catalog version (its partition key)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(DagRun.run_id, DagRun.state, DagRun.partition_key).where(DagRun.dag_id == dag_id)
    if version:
        query = query.where(DagRun.partition_key == version)
    with create_session() as session:
        rows = session.execute(query.order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(limit)).all()
    return [_ref(dag_id, run_id, str(state), key) for run_id, state, key in rows]


def read_json(path: Any) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def selection_of(run: RunRef) -> Selection | None:
    data = read_json(run.folder / store.SELECTION)
    return Selection.from_dict(data) if data else None


def champion_after(registration: dict[str, Any] | None) -> str | None:
    """The champion once this run's registration was decided: the model it registered as
    Approved, else the champion its gate compared against."""
    if not registration:
        return None
    if registration.get("registered") and registration.get("approval_status") == "Approved":
        return registration.get("model")
    return (registration.get("gate") or {}).get("champion")


def summarize(dag_id: str, version: str = "") -> DagSummary:
    """The DAG's latest run (of catalog version `version` when given), its selection and champion."""
    runs = recent_runs(dag_id, limit=1, version=version)
    if not runs:
        return DagSummary(dag_id, None, None, None, "no run yet")
    latest = runs[0]
    try:
        selection = selection_of(latest)
        registration = read_json(latest.folder / store.REGISTRATION)
    except Exception as exc:  # one DAG's unreachable store must not hide the others
        log.warning("LLM evaluations page: %s: cannot read %s: %s", dag_id, store.describe(latest.folder), exc)
        return DagSummary(dag_id, latest, None, None, f"results unavailable: {type(exc).__name__}: {exc}"[:300])
    return DagSummary(
        dag_id,
        latest,
        selection.best if selection else None,
        champion_after(registration),
        Registration.from_dict(registration).text() if registration else "not decided yet",
    )


def models_of(run: RunRef, selection: Selection | None = None) -> list[str]:
    """The run's models: its selection's ranking, else the model folders written so far."""
    selection = selection or selection_of(run)
    if selection:
        return [c.model for c in selection.ranking]
    folder = run.folder / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def config_of(run: RunRef) -> EvalConfig | None:
    path = run.folder / store.CONFIG
    return EvalConfig.model_validate_json(path.read_text(encoding="utf-8")) if path.exists() else None


def leaderboard(run: RunRef, link_of: Callable[[str], str], trend_link: str) -> ReportInput:
    """The run's leaderboard as its report task drew it, from what the store holds now
    (so a run still going shows the models finished so far); `link_of(model)` is the link
    to a model's records."""
    from llmeval.selection import select
    from llmeval.steps import report_input

    cfg = config_of(run)
    if cfg is None:
        raise NotFound(f"run {run.run_id!r} has not written its config yet (preprocess has not finished)")
    selection = selection_of(run)
    models = models_of(run, selection)
    results = [read_model(run, m) for m in models]
    registration = read_json(run.folder / store.REGISTRATION)
    data = report_input(
        cfg.pipeline.name,
        cfg.dataset.dataset_name,
        run.folder,
        run.run_id,
        results,
        run.catalog_version,
        selection or select(cfg, results),
        Registration.from_dict(registration) if registration else None,
        trend_link,
        {m: link_of(m) for m in models},
        [j.name for j in cfg.judged_by],
    )
    if registration is None and run.state in ("queued", "running"):
        data.registration = "not decided yet (the run is still going)"
    return data


def people_on(run: RunRef, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """record id -> people's ratings of that row's answer (rubric, rating, labeller), from the
    labels the run's agreement matched (human_labels.json)."""
    from llmeval.agreement import answer_hash

    labelled = read_json(run.folder / store.HUMAN_LABELS) or {}
    by_answer: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rubric, labels in labelled.items():
        for label in labels:
            entry = {"rubric": rubric, "rating": label["rating"], "labeller": label["labeller"]}
            by_answer.setdefault((label["record_id"], label["answer_sha256"]), []).append(entry)
    found = {}
    for row in rows:
        if row.get("model_output") is not None:
            key = (str(row.get("record_id")), answer_hash(str(row["model_output"])))
            if key in by_answer:
                found[key[0]] = by_answer[key]
    return found


def read_model(run: RunRef, model: str) -> ModelResult:
    from llmeval.results import read_model_result

    return read_model_result(store.model_folder(run.folder, model), model)


def trend_page(dag_id: str) -> str | None:
    """The DAG's trend page as the last report drew it, from the latest run's store."""
    runs = recent_runs(dag_id, limit=1)
    cfg = config_of(runs[0]) if runs else None
    path = store.history_folder(dag_id, cfg.artifacts_url if cfg else None) / store.TREND
    return path.read_text(encoding="utf-8") if path.exists() else None
