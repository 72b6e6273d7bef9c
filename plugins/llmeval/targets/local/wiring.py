"""The local target's tasks inside the graph that `llmeval.dag.graph` draws.

Per model (a mapped task group per kind):

    [finetune ->] deploy (start a server) -> evaluate -> teardown (stop it; runs whatever failed)
    OpenAI-compatible and provided models: evaluate

Judges (once per run): deploy_judges ... [compare] ... teardown_judges.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import get_current_context, task

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind, Step, TaskId
from llmeval.targets.base import JudgeSteps
from llmeval.targets.local.jobs import run_evaluation, run_finetune, run_pairwise
from llmeval.targets.local.servers import owner, start_endpoint, stop_endpoint
from llmeval.taskrun import current_run, guarded, label, own_xcom, planned, pulled

log = logging.getLogger("llmeval.local")


def _who(model: str) -> str:
    ti = get_current_context()["ti"]
    return owner(ti.dag_id, ti.run_id, model)


def _deploy_task(kind: ModelKind):
    @task(task_id=Step.DEPLOY, map_index_template="{{ model_label }}")
    def deploy(model: str) -> dict[str, Any]:
        """Start a local model server that speaks the SageMaker runtime API."""
        label(model)
        return guarded(
            Step.DEPLOY,
            model,
            lambda cfg, run: start_endpoint(cfg, model, run.folder, _who(model)),
            first=kind != ModelKind.TUNED,
        )

    return deploy


def _evaluate_task(kind: ModelKind, timeout: timedelta):
    @task(task_id=Step.EVALUATE, map_index_template="{{ model_label }}", execution_timeout=timeout)
    def evaluate(model: str, endpoint: dict[str, Any] | None, training: dict[str, Any] | None) -> dict[str, Any]:
        """Generate with the model, then score the outputs (the evaluation entry point); a
        model given by its outputs has them scored."""
        label(model)

        def body(cfg: EvalConfig, run: Any) -> dict[str, Any]:
            cache = store.cache_object(run.dag_id, model, cfg.artifacts_url)
            keep = bool(run.params.get("keep_endpoints"))

            def release() -> None:  # the server goes as soon as the model is no longer needed
                log.info("%s: %s", model, stop_endpoint(cfg, model, _who(model), endpoint, run.folder, keep))

            return run_evaluation(
                cfg,
                model,
                run.folder,
                endpoint,
                cache,
                training,
                run.catalog_version,
                release if endpoint else None,
                pulled(TaskId.DEPLOY_JUDGES) if cfg.judged_by else None,
            )

        return guarded(Step.EVALUATE, model, body, first=not kind.deploys)

    return evaluate


def _teardown_task(kind: ModelKind):
    @task(task_id=Step.TEARDOWN, map_index_template="{{ model_label }}")
    def teardown(model: str) -> str:
        """Stop the model's server, whatever happened upstream: the one its deploy handed
        on, else any this run started for the model on this host."""
        label(model)
        run = current_run()
        keep = bool(run.params.get("keep_endpoints"))
        return stop_endpoint(run.config(), model, _who(model), own_xcom(Step.DEPLOY, kind), run.folder, keep)

    return teardown


def _finetune_task(timeout: timedelta):
    @task(task_id=Step.FINETUNE, map_index_template="{{ model_label }}", execution_timeout=timeout)
    def finetune(model: str) -> dict[str, Any]:
        """Fine-tune the base model on this machine (LoRA, CPU); loss per step in the log."""
        label(model)
        return guarded(Step.FINETUNE, model, lambda cfg, run: run_finetune(cfg, model, run.folder), first=True)

    return finetune


def model_steps(cfg: EvalConfig, model_name: Any, kind: ModelKind) -> None:
    """[finetune ->] deploy -> evaluate -> teardown for one (mapped) model, in the current task
    group; evaluate alone for a model given by its outputs."""
    timeout = timedelta(seconds=cfg.task_timeout_s)
    evaluate = _evaluate_task(kind, timeout)
    if not kind.deploys:  # served elsewhere, or outputs given: nothing to start or stop
        evaluate(model_name, None, None)
        return
    deployed = _deploy_task(kind)(model_name)
    training = None
    if kind == ModelKind.TUNED:
        training = _finetune_task(timeout)(model_name)
        training >> deployed
    done = evaluate(model_name, deployed, training)
    done >> _teardown_task(kind)(model_name).as_teardown(setups=deployed)


@task(task_id=TaskId.DEPLOY_JUDGES)
def deploy_judges() -> dict[str, dict[str, Any]]:
    """Start a server for each judge the algorithms ask (LLMJudge)."""
    run = current_run()
    frozen = run.config()
    return {j.name: start_endpoint(frozen, j.name, run.folder, _who(j.name)) for j in frozen.judged_by if j.deploys}


@task(task_id=TaskId.TEARDOWN_JUDGES)
def teardown_judges() -> dict[str, str]:
    """Stop the judges' servers, whatever happened upstream."""
    run = current_run()
    frozen, keep = run.config(), bool(run.params.get("keep_endpoints"))
    started = pulled(TaskId.DEPLOY_JUDGES) or {}
    return {
        j.name: stop_endpoint(frozen, j.name, _who(j.name), started.get(j.name), run.folder, keep)
        for j in frozen.judged_by
        if j.deploys
    }


def _compare_task(timeout: timedelta):
    @task(task_id=TaskId.COMPARE, trigger_rule="all_done", execution_timeout=timeout)
    def compare() -> dict[str, Any]:
        """Pairwise: the judge compares the models' answers, in both orders (pairwise.json)."""
        run = current_run()
        return run_pairwise(run.config(), run.folder, run.dag_id, planned(), pulled(TaskId.DEPLOY_JUDGES) or {})

    return compare


def judge_steps(cfg: EvalConfig) -> JudgeSteps:
    """Start the judges' servers; compare the models pairwise (or not); stop the servers."""
    up = deploy_judges()
    compared = None
    if any(s.compares_models for s in cfg.algorithms):
        compared = _compare_task(timedelta(seconds=cfg.task_timeout_s))()
    return JudgeSteps(start=up, ready=up, compare=compared, teardown=teardown_judges().as_teardown(setups=up))
