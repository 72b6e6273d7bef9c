"""A config's DAG settings: schedule, dates, tags, docs, default task arguments and the Params
a manual trigger shows in the Airflow UI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind, TargetName
from llmeval.taskrun import record_task_failure

GROUP_DOCS = {
    ModelKind.FOUNDATION: "deploy -> evaluate -> teardown for one foundation model.",
    ModelKind.TUNED: "finetune -> deploy -> evaluate -> teardown for one model with a finetuning block.",
    ModelKind.BEDROCK: "evaluate one Bedrock model (nothing to deploy or tear down).",
    ModelKind.OPENAI_COMPATIBLE: "evaluate one model behind an OpenAI-compatible URL (nothing to deploy or tear down).",
    ModelKind.PROVIDED: "score the given outputs of one model served elsewhere (nothing to deploy or tear down).",
}


def params(cfg: EvalConfig) -> dict[str, Param]:
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
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,99}$",
            title="Catalog version",
            description="A smoke run of one prompt-catalog version ({catalog_version} in the dataset location) "
            "when the run has no partition key; a run with a partition key evaluates that version.",
        ),
        "register": Param(True, type="boolean", title="Register", description="Register the selected model."),
        "keep_endpoints": Param(
            False,
            type="boolean",
            title="Keep endpoints",
            description="Leave endpoints / local servers running after the run (they cost money on SageMaker).",
        ),
    }


def doc(cfg: EvalConfig, source: Path) -> str:
    models = "\n".join(f"- `{m.name}`: {m.model_id} ({m.model_version})" for m in cfg.models)
    algos = ", ".join(a.algorithm for a in cfg.algorithms)
    return (
        f"### {cfg.pipeline.name}\n\n{cfg.pipeline.description}\n\n"
        f"Config: `{source}` (target **{cfg.target}**)\n\nDataset: `{cfg.dataset.dataset_name}` "
        f"({cfg.dataset.input_data_location})\n\nModels:\n{models}\n\nAlgorithms: {algos}\n"
    )


def schedule(cfg: EvalConfig) -> Any:
    """The config's cron schedule or its catalog asset. A versioned catalog ({catalog_version}
    in the dataset location) is partitioned by version: a run per partition of the catalog
    asset's events, a dated partition per cron tick, or a partition key given at trigger time."""
    from airflow.sdk import Asset

    if not cfg.versioned:
        return Asset(cfg.catalog_asset) if cfg.catalog_asset else cfg.schedule
    from airflow.sdk import (
        AllowedKeyMapper,
        CronPartitionTimetable,
        IdentityMapper,
        PartitionedAssetTimetable,
        PartitionedAtRuntime,
    )

    if cfg.catalog_asset:
        allowed = cfg.catalog_versions if isinstance(cfg.catalog_versions, list) else None
        mapper = AllowedKeyMapper(allowed) if allowed else IdentityMapper()
        return PartitionedAssetTimetable(assets=Asset(cfg.catalog_asset), default_partition_mapper=mapper)
    if cfg.schedule:
        return CronPartitionTimetable(cfg.schedule, timezone="UTC", key_format=version_format(cfg.schedule))
    return PartitionedAtRuntime()


def version_format(cron: str) -> str:
    """The catalog version of a cron tick: its day, or its minute when the schedule runs more
    than once a day."""
    from croniter import croniter

    ticks = croniter(cron, datetime(2025, 1, 1, tzinfo=UTC))
    first, second = ticks.get_next(datetime), ticks.get_next(datetime)
    return "%Y-%m-%d" if second - first >= timedelta(days=1) else "%Y-%m-%dT%H:%M"


def _utc(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def dag_arguments(cfg: EvalConfig, source: Path) -> dict[str, Any]:
    """The keyword arguments of the config's DAG."""
    default_args: dict[str, Any] = {
        "owner": "llm-eval",
        "retries": 0,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        # models already under way go first: their endpoints live as briefly as possible,
        # and a deploy waiting for a slot never starves an evaluation of one
        "weight_rule": "upstream",
        "on_failure_callback": record_task_failure,
    }
    if cfg.target == TargetName.LOCAL and cfg.local.queue:
        default_args["queue"] = cfg.local.queue
    return {
        "dag_id": cfg.pipeline.name,
        "description": cfg.pipeline.description or f"LLM evaluation from {source.name}",
        "schedule": schedule(cfg),
        "start_date": _utc(cfg.start_date),
        "end_date": _utc(cfg.end_date) if cfg.end_date else None,
        "catchup": cfg.catchup,
        "max_active_runs": 1,
        "tags": ["llm-eval", str(cfg.target), *cfg.pipeline.tags],
        "params": params(cfg),
        "doc_md": doc(cfg, source),
        "default_args": default_args,
    }
