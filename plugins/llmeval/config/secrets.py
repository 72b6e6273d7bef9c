"""The secret scan: credentials never belong in a config (they would end up in the DAG's
code view, in XCom and in the run store); they go in Airflow Connections."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(
    r"(^|_)(secret|password|passwd|api_?key|access_?key(_id)?|private_?key|session_?token|auth_?token|token|"
    r"credentials?)($|_)",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


def find_secrets(node: Any, loc: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Keys that look like credentials, and values that look like AWS access keys."""
    found: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and SECRET_KEY.search(key) and value not in (None, "", {}, []):
                found.append(
                    (
                        loc + (key,),
                        "looks like a credential: configs must not hold secrets; keep them "
                        "in an Airflow Connection or Variable",
                    )
                )
            else:
                found += find_secrets(value, loc + (key,))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += find_secrets(item, loc + (i,))
    elif isinstance(node, str) and SECRET_VALUE.search(node):
        found.append((loc, "contains what looks like an AWS access key id: keep credentials in an Airflow Connection"))
    return found
