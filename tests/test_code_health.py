"""House rules the linters do not check: functions stay short enough to read in one screen."""

from __future__ import annotations

import ast

from conftest import ROOT

MAX_FUNCTION_LINES = 80


def test_no_function_in_the_package_is_longer_than_a_screen():
    long = []
    for path in sorted((ROOT / "plugins" / "llmeval").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
