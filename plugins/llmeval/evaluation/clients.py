"""How the evaluation commands reach the models they ask: the run's config, a model's
`Target` (endpoint, templates, limits) and a client for each judge."""

from __future__ import annotations

import os
from pathlib import Path

from llmeval.config import EvalConfig, ModelSection, load_config
from llmeval.contracts import Provider
from llmeval.evaluation import served
from llmeval.evaluation.generate import ModelClient, ResponseCache, Target
from llmeval.evaluation.job_args import JudgeEndpoint


def read_config(path: Path) -> EvalConfig:
    """The run's resolved config.json, or a config YAML."""
    if path.suffix == ".json":
        return EvalConfig.model_validate_json(path.read_text(encoding="utf-8"))
    return load_config(path)


def model_target(
    model: ModelSection, endpoint_name: str | None, endpoint_url: str | None, identity: str | None, region: str | None
) -> Target:
    """How to ask `model`: its endpoint (or Bedrock model, or OpenAI-compatible URL from the
    environment), API, templates and limits."""
    ev = model.evaluation_config
    bedrock = model.model_provider == Provider.BEDROCK
    region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    at = None
    if model.model_provider == Provider.OPENAI_COMPATIBLE:
        at = served.from_env().get(model.name)
        if at is None:
            raise RuntimeError(f"{model.name}: the task gave no base URL for its connection {model.connection_id!r}")
    return Target(
        endpoint_name=model.model_id if bedrock else (endpoint_name or model.endpoint_name or model.name),
        model_identity=identity or f"{model.model_id}@{model.model_version}",
        output_path=ev.output,
        content_template=ev.content_template,
        inference_parameters=ev.inference_parameters,
        custom_attributes=",".join(
            f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in ev.custom_attributes.items()
        )
        or None,
        endpoint_url=endpoint_url,
        region=region,
        max_concurrency=model.max_concurrency,
        timeout_s=ev.request_timeout_s,
        max_retries=ev.max_retries,
        provider=str(model.model_provider) if model.kind.calls else "sagemaker",
        api=model.api,
        system_prompt=ev.system_prompt,
        tools=ev.tools,
        model_name=model.model_id,
        base_url=at.base_url if at else None,
        api_key=at.key(region) if at else None,
        log_probability_path=ev.log_probability,
        log_probability_parameters=ev.log_probability_parameters,
    )


def judge_clients(
    cfg: EvalConfig, given: tuple[JudgeEndpoint, ...], region: str | None, cache: ResponseCache
) -> dict[str, ModelClient]:
    """A `ModelClient` for each judge the config's algorithms ask, at the endpoints `given`
    (a Bedrock judge needs none), by judge name."""
    endpoints = {j.name: j for j in given}
    clients = {}
    for judge in cfg.judged_by:
        at = endpoints.get(judge.name)
        target = model_target(judge, at.endpoint_name if at else None, at.url if at else None, None, region)
        clients[judge.name] = ModelClient(target, judge.evaluation_config.prompt_template, cache)
    return clients
