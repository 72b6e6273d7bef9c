"""Where a model is served and how to ask it (`Target`); and where a run's OpenAI-compatible
models are, handed to the evaluation in the environment (never on its command line):
`LLMEVAL_SERVED_AT`, a JSON object of model name to {base_url, api_key | api_key_secret_arn}.
A SageMaker Processing job gets the secret's ARN, not the key (a job's environment is
readable by anyone who may describe it), and reads the key from Secrets Manager with its
execution role."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from llmeval.contracts import Api

ENV = "LLMEVAL_SERVED_AT"


@dataclass(frozen=True)
class ServedAt:
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    api_key_secret_arn: str | None = None

    def key(self, region: str | None) -> str | None:
        """The API key: given, or read from Secrets Manager (a secret string, or JSON with `api_key`)."""
        if self.api_key or not self.api_key_secret_arn:
            return self.api_key
        import boto3

        secret = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=self.api_key_secret_arn)
        text = secret["SecretString"]
        try:
            found = json.loads(text)
        except ValueError:
            return text
        return str(found["api_key"]) if isinstance(found, dict) and "api_key" in found else text


def encode(served: Mapping[str, ServedAt]) -> str:
    return json.dumps({name: {k: v for k, v in asdict(at).items() if v} for name, at in served.items()})


def from_env(environ: Mapping[str, str] = os.environ) -> dict[str, ServedAt]:
    raw = environ.get(ENV)
    return {name: ServedAt(**at) for name, at in json.loads(raw).items()} if raw else {}


@dataclass
class Target:
    """Where and how to call the model."""

    endpoint_name: str  # the SageMaker endpoint, or the Bedrock model id
    model_identity: str
    output_path: str
    content_template: Any
    inference_parameters: dict[str, Any]
    custom_attributes: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    max_concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 5
    provider: str = "sagemaker"  # "sagemaker" (an endpoint), "bedrock" or "openai_compatible"
    api: Api = Api.INVOKE
    system_prompt: str | None = None
    tools: bool = False  # its server takes OpenAI tool definitions and answers with tool calls
    model_name: str | None = None  # the "model" of an OpenAI-compatible request
    base_url: str | None = None  # an OpenAI-compatible server's, e.g. https://llm.example.com/v1
    api_key: str | None = field(default=None, repr=False)
    log_probability_path: str | None = None  # JMESPath to a sentence's log probability
    log_probability_parameters: dict[str, Any] = field(default_factory=dict)
