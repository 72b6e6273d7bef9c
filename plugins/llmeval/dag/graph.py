"""The whole DAG of one config, wired in one place:

    preprocess [-> preflight] -> plan -> <kind>_models -> <group> (mapped over the kind's models):
        model:          deploy -> evaluate -> teardown
        tuned_model:    finetune -> deploy -> evaluate -> teardown
        bedrock_model:  evaluate                (nothing to deploy)
        provided_model: evaluate                (outputs given: scored only)
    [deploy_judges -> the groups -> [compare] -> teardown_judges]   (LLMJudge, Pairwise)
    -> select [-> review] -> register -> report -> verdict

`preflight` (SageMaker, `sagemaker.preflight`, on by default) checks the account first.
The target (`llmeval.targets`) fills in each group's steps and the judges' steps; their
names and the SageMaker target's extra steps (prepare, collect_results) are in its wiring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task_group

from llmeval import targets
from llmeval.config import ConfigError, EvalConfig, Problem
from llmeval.contracts import ModelKind, TargetName
from llmeval.dag import run_tasks
from llmeval.dag.settings import GROUP_DOCS, dag_arguments


def _model_group(cfg: EvalConfig, target: targets.Target, kind: ModelKind, models: Any) -> Any:
    """The mapped task group of the kind's planned models."""

    def steps(model_name: str) -> None:
        target.model_steps(cfg, model_name, kind)

    steps.__doc__ = GROUP_DOCS[kind]
    names = run_tasks.split_task(kind)(models, kind=str(kind))
    return task_group(group_id=kind.group_id)(steps).expand(model_name=names)


def build_dag(cfg: EvalConfig, source: Path) -> DAG:
    target = targets.get(cfg.target)
    problems = target.validate(cfg)
    if problems:
        raise ConfigError([Problem(str(source), None, "target", p) for p in problems])
    kinds = [kind for kind in ModelKind if any(m.kind == kind for m in cfg.models)]
    judging = any(j.deploys for j in cfg.judged_by) or any(s.compares_models for s in cfg.algorithms)
    with DAG(**dag_arguments(cfg, source)) as dag:
        prepared = run_tasks.preprocess_task(cfg)()
        if cfg.target == TargetName.SAGEMAKER and cfg.sagemaker.preflight:
            prepared = run_tasks.preflight(prepared)
        models = run_tasks.plan(prepared)
        chosen = run_tasks.select(models)
        judges = target.judge_steps(cfg) if judging else None
        if judges:
            models >> judges.start
        for kind in kinds:
            group = _model_group(cfg, target, kind, models)
            group >> chosen
            if judges:
                judges.ready >> group >> (judges.compare or judges.teardown)
        if judges and judges.compare:
            judges.compare >> [chosen, judges.teardown]
        registered = run_tasks.register(chosen, models)
        if cfg.registry.approval == "review":
            from llmeval.dag.review import review_task  # the HITL operator: only where a review is asked
            from llmeval.review import rated_rubric

            review = review_task(
                cfg.registry.review_timeout_minutes, cfg.registry.review_flagged_records, rated_rubric(cfg)
            )
            chosen >> review >> registered
        written = run_tasks.report(models)
        if judges:  # the run's cost includes the judges'
            judges.teardown >> written
        registered >> written >> run_tasks.verdict(models)
    return dag
