"""DAG factory: one Airflow DAG per evaluation config.

    preprocess -> plan -> model[i]         (mapped: deploy -> evaluate -> teardown)
                       -> tuned_model[j]   (mapped: finetune -> deploy -> evaluate -> teardown)
                       -> bedrock_model[k] (mapped: evaluate; SageMaker target only)
                  (between deploy_judges and teardown_judges when LLMJudge asks judges)
               [-> compare]  (Pairwise: the judge compares the models' answers)
               -> select [-> review] -> register -> report -> verdict

The factory knows steps, not services: `llmeval.targets.<target>` builds the per-model
tasks. Parsing stays cheap: only the config model and Airflow's SDK are imported here;
everything heavy is imported inside task callables. A broken config becomes an import
error for that config file; the other configs still produce their DAGs.
"""

from __future__ import annotations

import inspect
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, get_parsing_context, task, task_group

from llmeval import runtime, targets
from llmeval.config import ConfigError, EvalConfig, Problem, configs_dir, load_folder
from llmeval.tasks import GROUPS, current_run, record_task_failure, results_of

log = logging.getLogger("llmeval.factory")


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
    target = targets.get(cfg.target)
    problems = target.validate(cfg)
    if problems:
        raise ConfigError([Problem(str(source), None, "target", p) for p in problems])

    schedule: Any = cfg.schedule
    if cfg.catalog_asset:
        from airflow.sdk import Asset

        schedule = Asset(cfg.catalog_asset)
    with DAG(
        dag_id=cfg.pipeline.name,
        description=cfg.pipeline.description or f"LLM evaluation from {source.name}",
        schedule=schedule,
        start_date=datetime.fromisoformat(cfg.start_date).replace(tzinfo=timezone.utc),
        end_date=datetime.fromisoformat(cfg.end_date).replace(tzinfo=timezone.utc) if cfg.end_date else None,
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
            # models already under way go first: their endpoints live as briefly as possible,
            # and a deploy waiting for a slot never starves an evaluation of one
            "weight_rule": "upstream",
            "on_failure_callback": record_task_failure,
            **({"queue": cfg.local.queue} if cfg.target == "local" and cfg.local.queue else {}),
        },
    ) as dag:

        @task
        def preprocess() -> dict[str, Any]:
            """Freeze this DAG's config for the run (later tasks read the frozen copy, never the
            YAML) and prepare the prompt dataset of the run's catalog version in the run store."""
            from llmeval import store
            from llmeval.steps import prepare_run

            ctx = get_current_context()
            folder = store.run_folder(ctx["dag"].dag_id, ctx["run_id"], cfg.artifacts_url)
            params = ctx["params"]
            when = ctx.get("logical_date") or ctx["dag_run"].run_after
            published = [
                e.extra.get("catalog_version")
                for events in (ctx.get("triggering_asset_events") or {}).values()
                for e in events
                if e.extra and e.extra.get("catalog_version")
            ]
            version = params.get("catalog_version") or (published[-1] if published else when.strftime("%Y-%m-%d"))
            prepared = prepare_run(cfg, folder, params.get("num_records"), version)
            return {**prepared, "run_folder": str(folder)}

        @task
        def plan(prepared: dict[str, Any]) -> list[str]:
            """The models this run evaluates (the `models` Param)."""
            from llmeval.steps import plan_models

            run = current_run()
            models = plan_models(run.config(), run.params.get("models"))
            log.info("evaluating %d model(s) on %d records: %s", len(models), prepared["records"], models)
            return models

        @task
        def split(models: list[str], kind: str) -> list[str]:
            """The planned models of one kind: foundation, tuned (finetuning block), bedrock or provided
            (outputs_location)."""
            frozen = current_run().config()
            return [m for m in models if frozen.model(m).kind == kind]

        docs = {
            "foundation": "deploy -> evaluate -> teardown for one foundation model.",
            "tuned": "finetune -> deploy -> evaluate -> teardown for one model with a finetuning block.",
            "bedrock": "evaluate one Bedrock model (nothing to deploy or tear down).",
            "provided": "score the given outputs of one model served elsewhere (nothing to deploy or tear down).",
        }

        @task(trigger_rule="all_done")
        def select(models: list[str]) -> dict[str, Any]:
            """Rank the models by the selection policy; failed models are listed, not dropped."""
            from llmeval.steps import select_best

            run = current_run()
            frozen = run.config()
            return select_best(frozen, run.folder, results_of(run, frozen, models)).to_dict()

        @task(trigger_rule="none_failed")  # runs after a review skipped for want of a selected model
        def register(selection: dict[str, Any], models: list[str]) -> dict[str, Any]:
            """Register the selected model with its metrics and approval status (the review's, if any)."""
            from llmeval.selection import Selection
            from llmeval.steps import register_best

            run, ti = current_run(), get_current_context()["ti"]
            frozen = run.config()
            return register_best(
                frozen,
                run.folder,
                target.registry(frozen, run),
                run.run_id,
                Selection.from_dict(selection),
                results_of(run, frozen, models),
                run.catalog_version,
                enabled=bool(run.params.get("register", True)),
                dag_id=run.dag_id,
                review=ti.xcom_pull(task_ids="review") if frozen.registry.approval == "review" else None,
            )

        @task(trigger_rule="all_done")
        def report(models: list[str]) -> str:
            """Write the leaderboard (HTML + Markdown) whatever happened upstream."""
            from llmeval.selection import Selection
            from llmeval.steps import write_run_report

            run, ti = current_run(), get_current_context()["ti"]
            frozen = run.config()
            selection = ti.xcom_pull(task_ids="select")
            page = write_run_report(
                frozen,
                run.folder,
                run.run_id,
                results_of(run, frozen, models),
                run.catalog_version,
                Selection.from_dict(selection) if selection else None,
                ti.xcom_pull(task_ids="register"),
                run.dag_id,
            )
            return str(page)

        @task(trigger_rule="all_done")
        def verdict(models: list[str]) -> None:
            """Fail the run when a model or the registration failed, after the report (for alerting)."""
            run, ti = current_run(), get_current_context()["ti"]
            frozen = run.config()
            problems = [
                f"{r.model} failed at {r.failed_step}: {(r.error or '')[:300]}"
                for r in results_of(run, frozen, models)
                if not r.succeeded
            ]
            if ti.xcom_pull(task_ids="select") and ti.xcom_pull(task_ids="register") is None:
                problems.append("the register step failed (see its log); nothing was registered")
            if problems:
                raise RuntimeError("; ".join(problems))

        models = plan(preprocess())
        chosen = select(models)
        judging = any(j.deploys for j in cfg.judged_by) or any(s.compares_models for s in cfg.algorithms)
        judges_up, compared, judges_down = target.judge_steps(cfg, models) if judging else (None, None, None)
        for kind, group_id in GROUPS.items():
            if not any(m.kind == kind for m in cfg.models):
                continue
            names = split.override(task_id=f"{kind}_models")(models, kind=kind)

            def steps(model_name: str, kind: str = kind) -> None:
                target.model_steps(cfg, model_name, kind)

            steps.__doc__ = docs[kind]
            group = task_group(group_id=group_id)(steps).expand(model_name=names)
            group >> chosen
            if judges_up is not None:
                judges_up >> group >> (judges_down if compared is None else compared)
        if compared is not None:
            compared >> [chosen, judges_down]
        registered = register(chosen, models)
        if cfg.registry.approval == "review":
            from llmeval.review_task import review_task

            (
                chosen
                >> review_task(cfg.registry.review_timeout_minutes, cfg.registry.review_flagged_records)
                >> registered
            )
        written = report(models)
        if judges_down is not None:  # the run's cost includes the judges'
            judges_down >> written
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
    """DAGs for every valid config in `folder` (default: $LLM_EVAL_CONFIGS_DIR or include/configs).
    When a worker parses the file to run one task, only that task's DAG is built."""
    good, bad = load_folder(folder or configs_dir(runtime.configs_dir()))
    running = get_parsing_context().dag_id
    if running is not None:
        good = [(path, cfg) for path, cfg in good if cfg.pipeline.name == running]
    dags: dict[str, DAG] = {}
    for path, cfg in good:
        try:
            dag = build_dag(cfg, path)
            dag.validate()
            dags[cfg.pipeline.name] = dag
        except ConfigError as exc:
            bad.append(exc)
        except Exception as exc:  # whatever Airflow rejects stays this config's error
            bad.append(ConfigError([Problem(str(path), None, "", f"{type(exc).__name__}: {exc}")]))
    if bad:
        _report_import_errors(bad)
    return dags
