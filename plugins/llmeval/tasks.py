"""Task-runtime helpers the factory and the targets share: the current run, failure
recording, and reading small data that other tasks handed on by XCom.

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

log = logging.getLogger("llmeval.tasks")

PREPROCESS_TASK = "preprocess"
JUDGE_STEPS = ("prepare_judges", "deploy_judges")  # before any model's group: every model needs the judges
JUDGES_UP = JUDGE_STEPS[-1]
GROUPS = {  # kind -> task group id
    "foundation": "model",
    "tuned": "tuned_model",
    "bedrock": "bedrock_model",
    "provided": "provided_model",
}


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
    prepared = ti.xcom_pull(task_ids=PREPROCESS_TASK) or {}
    return CurrentRun(run_folder_of(ti, prepared), ti.dag_id, ti.run_id, ctx["params"], prepared)


def label(model: str) -> None:
    """Show the model's name as the mapped task's index in the UI."""
    get_current_context()["model_label"] = model


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


def planned_models(ti: Any, kind: str) -> list[str]:
    return ti.xcom_pull(task_ids=f"{kind}_models") or []


def model_xcom(ti: Any, kind: str, task: str, model: str, key: str = "return_value") -> Any:
    """What the mapped task `<group>.<task>` returned for `model` (None when it did not)."""
    planned = planned_models(ti, kind)
    if model not in planned:
        return None
    return ti.xcom_pull(task_ids=f"{GROUPS[kind]}.{task}", map_indexes=planned.index(model), key=key)


def results_of(run: CurrentRun, frozen: EvalConfig, models: list[str]) -> list:
    """Each model's result (`ModelResult`): the summary its branch handed on by XCom, else the
    failure its branch recorded in the run store."""
    from llmeval import targets
    from llmeval.steps import model_result

    ti = get_current_context()["ti"]
    result_task = targets.get(frozen.target).result_task
    return [model_result(run.folder, m, model_xcom(ti, frozen.model(m).kind, result_task, m)) for m in models]


def record_task_failure(context: dict[str, Any]) -> None:
    """Failure callback: name the model and the step in the log and in the model's folder
    (operator tasks cannot record it themselves)."""
    ti = context["ti"]
    group, _, step = ti.task_id.rpartition(".")
    error = context.get("exception")
    if ti.task_id in JUDGE_STEPS:  # no model is evaluated: each model's report says why
        models = ti.xcom_pull(task_ids="plan") or []
        log.error("LLM evaluation %s: the judges failed at %s (%s): %s", ti.dag_id, step, ", ".join(models), error)
        run = run_folder_of(ti, ti.xcom_pull(task_ids=PREPROCESS_TASK))
        for model in models:
            write_failure(store.model_folder(run, model), model, step, f"{type(error).__name__}: {error}")
        return
    if not group or ti.map_index < 0:
        log.error("LLM evaluation %s: step %s failed", ti.dag_id, ti.task_id)
        return
    kind = next((k for k, g in GROUPS.items() if g == group), "foundation")
    planned = planned_models(ti, kind)
    model = planned[ti.map_index] if ti.map_index < len(planned) else f"#{ti.map_index}"
    log.error("LLM evaluation %s: model %s failed at step %s: %s", ti.dag_id, model, step, error)
    folder = store.model_folder(run_folder_of(ti, ti.xcom_pull(task_ids=PREPROCESS_TASK)), model)
    write_failure(folder, model, step, f"{type(error).__name__}: {error}")
