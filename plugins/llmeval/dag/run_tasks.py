"""The run-level tasks (one per run, whatever the target): preprocess, plan, the split of the
planned models by kind, select, register, report and verdict. Each reads the config frozen
for the run by `preprocess`, never the YAML as it is now; heavy imports happen inside."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import get_current_context, task

from llmeval import store, targets
from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind, TargetName, TaskId
from llmeval.results import ModelResult
from llmeval.taskrun import CurrentRun, current_run, pulled, results_of

log = logging.getLogger("llmeval.dag")


def run_results(run: CurrentRun, frozen: EvalConfig, models: list[str]) -> list[ModelResult]:
    """Each planned model's result, from the step its target hands results on by."""
    return results_of(run, frozen, models, targets.get(frozen.target).result_step)


class NoCatalogVersion(ValueError):
    """A run of a versioned catalog that names no version it may evaluate."""


def catalog_version(ctx: Any, cfg: EvalConfig) -> str:
    """The prompt-catalog version a run evaluates. A versioned catalog: the run's partition key,
    else (a smoke run) the `catalog_version` Param; a run with neither is refused. Otherwise a
    label: the Param, else the version a triggering asset event carries in its extra, else the
    run's logical date as YYYY-MM-DD."""
    key, param = ctx["dag_run"].partition_key, ctx["params"].get("catalog_version")
    if cfg.versioned:
        version = key or param
        if not version:
            raise NoCatalogVersion(
                f"{cfg.pipeline.name} evaluates one prompt-catalog version per run ({{catalog_version}} in "
                f"{cfg.dataset.input_data_location}), and this run names none: trigger it with a partition key "
                "(the REST API's partition_key, `llmeval backfill`, the catalog asset's event), or give the "
                "catalog_version Param for a smoke run"
            )
        problem = cfg.version_problem(version)
        if problem:
            raise NoCatalogVersion(f"{cfg.pipeline.name}: {problem}")
        if key and param and param != key:
            log.warning("the run's partition key %r is its catalog version; the Param %r is ignored", key, param)
        elif not key:
            log.warning("a smoke run of catalog version %r (the Param): the run has no partition key", version)
        return version
    when = ctx.get("logical_date") or ctx["dag_run"].run_after
    published = [
        e.extra.get("catalog_version")
        for events in (ctx.get("triggering_asset_events") or {}).values()
        for e in events
        if e.extra and e.extra.get("catalog_version")
    ]
    return param or key or (published[-1] if published else when.strftime("%Y-%m-%d"))


def preprocess_task(cfg: EvalConfig):
    @task(task_id=TaskId.PREPROCESS)
    def preprocess() -> dict[str, Any]:
        """Freeze this DAG's config for the run (later tasks read the frozen copy, never the
        YAML) and prepare the prompt dataset of the run's catalog version in the run store."""
        from llmeval.steps import prepare_run

        ctx = get_current_context()
        folder = store.run_folder(ctx["dag"].dag_id, ctx["run_id"], cfg.artifacts_url)
        prepared = prepare_run(cfg, folder, ctx["params"].get("num_records"), catalog_version(ctx, cfg))
        return {**prepared, "run_folder": str(folder)}

    return preprocess


@task(task_id=TaskId.PREFLIGHT)
def preflight(prepared: dict[str, Any]) -> dict[str, Any]:
    """Check the AWS account for this run before anything is created (`llmeval preflight`): a
    line per check in the log; a failed check fails the run, naming what to fix."""
    from llmeval.preflight import run as checks

    found = checks(current_run().config())
    for check in found:
        log.info("%s", check.line())
    failed = [c for c in found if not c.ok]
    if failed:
        raise RuntimeError(
            f"preflight: {len(failed)} of {len(found)} checks failed, nothing was created: "
            + "; ".join(f"{c.name}: {c.detail} (fix: {c.fix})" for c in failed)
        )
    return prepared


