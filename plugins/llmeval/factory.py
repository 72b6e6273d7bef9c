"""DAG factory: one Airflow DAG per evaluation config.

    preprocess -> plan -> model[i]         (mapped: deploy -> evaluate -> teardown)
                       -> tuned_model[j]   (mapped: finetune -> deploy -> evaluate -> teardown)
                       -> bedrock_model[k] (mapped: evaluate; SageMaker target only)
               -> select -> register -> report -> verdict

The factory knows steps, not services: `llmeval.targets.<target>` builds the per-model
tasks. Parsing stays cheap: only the config model and Airflow's SDK are imported here;
everything heavy is imported inside task callables. A broken config becomes an import
error for that config file; the other configs still produce their DAGs.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task, task_group

from llmeval.config import ConfigError, EvalConfig, configs_dir, load_folder
from llmeval.runtime import CONFIGS_DIR

log = logging.getLogger("llmeval.factory")


def current_run() -> tuple[Path, str, dict[str, Any]]:
    """(run folder, run id, params) of the running task."""
    from llmeval.runtime import run_dir

    ctx = get_current_context()
    run_id = ctx["run_id"]
    return run_dir(ctx["dag"].dag_id, run_id), run_id, ctx["params"]


def run_ids() -> tuple[str, str]:
    """(dag id, run id) of the running task."""
    ctx = get_current_context()
    return ctx["dag"].dag_id, ctx["run_id"]


def label(model: str) -> None:
    """Show the model's name as the mapped task's index in the UI."""
    get_current_context()["model_label"] = model


def guarded(step: str, model: str, body, first: bool = False):
    """Run a step's body; on failure record the step and error for selection and the report.
    The first failure of a model's branch is kept (it is the cause); `first` marks the step
    that starts the branch, which clears what an earlier try of this run left."""
    from llmeval.results import FAILURE_FILE, RESULTS_FILE, write_failure
    from llmeval.runtime import model_dir
    from llmeval.steps import run_config

    run_folder, _, params = current_run()
    folder = model_dir(run_folder, model)
    if first:
        for stale in (RESULTS_FILE, FAILURE_FILE):
            (folder / stale).unlink(missing_ok=True)
    try:
        return body(run_config(run_folder), run_folder, params)
    except Exception as exc:
        write_failure(folder, model, step, f"{type(exc).__name__}: {exc}")
        raise


def record_task_failure(context: dict[str, Any]) -> None:
    """Failure callback: name the model and the step in the log and in the model's folder
    (operator tasks cannot record it themselves)."""
    from llmeval.results import write_failure
    from llmeval.runtime import model_dir, run_dir

    ti = context["ti"]
    group, _, step = ti.task_id.rpartition(".")
    if not group or ti.map_index < 0:
        log.error("LLM evaluation %s: step %s failed", ti.dag_id, ti.task_id)
        return
    kinds = {"model": "foundation", "tuned_model": "tuned", "bedrock_model": "bedrock"}
    planned = ti.xcom_pull(task_ids=f"{kinds.get(group, 'foundation')}_models") or []
    model = planned[ti.map_index] if ti.map_index < len(planned) else f"#{ti.map_index}"
    error = context.get("exception")
    log.error("LLM evaluation %s: model %s failed at step %s: %s", ti.dag_id, model, step, error)
    write_failure(model_dir(run_dir(ti.dag_id, ti.run_id), model), model, step, f"{type(error).__name__}: {error}")


def _params(cfg: EvalConfig) -> dict[str, Param]:
    names = [m.name for m in cfg.models]
    return {
        "models": Param(
            names,
            type="array",
            items={"type": "string", "enum": names},
            minItems=1,
            uniqueItems=True,
            title="Models",
            description="Which of the config's models to evaluate in this run.",
        ),
        "num_records": Param(
            cfg.num_records,
            type=["null", "integer"],
            minimum=1,
            title="Record limit",
            description="Evaluate only the first N records (a smoke run). Empty: the config's num_records, "
            "else the whole dataset.",
        ),
        "catalog_version": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
            title="Catalog version",
            description="Prompt-catalog version to evaluate ({catalog_version} in the dataset location). "
            "Empty: the run's logical date as YYYY-MM-DD.",
        ),
        "register": Param(True, type="boolean", title="Register", description="Register the selected model."),
        "keep_endpoints": Param(
            False,
            type="boolean",
            title="Keep endpoints",
            description="Leave endpoints / local servers running after the run (they cost money on SageMaker).",
        ),
    }


def _doc(cfg: EvalConfig, source: Path) -> str:
    models = "\n".join(f"- `{m.name}`: {m.model_id} ({m.model_version})" for m in cfg.models)
    algos = ", ".join(a.algorithm for a in cfg.algorithms)
    return (
        f"### {cfg.pipeline.name}\n\n{cfg.pipeline.description}\n\n"
        f"Config: `{source}` (target **{cfg.target}**)\n\nDataset: `{cfg.dataset.dataset_name}` "
        f"({cfg.dataset.input_data_location})\n\nModels:\n{models}\n\nAlgorithms: {algos}\n"
    )


def build_dag(cfg: EvalConfig, source: Path) -> DAG:
    target = importlib.import_module(f"llmeval.targets.{cfg.target}")
    config_path = str(source)

    schedule: Any = cfg.schedule
    if cfg.catalog_asset:
        from airflow.sdk import Asset

        schedule = Asset(cfg.catalog_asset)
    with DAG(
        dag_id=cfg.pipeline.name,
        description=cfg.pipeline.description or f"LLM evaluation from {source.name}",
        schedule=schedule,
        start_date=datetime.fromisoformat(cfg.start_date).replace(tzinfo=timezone.utc),
        catchup=cfg.catchup,
        max_active_runs=1,
        tags=["llm-eval", cfg.target, *cfg.pipeline.tags],
        params=_params(cfg),
        doc_md=_doc(cfg, source),
        default_args={
            "owner": "llm-eval",
            "retries": 0,
            "retry_delay": timedelta(seconds=30),
            "retry_exponential_backoff": True,
            "on_failure_callback": record_task_failure,
        },
    ) as dag:

        @task
        def preprocess() -> dict[str, Any]:
            """Freeze the config for this run and prepare the prompt dataset of its catalog version."""
            from llmeval.steps import prepare_run

            run_folder, _, params = current_run()
            ctx = get_current_context()
            when = ctx.get("logical_date") or ctx["dag_run"].run_after
            published = [
                e.extra.get("catalog_version")
                for events in (ctx.get("triggering_asset_events") or {}).values()
                for e in events
                if e.extra and e.extra.get("catalog_version")
            ]
            version = params.get("catalog_version") or (published[-1] if published else when.strftime("%Y-%m-%d"))
            return prepare_run(Path(config_path), run_folder, params.get("num_records"), version)

        @task
        def plan(prepared: dict[str, Any]) -> list[str]:
            """The models this run evaluates (the `models` Param)."""
            from llmeval.steps import plan_models, run_config

            run_folder, _, params = current_run()
            models = plan_models(run_config(run_folder), params.get("models"))
            log.info("evaluating %d model(s) on %d records: %s", len(models), prepared["records"], models)
            return models

        @task
        def split(models: list[str], kind: str) -> list[str]:
            """The planned models of one kind: foundation, tuned (finetuning block) or bedrock."""
            from llmeval.steps import run_config

            run_folder, _, _ = current_run()
            cfg_now = run_config(run_folder)
            return [m for m in models if cfg_now.model(m).kind == kind]

        groups = {
            "foundation": ("model", "deploy -> evaluate -> teardown for one foundation model."),
            "tuned": (
                "tuned_model",
                "finetune -> deploy -> evaluate -> teardown for one model with a finetuning block.",
            ),
            "bedrock": ("bedrock_model", "evaluate one Bedrock model (nothing to deploy or tear down)."),
        }

        @task(trigger_rule="all_done")
        def select(models: list[str]) -> dict[str, Any]:
            """Rank the models by the selection policy; failed models are listed, not dropped."""
            from llmeval.steps import select_best

            run_folder, _, _ = current_run()
            return select_best(run_folder, models).to_dict()

        @task
        def register(selection: dict[str, Any]) -> dict[str, Any]:
            """Register the selected model with its metrics and approval status."""
            from llmeval.steps import register_best, run_config

            run_folder, run_id, params = current_run()
            registry = target.registry(run_config(run_folder), run_folder)
            return register_best(
                run_folder,
                registry,
                run_id,
                enabled=bool(params.get("register", True)),
                dag_id=get_current_context()["dag"].dag_id,
            )

        @task(trigger_rule="all_done")
        def report(models: list[str]) -> str:
            """Write the leaderboard (HTML + Markdown) whatever happened upstream."""
            from llmeval.steps import write_run_report

            run_folder, run_id, _ = current_run()
            return str(write_run_report(run_folder, run_id, models, get_current_context()["dag"].dag_id))

        @task(trigger_rule="all_done")
        def verdict(models: list[str]) -> None:
            """Fail the run when a model or the registration failed, after the report (for alerting)."""
            from llmeval.steps import collect_results

            run_folder, _, _ = current_run()
            problems = [
                f"{r.model} failed at {r.failed_step}: {(r.error or '')[:300]}"
                for r in collect_results(run_folder, models)
                if not r.succeeded
            ]
            if (run_folder / "selection.json").exists() and not (run_folder / "registration.json").exists():
                problems.append("the register step failed (see its log); nothing was registered")
            if problems:
                raise RuntimeError("; ".join(problems))

        models = plan(preprocess())
        chosen = select(models)
        for kind, (group_id, doc) in groups.items():
            if not any(m.kind == kind for m in cfg.models):
                continue
            names = split.override(task_id=f"{kind}_models")(models, kind=kind)

            def steps(model_name: str, kind: str = kind) -> None:
                target.model_steps(cfg, model_name, kind)

            steps.__doc__ = doc
            task_group(group_id=group_id)(steps).expand(model_name=names) >> chosen
        registered = register(chosen)
        written = report(models)
        registered >> written >> verdict(models)
    return dag


def _report_import_errors(errors: list[ConfigError]) -> None:
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


def load_dags(folder: Path | None = None) -> dict[str, DAG]:
    """DAGs for every valid config in `folder` (default: $LLM_EVAL_CONFIGS_DIR or include/configs)."""
    good, bad = load_folder(folder or configs_dir(CONFIGS_DIR))
    dags: dict[str, DAG] = {}
    for path, cfg in good:
        try:
            dag = build_dag(cfg, path)
            dag.validate()
            dags[cfg.pipeline.name] = dag
        except Exception as exc:  # whatever Airflow rejects stays this config's error
            from llmeval.config import Problem

            bad.append(ConfigError([Problem(str(path), None, "", f"{type(exc).__name__}: {exc}")]))
    if bad:
        _report_import_errors(bad)
    return dags
