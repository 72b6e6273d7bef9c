"""Prompt datasets: read JSON Lines, check every row, keep the good ones.

A bad row (invalid JSON, not an object, missing or non-text input/target) is counted
and listed with its line number rather than failing the run; the run fails only when
bad rows exceed `max_bad_ratio`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_FIELD_CHARS = 100_000


@dataclass
class PreparedDataset:
    records: list[dict[str, Any]]
    bad_rows: list[dict[str, Any]] = field(default_factory=list)
    total_rows: int = 0


class DatasetError(ValueError):
    pass


def _check(row: Any, keys: list[str]) -> str | None:
    if not isinstance(row, dict):
        return "row is not a JSON object"
    for key in keys:
        value = row.get(key)
        if value is None:
            return f"missing key {key!r}"
        if not isinstance(value, (str, int, float)):
            return f"{key!r} must be text, got {type(value).__name__}"
        if len(str(value)) > MAX_FIELD_CHARS:
            return f"{key!r} is {len(str(value))} characters (limit {MAX_FIELD_CHARS})"
    return None


def read_dataset(
    path: Path,
    input_key: str,
    target_key: str,
    category_key: str | None = None,
    limit: int | None = None,
    max_bad_ratio: float = 0.1,
    text_columns: dict[str, str] | None = None,
) -> PreparedDataset:
    """Records `{record_id, model_input, target_output[, category]}` from a JSONL file.
    `text_columns` maps further required fields to their columns (e.g. sentence pairs)."""
    text_columns = text_columns or {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read dataset ({exc.strerror})") from None
    prepared = PreparedDataset(records=[])
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        if limit is not None and len(prepared.records) >= limit:
            break
        prepared.total_rows += 1
        problem: str | None
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problem = f"not UTF-8 ({exc.reason} at byte {exc.start})"
        except json.JSONDecodeError as exc:
            problem = f"invalid JSON ({exc.msg} at column {exc.colno})"
        else:
            problem = _check(row, [input_key, target_key, *text_columns.values()])
        if problem:
            prepared.bad_rows.append({"line": number, "problem": problem})
            continue
        record = {
            "record_id": str(row.get("id", number)),
            "model_input": str(row[input_key]),
            "target_output": str(row[target_key]),
        }
        record.update({name: str(row[column]) for name, column in text_columns.items()})
        if category_key and row.get(category_key) is not None:
            record["category"] = str(row[category_key])
        prepared.records.append(record)
    if prepared.total_rows == 0:
        raise DatasetError(f"{path}: the dataset has no rows")
    ratio = len(prepared.bad_rows) / prepared.total_rows
    if ratio > max_bad_ratio or not prepared.records:
        first = "; ".join(f"line {b['line']}: {b['problem']}" for b in prepared.bad_rows[:5])
        raise DatasetError(
            f"{path}: {len(prepared.bad_rows)} of {prepared.total_rows} rows are bad "
            f"(more than {max_bad_ratio:.0%}); first: {first}"
        )
    ids = [r["record_id"] for r in prepared.records]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: record ids (the 'id' column) are not unique")
    return prepared


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
