"""Outputs of a model served elsewhere (a model's `outputs_location`): one JSON object per
line with `record_id` and `model_output`. They take the place of generation: every dataset
record gets its output, and a record without one is a failed record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_outputs(path: Path, shown_as: str) -> dict[str, str]:
    """record_id -> model_output; a malformed line is an error naming `shown_as` and the line."""
    found: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{shown_as}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or row.get("record_id") is None or not isinstance(row.get("model_output"), str):
            raise ValueError(f'{where}: expected an object with "record_id" and a string "model_output"')
        key = str(row["record_id"])
        if key in found:
            raise ValueError(f"{where}: record_id {key!r} appears twice")
        found[key] = row["model_output"]
    return found


def provided_rows(records: list[dict[str, Any]], outputs: dict[str, str], shown_as: str) -> list[dict[str, Any]]:
    """The generate stage's rows, from the provided outputs instead of the model."""
    rows = []
    for record in records:
        output = outputs.get(str(record["record_id"]))
        rows.append(
            {
                **record,
                "model_output": output,
                "error": None if output is not None else f"no output for this record in {shown_as}",
                "cached": False,
                "prompt": record["model_input"],
                "latency_ms": None,
                "input_tokens": 0,
                "output_tokens": 0,
                "tokens_exact": False,
            }
        )
    return rows
