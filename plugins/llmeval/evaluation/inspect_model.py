"""The model provider the package registers with Inspect (`llmeval/<model>`): one of the run's
models, asked through its `ModelClient`.

Inspect's chat messages become the model's conversation (system prompt and turns) and go through
the same client as the generate stage, so the response cache, the adaptive concurrency limit,
retries and token accounting apply unchanged. A model asked through a content template (one
prompt) answers single-turn conversations only; tools go in OpenAI's form to a model said to take
them (`evaluation_config.tools`, api messages).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inspect_ai.model import ChatMessage, GenerateConfig, ModelAPI, ModelOutput, ModelUsage, modelapi
from inspect_ai.model._openai import (
    chat_choices_from_openai,
    messages_to_openai,
    model_output_from_openai,
    openai_chat_tool_choice,
    openai_chat_tools,
)
from inspect_ai.tool import ToolChoice, ToolInfo
from openai.types.chat import ChatCompletion

from llmeval.contracts import Api
from llmeval.evaluation import apis
from llmeval.evaluation.generate import ModelClient

PROVIDER = "llmeval"
# Inspect's generation settings, under the names each API gives them
SETTINGS = {
    Api.INVOKE: {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p", "stop_seqs": "stop"},
    Api.MESSAGES: {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "stop_seqs": "stop"},
    Api.CONVERSE: {
        "max_tokens": "maxTokens",
        "temperature": "temperature",
        "top_p": "topP",
        "stop_seqs": "stopSequences",
    },
}
CLIENTS: dict[str, ModelClient] = {}  # Inspect model name -> the client that asks it
ANSWERS: dict[str, list[dict[str, Any]]] = {}  # what each model answered Inspect (for tokens and cost)


class Refused(ValueError):
    """A conversation this model cannot be asked (tools, several turns through one prompt)."""


def conversation(messages: list[ChatMessage], system_prompt: str | None, api: Api, model: str) -> apis.Conversation:
    """Inspect's messages as the model's conversation: its system messages after the config's
    system prompt, then the user and assistant turns."""
    systems = [system_prompt] if system_prompt else []
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message.content, str) and any(c.type != "text" for c in message.content):
            raise Refused(f"{model} is sent text only, and the task's {message.role} message holds other content")
        if message.role == "system":
            systems.append(message.text)
        elif message.role in ("user", "assistant"):
            turns.append((message.role, message.text))
        else:
            raise Refused(f"{model} is handed no tools, and the task's conversation holds a tool's result")
    if api == Api.INVOKE and len(turns) > 1:
        raise Refused(
            f"{model} is asked through a content template (one prompt), and the task's conversation has "
            f"{len(turns)} turns: give the model api: messages or converse"
        )
    return apis.Conversation("\n\n".join(systems) or None, tuple(turns))


def parameters(client: ModelClient, config: GenerateConfig) -> dict[str, Any]:
    """The model's inference parameters, with the task's generation settings in the API's names
    (a Bedrock content template's body is the model's own: left as configured)."""
    target = client.target
    names = {} if target.api == Api.INVOKE and target.provider != "sagemaker" else SETTINGS[target.api]
    chosen = {names[k]: v for k, v in config.model_dump(exclude_none=True).items() if k in names}
    return {**target.inference_parameters, **chosen}


@modelapi(name=PROVIDER)
def _provider() -> type[ModelAPI]:
    return ProjectModel


class ProjectModel(ModelAPI):
    """Inspect's model: one of the run's models, asked through its `ModelClient`."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config)
        if model_name not in CLIENTS:
            raise ValueError(f"{PROVIDER}/{model_name}: no such model in this evaluation")
        self.pool = ThreadPoolExecutor(self.client.target.max_concurrency, thread_name_prefix="inspect")

    @property
    def client(self) -> ModelClient:
        """The model's client of the current evaluation (Inspect keeps one instance per model name)."""
        return CLIENTS[self.model_name]

    def max_connections(self) -> int:
        return self.client.target.max_concurrency

    def close(self) -> None:
        self.pool.shutdown(wait=False)

    async def generate(
        self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice, config: GenerateConfig
    ) -> ModelOutput:
        if tools or any(m.role == "tool" or getattr(m, "tool_calls", None) for m in input):
            return await self._with_tools(input, tools, tool_choice, config)
        target = self.client.target
        asked = conversation(input, target.system_prompt, target.api, self.model_name)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            self.pool, self.client.ask_conversation, asked, parameters(self.client, config)
        )
        ANSWERS[self.model_name].append(answer)
        output = ModelOutput.from_content(self.model_name, answer["model_output"])
        output.usage = ModelUsage(
            input_tokens=answer["input_tokens"],
            output_tokens=answer["output_tokens"],
            total_tokens=answer["input_tokens"] + answer["output_tokens"],
        )
        output.time = answer["latency_ms"] / 1000
        return output

    async def _with_tools(
        self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice, config: GenerateConfig
    ) -> ModelOutput:
        """A conversation with tools, in OpenAI's form (the Messages API of SageMaker's LLM
        containers and of OpenAI-compatible servers): the request made with Inspect's own
        conversion, sent through the client, the answer's tool calls read back the same way."""
        target = self.client.target
        if not target.tools:
            raise Refused(
                f"{self.model_name} is not said to take tools (evaluation_config.tools); the task offers some"
            )
        messages: list[Any] = await messages_to_openai(input)
        if target.system_prompt:
            messages.insert(0, {"role": "system", "content": target.system_prompt})
        payload: dict[str, Any] = {"messages": messages, **parameters(self.client, config)}
        if tools:
            payload |= {"tools": openai_chat_tools(tools), "tool_choice": openai_chat_tool_choice(tool_choice)}
        if target.provider == "openai_compatible":
            payload["model"] = target.model_name
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.pool, self.client.ask_request, payload)
        response = answer["response"]
        completion = ChatCompletion.model_validate(
            {"id": "llmeval", "object": "chat.completion", "created": 0, "model": self.model_name, **response}
        )
        output = model_output_from_openai(completion, chat_choices_from_openai(completion, tools))
        usage = response.get("usage") or {}
        asked = {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)}
        ANSWERS[self.model_name].append({"cached": answer["cached"], "latency_ms": answer["latency_ms"], **asked})
        output.usage = ModelUsage(**asked, total_tokens=sum(asked.values()))
        output.time = answer["latency_ms"] / 1000
        return output
