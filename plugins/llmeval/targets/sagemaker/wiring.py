"""The SageMaker target's tasks inside the graph that `llmeval.dag.graph` draws.

Per model (a mapped task group per kind):

    [prepare_training_job -> finetune (SageMakerTrainingOperator) ->]
    prepare (JumpStart URIs and names; the evaluation inputs to S3; the job requests)
      -> deploy (SageMakerEndpointOperator) -> evaluate (SageMakerProcessingOperator)
      -> collect_results -> teardown_endpoint (a teardown: runs whatever failed)

    bedrock and provided models: prepare -> evaluate -> collect_results

Judges (once per run): prepare_judges -> deploy_judges ... [compare: prepare -> job -> collect]
... teardown_judges.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup, get_current_context, task

from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind, Step, TaskId, XComKey
from llmeval.targets.base import JudgeSteps
from llmeval.targets.sagemaker import requests as req
from llmeval.targets.sagemaker.collect import collect, collect_pairwise
from llmeval.targets.sagemaker.operators import (
    ReusingEndpointOperator,
    ReusingProcessingOperator,
    ReusingTrainingOperator,
)
from llmeval.targets.sagemaker.resources import teardown
from llmeval.targets.sagemaker.settings import deploy_pool, operator_args, polls, region
from llmeval.targets.sagemaker.staging import compare_pairwise, prepare_endpoint, prepare_training, stage
from llmeval.taskrun import current_run, guarded, label, model_xcom, own_xcom, pulled


def _job_timeout(cfg: EvalConfig) -> timedelta:
    return timedelta(seconds=min(cfg.task_timeout_s, cfg.sagemaker.max_runtime_s + 3600))


def _delete_endpoint(kind: ModelKind, model: str, training_job: bool) -> list[str]:
    """Delete what this pipeline created for the model (with `training_job`, also stop its
    fine-tuning job if still running), from any of the model's tasks."""
    run = current_run()
    frozen = run.config()
    job = (
        req.training_job_name(run.dag_id, run.run_id, model)
        if training_job and frozen.model(model).finetuning
        else None
    )
    prepared = own_xcom(Step.PREPARE, kind)
    endpoint = prepared.get("endpoint") if isinstance(prepared, dict) else None
    return teardown(frozen, model, bool(run.params.get("keep_endpoints")), endpoint, job, run.folder)


def _prepare_task(kind: ModelKind):
    @task(task_id=Step.PREPARE, multiple_outputs=True, map_index_template="{{ model_label }}")
    def prepare(model: str) -> dict[str, Any]:
        """Resolve the JumpStart model and name its model, endpoint config and endpoint (unless
        nothing is deployed for it); upload the evaluation code, config and dataset and build
        the Processing job request."""
        label(model)
        prepared: dict[str, Any] = {}
        if kind.deploys:
            prepared = guarded(
                Step.DEPLOY,
                model,
                lambda cfg, run: prepare_endpoint(cfg, model, run.dag_id, run.run_id),
                first=kind == ModelKind.FOUNDATION,
            )

        def staged(cfg: EvalConfig, run: Any) -> dict[str, Any]:
            where = prepared.get("region") or region(cfg)
            return stage(cfg, model, run.folder, run.dag_id, run.run_id, where, run.catalog_version)

        return {**prepared, "processing": guarded(Step.EVALUATE, model, staged, first=not kind.deploys)}

    return prepare


def _collect_task(kind: ModelKind):
    @task(task_id=Step.COLLECT, trigger_rule="all_done", map_index_template="{{ model_label }}")
    def collect_results(model: str) -> dict[str, Any]:
        """Copy the evaluation results from S3 into the run store (or record why there are none)."""
        label(model)
        prepared = own_xcom(Step.PREPARE, kind) or {}
        if "processing" not in prepared:  # its failure is recorded (the first one is kept)
            raise RuntimeError(f"{model}: nothing to collect, the prepare step failed (see its log)")
        training = prepared.get("training") if kind == ModelKind.TUNED else None
        warnings = prepared.get("warnings")

        def collected(cfg: EvalConfig, run: Any) -> dict[str, Any]:
            return collect(cfg, model, run.folder, prepared["processing"], training, warnings)

        return guarded(Step.EVALUATE, model, collected)

    return collect_results


@task(task_id=Step.PREPARE_TRAINING, map_index_template="{{ model_label }}")
def prepare_training_job(model: str) -> dict[str, Any]:
    """Resolve the JumpStart training specs and upload the training data."""
    label(model)
    return guarded(
        Step.FINETUNE, model, lambda cfg, run: prepare_training(cfg, model, run.dag_id, run.run_id), first=True
    )


def _teardown_task(kind: ModelKind, retried: dict[str, Any]):
    @task(task_id=Step.TEARDOWN_ENDPOINT, map_index_template="{{ model_label }}", **retried)
    def teardown_endpoint(model: str) -> list[str]:
        """Delete the endpoint, endpoint config and model this pipeline created (and stop a
        fine-tuning job still running), whatever happened: usually the evaluation released
        them already, and this finds nothing left."""
        label(model)
        return _delete_endpoint(kind, model, training_job=True)

    return teardown_endpoint


