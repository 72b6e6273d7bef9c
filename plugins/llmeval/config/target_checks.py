"""What a config's target can and cannot run, checked at load before any resource exists:
local models and fine-tune parameters on the local target, algorithms that need the Hugging
Face Hub when offline, PromptStereotyping's inputs, one pool per instance type."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from llmeval.algorithms import ALGORITHMS, offline_algorithms
from llmeval.config.errors import FieldProblem
from llmeval.config.inspect_tasks import check_arguments, parse_task, read_task
from llmeval.contracts import Api, ModelKind, Provider
from llmeval.runtime import algorithms_dir, resolve_data_path
from llmeval.store import ARTIFACTS_URL_ENV, check_url

if TYPE_CHECKING:
    from llmeval.config.schema import EvalConfig

LOCAL_MODELS = ("smollm2-135m-instruct",)
GATED_FAMILIES = ("meta-textgeneration", "meta-vlm", "meta-textgenerationneuron")  # JumpStart's Llama: EULA-gated
LOCAL_HYPERPARAMETERS = {"learning_rate", "max_steps", "batch_size", "lora_rank", "seed"}


def check_target(cfg: EvalConfig) -> None:
    """Raise FieldProblem for the first thing the config's target cannot run."""
    if cfg.target == "local":
        _check_local_models(cfg)
    else:
        _check_eulas(cfg)
        _check_urls_reachable(cfg)
    if cfg.sagemaker.pool_prefix:
        _check_one_pool_per_kind(cfg)
    _check_algorithms_can_run(cfg)
    _check_inspect_tasks(cfg)
    _check_provided_files(cfg)
    _check_label_files(cfg)
    _check_store_of_the_environment(cfg)


def _check_local_models(cfg: EvalConfig) -> None:
    for key, i, model in cfg.listed_models():
        if model.kind in (ModelKind.PROVIDED, ModelKind.OPENAI_COMPATIBLE):  # nothing to serve here
            continue
        if model.model_provider not in (None, Provider.LOCAL):
            raise FieldProblem(
                (key, i, "model_provider"),
                "the local target serves local models and calls OpenAI-compatible ones; Bedrock and JumpStart "
                "models need the SageMaker target",
            )
        extra = set((model.finetuning.parameters.model_extra or {}) if model.finetuning else ())
        if extra - LOCAL_HYPERPARAMETERS:
            raise FieldProblem(
                (key, i, "finetuning", "parameters", sorted(extra - LOCAL_HYPERPARAMETERS)[0]),
                f"the local fine-tune does not know this parameter; it accepts the seed's keys and "
                f"{', '.join(sorted(LOCAL_HYPERPARAMETERS))}",
            )
        if model.model_id not in LOCAL_MODELS:
            raise FieldProblem(
                (key, i, "model_id"),
                f"{model.model_id!r} is not a local model; expected one of {', '.join(LOCAL_MODELS)}",
            )


def _check_eulas(cfg: EvalConfig) -> None:
    """A model of a family JumpStart gates behind a EULA needs the config to accept it (the
    deploy step checks every other model against its spec before creating anything)."""
    for key, i, model in cfg.listed_models():
        gated = model.kind in ("foundation", "tuned") and model.model_id.startswith(GATED_FAMILIES)
        if gated and not model.eula_accepted:
            raise FieldProblem(
                (key, i, "accept_eula"),
                f"{model.model_id} is gated behind its end-user license agreement (EULA): read it, then accept it "
                "with accept_eula: true on the model (or evaluation_config.custom_attributes.accept_eula: true)",
            )


def _check_urls_reachable(cfg: EvalConfig) -> None:
    """An OpenAI-compatible model is asked from the Processing job: with no internet access
    (hub_access false) the job reaches a URL only through a VPC of the config's."""
    if cfg.sagemaker.hub_access or cfg.sagemaker.security.subnets:
        return
    for key, i, model in cfg.listed_models():
        if model.kind == ModelKind.OPENAI_COMPATIBLE and (key == "models" or model in cfg.judged_by):
            raise FieldProblem(
                (key, i, "model_provider"),
                "the evaluation's Processing job has no internet access (sagemaker.hub_access: false) and no VPC "
                "(sagemaker.security.subnets), so it cannot reach an OpenAI-compatible URL: give the subnets and "
                "security groups of a VPC that routes to it, or set hub_access: true",
            )


def _check_one_pool_per_kind(cfg: EvalConfig) -> None:
    deployed = {
        "foundation models": [m for m in cfg.models if m.kind == "foundation"],
        "tuned models": [m for m in cfg.models if m.kind == "tuned"],
        "judges": [j for j in cfg.judged_by if j.deploys],
    }
    for kind, models in deployed.items():
        types = {m.deployment_config.instance_type for m in models}
        if len(types) > 1:
            raise FieldProblem(
                ("sagemaker", "pool_prefix"),
                f"pools are per instance type, and the {kind} use several ({', '.join(sorted(types))}); "
                "split them into configs by instance type or drop pool_prefix",
            )


