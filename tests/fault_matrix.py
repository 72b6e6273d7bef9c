"""Rows of the fault matrix, printed by conftest at the end of a run that recorded any.

A test records its row in the process running it; conftest hands it on with the test's
report (so rows reach the terminal from parallel test workers too) into ROWS."""

from __future__ import annotations

PENDING: list[dict[str, str]] = []
ROWS: list[dict[str, str]] = []


def record(fault: str, target: str, **outcome: str) -> None:
    PENDING.append({"fault": fault, "target": target, **outcome})


def table() -> str:
    columns = ["fault", "target", "failed model / step", "resources left", "other models", "report", "retry"]
    rows = [[row.get(c, "-") for c in columns] for row in ROWS]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(str(x).ljust(w) for x, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
