"""Targets: where a model is deployed, evaluated and registered. One module per target,
each with a class that implements `Target`; `get` imports only the one a config names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmeval.config import EvalConfig
    from llmeval.registry import Registry
    from llmeval.tasks import CurrentRun


class Target(Protocol):
    result_task: str
    """The per-model task whose XCom is the model's result summary (results.json's content)."""

    def model_steps(self, cfg: EvalConfig, model_name: Any, kind: str) -> None:
        """Add one model's tasks ([finetune ->] deploy -> evaluate -> teardown) to the current task group."""

    def registry(self, cfg: EvalConfig, run: CurrentRun) -> Registry:
        """The registry the selected model is registered in."""

    def judge_steps(self, cfg: EvalConfig, after: Any) -> tuple[Any, Any, Any]:
        """(deploy the judges, after `after`; compare the models pairwise or None; tear the
        judges down): the model groups run after the first."""

    def validate(self, cfg: EvalConfig) -> list[str]:
        """Problems with running `cfg` on this Airflow deployment (found at load, before any run)."""


def get(name: str) -> Target:
    if name == "local":
        from llmeval.targets.local import LocalTarget

        return LocalTarget()
    from llmeval.targets.sagemaker import SageMakerTarget

    return SageMakerTarget()
