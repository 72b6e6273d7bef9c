"""The config schema: pydantic models for every section, with the checks that need no
knowledge of the target (names, metric references, schedules). The seed solution's configs
load unchanged; everything new is an additive key with a default."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import jmespath
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StringConstraints, field_validator, model_validator

from llmeval.algorithms import ALGORITHMS, BY_EVAL_NAME, accepting, option_problem
from llmeval.config.errors import FieldProblem
from llmeval.config.inspect_tasks import INSPECT, parse_task
from llmeval.contracts import Api, ModelKind, Provider, TargetName
from llmeval.results import COST_METRICS, GENERATION_METRICS
from llmeval.rubrics import BUILT_IN, DEFAULT_RUBRICS, Rubric, agreement_problem, rubric_problem, rubrics_of

PROMPT_PLACEHOLDER = "PROMPT_PLACEHOLDER"
# SageMaker endpoint / model / job names: alphanumerics and hyphens, at most 63 characters.
AWS_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
CATALOG_VERSION = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,99}$"  # a partition key a run store path can hold
CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class PipelineSection(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$", description="Becomes the DAG id.")
    description: str = ""
    """The DAG's description."""
    tags: list[str] = []
    """More DAG tags (every evaluation DAG is also tagged `llm-eval` and its target)."""


class DatasetSection(_Strict):
    dataset_name: str
    """A name for the dataset, shown in reports and kept in the registry's metadata."""
    input_data_location: str = Field(
        description="Path (relative to include/data) or file URI; may contain {catalog_version}."
    )
    dataset_mime_type: Literal["jsonlines"] = "jsonlines"
    """JSON Lines: one object per record."""
    model_input_key: str
    """Column with the record's input (`$feature` in the prompt template)."""
    target_output_key: str
    """Column with the reference answer (several references are split by the algorithm's `target_output_delimiter`)."""
    category_key: str | None = Field(None, description="Column with a category, for per-category scores.")
    sent_more_input_key: str | None = Field(None, description="PromptStereotyping: the more stereotypical sentence.")
    sent_less_input_key: str | None = Field(None, description="PromptStereotyping: the less stereotypical sentence.")
    context_key: str | None = Field(
        None, description="Column with a context the answer must stay faithful to (LLMJudge)."
    )

    @model_validator(mode="after")
    def _sentence_pairs(self) -> DatasetSection:
        if bool(self.sent_more_input_key) != bool(self.sent_less_input_key):
            raise FieldProblem(("sent_less_input_key",), "give both sent_more_input_key and sent_less_input_key")
        return self