def _check_inspect_tasks(cfg: EvalConfig) -> None:
    """An Inspect task: its file's @task function and arguments, read from the source; an
    inspect_evals task downloads its dataset, so it needs the Hub on SageMaker; a task that hands
    the model tools needs a model said to take them, and a model asked through a content template
    (one prompt) answers single-turn tasks only."""
    for i, section in enumerate(cfg.algorithms):
        if not section.is_inspect:
            continue
        ref = parse_task(section.options["task"])
        if ref.file is None:
            if cfg.target != "local" and not cfg.sagemaker.hub_access:
                raise FieldProblem(
                    ("algorithms", i, "task"),
                    f"{ref.spec} downloads its dataset from the Hugging Face Hub at run time, and the Processing "
                    "job has no internet access (sagemaker.hub_access: false): set hub_access: true, or run the "
                    "task from a file in include/algorithms over data shipped beside it",
                )
            continue
        path = algorithms_dir() / ref.file
        if not path.is_file():
            raise FieldProblem(
                ("algorithms", i, "task"), f"no task file {path} (task files live in include/algorithms)"
            )
        try:
            source = read_task(path, ref.name)
            check_arguments(path, ref.name, source, section.options.get("task_args", {}))
        except ValueError as exc:
            field = "task_args" if "has no parameter" in str(exc) else "task"
            raise FieldProblem(("algorithms", i, field), str(exc)) from None
        for j, model in enumerate(cfg.models):
            if model.outputs_location:
                continue  # refused with every algorithm that asks the model
            if source.uses_tools and not model.evaluation_config.tools:
                raise FieldProblem(
                    ("models", j, "evaluation_config", "tools"),
                    f"{path}:{source.line}: {ref.name} hands the model tools, and {model.name} is not said to "
                    "take them: set tools: true for a model whose server answers OpenAI tool calls (api: messages)",
                )
            if source.multi_turn and model.api == Api.INVOKE:
                raise FieldProblem(
                    ("models", j, "evaluation_config", "api"),
                    f"{ref.spec} asks the model more than once in a conversation (multi-turn), and {model.name} "
                    "is asked through a content template, one prompt per request: give it api: messages "
                    "(SageMaker's Messages API, OpenAI-compatible) or converse (Bedrock)",
                )


def _check_algorithms_can_run(cfg: EvalConfig) -> None:
    """Hub downloads when offline, and PromptStereotyping without sentence pairs or a
    log-probability path."""
    offline = cfg.target == "local" or not cfg.sagemaker.hub_access
    where = "on the local target" if cfg.target == "local" else "with sagemaker.hub_access false"
    for i, section in enumerate(cfg.algorithms):
        spec = ALGORITHMS.get(section.name)
        reason = spec.hub_download if spec and offline else None
        if reason:
            raise FieldProblem(
                ("algorithms", i, "algorithm"),
                f"{section.name}: {reason}, so it cannot run {where}; "
                f"algorithms that run offline: {', '.join(offline_algorithms())}",
            )
        if section.name != "PromptStereotyping":
            continue
        if not cfg.dataset.sent_more_input_key:
            raise FieldProblem(
                ("dataset", "sent_more_input_key"),
                "PromptStereotyping compares sentence pairs: name the dataset columns with "
                "sent_more_input_key and sent_less_input_key",
            )
        for j, model in enumerate(cfg.models):
            if not model.evaluation_config.log_probability:
                raise FieldProblem(
                    ("models", j, "evaluation_config", "log_probability"),
                    "PromptStereotyping needs each sentence's log probability: give the JMESPath to it in "
                    "the response, e.g. sum([0].details.prefill[1:].logprob) for TGI-based endpoints",
                )


def _check_provided_files(cfg: EvalConfig) -> None:
    """A model's outputs on this machine (not in object storage, not per catalog version)
    must exist when the config loads, not only when the run reaches it."""
    for i, model in enumerate(cfg.models):
        location = model.outputs_location
        if not location or "{catalog_version}" in location or ("://" in location and not location.startswith("file:")):
            continue
        path = resolve_data_path(location)
        if not path.is_file():
            raise FieldProblem(
                ("models", i, "outputs_location"),
                f"no file at {path} (a relative path is under include/data; a per-version file uses "
                "{catalog_version}; object storage: s3://bucket/key)",
            )


def _check_label_files(cfg: EvalConfig) -> None:
    """People's labels on this machine (a rubric's ratings, Pairwise's preferences) must exist and
    read as labels when the config loads."""
    from llmeval.agreement import LabelError, read_labels, read_preferences

    files: list[tuple[tuple[str | int, ...], str, tuple[int, ...] | None]] = []  # None: preferences
    for i, section in enumerate(cfg.algorithms):
        if section.compares_models and section.options.get("labels"):
            files.append((("algorithms", i, "labels"), section.options["labels"], None))
        elif section.asks_judge and not section.compares_models:
            files += [
                (("algorithms", i, "rubrics", k, "labels"), rubric.labels, rubric.scale)
                for k, rubric in enumerate(section.rubrics)
                if rubric.labels
            ]
    for field, location, scale in files:
        if "://" in location and not location.startswith("file:"):
            continue
        path = resolve_data_path(location)
        try:
            text = path.read_text(encoding="utf-8")
            if scale is None:
                read_preferences(str(path), text, None)
            else:
                read_labels(str(path), text, scale, None)
        except OSError as exc:
            raise FieldProblem(field, f"cannot read {path}: {exc}") from None
        except LabelError as exc:
            raise FieldProblem(field, str(exc)) from None


def _check_store_of_the_environment(cfg: EvalConfig) -> None:
    """The run store the environment names (when the config names none) must be a store URL:
    refused at load, not at the first task."""
    url = os.environ.get(ARTIFACTS_URL_ENV)
    if cfg.artifacts_url is None and url:
        try:
            check_url(url)
        except ValueError as exc:
            raise FieldProblem(("artifacts_url",), f"the environment's {ARTIFACTS_URL_ENV}: {exc}") from None
