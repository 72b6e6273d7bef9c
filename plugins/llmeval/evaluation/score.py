"""Score stage: run the configured algorithms over saved model outputs.

fmeval's algorithms are used per record through `evaluate_sample`, in a plain loop: the
same scores fmeval's `evaluate()` computes, without starting Ray for every algorithm.
Algorithms that call the model while scoring go through the generate stage's client
(`model_scorers`).
Each dataset score carries a bootstrap 95% interval and its record count; categories
get their own scores when the dataset has a category column.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from llmeval.algorithms import ALGORITHMS, offline_algorithms
from llmeval.config import AlgorithmSection
from llmeval.evaluation.generate import ModelClient
from llmeval.results import MISSING, AlgorithmResult, Score

log = logging.getLogger("llmeval.score")

PerRecord = list[dict[str, float | None]]
Scorer = Callable[[list[dict[str, Any]]], tuple[PerRecord, dict[str, float]]]
BOOTSTRAP_SAMPLES = 1000


class AlgorithmUnavailable(RuntimeError):
    """An algorithm that cannot run in this environment (e.g. needs the Hugging Face Hub)."""


def _fmeval_module(name: str):
    spec = ALGORITHMS[name]
    if spec.fmeval_module is None:
        raise ValueError(f"{spec.name} is the project's own algorithm, not fmeval's")
    try:
        return importlib.import_module(spec.fmeval_module)
    except Exception as exc:  # fmeval loads BERTScore/detoxify weights at import time
        raise AlgorithmUnavailable(
            f"{spec.name} could not be loaded ({type(exc).__name__}: {str(exc)[:200]}). "
            f"It downloads model weights from the Hugging Face Hub; offline, use one of: "
            f"{', '.join(offline_algorithms())}"
        ) from exc


def _fmeval_scorer(section: AlgorithmSection) -> Scorer:
    spec = ALGORITHMS[section.algorithm]
    module = _fmeval_module(section.algorithm)
    algorithm_cls = getattr(module, spec.name)
    if spec.fmeval_config_class:
        algorithm = algorithm_cls(getattr(module, spec.fmeval_config_class)(**section.options))
    else:
        algorithm = algorithm_cls()
    accepted = inspect.signature(algorithm.evaluate_sample).parameters

    def score(records: list[dict[str, Any]]) -> tuple[PerRecord, dict[str, float]]:
        out = []
        for record in records:
            kwargs = {k: record[k] for k in ("model_input", "target_output", "model_output") if k in accepted}
            out.append({s.name: s.value for s in algorithm.evaluate_sample(**kwargs)})
        return out, {}

    return score


def _classification_scorer(section: AlgorithmSection) -> Scorer:
    """fmeval's ClassificationAccuracy: per-record accuracy from its own transform, plus the
    dataset-level balanced accuracy, precision and recall it computes with scikit-learn."""
    from sklearn.metrics import balanced_accuracy_score, precision_score, recall_score

    module = _fmeval_module("ClassificationAccuracy")
    options = dict(section.options)
    average = options.get("multiclass_average_strategy", "micro")

    def score(records: list[dict[str, Any]]) -> tuple[PerRecord, dict[str, float]]:
        labels = options.get("valid_labels") or sorted({str(r["target_output"]) for r in records})
        config = module.ClassificationAccuracyConfig(**{**options, "valid_labels": labels})
        transform = module.ClassificationAccuracyScores(
            valid_labels=config.valid_labels, converter_fn=config.converter_fn
        )
        results = [transform({"target_output": r["target_output"], "model_output": r["model_output"]}) for r in records]
        y_true = [str(r["target_output"]) for r in records]
        y_pred = [res[module.CLASSIFIED_MODEL_OUTPUT_COLUMN_NAME] for res in results]
        extras = {
            module.BALANCED_ACCURACY_SCORE: float(balanced_accuracy_score(y_true, y_pred)),
            module.PRECISION_SCORE: float(precision_score(y_true, y_pred, average=average)),
            module.RECALL_SCORE: float(recall_score(y_true, y_pred, average=average)),
        }
        return [
            {module.CLASSIFICATION_ACCURACY_SCORE: res[module.CLASSIFICATION_ACCURACY_SCORE]} for res in results
        ], extras

    return score


def custom_scorer(class_path: str, options: dict[str, Any]) -> Scorer:
    """A class with fmeval's `evaluate_sample` interface (or a batch `score_records`)."""
    module_name, class_name = class_path.rsplit(":", 1)
    try:
        algorithm = getattr(importlib.import_module(module_name), class_name)(**options)
    except (ImportError, AttributeError) as exc:
        raise AlgorithmUnavailable(f"cannot load custom algorithm {class_path!r}: {exc}") from exc

    def as_dict(scores: Any) -> dict[str, float | None]:
        return dict(scores) if isinstance(scores, dict) else {s.name: s.value for s in scores}

    def score(records: list[dict[str, Any]]) -> tuple[PerRecord, dict[str, float]]:
        if hasattr(algorithm, "score_records"):
            return [as_dict(s) for s in algorithm.score_records(records)], {}
        accepted = inspect.signature(algorithm.evaluate_sample).parameters
        return [
            as_dict(
                algorithm.evaluate_sample(
                    **{k: r[k] for k in ("model_input", "target_output", "model_output") if k in accepted}
                )
            )
            for r in records
        ], {}

    return score


