"""The records view's filters over a model's scored records (`records.jsonl` rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmeval.paired import score_of


def metrics_in(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({f"{a}/{n}" for row in rows for a, values in (row.get("scores") or {}).items() for n in values})


def tasks_in(rows: list[dict[str, Any]]) -> list[str]:
    """The Inspect tasks whose samples are among the records."""
    return sorted({str(row["task"]) for row in rows if row.get("task")})


def categories_in(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({str(row["category"]) for row in rows if row.get("category") is not None})


@dataclass(frozen=True)
class RecordFilter:
    """Keep records of a category (or an Inspect task's samples), with a score on `metric` within
    [min_score, max_score], whose prompt, output or reference holds `query` (case-insensitive).
    Empty means any."""

    category: str = ""
    metric: str = ""
    min_score: float | None = None
    max_score: float | None = None
    query: str = ""
    task: str = ""

    def keeps(self, row: dict[str, Any]) -> bool:
        if self.category and str(row.get("category")) != self.category:
            return False
        if self.task and row.get("task") != self.task:
            return False
        if self.metric and (self.min_score is not None or self.max_score is not None):
            value = score_of(row, self.metric)
            if value is None:
                return False
            if self.min_score is not None and value < self.min_score:
                return False
            if self.max_score is not None and value > self.max_score:
                return False
        if self.query:
            needle = self.query.casefold()
            texts = (row.get("prompt") or row.get("model_input"), row.get("model_output"), row.get("target_output"))
            if not any(needle in str(t).casefold() for t in texts if t is not None):
                return False
        return True

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [row for row in rows if self.keeps(row)]
