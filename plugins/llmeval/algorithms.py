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

    @property
    def eval_name(self) -> str | None:
        """fmeval's registry name (its EvalAlgorithm value): FactualKnowledge -> factual_knowledge."""
        return _SNAKE.sub("_", self.name).lower() if self.fmeval_module else None

    def hub_download(self, options: dict[str, Any]) -> str | None:
        """Why these options need the Hugging Face Hub, or None when they run offline."""
        if self.needs_hub_download:
            return "downloads model weights (BERTScore or detoxify) from the Hugging Face Hub"
        if options.get("perturbation_type") == "back_translation":
            return "perturbation_type back_translation downloads a translation model from the Hugging Face Hub"
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
    )
}


def accepting(option: str) -> list[str]:
    """Names of the algorithms that accept `option`, for error messages."""
    return sorted(name for name, spec in ALGORITHMS.items() if option in spec.options)


BY_EVAL_NAME = {spec.eval_name: name for name, spec in ALGORITHMS.items() if spec.eval_name}


def offline_algorithms() -> list[str]:
    """The algorithms that run without the Hugging Face Hub (with their default options)."""
    return sorted(name for name, spec in ALGORITHMS.items() if not spec.hub_download({}))