def _scorer(section: AlgorithmSection, client: ModelClient | None, judges: dict[str, ModelClient]) -> Scorer:
    if section.is_custom:
        return custom_scorer(section.algorithm.removeprefix("custom:"), section.options)
    spec = ALGORITHMS[section.algorithm]
    if spec.asks_judge:
        from llmeval.evaluation.judge import judge_scorer

        return judge_scorer(section, judges)
    reason = spec.hub_download
    if reason and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise AlgorithmUnavailable(
            f"{spec.name} {reason}, and HF_HUB_OFFLINE=1; algorithms that work offline: "
            f"{', '.join(offline_algorithms())}"
        )
    if spec.calls_model_when_scoring:
        if client is None:
            raise AlgorithmUnavailable(f"{spec.name} calls the model while scoring, and no model client was given")
        _fmeval_module(spec.name)  # a clear message when it cannot load
        from llmeval.evaluation import model_scorers

        if spec.name == "PromptStereotyping":
            return model_scorers.stereotyping_scorer(client)
        return model_scorers.robustness_scorer(section, client)
    if spec.fmeval_module is None:  # the project's own algorithm, loaded as any custom class is
        return custom_scorer("llmeval.evaluation.similarity:SemanticSimilarity", section.options)
    if spec.name == "ClassificationAccuracy":
        return _classification_scorer(section)
    return _fmeval_scorer(section)


def bootstrap_ci(values: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    import numpy as np

    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return float(data.mean()), float(data.mean())
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _numbers_only(per_record: PerRecord) -> tuple[PerRecord, dict[str, int]]:
    """The scores with every NaN (or infinity) made a missing score, and how many each score lost."""
    missing: dict[str, int] = {}
    cleaned = []
    for scores in per_record:
        row: dict[str, float | None] = {}
        for score, value in scores.items():
            if value is not None and not math.isfinite(value):
                missing[score] = missing.get(score, 0) + 1
                value = None
            row[score] = value
        cleaned.append(row)
    return cleaned, missing


def aggregate(per_record: PerRecord) -> list[Score]:
    names: list[str] = []
    for row in per_record:
        names.extend(n for n in row if n not in names)
    scores = []
    for name in names:
        values = [value for row in per_record if (value := row.get(name)) is not None]
        if not values:
            scores.append(Score(name, None, count=0))
            continue
        low, high = bootstrap_ci(values)
        scores.append(Score(name, sum(values) / len(values), low, high, len(values)))
    return scores


def score_outputs(
    rows: list[dict[str, Any]],
    algorithms: list[AlgorithmSection],
    records_location: str,
    client: ModelClient | None = None,
    released: Callable[[], None] | None = None,
    judges: dict[str, ModelClient] | None = None,
) -> tuple[list[AlgorithmResult], list[dict[str, Any]]]:
    """(one result per algorithm, in the config's order; the answered rows with every
    per-record score added). `client` calls the model for the algorithms that need it while
    scoring; they run first, then `released` says the model is no longer needed. `judges`
    (by name) answer LLMJudge."""
    answered = [r for r in rows if r.get("model_output") is not None]
    # judged across models after all of them (Pairwise), or run with their own samples (Inspect)
    algorithms = [s for s in algorithms if not s.compares_models and not s.is_inspect]
    asking = [s for s in algorithms if s.calls_model]
    results = {s.name: _score_one(s, answered, records_location, client, {}) for s in asking}
    if released:
        released()
    results |= {
        s.name: _score_one(s, answered, records_location, None, judges or {}) for s in algorithms if s not in asking
    }
    return [results[s.name] for s in algorithms], answered


def _score_one(
    section: AlgorithmSection,
    answered: list[dict[str, Any]],
    records_location: str,
    client: ModelClient | None,
    judges: dict[str, ModelClient],
) -> AlgorithmResult:
    name = section.name
    try:
        per_record, dataset_level = _scorer(section, client, judges)(answered)
    except Exception as exc:
        log.error("score %s failed: %s", name, exc)
        return AlgorithmResult(name, [], records_location=records_location, error=str(exc))
    per_record, missing = _numbers_only(per_record)
    if missing:
        log.warning("score %s: not a number on some records, left out: %s", name, missing)
    for row, scores in zip(answered, per_record):
        row.setdefault("scores", {})[name] = scores
    by_category: dict[str, PerRecord] = defaultdict(list)
    for row, scores in zip(answered, per_record):
        if row.get("category") is not None:
            by_category[str(row["category"])].append(scores)
    dataset_scores = aggregate(per_record) + [Score(n, v, count=len(per_record)) for n, v in dataset_level.items()]
    dataset_scores += [Score(n + MISSING, float(k), count=len(per_record)) for n, k in missing.items()]
    result = AlgorithmResult(
        name, dataset_scores, {cat: aggregate(recs) for cat, recs in sorted(by_category.items())}, records_location
    )
    log.info("score %s: %s", name, ", ".join(f"{s.name}={s.value:.3f}" for s in result.scores if s.value is not None))
    return result
