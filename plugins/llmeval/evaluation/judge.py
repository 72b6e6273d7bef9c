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
from llmeval.rubrics import panel_rating, read_judgement

log = logging.getLogger("llmeval.score")


def judge_scorer(section: AlgorithmSection, judges: dict[str, ModelClient]):
    """Per record and rubric, the judge's rating; for a panel, each judge's rating (kept under
    `by_judge`) and the panel's, their aggregate (mean, median or majority)."""
    names = section.judge_names
    missing = [n for n in names if n not in judges]
    if missing:
        raise RuntimeError(
            f"{section.name}: no endpoint of the judge {missing[0]!r} was given (--judge {missing[0]}=...)"
        )
    client, rubrics, panel = judges[names[0]], section.rubrics, len(names) > 1
    name = ", ".join(names)

    def one(record: dict[str, Any]) -> dict[str, float | None]:
        scores: dict[str, float | None] = {}
        verdicts = record.setdefault("judgements", {})
        for rubric in rubrics:
            each = {
                n: read_judgement(judges[n].ask(rubric.prompt(record))["model_output"], rubric.scale) for n in names
            }
            judgement = each[names[0]]
            if not panel:
                verdicts[rubric.name] = judgement.as_record()
                scores[rubric.name] = None if judgement.rating is None else rubric.normalised(judgement.rating)
                continue
            rated = [j.rating for j in each.values() if j.rating is not None]
            rating = panel_rating(rated, section.aggregate)
            given = ", ".join(f"{n} {'unparseable' if j.rating is None else j.rating}" for n, j in each.items())
            verdicts[rubric.name] = {
                "rating": rating,
                "by_judge": {n: j.as_record() for n, j in each.items()},
                **({"unparseable": f"no judge of the panel gave a rating ({given})"} if rating is None else {}),
                **({"explanation": f"the {section.aggregate} of {given}"} if rating is not None else {}),
            }
            scores[rubric.name] = None if rating is None else rubric.normalised(rating)
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
