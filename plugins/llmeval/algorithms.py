"""The evaluation algorithms a config may name, and the options each accepts.

This table is what config validation uses in the Airflow environment, where fmeval is
not installed. Tests check it against fmeval's own registry (`fmeval.eval_algo_mapping`:
the same algorithms under the same registry names) and config dataclasses in the worker
environment, so the two cannot drift apart silently. A config names an algorithm by its
class name or by fmeval's registry name (`factual_knowledge`).

fmeval's registry module itself is not imported at run time: importing it loads BERTScore
from the Hugging Face Hub, which fails offline even for algorithms that need no weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SNAKE = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the config layer knows about one algorithm."""

    name: str
    options: frozenset[str]
    fmeval_module: str | None  # None for the project's own algorithms
    needs_hub_download: bool = False  # True: fails offline (BERTScore / detoxify weights)
    calls_model_when_scoring: bool = False  # robustness (perturbed inputs), stereotyping (log probabilities)
    config_class: str | None = None  # fmeval's config dataclass, when not "<name>Config"
    has_config: bool = True  # False: fmeval's class takes no config object
    asks_judge: bool = False  # LLMJudge, Pairwise: a judge model rates answers
    compares_models: bool = False  # Pairwise: judged across models after every model's evaluation

    @property
    def eval_name(self) -> str | None:
        """fmeval's registry name (its EvalAlgorithm value): FactualKnowledge -> factual_knowledge."""
        return _SNAKE.sub("_", self.name).lower() if self.fmeval_module else None

    @property
    def hub_download(self) -> str | None:
        """Why this algorithm needs the Hugging Face Hub, or None when it runs offline."""
        if self.needs_hub_download:
            return "downloads model weights (BERTScore or detoxify) from the Hugging Face Hub"
        return None

    @property
    def fmeval_config_class(self) -> str | None:
        if not self.fmeval_module or not self.has_config:
            return None
        return self.config_class or f"{self.name}Config"


_ROBUSTNESS = frozenset(
    {
        "perturbation_type",
        "num_perturbations",
        "butter_finger_perturbation_prob",
        "random_uppercase_corrupt_proportion",
        "whitespace_remove_prob",
        "whitespace_add_prob",
    }
)

ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            "FactualKnowledge",
            frozenset({"target_output_delimiter", "logical_operator"}),
            "fmeval.eval_algorithms.factual_knowledge",
        ),
        AlgorithmSpec(
            "QAAccuracy",
            frozenset({"target_output_delimiter", "model_type_for_bertscore"}),
            "fmeval.eval_algorithms.qa_accuracy",
            needs_hub_download=True,
        ),
        AlgorithmSpec(
            "SummarizationAccuracy",
            frozenset({"rouge_type", "use_stemmer_for_rouge", "model_type_for_bertscore"}),
            "fmeval.eval_algorithms.summarization_accuracy",
            needs_hub_download=True,
        ),
        AlgorithmSpec(
            "ClassificationAccuracy",
            frozenset({"valid_labels", "converter_fn", "multiclass_average_strategy"}),
            "fmeval.eval_algorithms.classification_accuracy",
        ),
        AlgorithmSpec(
            "Toxicity", frozenset({"model_type"}), "fmeval.eval_algorithms.toxicity", needs_hub_download=True
        ),
        AlgorithmSpec(
            "QAToxicity",
            frozenset({"model_type"}),
            "fmeval.eval_algorithms.qa_toxicity",
            needs_hub_download=True,
            config_class="ToxicityConfig",
        ),
        AlgorithmSpec(
            "SummarizationToxicity",
            frozenset({"model_type"}),
            "fmeval.eval_algorithms.summarization_toxicity",
            needs_hub_download=True,
            config_class="ToxicityConfig",
        ),
        AlgorithmSpec(
            "PromptStereotyping",
            frozenset(),
            "fmeval.eval_algorithms.prompt_stereotyping",
            calls_model_when_scoring=True,
            has_config=False,
        ),
        AlgorithmSpec(
            "GeneralSemanticRobustness",
            _ROBUSTNESS | {"num_baseline_samples", "model_type_for_bertscore"},
            "fmeval.eval_algorithms.general_semantic_robustness",
            needs_hub_download=True,
            calls_model_when_scoring=True,
        ),
        AlgorithmSpec(
            "QAAccuracySemanticRobustness",
            _ROBUSTNESS | {"target_output_delimiter", "model_type_for_bertscore"},
            "fmeval.eval_algorithms.qa_accuracy_semantic_robustness",
            needs_hub_download=True,
            calls_model_when_scoring=True,
        ),
        AlgorithmSpec(
            "SummarizationAccuracySemanticRobustness",
            _ROBUSTNESS | {"rouge_type", "use_stemmer_for_rouge", "model_type_for_bertscore"},
            "fmeval.eval_algorithms.summarization_accuracy_semantic_robustness",
            needs_hub_download=True,
            calls_model_when_scoring=True,
        ),
        AlgorithmSpec(
            "ClassificationAccuracySemanticRobustness",
            _ROBUSTNESS | {"valid_labels", "converter_fn"},
            "fmeval.eval_algorithms.classification_accuracy_semantic_robustness",
            calls_model_when_scoring=True,
        ),
        AlgorithmSpec(
            "SemanticSimilarity",
            frozenset({"target_output_delimiter"}),
            None,
        ),
        # an Inspect AI task: its own samples, solver and scorers; the model answers it while scoring
        AlgorithmSpec(
            "Inspect", frozenset({"task", "task_args", "limit", "epochs"}), None, calls_model_when_scoring=True
        ),
        AlgorithmSpec("LLMJudge", frozenset({"judge", "judges", "aggregate", "rubrics"}), None, asks_judge=True),
        AlgorithmSpec(
            "Pairwise",
            frozenset({"judge", "champion", "all_pairs", "labels", "min_agreement", "min_labels"}),
            None,
            asks_judge=True,
            compares_models=True,
        ),
    )
}


