"""The evaluation algorithms a config may name, and the options each accepts.

This table is what config validation uses in the Airflow environment, where fmeval is
not installed. A test checks it against fmeval's own config dataclasses in the worker
environment, so the two cannot drift apart silently.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the config layer knows about one algorithm."""

    name: str
    options: frozenset[str]
    fmeval_module: str | None  # None for the project's own algorithms
    needs_hub_download: bool = False  # True: fails offline (BERTScore / detoxify weights)
    calls_model_when_scoring: bool = False
    config_class: str | None = None  # fmeval's config dataclass, when not "<name>Config"
    has_config: bool = True  # False: fmeval's class takes no config object

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
