"""Pages from the Jinja2 templates in `templates/`. HTML templates are autoescaped: whatever
a model, a dataset or a config wrote is shown as text, never as markup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["fmt"] = fmt


def render(template: str, **context: Any) -> str:
    return _ENV.get_template(template).render(**context)
