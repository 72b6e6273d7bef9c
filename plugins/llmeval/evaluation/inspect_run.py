"""Inspect AI tasks, answered through the project's own model path.

The package registers a model provider with Inspect (`llmeval/<model>`): Inspect's chat
messages become the model's conversation (system prompt and turns) and go through the same
`ModelClient` as the generate stage, so the response cache, the adaptive concurrency limit,
retries and token accounting apply unchanged. A model asked through a content template (one
prompt) answers single-turn conversations only; tools go in OpenAI's form to a model said to
take them (`evaluation_config.tools`, api messages).

Each scorer's metrics become the task's scores (`Inspect/<task>/<metric>`, `<scorer>.<metric>`
when the task has several scorers), a mean metric (accuracy, mean) with the project's bootstrap
95% interval over the samples' reduced scores; Inspect's own stderr is kept beside it. Every
scored sample becomes a scored record, and Inspect's log is kept as `inspect/<task>.eval`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai._eval.loader import load_tasks
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.model import ChatMessage, GenerateConfig, ModelAPI, ModelOutput, ModelUsage, modelapi
from inspect_ai.model._openai import (
    chat_choices_from_openai,
    messages_to_openai,
    model_output_from_openai,
    openai_chat_tool_choice,
    openai_chat_tools,
)
from inspect_ai.scorer import value_to_float
from inspect_ai.tool import ToolChoice, ToolInfo
from openai.types.chat import ChatCompletion

from llmeval.config import AlgorithmSection
from llmeval.config.inspect_tasks import TaskRef, parse_task
from llmeval.contracts import Api
from llmeval.evaluation import apis
from llmeval.evaluation.generate import ModelClient
from llmeval.evaluation.score import bootstrap_ci
from llmeval.results import AlgorithmResult, Score
from llmeval.store import INSPECT_LOGS

log = logging.getLogger("llmeval.inspect")

PROVIDER = "llmeval"
MEAN_METRICS = ("accuracy", "mean")  # a metric that is the mean of the samples' scores: bootstrapped
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
_CLIENTS: dict[str, ModelClient] = {}  # Inspect model name -> the client that asks it
_ANSWERS: dict[str, list[dict[str, Any]]] = {}  # what each model answered Inspect (for tokens and cost)


class NotLoaded(ValueError):
    """An Inspect task of the config that cannot be loaded; `index` is its place in algorithms."""

    def __init__(self, index: int, message: str):
        super().__init__(f"algorithms[{index}].task {message}")
        self.index, self.reason = index, message


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
        if model_name not in _CLIENTS:
            raise ValueError(f"{PROVIDER}/{model_name}: no such model in this evaluation")
        self.pool = ThreadPoolExecutor(self.client.target.max_concurrency, thread_name_prefix="inspect")

    @property
    def client(self) -> ModelClient:
        """The model's client of the current evaluation (Inspect keeps one instance per model name)."""
        return _CLIENTS[self.model_name]

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
        _ANSWERS[self.model_name].append(answer)
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
        _ANSWERS[self.model_name].append({"cached": answer["cached"], "latency_ms": answer["latency_ms"], **asked})
        output.usage = ModelUsage(**asked, total_tokens=sum(asked.values()))
        output.time = answer["latency_ms"] / 1000
        return output


def task_location(ref: TaskRef) -> str:
    """What Inspect loads: an inspect_evals registry name, or the task file found on the path
    (include/algorithms, or the Processing job's code folder)."""
    if ref.file is None:
        return ref.spec
    for folder in sys.path:
        if folder and (path := Path(folder) / ref.file).is_file():
            return f"{path}@{ref.name}"
    raise FileNotFoundError(f"task file {ref.file} is not in include/algorithms (searched {sys.path})")


def load(sections: list[tuple[int, AlgorithmSection]]) -> dict[str, Task]:
    """Each Inspect task of the config, loaded (its arguments applied, its registry name resolved,
    its dataset read) before the model is asked anything; NotLoaded names the one that cannot be."""
    loaded = {}
    for i, section in sections:
        ref = parse_task(section.options["task"])
        try:
            tasks = load_tasks([task_location(ref)], section.options.get("task_args", {}))
        except Exception as exc:
            raise NotLoaded(i, f"{ref.spec}: {type(exc).__name__}: {exc}") from exc
        if len(tasks) != 1:
            raise NotLoaded(i, f"{ref.spec}: no such Inspect task")
        loaded[section.name] = tasks[0]
    return loaded


