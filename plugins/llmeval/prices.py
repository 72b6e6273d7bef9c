"""What a model's resources cost: the shipped price table (include/instance_prices.yaml),
a config's overrides, and the billed time of an endpoint, a Processing job or a training
job from the timestamps the SageMaker API reports."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmeval.results import ResourceUsage

TABLE_NAME = "instance_prices.yaml"


@dataclass(frozen=True)
class PriceTable:
    """On-demand USD per instance-hour, with the region and date the figures are for."""

    usd_per_hour: dict[str, float]
    region: str
    taken: str

    def hourly(self, instance_type: str) -> float | None:
        return self.usd_per_hour.get(instance_type)

    def with_overrides(self, overrides: dict[str, float]) -> PriceTable:
        return PriceTable({**self.usd_per_hour, **overrides}, self.region, self.taken)


def read_table(path: Path) -> PriceTable:
    """The price table at `path`; a ValueError naming the file and the field when it is malformed."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with region, taken and usd_per_hour")
    for key in ("region", "taken"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{path}: {key}: expected a string, got {data.get(key)!r}")
    prices = data.get("usd_per_hour")
    if not isinstance(prices, dict):
        raise ValueError(f"{path}: usd_per_hour: expected a mapping of instance type to USD per hour")
    for instance_type, price in prices.items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise ValueError(f"{path}: usd_per_hour.{instance_type}: expected a number >= 0, got {price!r}")
    return PriceTable({str(k): float(v) for k, v in prices.items()}, data["region"], data["taken"])


@functools.cache
def shipped_table() -> PriceTable:
    from llmeval.runtime import include_dir

    return read_table(include_dir() / TABLE_NAME)


def table_for(overrides: dict[str, float]) -> PriceTable:
    """The shipped table with a config's `sagemaker.instance_prices` on top."""
    return shipped_table().with_overrides(overrides)


def _utc(value: datetime | str) -> datetime:
    when = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def usage(
    resource: str,
    name: str,
    instance_type: str,
    instance_count: int,
    started: datetime | str,
    ended: datetime | str,
    usd_per_hour: float | None,
    seconds: float | None = None,
) -> ResourceUsage:
    """A resource's billed time, to the millisecond (`ended - started` unless the API states the billed seconds)
    and cost: seconds x instances x hourly price."""
    start, end = _utc(started), _utc(ended)
    billed = round(max(0.0, (end - start).total_seconds()) if seconds is None else float(seconds), 3)
    usd = None if usd_per_hour is None else round(billed / 3600 * usd_per_hour * instance_count, 6)
    return ResourceUsage(
        resource,
        name,
        instance_type,
        instance_count,
        start.isoformat(),
        end.isoformat(),
        billed,
        usd_per_hour,
        usd,
    )


def endpoint_usage(
    described: dict[str, Any], deleted_at: datetime, instance_type: str, instance_count: int, prices: PriceTable
) -> ResourceUsage:
    """An endpoint from its CreationTime (DescribeEndpoint) until it was deleted."""
    return usage(
        "endpoint",
        described["EndpointName"],
        instance_type,
        instance_count,
        described["CreationTime"],
        deleted_at,
        prices.hourly(instance_type),
    )


def processing_usage(job: dict[str, Any], cluster: dict[str, Any], prices: PriceTable) -> ResourceUsage:
    """A Processing job from ProcessingStartTime (else CreationTime) to ProcessingEndTime
    (else LastModifiedTime, else now: still running) of DescribeProcessingJob, on the instances of its request's
    `ProcessingResources.ClusterConfig`."""
    return usage(
        "processing job",
        job["ProcessingJobName"],
        cluster["InstanceType"],
        cluster["InstanceCount"],
        job.get("ProcessingStartTime") or job["CreationTime"],
        job.get("ProcessingEndTime") or job.get("LastModifiedTime") or datetime.now(UTC),
        prices.hourly(cluster["InstanceType"]),
    )


def training_usage(job: dict[str, Any], prices: PriceTable) -> ResourceUsage:
    """A training job's BillableTimeInSeconds when SageMaker states it, else its start to end
    (or to now while it runs) (DescribeTrainingJob)."""
    resources = job["ResourceConfig"]
    return usage(
        "training job",
        job["TrainingJobName"],
        resources["InstanceType"],
        resources["InstanceCount"],
        job.get("TrainingStartTime") or job["CreationTime"],
        job.get("TrainingEndTime") or job.get("LastModifiedTime") or datetime.now(UTC),
        prices.hourly(resources["InstanceType"]),
        seconds=job.get("BillableTimeInSeconds"),
    )
