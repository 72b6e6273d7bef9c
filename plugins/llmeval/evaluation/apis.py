"""How a model is asked, per API (`llmeval.contracts.Api`): the conversation a record
becomes, the request body each API makes of it, and where the answer and its token counts
are in the response. Sending it is `llmeval.evaluation.transport`'s.

    invoke    the config's content template, PROMPT_PLACEHOLDER replaced by the prompt;
              the answer where the JMESPath `output` says
    messages  {"messages": [...], **parameters} -> choices[0].message.content, usage
    converse  Bedrock's Converse: messages, system, inferenceConfig -> output.message.content
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any

import jmespath

from llmeval.contracts import Api
from llmeval.evaluation.served import Target

PLACEHOLDER = "PROMPT_PLACEHOLDER"
INFERENCE_CONFIG = ("maxTokens", "temperature", "topP", "stopSequences")  # Converse's inferenceConfig keys


def render_prompt(template: str, model_input: str) -> str:
    """Fill the seed's `$feature` (or fmeval's `$model_input`) with the dataset input."""
    return string.Template(template).safe_substitute(feature=model_input, model_input=model_input)


@dataclass(frozen=True)
class Conversation:
    """What the model is asked: an optional system prompt and the turns, the user's last."""

    system: str | None
    turns: tuple[tuple[str, str], ...]  # (role, content)

    @property
    def text(self) -> str:
        """The prompt as one string: the user's message alone, else a line per turn."""
        if self.system is None and len(self.turns) == 1:
            return self.turns[0][1]
        lines = [f"system: {self.system}"] if self.system else []
        return "\n".join(lines + [f"{role}: {content}" for role, content in self.turns])


def conversation(template: Any, system: str | None, model_input: str) -> Conversation:
    """The conversation of one record: a string template is one user message; a message list
    keeps its turns; `$feature` is replaced in each."""
    if isinstance(template, str):
        return Conversation(system, (("user", render_prompt(template, model_input)),))
    turns = tuple((_field(m, "role"), render_prompt(_field(m, "content"), model_input)) for m in template)
    return Conversation(system, turns)


def _field(message: Any, name: str) -> str:
    return str(message[name] if isinstance(message, dict) else getattr(message, name))


@dataclass(frozen=True)
class Answer:
    text: str
    input_tokens: int
    output_tokens: int
    exact: bool  # token counts from the response (else word counts)


def build_payload(
    content_template: Any, prompt: str, parameters: dict[str, Any], provider: str = "sagemaker"
) -> dict[str, Any]:
    """An invoke request: the content template with the prompt in place of the placeholder.
    SageMaker (JumpStart) bodies are {"inputs": ..., "parameters": ...}; a Bedrock template
    is the whole body, and inference parameters are merged into it."""

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return node.replace(PLACEHOLDER, prompt)
        if isinstance(node, list):
            return [fill(x) for x in node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    if provider == "bedrock":
        body = fill(content_template)
        if not isinstance(body, dict):
            raise ValueError("a Bedrock content_template must be the whole JSON request body (an object)")
        return {**body, **parameters}
    payload: dict[str, Any] = {"inputs": fill(content_template)}
    if parameters:
        payload["parameters"] = parameters
    return payload


def request(target: Target, asked: Conversation, parameters: dict[str, Any]) -> dict[str, Any]:
    """The request body (for Converse: the call's parameters) of one conversation."""
    if target.api == Api.INVOKE:
        return build_payload(target.content_template, asked.text, parameters, target.provider)
    if target.api == Api.MESSAGES:
        system = [{"role": "system", "content": asked.system}] if asked.system else []
        body: dict[str, Any] = {"messages": system + [{"role": r, "content": c} for r, c in asked.turns]}
        if target.provider == "openai_compatible":
            body["model"] = target.model_name
        return {**body, **parameters}
    call: dict[str, Any] = {
        "modelId": target.endpoint_name,
        "messages": [{"role": r, "content": [{"text": c}]} for r, c in asked.turns],
    }
    if asked.system:
        call["system"] = [{"text": asked.system}]
    inference = {k: v for k, v in parameters.items() if k in INFERENCE_CONFIG}
    extra = {k: v for k, v in parameters.items() if k not in INFERENCE_CONFIG}
    if inference:
        call["inferenceConfig"] = inference
    if extra:
        call["additionalModelRequestFields"] = extra
    return call


def read(target: Target, response: Any, prompt: str) -> Answer:
    """The answer and token counts in a response of the target's API."""
    if target.api == Api.INVOKE:
        text = extract_output(target.output_path, response)
        return Answer(text, *_invoke_tokens(response, prompt, text))
    if target.api == Api.MESSAGES:
        text = _found("choices[0].message.content", response)
        usage = response.get("usage") or {}
        counts = usage.get("prompt_tokens"), usage.get("completion_tokens")
    else:
        blocks = _found("output.message.content", response, list)
        text = "".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)
        usage = response.get("usage") or {}
        counts = usage.get("inputTokens"), usage.get("outputTokens")
    if isinstance(counts[0], int) and isinstance(counts[1], int):
        return Answer(text, counts[0], counts[1], True)
    return Answer(text, len(prompt.split()), len(text.split()), False)


def _found(path: str, response: Any, kind: type = str) -> Any:
    value = jmespath.search(path, response)
    if not isinstance(value, kind):
        raise ValueError(f"no {path} in the response {json.dumps(response)[:300]}")
    return value


def extract_output(output_path: str, response: Any) -> str:
    value = jmespath.search(output_path, response)
    if value is None:
        raise ValueError(f"output path {output_path!r} found nothing in the response {json.dumps(response)[:300]}")
    return value if isinstance(value, str) else json.dumps(value)


def _invoke_tokens(response: Any, prompt: str, output: str) -> tuple[int, int, bool]:
    """(input tokens, output tokens, exact?): from the response's details, else word counts."""
    first = response[0] if isinstance(response, list) and response else response
    details = first.get("details") if isinstance(first, dict) else None
    if isinstance(details, dict) and "generated_tokens" in details:
        return int(details.get("prompt_tokens", 0)), int(details["generated_tokens"]), True
    usage = first.get("usage") if isinstance(first, dict) else None  # Bedrock (Anthropic messages)
    if isinstance(usage, dict) and "output_tokens" in usage:
        return int(usage.get("input_tokens", 0)), int(usage["output_tokens"]), True
    return len(prompt.split()), len(output.split()), False