class DeploymentSection(_Strict):
    instance_type: str = Field("ml.g5.2xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    """Instance type of the model's SageMaker endpoint."""
    num_instances: int = Field(1, ge=1)
    """Instances behind the endpoint."""


class ChatMessage(_Strict):
    """One message of a conversation template."""

    role: Literal["user", "assistant"]
    """Who says it: the `user` (the last message is the user's) or the `assistant` (an example answer)."""
    content: str
    """What is said; `$feature` (or `$model_input`) is replaced by the record's input."""


class EvaluationSection(_Strict):
    api: Api | None = None
    """How the model is asked: `invoke` (the content template and the JMESPath `output`), `messages` (OpenAI-style
    chat, `choices[0].message.content`: current JumpStart LLM containers, OpenAI-compatible servers) or `converse`
    (Bedrock's Converse). Default: `converse` for a Bedrock model without a content_template, `messages` for an
    OpenAI-compatible one, else `invoke`."""
    output: str = Field("[0].generated_text", description="JMESPath to the generated text in the response (invoke).")
    content_template: Any = Field(
        PROMPT_PLACEHOLDER, description=f"Payload 'inputs' with {PROMPT_PLACEHOLDER} (invoke)."
    )
    inference_parameters: dict[str, Any] = {}
    """Sent with every request: `max_new_tokens`, `temperature` (invoke); `max_tokens`, `temperature` (messages);
    `maxTokens`, `temperature`, `topP`, `stopSequences` (converse: its inferenceConfig; any other key goes to
    additionalModelRequestFields)."""
    custom_attributes: dict[str, Any] = {}
    """SageMaker's CustomAttributes header, as key: value pairs; `accept_eula: true` here accepts a gated model's
    license, as the seed's configs do."""
    system_prompt: str | None = None
    """A system prompt sent before the conversation (messages, converse)."""
    tools: bool = False
    """The model's server takes tool definitions and answers with tool calls in OpenAI's form (`tools`,
    `tool_calls`; api messages): Inspect tasks that hand the model tools may ask it."""
    prompt_template: str | list[ChatMessage] = "$feature"
    """How a record becomes the prompt: `$feature` (or `$model_input`) is replaced by the record's input. With the
    messages or converse API also a list of messages (few-shot turns), the record's input in one of them."""
    max_concurrency: int | None = Field(None, ge=1, le=256, description="Default: 4 per instance.")
    request_timeout_s: float = Field(120.0, gt=0)
    """Seconds before a request is given up (and retried)."""
    max_retries: int = Field(5, ge=0, le=20)
    """Retries of a request (throttling, server errors, timeouts) with jittered exponential back-off."""
    log_probability: str | None = Field(
        None,
        description="JMESPath to a sentence's log probability in the response (PromptStereotyping; invoke), "
        "e.g. sum([0].details.prefill[1:].logprob) for TGI-based JumpStart endpoints.",
    )
    log_probability_parameters: dict[str, Any] = Field(
        {"max_new_tokens": 1, "details": True, "decoder_input_details": True},
        description="Inference parameters of log-probability requests (TGI's form by default).",
    )

    @field_validator("output", "log_probability")
    @classmethod
    def _jmespath(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            jmespath.compile(value)
        except jmespath.exceptions.JMESPathError as exc:
            raise ValueError(f"not a valid JMESPath expression ({exc})") from None
        return value

    @field_validator("content_template")
    @classmethod
    def _has_placeholder(cls, value: Any) -> Any:
        if PROMPT_PLACEHOLDER not in repr(value):
            raise ValueError(f"must contain {PROMPT_PLACEHOLDER} where the prompt goes")
        return value

    @field_validator("prompt_template")
    @classmethod
    def _has_feature(cls, value: str | list[ChatMessage]) -> str | list[ChatMessage]:
        texts = [value] if isinstance(value, str) else [m.content for m in value]
        if not any("$feature" in t or "$model_input" in t for t in texts):
            raise ValueError("must contain $feature (or $model_input) where the dataset's input goes")
        if isinstance(value, list):
            if not value or value[-1].role != "user":
                raise ValueError("a message list must end with the user's message the model answers")
        return value

    def api_problem(self, provider: Provider | None) -> FieldProblem | None:
        """Why this section cannot ask a model of `provider`, or None."""
        api = self.api_for(provider)
        allowed = ALLOWED_APIS[provider or Provider.JUMPSTART]
        if api not in allowed:
            return FieldProblem(
                ("api",),
                f"{provider or Provider.JUMPSTART} models take api {' or '.join(allowed)}, not {api}",
            )
        if self.tools and api != Api.MESSAGES:
            return FieldProblem(
                ("tools",),
                f"tool calls are sent in OpenAI's form, through api messages; this model is asked through {api}",
            )
        if api == Api.INVOKE:
            chat = [k for k in ("system_prompt", "prompt_template") if k in self._chat_fields()]
            if chat:
                return FieldProblem(
                    (chat[0],),
                    "api invoke sends one prompt string into the content template; a system prompt or a message "
                    "list needs api: messages (SageMaker endpoints, OpenAI-compatible) or converse (Bedrock)",
                )
            return None
        for key in ("output", "content_template", "log_probability"):
            if getattr(self, key) != EvaluationSection.model_fields[key].default:
                return FieldProblem(
                    (key,),
                    f"api {api} has a fixed request and response shape: {key} is for api invoke (the answer is "
                    f"{ANSWER_AT[api]})",
                )
        return None

    def _chat_fields(self) -> set[str]:
        """The chat structure this section asks for: a system prompt, a message list."""
        found = {"system_prompt"} if self.system_prompt else set()
        return found | ({"prompt_template"} if isinstance(self.prompt_template, list) else set())

    def api_for(self, provider: Provider | None) -> Api:
        """The API the model is asked through: the config's, else the provider's default."""
        if self.api is not None:
            return self.api
        if provider == Provider.OPENAI_COMPATIBLE:
            return Api.MESSAGES
        defaults = EvaluationSection.model_fields
        templated = any(getattr(self, k) != defaults[k].default for k in ("content_template", "output"))
        return Api.CONVERSE if provider == Provider.BEDROCK and not templated else Api.INVOKE


ALLOWED_APIS = {
    Provider.JUMPSTART: (Api.INVOKE, Api.MESSAGES),
    Provider.LOCAL: (Api.INVOKE, Api.MESSAGES),
    Provider.BEDROCK: (Api.CONVERSE, Api.INVOKE),
    Provider.OPENAI_COMPATIBLE: (Api.MESSAGES,),
}
ANSWER_AT = {Api.MESSAGES: "choices[0].message.content", Api.CONVERSE: "output.message.content[0].text"}


class FinetuningParameters(BaseModel):
    """The seed's keys; any other key is passed through as a hyperparameter."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)
    instance_type: str = "ml.g5.12xlarge"
    """Instance type of the training job (SageMaker target)."""
    num_instances: int = Field(1, ge=1)
    """Instances of the training job (SageMaker target)."""
    epoch: int = Field(1, ge=1)
    """Passes over the training data."""
    max_input_length: int = Field(512, ge=8)
    """Longest training example in tokens; longer ones are cut."""
    instruction_tuned: bool = True
    """Train on instruction/response pairs."""
    chat_dataset: bool = False
    """The training data is in chat format (JumpStart recipes that support it)."""


class FinetuningSection(_Strict):
    train_data_path: str
    """Training data: a file under include/data or an s3:// URI (JSON Lines with `instruction` and `response`)."""
    validation_data_path: str | None = None
    """Validation data, in the same forms; its loss before and after training is reported."""
    parameters: FinetuningParameters = FinetuningParameters()
    """Hyperparameters: the seed's keys, and any other key passed on (local target: `learning_rate`, `max_steps`,
    `batch_size`, `lora_rank`, `seed`)."""


class TokenPrices(_Strict):
    input: float = Field(ge=0)
    """USD per million input (prompt) tokens."""
    output: float = Field(ge=0)
    """USD per million output (generated) tokens."""


class RegisterSection(_Strict):
    model_package_group_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    """Model package group of this model."""


class ModelSection(_Strict):
    name: str = Field(pattern=AWS_NAME, description="Unique in the config; used in task and resource names.")
    model_provider: Provider | None = None
    """Who serves the model: `jumpstart` (a SageMaker endpoint; the default there), `local` (the local target's
    server; its default), `bedrock` or `openai_compatible` (called, nothing deployed)."""
    connection_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    """OpenAI-compatible models: the Airflow connection with the base URL (its host, e.g.
    `https://llm.example.com/v1`) and the API key (its password; on SageMaker, extra `api_key_secret_arn`)."""
    price_per_million_tokens: TokenPrices | None = None
    """USD per million tokens of a model billed by the token (Bedrock, OpenAI-compatible): its cost in results and the
    leaderboard."""
    model_id: str
    """JumpStart model id, Bedrock model id, or a local model (`smollm2-135m-instruct`); for a model given by its
    outputs, a label."""
    model_version: str = "*"
    """JumpStart model version: exact, or `*` for the latest."""
    endpoint_name: str | None = Field(None, pattern=AWS_NAME)
    """Name of the model's endpoint; default: derived from the pipeline and model names (local target: the
    model name)."""
    deployment_config: DeploymentSection = DeploymentSection()
    """Endpoint instance type and count (deployed models)."""
    evaluation_config: EvaluationSection = EvaluationSection()
    """How the model is asked: request template, where the answer is, inference parameters, concurrency, retries."""
    cleanup_endpoint: bool = True
    """Delete the endpoint (stop the local server) once the model is evaluated; `false` keeps it running, and costing
    money."""
    finetuning: FinetuningSection | None = None
    """Fine-tune the model first (a SageMaker training job, or LoRA on the local target), then deploy and evaluate the
    tuned model."""
    register_config: RegisterSection | None = None
    """Register this model in its own model package group when it is selected."""
    outputs_location: str | None = Field(
        None,
        min_length=1,
        description="Outputs of a model served elsewhere, to be scored like the others: a JSON Lines file (a "
        "path under include/, a local path, or s3://bucket/key; {catalog_version} is replaced) with one object per "
        'record, {"record_id": ..., "model_output": "..."}. Nothing is deployed or torn down; the dataset\'s '
        "records without an output count as failed.",
    )
    allow_vulnerable: bool = False
    """Evaluate a JumpStart model version whose scripts have dependencies with known vulnerabilities
    (refused otherwise, as the SageMaker SDK refuses it); the report and the registry flag it."""
    accept_eula: bool | None = Field(
        None,
        description="Accept the model's end-user license (gated JumpStart models such as Meta Llama): it goes into "
        "the deploy (ModelAccessConfig) and the fine-tuning job. Also read from evaluation_config.custom_attributes."
        "accept_eula, where the seed's configs put it.",
    )

    @property
    def eula_accepted(self) -> bool | None:
        """True/False when the config says, None when it is silent."""
        if self.accept_eula is not None:
            return self.accept_eula
        said = self.evaluation_config.custom_attributes.get("accept_eula")
        return None if said is None else str(said).lower() == "true"

    @property
    def kind(self) -> ModelKind:
        """Provided (outputs given), Bedrock (no endpoint to deploy), tuned (fine-tuned first)
        or foundation."""
        if self.outputs_location:
            return ModelKind.PROVIDED
        if self.model_provider == Provider.BEDROCK:
            return ModelKind.BEDROCK
        if self.model_provider == Provider.OPENAI_COMPATIBLE:
            return ModelKind.OPENAI_COMPATIBLE
        return ModelKind.TUNED if self.finetuning is not None else ModelKind.FOUNDATION

    @property
    def api(self) -> Api:
        """How the model is asked (`evaluation_config.api`, else the provider's default)."""
        return self.evaluation_config.api_for(self.model_provider)

    @model_validator(mode="after")
    def _served(self) -> ModelSection:
        problem = None if self.outputs_location else self.evaluation_config.api_problem(self.model_provider)
        if problem:
            raise FieldProblem(("evaluation_config", *problem.loc), str(problem))
        called = self.kind.calls
        if self.kind == ModelKind.OPENAI_COMPATIBLE and not self.connection_id:
            raise FieldProblem(
                ("connection_id",),
                "an OpenAI-compatible model needs the Airflow connection that holds its base URL (host) and API "
                "key (password); never put them in the config",
            )
        if self.connection_id and self.kind != ModelKind.OPENAI_COMPATIBLE:
            raise FieldProblem(("connection_id",), "only model_provider: openai_compatible models take a connection")
        if self.price_per_million_tokens and not called:
            raise FieldProblem(
                ("price_per_million_tokens",),
                "a deployed model is billed per instance-hour (sagemaker.instance_prices)",
            )
        if called and self.finetuning:
            raise FieldProblem(("finetuning",), f"{self.model_provider} models are evaluated as they are")
        return self

    @property
    def tuning(self) -> FinetuningSection:
        """The finetuning block of a model that has one (a tuned model's steps ask for it)."""
        if self.finetuning is None:
            raise ValueError(f"model {self.name!r} has no finetuning block")
        return self.finetuning

    @property
    def deploys(self) -> bool:
        """Whether the pipeline serves this model (an endpoint or a local server) to evaluate it."""
        return self.kind.deploys

    @property
    def max_concurrency(self) -> int:
        return self.evaluation_config.max_concurrency or 4 * self.deployment_config.num_instances


def _check_provided(cfg: EvalConfig, i: int, model: ModelSection) -> None:
    """A model given by its outputs has nothing to fine-tune, serve or ask again."""
    for field in ("finetuning", "model_provider"):
        if getattr(model, field) is not None:
            raise FieldProblem(
                ("models", i, field), f"a model given by outputs_location is only scored: remove {field}"
            )
    for j, section in enumerate(cfg.algorithms):
        if section.calls_model:
            raise FieldProblem(
                ("algorithms", j, "algorithm"),
                f"{section.name} asks the model again while scoring, and models[{i}] ({model.name}) is given by "
                "outputs_location: there is no model to ask",
            )


CUSTOM_PREFIX = "custom:"
CUSTOM_ALGORITHM = re.compile(r"^custom:[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class AlgorithmSection(BaseModel):
    """One algorithm. The seed's `module`/`config` keys are accepted and checked.
    `custom:<module>:<Class>` names a user's class with fmeval's `evaluate_sample`
    interface; its other keys are passed to the class's constructor."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)
    algorithm: str
    """fmeval's class name (`FactualKnowledge`) or registry name (`factual_knowledge`), `SemanticSimilarity`,
    `LLMJudge`, `Pairwise`, or `custom:<module>:<Class>` (a module in include/algorithms). Other keys are the
    algorithm's options, checked against it."""
    module: str | None = None
    """The seed's fmeval module path: checked against the algorithm, otherwise unused."""
    config: str | None = None
    """The seed's fmeval config class: checked against the algorithm, otherwise unused."""

    @property
    def is_custom(self) -> bool:
        return self.algorithm.startswith(CUSTOM_PREFIX)

    @property
    def name(self) -> str:
        """The name results and metrics use: the class name of a custom algorithm, Inspect/<task>
        of an Inspect task."""
        if self.is_inspect:
            return parse_task(self.options["task"]).algorithm
        return self.algorithm.rsplit(":", 1)[1] if self.is_custom else self.algorithm

    @property
    def is_inspect(self) -> bool:
        return self.algorithm == INSPECT

    @property
    def calls_model(self) -> bool:
        """Whether it asks the model again while scoring (robustness, stereotyping)."""
        return not self.is_custom and ALGORITHMS[self.algorithm].calls_model_when_scoring

    @model_validator(mode="after")
    def _known_with_valid_options(self) -> AlgorithmSection:
        self.algorithm = BY_EVAL_NAME.get(self.algorithm, self.algorithm)  # fmeval's registry names work too
        if self.is_custom:
            if not CUSTOM_ALGORITHM.match(self.algorithm):
                raise FieldProblem(
                    ("algorithm",), "expected custom:<module path>:<class name>, e.g. custom:my_metrics.brevity:Brevity"
                )
            if self.module or self.config:
                raise FieldProblem(("module",), "module/config name fmeval algorithms; a custom class takes neither")
            return self
        spec = ALGORITHMS.get(self.algorithm)
        if spec is None:
            raise FieldProblem(
                ("algorithm",), f"unknown algorithm {self.algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
            )
        if self.module is not None and self.module != spec.fmeval_module:
            raise FieldProblem(
                ("module",), f"module for {self.algorithm} must be {spec.fmeval_module!r}, got {self.module!r}"
            )
        if self.config is not None and self.config != spec.fmeval_config_class:
            raise FieldProblem(
                ("config",), f"config for {self.algorithm} must be {spec.fmeval_config_class!r}, got {self.config!r}"
            )
        if self.is_inspect:
            _check_inspect_options(self.options)
        elif spec.compares_models:
            _check_pairwise_options(self.options)
        elif spec.asks_judge:
            _check_judge_options(self.options)
        for option in self.options:
            if option not in spec.options:
                takers = accepting(option)
                where = f"accepted by: {', '.join(takers)}" if takers else "no algorithm accepts it"
                allowed = ", ".join(sorted(spec.options)) or "none"
                raise FieldProblem(
                    (option,), f"{self.algorithm} does not accept option {option!r} ({where}); its options: {allowed}"
                )
            problem = option_problem(option, self.options[option])
            if problem:
                raise FieldProblem((option,), f"{self.algorithm}: {problem}")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def asks_judge(self) -> bool:
        return not self.is_custom and ALGORITHMS[self.algorithm].asks_judge

    @property
    def compares_models(self) -> bool:
        """Judged across models once every model is evaluated (Pairwise), not per model."""
        return not self.is_custom and ALGORITHMS[self.algorithm].compares_models

    @property
    def judge_names(self) -> list[str]:
        """The judge (or the panel of judges) this algorithm asks."""
        return [str(j) for j in self.options["judges"]] if "judges" in self.options else [self.options["judge"]]

    @property
    def aggregate(self) -> str:
        """How a panel's ratings make its rating."""
        return str(self.options.get("aggregate", "mean"))

    @property
    def rubrics(self) -> list[Rubric]:
        """LLMJudge's rubrics."""
        return rubrics_of(self.options.get("rubrics", DEFAULT_RUBRICS))


def _check_judge_options(options: dict[str, Any]) -> None:
    """LLMJudge: a judge, or a panel of judges with its aggregate (checked against the config's
    judges later), and its rubrics."""
    panel = options.get("judges")
    if ("judge" in options) == (panel is not None):
        raise FieldProblem(
            ("judge",), "LLMJudge needs judge: the name of one of the config's judges, or judges: a panel of them"
        )
    if "judge" in options and not isinstance(options["judge"], str):
        raise FieldProblem(("judge",), "LLMJudge needs judge: the name of one of the config's judges")
    if panel is not None and (not isinstance(panel, list) or len(panel) < 2 or len(set(map(str, panel))) != len(panel)):
        raise FieldProblem(("judges",), "a panel is a list of at least 2 different judges of the config")
    if "aggregate" in options and panel is None:
        raise FieldProblem(("aggregate",), "aggregate combines a panel's ratings: give judges, a list of judges")
    entries = options.get("rubrics", DEFAULT_RUBRICS)
    if not isinstance(entries, list) or not entries:
        raise FieldProblem(("rubrics",), f"expected a non-empty list of rubrics ({', '.join(BUILT_IN)} or custom)")
    names: list[str] = []
    for i, entry in enumerate(entries):
        problem = rubric_problem(entry)
        if problem:
            raise FieldProblem(("rubrics", i, *problem[0]), problem[1])
        name = entry if isinstance(entry, str) else entry["name"]
        if name in names:
            raise FieldProblem(("rubrics", i), f"rubric {name!r} is listed twice")
        names.append(name)


def _check_inspect_options(options: dict[str, Any]) -> None:
    """Inspect: the task's form (its source is read by the target checks), its arguments, a
    sample limit and epochs."""
    try:
        parse_task(options.get("task"))
    except ValueError as exc:
        raise FieldProblem(("task",), f"Inspect needs task: {exc}") from None
    if not isinstance(options.get("task_args", {}), dict):
        raise FieldProblem(("task_args",), "expected a mapping of the task's arguments, e.g. {fewshot: 0}")
    for option in ("limit", "epochs"):
        value = options.get(option, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FieldProblem((option,), f"expected a whole number of at least 1; got {value!r}")


def _check_pairwise_options(options: dict[str, Any]) -> None:
    """Pairwise: a judge, a champion (checked against the config's models later), all_pairs."""
    for option in ("judge", "champion"):
        if not isinstance(options.get(option), str):
            what = "one of the config's judges" if option == "judge" else "the model every candidate is compared with"
            raise FieldProblem((option,), f"Pairwise needs {option}: the name of {what}")
    if not isinstance(options.get("all_pairs", False), bool):
        raise FieldProblem(
            ("all_pairs",), "expected true (judge every pair of models) or false (each against the champion)"
        )
    problem = agreement_problem(options)  # people's preferences the judge is measured against
    if problem:
        raise FieldProblem(*problem)


class _MetricRef(_Strict):
    metric: str = Field(
        description="'<Algorithm>/<score name>' ('Inspect/<task>/<metric>' for an Inspect task), "
        "'generation/<figure>' or 'cost/<figure>'."
    )
    direction: Literal["higher", "lower"] = "higher"
    """Whether higher or lower values of the metric are better."""

    @field_validator("metric")
    @classmethod
    def _shape(cls, value: str) -> str:
        slashes = 2 if value.startswith(f"{INSPECT}/") else 1
        if value.count("/") != slashes or not all(value.split("/")):
            raise ValueError(
                "must look like 'FactualKnowledge/factual_knowledge', 'Inspect/<task>/accuracy', "
                "'generation/latency_p95_ms' or 'cost/usd'"
            )
        return value


class MetricRule(_MetricRef):
    weight: float = Field(1.0, gt=0)
    """Weight of the metric in the composite score (each metric min-max normalised over the eligible models)."""
    threshold: float | None = Field(None, description="Minimum (higher is better) or maximum (lower).")


class SelectionSection(_Strict):
    metrics: list[MetricRule] = Field(
        [], description="Empty: the first score of the first algorithm, higher is better (the seed's rule)."
    )
    untrusted_judge: Literal["exclude", "fail"] = Field(
        "exclude",
        description="A judge whose agreement with people is below min_agreement: its scores are left out of "
        "selection and the gate, and the run goes on (exclude), or also fails at verdict after the report (fail).",
    )


WIN_RATE = "Pairwise/win_rate_vs_champion"


class GateRule(_MetricRef):
    """The selected model must beat the champion (the latest approved version) by this much,
    on the same catalog version, before it is approved."""

    min_delta: float = Field(
        0.0,
        description="Minimum absolute improvement. At 0 (and min_relative 0) the candidate must be strictly better: "
        "equal to the champion is not an improvement unless allow_equal is set.",
    )
    min_relative: float = Field(
        0.0,
        description="Minimum improvement relative to the champion (0.05 = 5%). A champion at 0 has no relative "
        "scale: any improvement passes, no improvement fails.",
    )
    allow_equal: bool = False
    """Pass a candidate exactly equal to the champion (with min_delta and min_relative 0)."""
    require_ci_separation: bool = Field(False, description="The 95% intervals must not overlap.")
    significance: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="The improvement must be significant at this level (e.g. 0.05) in a one-sided paired test "
        "on the records both models answered (paired bootstrap of the per-record difference; records matched "
        "by id; a sign-flip test, whose error rate is at most the level at any sample size). Stronger than "
        "require_ci_separation: the record-to-record spread both models share cancels.",
    )
    min_matched: int = Field(10, ge=1, description="The paired test needs at least this many records to pair up.")
    max_unmatched: float = Field(
        0.2, ge=0, le=1, description="The paired test is refused when more than this share of records has no partner."
    )
    min_win_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="With Pairwise/win_rate_vs_champion: the candidate must win on at least this share of all the "
        "records compared with the champion (ties, losses and unparseable verdicts count against it), e.g. 0.55 "
        "for 'preferred on at least 55% of the records'.",
    )

    @model_validator(mode="after")
    def _win_share(self) -> GateRule:
        if self.min_win_share is not None and self.metric != WIN_RATE:
            raise FieldProblem(("min_win_share",), f"min_win_share applies to metric {WIN_RATE}")
        return self


class RegistrySection(_Strict):
    model_package_group_name: str | None = Field(None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    """Model package group; default: the pipeline name."""
    approval: Literal["auto", "manual", "review"] = Field(
        "auto",
        description="auto: Approved when selection passes; manual: PendingManualApproval; review: a person "
        "approves or rejects in the run's required actions in Airflow before the version is registered.",
    )
    review_timeout_minutes: float = Field(
        1440, gt=0, description="review: with no answer after this long, register as PendingManualApproval."
    )
    review_flagged_records: int = Field(
        10,
        ge=0,
        le=100,
        description="review: how many of the selected model's lowest-scoring and most-"
        "disagreeing records the review shows.",
    )
    gate: list[GateRule] = Field([], description="Champion gate; empty: no comparison with the champion.")
    on_gate_fail: Literal["reject", "skip"] = Field(
        "reject", description="reject: register as Rejected (with the reason); skip: do not register."
    )


class SecuritySection(_Strict):
    """Encryption and network options, passed to every model, endpoint config and job."""

    volume_kms_key_id: str | None = Field(
        None, description="KMS key for training/processing volumes and endpoint storage."
    )
    output_kms_key_id: str | None = Field(
        None,
        description="KMS key for S3: training and Processing outputs, and the code, inputs and metrics "
        "the DAG uploads (SSE-KMS).",
    )
    subnets: list[str] = Field([], description="VPC subnets (with security_group_ids).")
    security_group_ids: list[str] = []
    """VPC security groups (with `subnets`)."""
    enable_network_isolation: bool = Field(
        False, description="For models and training jobs; the evaluation job must reach the endpoint, so not for it."
    )
    enable_inter_container_traffic_encryption: bool = False
    """Encrypt the traffic between a job's containers."""

    @model_validator(mode="after")
    def _vpc_pairs(self) -> SecuritySection:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise FieldProblem(("subnets",), "give both subnets and security_group_ids, or neither")
        return self

    @property
    def vpc_config(self) -> dict[str, list[str]] | None:
        return {"Subnets": self.subnets, "SecurityGroupIds": self.security_group_ids} if self.subnets else None


class SageMakerSection(_Strict):
    """Where the SageMaker target runs. The execution role is never in the YAML: it comes
    from the Airflow Variable named by `role_variable`, else the connection's extra `role_arn`."""

    aws_conn_id: str = "aws_default"
    """Airflow AWS connection of every SageMaker and S3 call."""
    preflight: bool = True
    """Check the account first (the `preflight` task: `llmeval preflight`'s checks); a failed check fails
    the run before anything is created or billed."""
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    """AWS region; default: the connection's."""
    s3_prefix: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        description="Run inputs/outputs go under <s3_prefix>/<dag id>/<run>/; default: Variable llm_eval_s3_prefix.",
    )
    role_variable: str = "llm_eval_sagemaker_role_arn"
    """Airflow Variable holding the SageMaker execution role's ARN (else the connection's extra `role_arn`)."""
    processing_image: str | None = Field(
        None, description="Evaluation image; default: Variable llm_eval_processing_image."
    )
    processing_instance_type: str = Field("ml.m5.xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    """Instance type of the evaluation's Processing jobs."""
    processing_volume_gb: int = Field(30, ge=1, le=16384)
    """Storage of a Processing job, in GB."""
    max_runtime_s: int = Field(4 * 3600, ge=60, le=5 * 24 * 3600)
    """Longest run of a Processing or training job, in seconds (its StoppingCondition)."""
    tags: dict[str, str] = {}
    """More tags on every SageMaker resource the DAG creates."""
    security: SecuritySection = SecuritySection()
    """KMS keys, VPC and network isolation for every model, endpoint config and job."""
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries (exponential back-off) of deploy, finetune, evaluate and teardown. A retry re-attaches "
        "to the job or endpoint its earlier try started (deterministic names): nothing runs twice.",
    )
    retry_delay_s: int = Field(30, ge=1, le=3600, description="First retry delay; doubles at each retry.")
    deferrable: bool = Field(
        True,
        description="Wait for endpoints and jobs in the triggerer (no worker slot held). False: wait on the worker "
        "(for deployments without a triggerer).",
    )
    poll_interval_s: int = Field(30, ge=1, le=600, description="How often endpoint and job status is checked.")
    early_release: bool = Field(
        True,
        description="An endpoint lives only while the evaluation asks it: the Processing job starts while the "
        "endpoint is being created (the job waits for InService) and the endpoint is deleted as soon as the job "
        "says the model is no longer needed (generation and the scorers that call the model are done), while "
        "scoring goes on. False: deploy waits for InService and the endpoint is deleted after the results are "
        "collected.",
    )
    hub_access: bool = Field(
        True,
        description="The Processing job can download from the Hugging Face Hub (internet or a mirror). "
        "False: algorithms that need the Hub are refused when the config loads, before any endpoint exists.",
    )
    endpoint_quotas: dict[Annotated[str, StringConstraints(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")], PositiveInt] = (
        Field(
            {},
            description="At most this many live endpoints per instance type (your account's quota) across every DAG "
            "sharing the run store: deploy waits for a lease, teardown gives it back. Pools bound running tasks, "
            "not live endpoints.",
        )
    )
    instance_prices: dict[
        Annotated[str, StringConstraints(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")], Annotated[float, Field(ge=0)]
    ] = Field(
        {},
        description="USD per instance-hour for instance types whose price differs from include/instance_prices.yaml "
        "(on-demand, us-east-1): your region's or your discounted price. Costs in results.json and the leaderboard "
        "use it.",
    )
    pool_prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,200}$",
        description="Run each model's and judge's deploy in the Airflow pool '<prefix><instance type>' (create "
        "the pools first): bounds the deploys at once. Live endpoints are bounded by endpoint_quotas.",
    )


class LocalSection(_Strict):
    queue: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.@-]+$",
        description="Local target under an executor with several hosts (Celery, Kubernetes): the queue of the "
        "one worker that runs every task of this DAG. Model servers listen on 127.0.0.1 and are stopped by PID, "
        "so a model's deploy, evaluate and teardown must run on one host.",
    )


class EvalConfig(_Strict):
    """One evaluation pipeline: becomes one Airflow DAG."""

    target: TargetName = Field(TargetName.SAGEMAKER, description="No key means SageMaker (the seed).")
    pipeline: PipelineSection
    """The DAG: its id, description and tags."""
    dataset: DatasetSection
    """The prompt dataset: where it is and which columns hold the input, the reference and the category."""
    models: list[ModelSection] = Field(min_length=1)
    """The candidates, each deployed (or called, or scored from its given outputs) and evaluated the same way."""
    judges: list[ModelSection] = Field(
        [],
        description="Models that judge answers (LLMJudge, Pairwise): a deployed foundation model (its endpoint "
        "lives for the run) or a Bedrock model; never candidates.",
    )
    algorithms: list[AlgorithmSection] = Field(min_length=1)
    """The evaluation algorithms: fmeval's, the project's (SemanticSimilarity, LLMJudge, Pairwise) or
    `custom:<module>:<Class>`."""
    schedule: str | None = Field(None, description="Cron expression or preset such as @daily; none: manual only.")
    catchup: bool = Field(False, description="Create runs for missed schedule intervals since the start date.")
    start_date: str = Field("2025-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$", description="First schedule date (UTC).")
    end_date: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="Last schedule date (UTC): no scheduled run after it; backfills stay possible up to it.",
    )
    catalog_asset: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9+.-]*://\S+$",
        description="Run when this Airflow Asset (the prompt catalog) gets an event, instead of `schedule`. With "
        "{catalog_version} in the dataset location, the event's partition_key is the version (one run per "
        "partition; an event naming the version in its extra 'catalog_version' instead is deprecated and "
        "republished with the key by the DAG <dag id>__catalog_events); else the version is the event's extra "
        "'catalog_version'.",
    )
    catalog_versions: str | list[Annotated[str, StringConstraints(pattern=CATALOG_VERSION)]] | None = Field(
        None,
        min_length=1,
        description="The catalog versions a run may evaluate: a regular expression a version must match in full, "
        "or the list of allowed versions (a catalog asset's events with any other partition key start no run).",
    )
    num_records: int | None = Field(None, ge=1, description="Evaluate the first N records; default: all.")
    task_timeout_s: int = Field(
        6 * 3600,
        ge=1,
        description="Execution timeout of a finetune or evaluate task. Local: its worker is killed. SageMaker: "
        "the task fails and a still-running evaluation job is stopped (jobs are also bounded by max_runtime_s).",
    )
    max_failed_ratio: float = Field(
        0.1, ge=0, le=1, description="A model whose generations fail for more than this share of records fails."
    )
    artifacts_url: str | None = Field(
        None,
        description="Root of the run store for this pipeline (wins over LLM_EVAL_ARTIFACTS_URL): file:///path, "
        "s3://bucket/prefix or s3://conn_id@bucket/prefix. Default: the environment's, else the local artifacts/.",
    )
    selection: SelectionSection = SelectionSection()
    """How the best model is chosen."""
    registry: RegistrySection = RegistrySection()
    """Where the selected model is registered, how it is approved, and the champion gate."""
    sagemaker: SageMakerSection = SageMakerSection()
    """SageMaker target settings (the local target ignores them)."""
    local: LocalSection = LocalSection()
    """Local target settings."""

    @field_validator("artifacts_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        from llmeval.store import check_url

        return value if value is None else check_url(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None or value in SCHEDULE_PRESETS:
            return value
        if value.startswith("@"):
            raise ValueError(
                f"unknown preset {value!r}; expected a cron expression or one of {', '.join(SCHEDULE_PRESETS)}"
            )
        try:
            from croniter import (
                croniter,  # Airflow's dependency; absent in the worker environment
            )
        except ImportError:
            return value
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (5 fields: minute hour day month weekday)")
        return value

    @property
    def versioned(self) -> bool:
        """Whether the dataset is a prompt catalog with versions: each run evaluates one, its
        partition key."""
        return "{catalog_version}" in self.dataset.input_data_location

    def version_problem(self, version: str) -> str | None:
        """Why `version` is not one of this config's catalog versions, or None."""
        allowed = self.catalog_versions
        if isinstance(allowed, list) and version not in allowed:
            return f"catalog version {version!r} is not among catalog_versions ({', '.join(allowed)})"
        if isinstance(allowed, str) and not re.fullmatch(allowed, version):
            return f"catalog version {version!r} does not match catalog_versions {allowed!r}"
        if not re.match(CATALOG_VERSION, version):
            return f"catalog version {version!r}: expected letters, digits and . _ : + - (at most 100)"
        return None

    @field_validator("catalog_versions")
    @classmethod
    def _versions(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> EvalConfig:
        if self.schedule and self.catalog_asset:
            raise FieldProblem(("catalog_asset",), "use either schedule or catalog_asset, not both")
        if self.catalog_versions is not None and not self.versioned:
            raise FieldProblem(
                ("catalog_versions",), "the dataset location has no {catalog_version}: there are no versions to check"
            )
        if self.versioned and self.schedule and self.schedule.startswith("@") and self.schedule not in CRON_PRESETS:
            raise FieldProblem(
                ("schedule",),
                f"a versioned catalog runs once per version on a cron schedule (or {', '.join(CRON_PRESETS)}), "
                f"not {self.schedule}",
            )
        if self.end_date and self.end_date < self.start_date:
            raise FieldProblem(("end_date",), f"end_date {self.end_date} is before start_date {self.start_date}")
        seen: dict[str, str] = {}
        endpoints: dict[str, str] = {}
        for key, i, model in self.listed_models():
            if model.name in seen:
                raise FieldProblem((key, i, "name"), f"duplicate model name {model.name!r} (also {seen[model.name]})")
            seen[model.name] = f"{key}[{i}]"
            endpoint = model.endpoint_name or (model.name if self.target == "local" else None)
            if endpoint and model.deploys:
                if endpoint in endpoints:
                    raise FieldProblem(
                        (key, i, "endpoint_name"),
                        f"endpoint {endpoint!r} is also {endpoints[endpoint]}'s: each model needs its own "
                        "endpoint (one would be evaluated on the other's, and one teardown would delete both)",
                    )
                endpoints[endpoint] = f"{key}[{i}]"
            if key == "judges" and model.kind in (ModelKind.TUNED, ModelKind.PROVIDED):
                raise FieldProblem(
                    (key, i, "finetuning" if model.finetuning else "outputs_location"),
                    "a judge must answer prompts: a deployed foundation model, a Bedrock or an OpenAI-compatible model",
                )
            if model.outputs_location:
                _check_provided(self, i, model)
        self._check_judging()
        names = [a.name for a in self.algorithms]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldProblem(("algorithms", i, "algorithm"), f"{name} is listed twice")
        rules: list[tuple[tuple[Any, ...], _MetricRef]] = [
            (("selection", "metrics", i, "metric"), r) for i, r in enumerate(self.selection.metrics)
        ]
        rules += [(("registry", "gate", i, "metric"), r) for i, r in enumerate(self.registry.gate)]
        for loc, rule in rules:
            source, figure = rule.metric.rsplit("/", 1)
            if source == "generation" and figure not in GENERATION_METRICS:
                raise FieldProblem(loc, f"expected generation/ one of {', '.join(GENERATION_METRICS)}")
            if source == "cost" and figure not in COST_METRICS:
                raise FieldProblem(loc, f"expected cost/ one of {', '.join(COST_METRICS)} (lower is better)")
            if source not in ("generation", "cost") and source not in names:
                raise FieldProblem(loc, f"{source} is not among this config's algorithms ({', '.join(names)})")
        return self

    def _check_judging(self) -> None:
        judges = [j.name for j in self.judges]
        for i, section in enumerate(self.algorithms):
            if not section.asks_judge:
                continue
            for k, judge in enumerate(section.judge_names):
                if judge not in judges:
                    listed = (
                        f"the config's judges: {', '.join(judges)}" if judges else "the config has no judges: section"
                    )
                    at = ("algorithms", i, "judges", k) if "judges" in section.options else ("algorithms", i, "judge")
                    raise FieldProblem(at, f"unknown judge {judge!r}; expected one of {listed}")
            if section.compares_models:
                self._check_pairwise(i, section)
                continue
            for k, rubric in enumerate(section.rubrics):
                if "$context" in rubric.template and not self.dataset.context_key:
                    raise FieldProblem(
                        ("algorithms", i, "rubrics", k),
                        f"rubric {rubric.name!r} shows the judge $context: set dataset.context_key to the "
                        "dataset's context column",
                    )

    def _check_pairwise(self, i: int, section: AlgorithmSection) -> None:
        champion, names = section.options["champion"], [m.name for m in self.models]
        if champion not in names:
            raise FieldProblem(
                ("algorithms", i, "champion"), f"unknown champion {champion!r}; expected one of {', '.join(names)}"
            )
        if len(names) < 2:
            raise FieldProblem(("models",), "Pairwise compares models: list a second model beside the champion")

    def listed_models(self) -> list[tuple[str, int, ModelSection]]:
        """(section, index, model) for the candidates, then the judges: for errors that name the field."""
        return [("models", i, m) for i, m in enumerate(self.models)] + [
            ("judges", i, m) for i, m in enumerate(self.judges)
        ]

    @property
    def judged_by(self) -> list[ModelSection]:
        """The judges the algorithms ask (each deployed once per run)."""
        asked = {name for s in self.algorithms if s.asks_judge for name in s.judge_names}
        return [j for j in self.judges if j.name in asked]

    def model(self, name: str) -> ModelSection:
        """A candidate or a judge, by name."""
        for model in [*self.models, *self.judges]:
            if model.name == name:
                return model
        raise KeyError(f"no model named {name!r} in {self.pipeline.name}")

    @property
    def registry_group(self) -> str:
        if self.registry.model_package_group_name:
            return self.registry.model_package_group_name
        return re.sub(r"[^a-zA-Z0-9-]+", "-", self.pipeline.name).strip("-")[:63]
