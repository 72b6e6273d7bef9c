"""The local target's entry: what the DAG and the registry step ask of it."""

from __future__ import annotations

from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind, Step
from llmeval.registry import LocalRegistry
from llmeval.runtime import multi_host_executors
from llmeval.targets.base import JudgeSteps
from llmeval.targets.local import wiring


class LocalTarget:
    result_step = Step.EVALUATE

    def validate(self, cfg: EvalConfig) -> list[str]:
        """Refuse a local config under an executor with several hosts unless it names the
        queue of one worker (its servers are on 127.0.0.1 and stopped by PID)."""
        multi_host = multi_host_executors()
        if multi_host and not cfg.local.queue:
            return [
                f"the local target runs its model servers on the worker's 127.0.0.1 and stops them by PID, so a "
                f"model's deploy, evaluate and teardown must run on one host; the executor {multi_host[0]} runs "
                f"tasks on several hosts: set local.queue to a queue that one worker serves "
                f"(airflow celery worker --queues NAME), or use the SageMaker target"
            ]
        return []

    def model_steps(self, cfg: EvalConfig, model_name: Any, kind: ModelKind) -> None:
        wiring.model_steps(cfg, model_name, kind)

    def judge_steps(self, cfg: EvalConfig) -> JudgeSteps:
        return wiring.judge_steps(cfg)

    def registry(self, cfg: EvalConfig, run: Any) -> LocalRegistry:
        return LocalRegistry(store.registry_folder(cfg.artifacts_url))
