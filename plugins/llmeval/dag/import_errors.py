"""A broken config as an Airflow import error of its own file.

Raising from the DAG file would drop every DAG it defines, so each config's error is added
to the import result of the file Airflow is parsing, keyed by the config's own path. Airflow
has no public hook for this before 3.4 (`airflow.sdk.importers`): this module is the one
place that reaches into the DagBag being filled.
"""

from __future__ import annotations

import inspect
import logging
import os

from llmeval.config import ConfigError

log = logging.getLogger("llmeval.dag")


def report_import_errors(errors: list[ConfigError]) -> None:
    """Add one Airflow import error per broken config file to the DagBag being filled.

    Raising would drop every DAG of the DAG file, so the errors are added to the import
    result of the file Airflow is parsing, keyed by the config's own path.
    """
    for exc in errors:
        log.error("invalid evaluation config:\n%s", exc)
    frame, result, bundle = inspect.currentframe(), None, None
    while frame is not None:
        local = frame.f_locals
        if result is None and type(local.get("result")).__name__ == "DagImportResult":
            result = local["result"]
        bundle = bundle or local.get("bundle_path") or getattr(local.get("self"), "bundle_path", None)
        frame = frame.f_back
    if result is None:  # not parsed by Airflow (e.g. imported by a script): the log has it
        return
    from airflow.dag_processing.importers.base import DagImportError

    for exc in errors:
        first = exc.problems[0]
        shown = os.path.relpath(first.file, bundle) if bundle else first.file
        result.errors.append(
            DagImportError(file_path=shown, message=str(exc), error_type="config", line_number=first.line)
        )
