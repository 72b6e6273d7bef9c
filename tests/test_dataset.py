"""Prompt datasets: bad rows counted and listed, the run fails only past the ratio."""

from __future__ import annotations

import json

import pytest

from llmeval.dataset import DatasetError, read_dataset


def _write(tmp_path, lines: list[bytes]):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _row(i: int, **kw) -> bytes:
    return json.dumps({"q": f"question {i}", "a": f"answer {i}", **kw}).encode()


def test_good_rows_become_records_with_ids_and_categories(tmp_path):
    path = _write(tmp_path, [_row(1, cat="x"), _row(2)])
    ds = read_dataset(path, "q", "a", category_key="cat")
    assert ds.records == [
        {"record_id": "1", "model_input": "question 1", "target_output": "answer 1", "category": "x"},
        {"record_id": "2", "model_input": "question 2", "target_output": "answer 2"},
    ]


def test_bad_rows_are_counted_with_line_and_reason(tmp_path):
    rows = [_row(i) for i in range(20)]
    rows[3] = b'{"q": "no answer"}'
    rows[7] = b"{not json"
    rows[9] = "caf\xe9".encode("latin-1")
    ds = read_dataset(_write(tmp_path, rows), "q", "a", max_bad_ratio=0.2)
    assert len(ds.records) == 17
    assert ds.bad_rows == [
        {"line": 4, "problem": "missing key 'a'"},
        {"line": 8, "problem": "invalid JSON (Expecting property name enclosed in double quotes at column 2)"},
        {"line": 10, "problem": "not UTF-8 (unexpected end of data at byte 3)"},
    ]


def test_too_many_bad_rows_fail_with_the_first_ones_listed(tmp_path):
    rows = [_row(1), b'{"q": 1}', b"[]"]
    with pytest.raises(
        DatasetError, match=r"2 of 3 rows are bad .*line 2: missing key 'a'; line 3: row is not a JSON object"
    ):
        read_dataset(_write(tmp_path, rows), "q", "a")


def test_empty_file_and_limit(tmp_path):
    with pytest.raises(DatasetError, match="no rows"):
        read_dataset(_write(tmp_path, [b""]), "q", "a")
    ds = read_dataset(_write(tmp_path, [_row(i) for i in range(10)]), "q", "a", limit=3)
    assert [r["record_id"] for r in ds.records] == ["1", "2", "3"]


def test_huge_field_is_a_bad_row(tmp_path):
    rows = [_row(i) for i in range(20)] + [json.dumps({"q": "x" * 200_000, "a": "y"}).encode()]
    ds = read_dataset(_write(tmp_path, rows), "q", "a")
    assert ds.bad_rows[0]["line"] == 21 and "characters" in ds.bad_rows[0]["problem"]


def test_sentence_pair_columns_are_required_when_configured(tmp_path):
    """PromptStereotyping's columns: a row without one is a bad row naming the key."""
    rows = [_row(i, more=f"m{i}", less=f"l{i}") for i in range(9)] + [_row(9, more="m9")]
    ds = read_dataset(
        _write(tmp_path, rows), "q", "a", text_columns={"sent_more_input": "more", "sent_less_input": "less"}
    )
    assert ds.records[0]["sent_more_input"] == "m0" and ds.records[0]["sent_less_input"] == "l0"
    assert len(ds.records) == 9 and ds.bad_rows == [{"line": 10, "problem": "missing key 'less'"}]
