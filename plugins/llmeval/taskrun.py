"""Task-runtime helpers the DAG and the targets share: the current run, failure recording,
and reading small data that other tasks handed on by XCom. It imports no target.

The run folder's URL is handed on by the `preprocess` task's XCom, so every task of a run
reads and writes the same store, whatever host it runs on and whatever the YAML says now.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from airflow.sdk import get_current_context

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.contracts import JUDGE_SETUP_TASKS, ModelKind, TaskId, XComKey
from llmeval.results import ModelResult, model_result

log = logging.getLogger("llmeval.taskrun")


@dataclass(frozen=True)
class CurrentRun:
    """The running task's run: its folder in the store, ids and Params."""

    folder: Any  # ObjectStoragePath
    dag_id: str
    run_id: str
    params: dict[str, Any]
    prepared: dict[str, Any]  # what preprocess returned: run folder URL, catalog version, record count

    @property
    def catalog_version(self) -> str:
        return self.prepared["catalog_version"]

    def model_folder(self, model: str) -> Any:
        return store.model_folder(self.folder, model)

    def config(self) -> EvalConfig:
        """The config frozen for this run by `preprocess` (never the YAML as it is now)."""
        return EvalConfig.model_validate_json((self.folder / store.CONFIG).read_text(encoding="utf-8"))


def open_folder(url: str) -> Any:
    """A store path from its URL (str() of a store path keeps its connection: s3://conn@bucket/key)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url)


def run_folder_of(ti: Any, prepared: dict[str, Any] | None) -> Any:
    """The run folder: as `preprocess` handed it on, else where the environment puts it."""
    if prepared and prepared.get("run_folder"):
        return open_folder(prepared["run_folder"])
    return store.run_folder(ti.dag_id, ti.run_id)


def current_run() -> CurrentRun:
    ctx = get_current_context()
    ti = ctx["ti"]
    prepared = ti.xcom_pull(task_ids=TaskId.PREPROCESS) or {}
    return CurrentRun(run_folder_of(ti, prepared), ti.dag_id, ti.run_id, ctx["params"], prepared)


def label(model: str) -> None:
    """Show the model's name as the mapped task's index in the UI."""
    context: dict[str, Any] = get_current_context()  # type: ignore[assignment]  # map_index_template reads it
    context["model_label"] = model


def write_failure(model_folder: Any, model: str, step: str, error: str) -> None:
    """Record that `step` failed for `model` in the store. The first failure of a model is
    kept: later steps fail because of it and would hide the cause."""
    payload = json.dumps({"model": model, "step": step, "error": error[-4000:]}, indent=2)
    store.create_new(model_folder / store.FAILURE, payload)


def clear_model(model_folder: Any) -> None:
    """Forget what an earlier try of this run left for the model (its first step calls this)."""
    for name in (store.RESULTS, store.FAILURE):
        stale = model_folder / name
        if stale.exists():
            stale.unlink()


def guarded(step: str, model: str, body, first: bool = False):
    """Run a step's body with (frozen config, run); on failure record the step and error for
    selection and the report. `first` marks the step that starts the model's branch."""
    run = current_run()
    folder = run.model_folder(model)
    if first:
        clear_model(folder)
    try:
        return body(run.config(), run)
    except Exception as exc:
        write_failure(folder, model, step, f"{type(exc).__name__}: {exc}")
        raise


def planned_models(ti: Any, kind: ModelKind) -> list[str]:
    return ti.xcom_pull(task_ids=kind.split_task) or []


def model_xcom(ti: Any, kind: ModelKind, step: str, model: str, key: str = XComKey.RETURN) -> Any:
    """What the mapped task `<group>.<step>` returned for `model` (None when it did not)."""
    planned = planned_models(ti, kind)
    if model not in planned:
        return None
    return ti.xcom_pull(task_ids=kind.task_in_group(step), map_indexes=planned.index(model), key=key)


def own_xcom(step: str, kind: ModelKind) -> Any:
    """What this mapped task's model handed on from its `step` (same map index), or None."""
    ti = get_current_context()["ti"]
    return ti.xcom_pull(task_ids=kind.task_in_group(step), map_indexes=ti.map_index)


def planned() -> list[str]:
    """The models this run evaluates (the `plan` task's XCom)."""
    return get_current_context()["ti"].xcom_pull(task_ids=TaskId.PLAN) or []


def pulled(task_id: str) -> Any:
    """What the run-level task `task_id` handed on (None when it did not run or failed)."""
    return get_current_context()["ti"].xcom_pull(task_ids=task_id)


def results_of(run: CurrentRun, frozen: EvalConfig, models: list[str], result_step: str) -> list[ModelResult]:
    """Each model's result: the summary its `result_step` handed on by XCom, else the failure
    its branch recorded in the run store."""
    ti = get_current_context()["ti"]
    return [model_result(run.folder, m, model_xcom(ti, frozen.model(m).kind, result_step, m)) for m in models]


def record_task_failure(context: dict[str, Any]) -> None:
    """Failure callback: name the model and the step in the log and in the model's folder
    (operator tasks cannot record it themselves)."""
    ti = context["ti"]
    group, _, step = ti.task_id.rpartition(".")
    error = context.get("exception")
    if ti.task_id in JUDGE_SETUP_TASKS:  # no model is evaluated: each model's report says why
        models = ti.xcom_pull(task_ids=TaskId.PLAN) or []
        log.error("LLM evaluation %s: the judges failed at %s (%s): %s", ti.dag_id, step, ", ".join(models), error)
        run = run_folder_of(ti, ti.xcom_pull(task_ids=TaskId.PREPROCESS))
        for model in models:
            write_failure(store.model_folder(run, model), model, step, f"{type(error).__name__}: {error}")
        return
    if not group or ti.map_index < 0:
        log.error("LLM evaluation %s: step %s failed", ti.dag_id, ti.task_id)
        return
    names = planned_models(ti, ModelKind.of_group(group) or ModelKind.FOUNDATION)
    model = names[ti.map_index] if ti.map_index < len(names) else f"#{ti.map_index}"
    log.error("LLM evaluation %s: model %s failed at step %s: %s", ti.dag_id, model, step, error)
    folder = store.model_folder(run_folder_of(ti, ti.xcom_pull(task_ids=TaskId.PREPROCESS)), model)
    write_failure(folder, model, step, f"{type(error).__name__}: {error}")
