"""The FastAPI app the Airflow plugin (`plugins/llmeval_plugin.py`) mounts at `/llm-evaluations`:
the evaluations page, each run's leaderboard, a model's records, the trend page, and the same
data as JSON.

Every route asks Airflow's own security dependencies: no valid Airflow token (the UI's
cookie or a Bearer header) is a 401; a user the auth manager does not let read the DAG
(its runs, for run pages) gets a 403 and the evaluations page leaves that DAG out. Pages
are Jinja2 templates with autoescape, served with a Content-Security-Policy that runs no
script at all, so nothing a model or a dataset wrote can act in the browser.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from llmeval import store
from llmeval.config.inspect_tasks import TASK_NAME
from llmeval.html import render
from llmeval.paired import read_records, score_of
from llmeval.report import render_html
from llmeval.web import runs
from llmeval.web.records import RecordFilter, categories_in, metrics_in, tasks_in

PAGE_SIZE = 100
INSPECT_TASK = re.compile(rf"^{TASK_NAME}$")
# no script, no plugin, no outside resource; inline styles and data: images only; framed by Airflow only
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; form-action 'self'"

app = FastAPI(title="LLM evaluations", description="Leaderboards and records of the LLM evaluation DAGs.")
ReadRun = Depends(requires_access_dag("GET", DagAccessEntity.RUN))
ReadDag = Depends(requires_access_dag("GET"))


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


def _seg(value: str) -> str:
    return quote(value, safe="")


@app.exception_handler(runs.NotFound)
def _not_found(request: Request, exc: runs.NotFound) -> PlainTextResponse:
    return PlainTextResponse(str(exc), status_code=404, headers={"X-Content-Type-Options": "nosniff"})


@app.get("/", response_class=HTMLResponse)
def evaluations(user: GetUserDep, version: str = "") -> HTMLResponse:
    """Every evaluation DAG the user may read, with its latest run (of one catalog version, the
    run's partition key, with `?version=`), selected model and champion."""
    from airflow.api_fastapi.app import get_auth_manager

    readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
    version = version.strip()
    summaries = [runs.summarize(d, version) for d in sorted(runs.evaluation_dag_ids() & readable)]
    return _page(render("evaluations.html", summaries=summaries, seg=_seg, version=version))


@app.get("/dags/{dag_id}/runs/{run_id}/leaderboard", response_class=HTMLResponse, dependencies=[ReadRun])
def leaderboard(dag_id: str, run_id: str) -> HTMLResponse:
    run = runs.find_run(dag_id, run_id)
    return _page(render_html(runs.leaderboard(run, lambda m: f"models/{_seg(m)}/records", trend_link="../../trend")))


@app.get("/dags/{dag_id}/trend", response_class=HTMLResponse, dependencies=[ReadDag])
def trend(dag_id: str) -> HTMLResponse:
    if dag_id not in runs.evaluation_dag_ids():
        raise runs.NotFound(f"{dag_id!r} is not an LLM evaluation DAG")
    page = runs.trend_page(dag_id)
    if page is None:
        raise runs.NotFound(f"DAG {dag_id!r} has no trend page yet (no run has reported)")
    return _page(page)


def _filter(
    category: str = "", metric: str = "", min_score: str = "", max_score: str = "", q: str = "", task: str = ""
) -> RecordFilter:
    def number(text: str, name: str) -> float | None:
        try:
            return float(text) if text.strip() else None
        except ValueError:
            raise runs.NotFound(f"{name} must be a number, got {text!r}") from None

    return RecordFilter(category, metric, number(min_score, "min_score"), number(max_score, "max_score"), q, task)


def _records(
    dag_id: str,
    run_id: str,
    model: str,
    flt: Annotated[RecordFilter, Depends(_filter)],
    compare: str = "",
    offset: int = 0,
) -> dict[str, Any]:
    """One page of a model's records that pass the filter, each with `compare`'s answer."""
    run = runs.find_run(dag_id, run_id)
    models = runs.models_of(run)
    for name in {model, compare} - {""}:
        if name not in models:
            raise runs.NotFound(f"run {run_id!r} has no model {name!r}; it has {models}")
    rows = read_records(store.model_folder(run.folder, model)) or []
    other = {}
    if compare:
        other = {str(r.get("record_id")): r for r in read_records(store.model_folder(run.folder, compare)) or []}
    kept = flt.apply(rows)
    page = kept[max(offset, 0) : max(offset, 0) + PAGE_SIZE]
    return {
        "people": runs.people_on(run, page),
        "run": run,
        "model": model,
        "models": models,
        "compare": compare,
        "total": len(rows),
        "matched": len(kept),
        "offset": max(offset, 0),
        "records": [(row, other.get(str(row.get("record_id")))) for row in page],
        "flt": flt,
        "categories": categories_in(rows),
        "tasks": tasks_in(rows),
        "metrics": metrics_in(rows),
    }


Found = Annotated[dict[str, Any], Depends(_records)]


@app.get("/dags/{dag_id}/runs/{run_id}/models/{model}/records", response_class=HTMLResponse, dependencies=[ReadRun])
def records(found: Found) -> HTMLResponse:
    return _page(render("records.html", page_size=PAGE_SIZE, score_of=score_of, seg=_seg, **found))


@app.get("/dags/{dag_id}/runs/{run_id}/models/{model}/inspect/{task}.eval", dependencies=[ReadRun])
def inspect_log(dag_id: str, run_id: str, model: str, task: str) -> Response:
    """Inspect's own log of a model's task, as a download (`inspect view` opens it); never shown
    in the browser."""
    run = runs.find_run(dag_id, run_id)
    if model not in runs.models_of(run) or not INSPECT_TASK.match(task):
        raise runs.NotFound(f"run {run_id!r} has no Inspect log {task!r} of model {model!r}")
    path = store.model_folder(run.folder, model) / store.INSPECT_LOGS / f"{task}.eval"
    if not path.exists():
        raise runs.NotFound(f"run {run_id!r} has no Inspect log {task!r} of model {model!r}")
    return Response(
        path.read_bytes(),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{model}-{task}.eval"',
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
        },
    )


@app.get("/api/dags/{dag_id}/runs/{run_id}", dependencies=[ReadRun])
def run_json(dag_id: str, run_id: str) -> JSONResponse:
    run = runs.find_run(dag_id, run_id)
    selection = runs.selection_of(run)
    return JSONResponse(
        {
            "dag_id": dag_id,
            "run_id": run_id,
            "state": run.state,
            "catalog_version": run.catalog_version,
            "partition_key": run.partition_key,
            "selection": selection.to_dict() if selection else None,
            "registration": runs.read_json(run.folder / store.REGISTRATION),
            "agreement": runs.read_json(run.folder / store.AGREEMENT) or [],  # the judges against people
            "models": [asdict(runs.read_model(run, m)) for m in runs.models_of(run)],
        }
    )


@app.get("/api/dags/{dag_id}/runs/{run_id}/models/{model}/records", dependencies=[ReadRun])
def records_json(found: Found) -> JSONResponse:
    return JSONResponse(
        {
            "model": found["model"],
            "total": found["total"],
            "matched": found["matched"],
            "offset": found["offset"],
            "records": [
                {**row, "compared": other, "human_labels": found["people"].get(str(row.get("record_id")), [])}
                for row, other in found["records"]
            ],
        }
    )
