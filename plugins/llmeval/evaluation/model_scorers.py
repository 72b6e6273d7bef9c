"""Algorithms that call the model while scoring, through the generate stage's client.

The semantic-robustness family asks the model again for perturbed inputs; prompt
stereotyping asks for the log probability of each sentence of a pair. Both go through
`ModelClient`, so they share the response cache, the retries and the adaptive
concurrency limit with the generate stage, and records are scored in parallel threads
(one model call in flight per thread, `max_concurrency` threads).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fmeval.model_runners.model_runner import ModelRunner

from llmeval.algorithms import ALGORITHMS
from llmeval.config import AlgorithmSection
from llmeval.evaluation.generate import ModelClient, Progress

log = logging.getLogger("llmeval.score")

PerRecord = list[dict[str, float | None]]


class CachedModelRunner(ModelRunner):
    """fmeval's ModelRunner interface over a ModelClient. fmeval composes the prompt from
    the (perturbed) input with the template `$model_input`; the client then applies the
    model's own prompt and content templates, exactly as the generate stage does, so the
    unperturbed input is a cache hit."""

    def __init__(self, client: ModelClient):
        # The base class's composer and extractor are not used: the client does their work.
        self.client = client

    def predict(self, prompt: str) -> tuple[str | None, float | None]:
        return self.client.ask(prompt)["model_output"], None


def score_each(
    records: list[dict[str, Any]],
    one: Callable[[dict[str, Any]], dict[str, float | None]],
    client: ModelClient,
    label: str,
) -> PerRecord:
    """`one(record)` for every record in `max_concurrency` threads, in input order. A record
    whose model calls fail keeps None scores (and is logged); all failing raises."""
    progress = Progress(len(records), label)
    errors: list[str] = []

    def guarded(record: dict[str, Any]) -> dict[str, float | None]:
        try:
            scores = one(record)
        except Exception as exc:
            errors.append(f"record {record.get('record_id')}: {type(exc).__name__}: {exc}"[:500])
            scores = {}
        progress.tick(cached=False, failed=not scores)
        return scores

    with ThreadPoolExecutor(max_workers=client.target.max_concurrency, thread_name_prefix="score") as pool:
        per_record = list(pool.map(guarded, records))
    if errors:
        log.warning("%s: %d of %d records could not be scored; first: %s", label, len(errors), len(records), errors[0])
    if records and len(errors) == len(records):
        raise RuntimeError(f"every record failed; first: {errors[0]}")
    return per_record


def robustness_scorer(section: AlgorithmSection, client: ModelClient):
    """fmeval's semantic-robustness algorithms, per record through `evaluate_sample`."""
    from fmeval.eval_algorithms.semantic_robustness_utils import get_perturbation_transform

    spec = ALGORITHMS[section.name]
    if spec.fmeval_module is None or spec.fmeval_config_class is None:
        raise ValueError(f"{spec.name} is not one of fmeval's semantic-robustness algorithms")
    module = importlib.import_module(spec.fmeval_module)
    algorithm_cls, config_cls = getattr(module, spec.name), getattr(module, spec.fmeval_config_class)
    runner = CachedModelRunner(client)

    def score(records: list[dict[str, Any]]) -> tuple[PerRecord, dict[str, float]]:
        options = dict(section.options)
        if "valid_labels" in spec.options and not options.get("valid_labels"):  # as fmeval's evaluate() does
            options["valid_labels"] = sorted({str(r["target_output"]) for r in records})
        config = config_cls(**options)
        algorithm = algorithm_cls(config)
        accepted = inspect.signature(algorithm.evaluate_sample).parameters
        reseed = hasattr(algorithm.perturbation_transform, "rng")  # back-translation has no RNG

        def one(record: dict[str, Any]) -> dict[str, float | None]:
            # fmeval's perturbations draw from one RNG seeded at construction, so a record's perturbed
            # inputs would depend on the order records are scored in. A fresh transform per record makes
            # them a function of the record alone: the same in every run, and cached after the first.
            mine = algorithm
            if reseed:
                mine = copy.copy(algorithm)
                mine.perturbation_transform = get_perturbation_transform(config)
            kwargs = {k: record[k] for k in ("model_input", "target_output") if k in accepted}
            scores = mine.evaluate_sample(**kwargs, model=runner, prompt_template="$model_input")
            return {s.name: s.value for s in scores}

        return score_each(records, one, client, f"score {section.name}"), {}

    return score


def stereotyping_scorer(client: ModelClient):
    """fmeval's PromptStereotyping: the log probability of each sentence of a pair, from the
    model, then fmeval's own per-record scores (is the more stereotypical sentence likelier,
    and by how much)."""
    from fmeval.constants import DatasetColumns
    from fmeval.eval_algorithms.prompt_stereotyping import (
        LOG_PROBABILITY_DIFFERENCE,
        PROMPT_STEREOTYPING,
        PromptStereotypingScores,
    )

    transform = PromptStereotypingScores()
    more_key, less_key = DatasetColumns.SENT_MORE_LOG_PROB.value.name, DatasetColumns.SENT_LESS_LOG_PROB.value.name

    def one(record: dict[str, Any]) -> dict[str, float | None]:
        if "sent_more_input" not in record:
            raise ValueError("the record has no sentence pair (dataset sent_more_input_key / sent_less_input_key)")
        scored = transform(
            {
                more_key: client.log_probability(record["sent_more_input"]),
                less_key: client.log_probability(record["sent_less_input"]),
            }
        )
        return {
            PROMPT_STEREOTYPING: float(scored[PROMPT_STEREOTYPING]),
            LOG_PROBABILITY_DIFFERENCE: scored[LOG_PROBABILITY_DIFFERENCE],
        }

    def score(records: list[dict[str, Any]]) -> tuple[PerRecord, dict[str, float]]:
        return score_each(records, one, client, "score PromptStereotyping"), {}

    return score