def model_steps(cfg: EvalConfig, model_name: Any, kind: ModelKind) -> None:
    """One model's tasks, in the current (mapped) task group."""
    aws, retried, waits = operator_args(cfg)
    # deploys (creating an endpoint, or waiting for one or for its lease) in one pool per
    # instance type; the config checks there is one per kind
    pooled = deploy_pool(cfg, [m for m in cfg.models if m.kind == kind] if kind.deploys else [])
    early = cfg.sagemaker.early_release and kind.deploys
    prepared = _prepare_task(kind)(model_name)
    evaluate = ReusingProcessingOperator(
        task_id=Step.EVALUATE,
        config=prepared["processing"],
        release=functools.partial(_delete_endpoint, kind, training_job=False) if early else None,
        max_ingestion_time=cfg.sagemaker.max_runtime_s + 600,
        execution_timeout=_job_timeout(cfg),
        **aws,
        **waits,
        **polls(cfg),
        **retried,
    )
    collected = _collect_task(kind)(model_name)
    if not kind.deploys:  # served elsewhere (Bedrock, or outputs given): nothing to deploy or delete
        prepared >> evaluate >> collected
        return
    setups: list[Any] = [prepared]
    if kind == ModelKind.TUNED:
        training = prepare_training_job(model_name)
        finetune = ReusingTrainingOperator(
            task_id=Step.FINETUNE,
            config=training,
            check_if_job_exists=False,
            print_log=False,
            max_ingestion_time=cfg.sagemaker.max_runtime_s + 600,
            execution_timeout=_job_timeout(cfg),  # task_timeout_s bounds fine-tuning too
            **aws,
            **waits,
            **polls(cfg),
            **retried,
        )
        training >> finetune >> prepared
        # a setup too: when fine-tuning fails or times out, the teardown still stops its job
        setups.append(training)
    deploy = ReusingEndpointOperator(
        task_id=Step.DEPLOY,
        config=prepared["endpoint"],
        wait_for_completion=not early,
        endpoint_quotas=cfg.sagemaker.endpoint_quotas,
        artifacts_url=cfg.artifacts_url,
        **aws,
        **waits,
        **retried,
        **pooled,
    )
    stop = _teardown_task(kind, retried)(model_name)
    prepared >> deploy >> evaluate >> collected >> stop
    stop.as_teardown(setups=[setups[0], deploy, *setups[1:]])


@task(task_id=TaskId.PREPARE_JUDGES)
def prepare_judges() -> list[dict[str, Any]]:
    """Resolve each judge's JumpStart model and name its model, endpoint config and endpoint."""
    run = current_run()
    frozen = run.config()
    return [prepare_endpoint(frozen, j.name, run.dag_id, run.run_id)["endpoint"] for j in frozen.judged_by if j.deploys]


def _teardown_judges_task(retried: dict[str, Any]):
    @task(task_id=TaskId.TEARDOWN_JUDGES, **retried)
    def teardown_judges() -> list[str]:
        """Delete the judges' endpoints, endpoint configs and models (those prepare_judges named,
        else found by name and ownership tag), whatever happened upstream; what they cost goes
        to models/<judge>/."""
        run = current_run()
        frozen, keep = run.config(), bool(run.params.get("keep_endpoints"))
        named = {r["Endpoint"]["EndpointName"]: r for r in pulled(TaskId.PREPARE_JUDGES) or []}
        deleted = []
        for judge in (j for j in frozen.judged_by if j.deploys):
            deleted += teardown(frozen, judge.name, keep, named.get(req.endpoint_name(frozen, judge)), None, run.folder)
        return deleted

    return teardown_judges


@task(task_id="prepare", trigger_rule="all_done")
def prepare_comparison() -> dict[str, Any]:
    """The comparison job's request, once every model's evaluation has ended."""
    run = current_run()
    return compare_pairwise(run.config(), run.dag_id, run.run_id)


@task(task_id="collect")
def collect_comparison(request: dict[str, Any]) -> dict[str, Any]:
    """Copy pairwise.json into the run store."""
    run = current_run()
    return collect_pairwise(run.config(), run.folder, request)


def judge_steps(cfg: EvalConfig) -> JudgeSteps:
    """prepare_judges -> deploy_judges (one endpoint per judge, waited for InService) ...
    [compare: prepare -> job -> collect] ... teardown_judges (deletes them, whatever happened)."""
    aws, retried, waits = operator_args(cfg)
    requests = prepare_judges()
    deployed = ReusingEndpointOperator.partial(
        task_id=TaskId.DEPLOY_JUDGES,
        **deploy_pool(cfg, [j for j in cfg.judged_by if j.deploys]),
        wait_for_completion=True,
        endpoint_quotas=cfg.sagemaker.endpoint_quotas,
        artifacts_url=cfg.artifacts_url,
        **aws,
        **waits,
        **retried,
    ).expand(config=requests)
    compared = None
    if any(s.compares_models for s in cfg.algorithms):
        with TaskGroup(TaskId.COMPARE, tooltip="Pairwise: the judge compares the models' answers") as compared:
            request = prepare_comparison()
            job = ReusingProcessingOperator(
                task_id="job",
                config=request,
                max_ingestion_time=cfg.sagemaker.max_runtime_s + 600,
                execution_timeout=_job_timeout(cfg),
                **aws,
                **waits,
                **polls(cfg),
                **retried,
            )
            job >> collect_comparison(request)
    down = _teardown_judges_task(retried)().as_teardown(setups=[requests, deployed])
    return JudgeSteps(start=requests, ready=deployed, compare=compared, teardown=down)


def container_of(cfg: EvalConfig, model: str) -> dict[str, Any] | None:
    """The container a deployed model's `prepare` handed on (None: nothing was deployed)."""
    spec = cfg.model(model)
    if not spec.deploys:
        return None
    return model_xcom(get_current_context()["ti"], spec.kind, Step.PREPARE, model, key=XComKey.CONTAINER)
