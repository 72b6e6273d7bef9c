"""Run history per config: the scores of every model on every prompt-catalog version.

One JSON object per catalog version under `history/<dag id>/` in the run store, so re-running a
version (a backfill, a retry) replaces that version's entry instead of duplicating it.
The trend page draws each metric over catalog versions, one line per model.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from typing import Any

from llmeval import store
from llmeval.results import ModelResult, Score


def record(
    dag_id: str,
    catalog_version: str,
    run_id: str,
    results: list[ModelResult],
    artifacts_url: str | None = None,
    published: float | None = None,
) -> Any:
    """Write (or replace) the catalog version's entry; `published`: when the version's file was
    written (a versioned catalog), the order the trend draws versions in."""
    entry = {
        "catalog_version": catalog_version,
        "published": published,
        "run_id": run_id,
        "recorded_at": time.time(),
        "models": {
            r.model: {"status": r.status, "metrics": {m: asdict(s) for m, s in r.scores_by_metric().items()}}
            for r in results
        },
    }
    path = store.history_folder(dag_id, artifacts_url) / f"{store.safe_segment(catalog_version)}.json"
    store.write_text(path, json.dumps(entry, indent=2, sort_keys=True))
    return path


def entries(dag_id: str, artifacts_url: str | None = None) -> list[dict[str, Any]]:
    folder = store.history_folder(dag_id, artifacts_url)
    found = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []
    return sorted(found, key=publication_order)


def publication_order(entry: dict[str, Any]) -> tuple[float, list[tuple[int, int | str]]]:
    """Versions in the order they were published: by when their file was written, else (dated
    versions, entries written before that was recorded) by the version itself, its numbers
    compared as numbers (v2 before v10)."""
    parts = re.findall(r"\d+|\D+", entry["catalog_version"])
    natural = [(0, int(p)) if p.isdigit() else (1, p) for p in parts]
    published = entry.get("published")
    return (published if published is not None else float("-inf"), natural)


def _entry(dag_id: str, catalog_version: str, artifacts_url: str | None) -> dict[str, Any] | None:
    path = store.history_folder(dag_id, artifacts_url) / f"{store.safe_segment(catalog_version)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_of(dag_id: str, catalog_version: str, artifacts_url: str | None = None) -> str | None:
    """The run that last recorded this catalog version's scores."""
    entry = _entry(dag_id, catalog_version, artifacts_url)
    return entry.get("run_id") if entry else None


def scores_on(
    dag_id: str, catalog_version: str, model: str, artifacts_url: str | None = None
) -> dict[str, Score] | None:
    """A model's recorded scores on one catalog version, if it was evaluated on it."""
    entry = _entry(dag_id, catalog_version, artifacts_url)
    recorded = entry["models"].get(model) if entry else None
    if not recorded or recorded["status"] != "succeeded":
        return None
    return {m: Score(**s) for m, s in recorded["metrics"].items()}


COLORS = ["#4f7cac", "#c0504d", "#9bbb59", "#8064a2", "#f79646", "#4bacc6", "#7f7f7f"]


def _line_chart(versions: list[str], series: dict[str, list[float | None]]) -> dict[str, Any] | None:
    """Geometry of a line per model over catalog versions (drawn by charts.html)."""
    width, height, left, bottom = 640, 220, 50, 40
    values = [v for vals in series.values() for v in vals if v is not None]
    if not values:
        return None
    low, high = min(values + [0.0]), max(values + [1.0])
    span = (high - low) or 1.0

    def x(i: int) -> float:
        return left + (width - left - 20) * (i / max(1, len(versions) - 1))

    def y(v: float) -> float:
        return 10 + (height - bottom - 10) * (1 - (v - low) / span)

    return {
        "width": width,
        "height": height + 20 * len(series),
        "left": left,
        "right": width - 20,
        "axis_y": y(low),
        "top_y": y(high),
        "low": low,
        "high": high,
        "labels_y": height - 18,
        "versions": [{"x": x(i) - 20, "text": v} for i, v in enumerate(versions)],
        "series": [
            {
                "model": model,
                "color": COLORS[n % len(COLORS)],
                "points": [(x(i), y(v)) for i, v in enumerate(vals) if v is not None],
                "legend_y": height + 14 + 20 * n,
            }
            for n, (model, vals) in enumerate(series.items())
        ],
    }


def write_trend(dag_id: str, artifacts_url: str | None = None) -> Any:
    """The trend page: every metric over catalog versions, one line per model."""
    from llmeval.html import render

    history = entries(dag_id, artifacts_url)
    versions = [e["catalog_version"] for e in history]
    metrics = sorted({m for e in history for r in e["models"].values() for m in r["metrics"]})
    models = sorted({name for e in history for name in e["models"]})
    charts = [
        (metric, _line_chart(versions, {m: [_value(e, m, metric) for e in history] for m in models}))
        for metric in metrics
    ]
    path = store.history_folder(dag_id, artifacts_url) / store.TREND
    store.write_text(
        path, render("trend.html", dag_id=dag_id, versions=versions, models=models, charts_by_metric=charts)
    )
    return path


def _value(entry: dict[str, Any], model: str, metric: str) -> float | None:
    found = entry["models"].get(model, {}).get("metrics", {}).get(metric)
    return found["value"] if found else None
