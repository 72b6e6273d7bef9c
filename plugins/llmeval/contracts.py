"""The names that cross modules: task ids, task group ids, XCom keys, model kinds and targets.

Every task id another module pulls by XCom, every group id and every XCom key other than
Airflow's `return_value` is declared here once. Nothing here imports Airflow or the rest of
the package, so every layer may import it.
"""

from __future__ import annotations

from enum import StrEnum


class TargetName(StrEnum):
    """Where a config's models are deployed, evaluated and registered."""

    LOCAL = "local"
    SAGEMAKER = "sagemaker"


class Provider(StrEnum):
    """Who serves a model (`model_provider`)."""

    JUMPSTART = "jumpstart"  # a SageMaker endpoint the pipeline deploys (the SageMaker target's default)
    LOCAL = "local"  # the local target's model server (its default)
    BEDROCK = "bedrock"  # Amazon Bedrock: called, nothing deployed
    OPENAI_COMPATIBLE = "openai_compatible"  # any /chat/completions URL: called, nothing deployed


class Api(StrEnum):
    """How a model is asked (`evaluation_config.api`)."""

    INVOKE = "invoke"  # the config's content template, the answer where its JMESPath `output` says
    MESSAGES = "messages"  # OpenAI-style chat: {"messages": [...]} -> choices[0].message.content
    CONVERSE = "converse"  # Bedrock's Converse: one request shape for every Bedrock model


class ModelKind(StrEnum):
    """What a model entry needs from the pipeline (from its keys, see `ModelSection.kind`)."""

    FOUNDATION = "foundation"  # deployed as it is
    TUNED = "tuned"  # fine-tuned, then deployed
    BEDROCK = "bedrock"  # served by Bedrock: nothing to deploy
    OPENAI_COMPATIBLE = "openai_compatible"  # served behind an OpenAI-compatible URL: nothing to deploy
    PROVIDED = "provided"  # its outputs are given: nothing to deploy or ask

    @property
    def deploys(self) -> bool:
        """Whether the pipeline serves the model (an endpoint or a local server)."""
        return self in (ModelKind.FOUNDATION, ModelKind.TUNED)

    @property
    def calls(self) -> bool:
        """Whether the model is served elsewhere and called (Bedrock, an OpenAI-compatible URL)."""
        return self in (ModelKind.BEDROCK, ModelKind.OPENAI_COMPATIBLE)

    @property
    def group_id(self) -> str:
        """The mapped task group of this kind's models."""
        return _GROUPS[self]

    @property
    def split_task(self) -> str:
        """The task that hands on the planned models of this kind (the group's map input)."""
        return f"{self.value}_models"

    def task_in_group(self, step: str) -> str:
        """The id of a per-model step inside this kind's group."""
        return f"{self.group_id}.{step}"

    @classmethod
    def of_group(cls, group_id: str) -> ModelKind | None:
        return next((kind for kind, group in _GROUPS.items() if group == group_id), None)


_GROUPS = {
    ModelKind.FOUNDATION: "model",
    ModelKind.TUNED: "tuned_model",
    ModelKind.BEDROCK: "bedrock_model",
    ModelKind.OPENAI_COMPATIBLE: "openai_model",
    ModelKind.PROVIDED: "provided_model",
}


class TaskId(StrEnum):
    """Run-level tasks (one per run) that other modules name."""

    PREPROCESS = "preprocess"
    PREFLIGHT = "preflight"
    PLAN = "plan"
    PREPARE_JUDGES = "prepare_judges"
    DEPLOY_JUDGES = "deploy_judges"
    TEARDOWN_JUDGES = "teardown_judges"
    COMPARE = "compare"
    SELECT = "select"
    REVIEW = "review"
    REGISTER = "register"
    REPORT = "report"
    VERDICT = "verdict"
    REPUBLISH = "republish"  # the deprecated catalog-event DAG's one task (dag/catalog_events.py)


JUDGE_SETUP_TASKS = (TaskId.PREPARE_JUDGES, TaskId.DEPLOY_JUDGES)  # before every model's group


class Step(StrEnum):
    """Per-model tasks inside a kind's group (`ModelKind.task_in_group`)."""

    FINETUNE = "finetune"
    PREPARE_TRAINING = "prepare_training_job"
    PREPARE = "prepare"
    DEPLOY = "deploy"
    EVALUATE = "evaluate"
    COLLECT = "collect_results"
    TEARDOWN = "teardown"
    TEARDOWN_ENDPOINT = "teardown_endpoint"


class XComKey(StrEnum):
    RETURN = "return_value"
    CONTAINER = "container"  # SageMaker `prepare`: the model's container, for the registry
