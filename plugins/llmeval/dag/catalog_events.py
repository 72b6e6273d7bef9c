"""The deprecated way to publish a catalog version, kept working for a versioned catalog's asset.

Publishers used to name the version in an asset event's extra (`{"catalog_version": "v12"}`).
A partitioned DAG is only started by events with a partition key, and Airflow drops the others,
so each such config gets a small DAG `<dag id>__catalog_events`: it listens for the asset's events
without a key, warns that the form is deprecated, and publishes the version again as an event
with that partition key, which starts the evaluation run. An event with neither fails there,
saying how to publish.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from airflow.sdk import DAG, Asset, get_current_context, task

from llmeval.config import EvalConfig
from llmeval.contracts import TaskId

log = logging.getLogger("llmeval.dag")
SUFFIX = "__catalog_events"


def republisher_id(cfg: EvalConfig) -> str:
    return f"{cfg.pipeline.name}{SUFFIX}"


def build_republisher(cfg: EvalConfig) -> DAG:
    """The DAG that turns the catalog asset's events without a partition key into keyed ones."""
    asset = Asset(str(cfg.catalog_asset))

    @task(task_id=TaskId.REPUBLISH, outlets=[asset])
    def republish() -> list[str]:
        ctx = get_current_context()
        extras = [e.extra or {} for events in ctx["triggering_asset_events"].values() for e in events]
        versions = list(dict.fromkeys(str(x["catalog_version"]) for x in extras if x.get("catalog_version")))
        if not versions:
            raise ValueError(
                f"an event of {cfg.catalog_asset} has no partition key, so it starts no run of "
                f"{cfg.pipeline.name}: publish a catalog version as an asset event with partition_key=<version> "
                "(REST API: POST /api/v2/assets/events {asset_id, partition_key}; in a DAG: "
                "outlet_events[asset].add_partitions(version))"
            )
        for version in versions:
            if problem := cfg.version_problem(version):
                raise ValueError(f"{cfg.pipeline.name}: {problem}")
        log.warning(
            "DEPRECATED: the catalog version in an asset event's extra (catalog_version=%s). Publish it as the "
            "event's partition_key instead; this DAG republishes it with that key so %s runs it",
            ", ".join(versions),
            cfg.pipeline.name,
        )
        ctx["outlet_events"][asset].add_partitions(versions)
        return versions

    with DAG(
        dag_id=republisher_id(cfg),
        description=f"Deprecated: republishes {cfg.catalog_asset} events naming the version in their extra",
        schedule=asset,
        start_date=datetime.fromisoformat(cfg.start_date).replace(tzinfo=UTC),
        catchup=False,
        tags=["llm-eval-publisher"],
        doc_md=__doc__,
    ) as dag:
        republish()
    return dag