_PROBABILITY = (0.0, 1.0)
# What fmeval's config dataclasses accept for an option (a test compares the lists with
# fmeval's own constants): allowed values, or an inclusive numeric range.
OPTION_VALUES: dict[str, tuple[Any, ...]] = {
    "perturbation_type": ("butter_finger", "random_upper_case", "whitespace_add_remove"),
    "model_type_for_bertscore": ("microsoft/deberta-xlarge-mnli", "roberta-large-mnli"),
    "model_type": ("toxigen", "detoxify"),
    "rouge_type": ("rouge1", "rouge2", "rougeL"),
    "logical_operator": ("OR", "AND"),
    "aggregate": ("mean", "median", "majority"),  # LLMJudge: a panel's rating from its judges'
    "multiclass_average_strategy": ("micro", "macro", "samples", "weighted", "binary"),
}
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "num_perturbations": (1, 100),
    "num_baseline_samples": (2, 100),
    "butter_finger_perturbation_prob": _PROBABILITY,
    "random_uppercase_corrupt_proportion": _PROBABILITY,
    "whitespace_remove_prob": _PROBABILITY,
    "whitespace_add_prob": _PROBABILITY,
}
NOT_FROM_YAML = {"converter_fn": "a Python function; name a custom algorithm class instead"}


def option_problem(option: str, value: Any) -> str | None:
    """What is wrong with an option's value, or None."""
    if option in NOT_FROM_YAML:
        return f"{option} cannot be set from a config: {NOT_FROM_YAML[option]}"
    if option in OPTION_VALUES and value not in OPTION_VALUES[option]:
        return f"{option} must be one of {', '.join(map(str, OPTION_VALUES[option]))}; got {value!r}"
    if option in OPTION_RANGES:
        low, high = OPTION_RANGES[option]
        integer = isinstance(low, int)
        kind = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            return f"{option} must be {'an integer' if integer else 'a number'} from {low} to {high}; got {value!r}"
    if option == "valid_labels" and not (isinstance(value, list) and value):
        return f"valid_labels must be a non-empty list of labels; got {value!r}"
    return None


def accepting(option: str) -> list[str]:
    """Names of the algorithms that accept `option`, for error messages."""
    return sorted(name for name, spec in ALGORITHMS.items() if option in spec.options)


BY_EVAL_NAME = {spec.eval_name: name for name, spec in ALGORITHMS.items() if spec.eval_name}


def offline_algorithms() -> list[str]:
    """The algorithms that run without the Hugging Face Hub (with their default options)."""
    return sorted(name for name, spec in ALGORITHMS.items() if not spec.hub_download)
