"""A run's inputs as local files: the dataset of a catalog version and a model's provided
outputs, from include/data, a local path or the object store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.runtime import resolve_data_path


def _source(cfg: EvalConfig, location: str) -> Any:
    """Where a location is: an object-store path read through the config's AWS connection
    (`sagemaker.aws_conn_id`) unless the URL names one (`s3://conn_id@bucket/key`), else a local path
    (include/data, a local path or file://)."""
    if "://" in location and not location.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        named = "@" in location.split("://", 1)[1].split("/", 1)[0]
        return ObjectStoragePath(location) if named else ObjectStoragePath(location, conn_id=cfg.sagemaker.aws_conn_id)
    return resolve_data_path(location)


def _local(source: Any, scratch: Path, name: str) -> Path:
    """The source itself when it is on this machine, else a copy of it in `scratch`."""
    return source if isinstance(source, Path) else store.download(source, scratch / name)


def dataset_file(cfg: EvalConfig, location: str, scratch: Path, name: str = "dataset-source.jsonl") -> Path:
    """A local file with the dataset: the file itself, or a copy of a remote object."""
    return _local(_source(cfg, location), scratch, name)


def catalog_file(cfg: EvalConfig, version: str, scratch: Path) -> tuple[Path, float | None]:
    """A local file with one catalog version's dataset and when that version was written (its
    modification time, the order versions were published in). MissingCatalogVersion when no file is there."""
    location = cfg.dataset.input_data_location.replace("{catalog_version}", version)
    source = _source(cfg, location)
    try:
        modified = source.stat().st_mtime  # one request: a missing object raises here
    except FileNotFoundError as exc:
        raise MissingCatalogVersion(
            f"{cfg.pipeline.name}: catalog version {version!r} has no prompt catalog at {location} "
            f"(dataset.input_data_location {cfg.dataset.input_data_location}): publish the version's file "
            "before its run, or check the key"
        ) from exc
    return _local(source, scratch, "dataset-source.jsonl"), float(modified) if modified is not None else None


class MissingCatalogVersion(FileNotFoundError):
    """A run's catalog version has no file where the config's dataset location puts it."""


def outputs_file(cfg: EvalConfig, model: str, catalog_version: str, scratch: Path) -> Path:
    """A local file with a model's provided outputs (its outputs_location, this catalog version's)."""
    location = (cfg.model(model).outputs_location or "").replace("{catalog_version}", catalog_version)
    return dataset_file(cfg, location, scratch, f"outputs-{store.safe_segment(model)}.jsonl")
