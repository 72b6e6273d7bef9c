"""The `Target` protocol: what a target contributes to the graph `llmeval.dag.graph` draws
(per-model steps, the judges' steps), where it registers, and what it refuses at load."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from llmeval.contracts import ModelKind, Step

if TYPE_CHECKING:
    from llmeval.config import EvalConfig
    from llmeval.registry import Registry
    from llmeval.taskrun import CurrentRun


class JudgeSteps(NamedTuple):
    """The judges' tasks of a run: the model groups run after `ready`; `compare` (Pairwise, or
    None) after every model's group; `teardown` last, whatever failed."""

    start: Any
    ready: Any
    compare: Any
    teardown: Any


class Target(Protocol):
    result_step: Step
    """The per-model task whose XCom is the model's result summary (results.json's content)."""

    def validate(self, cfg: EvalConfig) -> list[str]:
        """Problems with running `cfg` on this Airflow deployment (found at load, before any run)."""

    def model_steps(self, cfg: EvalConfig, model_name: Any, kind: ModelKind) -> None:
        """Add one model's tasks ([finetune ->] deploy -> evaluate -> teardown) to the current task group."""

    def judge_steps(self, cfg: EvalConfig) -> JudgeSteps:
        """The judges' tasks (deploy, compare, tear down)."""

    def registry(self, cfg: EvalConfig, run: CurrentRun) -> Registry:
        """The registry the selected model is registered in."""