@task(task_id=TaskId.PLAN)
def plan(prepared: dict[str, Any]) -> list[str]:
    """The models this run evaluates (the `models` Param); the connections of those served
    behind an OpenAI-compatible URL must exist before anything is deployed."""
    from llmeval.steps import plan_models
    from llmeval.targets.connections import check_connections

    run = current_run()
    frozen = run.config()
    models = plan_models(frozen, run.params.get("models"))
    check_connections(frozen, models, for_processing=frozen.target == TargetName.SAGEMAKER)
    log.info("evaluating %d model(s) on %d records: %s", len(models), prepared["records"], models)
    return models


@task
def split(models: list[str], kind: str) -> list[str]:
    """The planned models of one kind: foundation, tuned (finetuning block), bedrock or provided
    (outputs_location)."""
    frozen = current_run().config()
    return [m for m in models if frozen.model(m).kind == kind]


def split_task(kind: ModelKind):
    return split.override(task_id=kind.split_task)


@task(task_id=TaskId.SELECT, trigger_rule="all_done")
def select(models: list[str] | None) -> dict[str, Any]:
    """Rank the models by the selection policy; failed models are listed, not dropped (none
    when the run stopped before `plan` named them)."""
    from llmeval.steps import select_best

    run = current_run()
    frozen = run.config()
    return select_best(frozen, run.folder, run_results(run, frozen, models or [])).to_dict()


@task(task_id=TaskId.REGISTER, trigger_rule="none_failed")  # runs after a review skipped for want of a selected model
def register(selection: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """Register the selected model with its metrics and approval status (the review's, if any)."""
    from llmeval.registration import register_best
    from llmeval.selection import Selection

    run = current_run()
    frozen = run.config()
    return register_best(
        frozen,
        run.folder,
        targets.get(frozen.target).registry(frozen, run),
        run.run_id,
        Selection.from_dict(selection),
        run_results(run, frozen, models),
        run.catalog_version,
        enabled=bool(run.params.get("register", True)),
        dag_id=run.dag_id,
        review=pulled(TaskId.REVIEW) if frozen.registry.approval == "review" else None,
    ).to_dict()


@task(task_id=TaskId.REPORT, trigger_rule="all_done")
def report(models: list[str] | None) -> str:
    """Write the leaderboard (HTML + Markdown) whatever happened upstream."""
    from llmeval.registration import Registration
    from llmeval.selection import Selection
    from llmeval.steps import write_run_report

    run = current_run()
    frozen = run.config()
    selection, registered = pulled(TaskId.SELECT), pulled(TaskId.REGISTER)
    page = write_run_report(
        frozen,
        run.folder,
        run.run_id,
        run_results(run, frozen, models or []),
        run.catalog_version,
        Selection.from_dict(selection) if selection else None,
        Registration.from_dict(registered) if registered else None,
        run.dag_id,
        run.prepared.get("published"),
    )
    return str(page)


@task(task_id=TaskId.VERDICT, trigger_rule="all_done")
def verdict(models: list[str] | None) -> None:
    """Fail the run, after the report (for alerting), for what `run_problems` finds."""
    run = current_run()
    frozen = run.config()
    if models is None:  # preflight or plan failed: their logs say why
        raise RuntimeError("nothing was evaluated: the run stopped before plan named its models (see its log)")
    problems = run_problems(frozen, run_results(run, frozen, models), pulled(TaskId.SELECT), pulled(TaskId.REGISTER))
    if problems:
        raise RuntimeError("; ".join(problems))


def run_problems(
    cfg: EvalConfig, results: list[ModelResult], selection: dict[str, Any] | None, registered: dict[str, Any] | None
) -> list[str]:
    """What fails a run: a failed model, a failed registration, and with `selection.untrusted_judge:
    fail` a judge's scores left out for want of agreement with people."""
    problems = [f"{r.model} failed at {r.failed_step}: {(r.error or '')[:300]}" for r in results if not r.succeeded]
    if selection and registered is None:
        problems.append("the register step failed (see its log); nothing was registered")
    if selection and cfg.selection.untrusted_judge == "fail":
        problems += [f"untrusted judge, {metric} left out: {why}" for metric, why in selection["excluded"].items()]
    return problems
