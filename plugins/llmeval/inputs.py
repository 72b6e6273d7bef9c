"""A run's inputs as local files: the dataset of a catalog version and a model's provided
outputs, from include/data, a local path or the object store."""

from __future__ import annotations

from pathlib import Path

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.runtime import resolve_data_path


def dataset_file(cfg: EvalConfig, location: str, scratch: Path, name: str = "dataset-source.jsonl") -> Path:
    """A local file with the dataset: include/data, a local path, or a copy of a remote object,
    read through the config's AWS connection (`sagemaker.aws_conn_id`) unless the URL names one
    (`s3://conn_id@bucket/key`)."""
    if "://" in location and not location.startswith("file://"):
        from airflow.sdk import ObjectStoragePath

        named = "@" in location.split("://", 1)[1].split("/", 1)[0]
        remote = (
            ObjectStoragePath(location) if named else ObjectStoragePath(location, conn_id=cfg.sagemaker.aws_conn_id)
        )
        return store.download(remote, scratch / name)
    return resolve_data_path(location)


def outputs_file(cfg: EvalConfig, model: str, catalog_version: str, scratch: Path) -> Path:
    """A local file with a model's provided outputs (its outputs_location, this catalog version's)."""
    location = (cfg.model(model).outputs_location or "").replace("{catalog_version}", catalog_version)
    return dataset_file(cfg, location, scratch, f"outputs-{store.safe_segment(model)}.jsonl")
