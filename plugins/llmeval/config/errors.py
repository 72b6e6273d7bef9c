"""Config errors: one Problem per mistake, each naming the file, the line, the field path
and what was expected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class FieldProblem(ValueError):
    """A model-level check that knows which field (relative to the model) is wrong."""

    def __init__(self, loc: tuple[Any, ...], message: str):
        super().__init__(message)
        self.loc = loc


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '<top>'}: {self.message}"


class ConfigError(ValueError):
    """A config file that cannot be used; `problems` holds one entry per mistake."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