def main(argv: list[str] | None = None) -> int:
    """`python -m llmeval.evaluation.inspect_run CONFIG.json`: load the config's Inspect tasks as
    the evaluation would (`llmeval validate` runs it in this environment); prints a JSON list of
    {index, message}, exit status 1 when a task cannot be loaded."""
    from llmeval.evaluation.clients import read_config

    cfg = read_config(Path((argv or sys.argv[1:])[0]))
    problems = []
    for i, section in enumerate(cfg.algorithms):
        if section.is_inspect:
            try:
                load([(i, section)])
            except NotLoaded as exc:
                problems.append({"index": exc.index, "message": exc.reason})
    print(json.dumps(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())


def run_task(
    section: AlgorithmSection, task: Task, model: str, client: ModelClient, out_dir: Path, max_failed_ratio: float
) -> tuple[AlgorithmResult, list[dict[str, Any]], list[dict[str, Any]]]:
    """(the task's scores, its scored samples as records, the model's answers) for one model."""
    ref = parse_task(section.options["task"])
    _CLIENTS[model] = client
    answers: list[dict[str, Any]] = []
    _ANSWERS[model] = answers
    scratch = out_dir / INSPECT_LOGS / f".{ref.name}"
    with _logging_kept():
        logs = _evaluate(task, model, section, scratch, client, max_failed_ratio)
    kept = out_dir / INSPECT_LOGS / f"{ref.name}.eval"
    shutil.move(logs[0].location, kept)
    shutil.rmtree(scratch, ignore_errors=True)
    found = read_eval_log(str(kept))
    log.info("%s: Inspect's log of %s is %s", ref.algorithm, model, kept)
    if found.status != "success" or found.results is None:
        raise RuntimeError(f"{ref.spec}: {found.error.message if found.error else found.status}")
    result, rows = convert(ref, found)
    result.records_location = str(out_dir / "records.jsonl")
    return result, rows, answers


@contextmanager
def _logging_kept() -> Iterator[None]:
    """Inspect sets the root logger's level and adds its handler: the entry point's log lines
    (progress, the release mark the local target watches for) must go on as before."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def _evaluate(
    task: Task, model: str, section: AlgorithmSection, scratch: Path, client: ModelClient, max_failed_ratio: float
) -> list[EvalLog]:
    return inspect_eval(
        task,
        model=f"{PROVIDER}/{model}",
        limit=section.options.get("limit"),
        epochs=section.options.get("epochs", 1),
        log_dir=str(scratch),
        log_format="eval",
        display="none",
        log_level="warning",
        score_display=False,
        fail_on_error=max_failed_ratio or True,
        retry_on_error=0,  # the client retries; a sample that still fails counts against max_failed_ratio
        max_connections=client.target.max_concurrency,
    )


def convert(ref: TaskRef, found: EvalLog) -> tuple[AlgorithmResult, list[dict[str, Any]]]:
    """The task's metrics as scores, and its samples as scored records."""
    to_float = value_to_float()
    reduced: dict[str, dict[str, float]] = {}  # scorer -> sample id -> its reduced score
    for reduction in found.reductions or []:
        reduced[reduction.scorer] = {
            str(s.sample_id): to_float(s.value) for s in reduction.samples if isinstance(s.value, (int, float, str))
        }
    assert found.results is not None
    scorers = found.results.scores
    scores: list[Score] = []
    per_sample: dict[str, dict[str, float]] = {}
    for scorer in scorers:
        values = reduced.get(scorer.name, {})
        for metric in scorer.metrics.values():
            name = metric.name if len(scorers) == 1 else f"{scorer.name}.{metric.name}"
            if metric.name in MEAN_METRICS and values:
                low, high = bootstrap_ci(list(values.values()))
                scores.append(Score(name, float(metric.value), low, high, len(values)))
                for sample_id, value in values.items():
                    per_sample.setdefault(sample_id, {})[name] = value
            else:
                scores.append(Score(name, float(metric.value), count=len(values)))
    rows = []
    for sample in found.samples or []:
        sample_id = str(sample.id)
        if sample.epoch != 1 or sample_id not in per_sample:
            continue
        text = sample.input if isinstance(sample.input, str) else "\n".join(m.text for m in sample.input)
        usage = sample.model_usage.get(found.eval.model)
        rows.append(
            {
                "record_id": f"{ref.name}:{sample_id}",
                "task": ref.algorithm,
                "model_input": text,
                "target_output": sample.target if isinstance(sample.target, str) else " | ".join(sample.target),
                "model_output": sample.output.completion,
                "input_tokens": usage.input_tokens if usage else 0,
                "output_tokens": usage.output_tokens if usage else 0,
                "error": None,
                "scores": {ref.algorithm: per_sample[sample_id]},
            }
        )
    return AlgorithmResult(ref.algorithm, scores), rows
