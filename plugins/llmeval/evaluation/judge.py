"""LLMJudge: a judge model rates every answered record by each rubric.

The judge is asked through its own `ModelClient` (the generate stage's cache, retries
and adaptive concurrency), so a re-run asks it nothing again. Per record and rubric the
rating goes to the scores (on 0..1, the scale's lowest point 0), and the rating with the
judge's explanation to the record's `judgements`. An answer without a rating on the scale
is unparseable: the record keeps no score for that rubric (it is not a 0), and the count
is a dataset score, `<rubric>_unparseable`.
"""

from __future__ import annotations

import logging
from typing import Any

from llmeval.config import AlgorithmSection
from llmeval.evaluation.generate import ModelClient
from llmeval.evaluation.model_scorers import PerRecord, score_each
from llmeval.results import UNPARSEABLE
from llmeval.rubrics import read_judgement

log = logging.getLogger("llmeval.score")


def judge_scorer(section: AlgorithmSection, judges: dict[str, ModelClient]):
    name = section.options["judge"]
    if name not in judges:
        raise RuntimeError(f"{section.name}: no endpoint of the judge {name!r} was given (--judge {name}=...)")
    client, rubrics = judges[name], section.rubrics

    def one(record: dict[str, Any]) -> dict[str, float | None]:
        scores: dict[str, float | None] = {}
        verdicts = record.setdefault("judgements", {})
        for rubric in rubrics:
            judgement = read_judgement(client.ask(rubric.prompt(record))["model_output"], rubric.scale)
            verdicts[rubric.name] = judgement.as_record()
            scores[rubric.name] = None if judgement.rating is None else rubric.normalised(judgement.rating)
        return scores

    def score(records: list[dict[str, Any]]) -> tuple[PerRecord, dict[str, float]]:
        per_record = score_each(records, one, client, f"score {section.name} (judge {name})")
        unparseable = {
            rubric.name + UNPARSEABLE: float(
                sum(1 for scores in per_record if rubric.name in scores and scores[rubric.name] is None)
            )
            for rubric in rubrics
        }
        for rubric in rubrics:
            count = int(unparseable[rubric.name + UNPARSEABLE])
            if count:
                log.warning(
                    "%s: the judge's answer had no rating for %s on %d records", section.name, rubric.name, count
                )
        return per_record, unparseable

    return score
