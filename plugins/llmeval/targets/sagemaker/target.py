"""The SageMaker target's entry: what the DAG and the registry step ask of it."""

from __future__ import annotations

import os
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind, Step
from llmeval.registry import SageMakerModelRegistry
from llmeval.runtime import multi_host_executors
from llmeval.targets.base import JudgeSteps
from llmeval.targets.sagemaker import requests as req
from llmeval.targets.sagemaker import wiring
from llmeval.targets.sagemaker.settings import hook, s3_hook, s3_prefix


class SageMakerTarget:
    result_step = Step.COLLECT

    def validate(self, cfg: EvalConfig) -> list[str]:
        """Any executor works (every step's state is in AWS, XCom or the run store) as long as
        the run store is shared: under an executor with several hosts, the implicit local
        folder is refused (an explicit file:// URL is taken to be a shared mount)."""
        multi_host = multi_host_executors()
        if multi_host and not (cfg.artifacts_url or os.environ.get(store.ARTIFACTS_URL_ENV)):
            return [
                f"the executor {multi_host[0]} runs tasks on several hosts, and the run store is this host's "
                f"folder {store.configured_url()}: set {store.ARTIFACTS_URL_ENV} (or the config's artifacts_url) "
                "to s3://[conn_id@]bucket/prefix, or to a file:// path every worker mounts"
            ]
        return []

    def model_steps(self, cfg: EvalConfig, model_name: Any, kind: ModelKind) -> None:
        wiring.model_steps(cfg, model_name, kind)

    def judge_steps(self, cfg: EvalConfig) -> JudgeSteps:
        return wiring.judge_steps(cfg)

    def registry(self, cfg: EvalConfig, run: Any) -> SageMakerModelRegistry:
        """SageMaker Model Registry; a model's container is what its `prepare` handed on by XCom."""
        return SageMakerModelRegistry(
            hook(cfg).conn,
            s3_hook(cfg).get_conn(),
            s3_prefix(cfg),
            lambda model: wiring.container_of(cfg, model),
            req.s3_encryption(cfg),
        )
