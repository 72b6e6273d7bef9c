"""LLM-as-judge rubrics: the built-in ones, a config's custom ones, the judge's prompt and
how its answer is read.

A rubric is a prompt template and a rating scale (the allowed integer ratings). The
template may use `$model_input`, `$model_output`, `$target_output`, `$context` (the
dataset's context column), `$scale_min` and `$scale_max`; it must use `$model_output`.
The judge is asked to answer `Rating: <n>` then `Explanation: <text>`; an answer without a
rating on the scale is unparseable: counted, never scored. No Airflow, no fmeval here:
the config layer and the evaluation entry point both use it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

DEFAULT_SCALE = (1, 2, 3, 4, 5)
DEFAULT_RUBRICS = ["correctness"]
PLACEHOLDERS = ("model_input", "model_output", "target_output", "context", "scale_min", "scale_max")
_ANSWER_FORM = (
    "\nReply in exactly this form:\nRating: <a whole number from $scale_min to $scale_max>\n"
    "Explanation: <one or two sentences>"
)
BUILT_IN = {
    "correctness": "Grade an answer against a reference answer.\nQuestion: $model_input\n"
    "Reference answer: $target_output\nAnswer to grade: $model_output\n"
    "How correct is the answer, judged by the reference? $scale_min means wrong, $scale_max means fully correct."
    + _ANSWER_FORM,
    "completeness": "Grade how complete an answer is.\nQuestion: $model_input\n"
    "Reference answer: $target_output\nAnswer to grade: $model_output\n"
    "Does the answer cover everything the reference covers? $scale_min means it covers none of it, "
    "$scale_max means it covers all of it." + _ANSWER_FORM,
    "helpfulness": "Grade how helpful an answer is to the person who asked.\nRequest: $model_input\n"
    "Answer to grade: $model_output\n$scale_min means useless or harmful, $scale_max means it fully serves "
    "the request, clearly and without padding." + _ANSWER_FORM,
    "faithfulness": "Grade whether an answer stays faithful to the given context.\nContext: $context\n"
    "Request: $model_input\nAnswer to grade: $model_output\n$scale_min means it contradicts the context or "
    "invents facts, $scale_max means every claim is supported by the context." + _ANSWER_FORM,
}
_RATING = re.compile(r"rating\W{0,4}(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"^\W{0,4}(-?\d+(?:\.\d+)?)\b")
_EXPLANATION = re.compile(r"explanation\s*[:=-]\s*(.*)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Rubric:
    name: str
    template: str
    scale: tuple[int, ...] = DEFAULT_SCALE
    labels: str | None = None  # people's ratings of answers (JSON Lines): the judge's agreement is measured
    min_agreement: float | None = None  # the kappa's lower bound a trusted judge reaches
    min_labels: int = 20  # fewer labelled answers in a run: agreement not measured

    def prompt(self, record: dict[str, Any]) -> str:
        """The judge's prompt for one answered record."""
        return string.Template(self.template).safe_substitute(
            model_input=record.get("model_input", ""),
            model_output=record.get("model_output", ""),
            target_output=record.get("target_output", ""),
            context=record.get("context", ""),
            scale_min=self.scale[0],
            scale_max=self.scale[-1],
        )

    def normalised(self, rating: float) -> float:
        """The rating on 0..1 (the scale's lowest point is 0, its highest 1)."""
        return (rating - self.scale[0]) / (self.scale[-1] - self.scale[0])


@dataclass(frozen=True)
class Judgement:
    rating: int | None  # None: the answer had no rating on the scale
    explanation: str

    def as_record(self) -> dict[str, Any]:
        if self.rating is None:
            return {"rating": None, "unparseable": self.explanation}
        return {"rating": self.rating, "explanation": self.explanation}


def read_judgement(answer: str, scale: tuple[int, ...]) -> Judgement:
    """The rating and explanation in a judge's answer; an answer without a rating on the
    scale keeps its first 300 characters as the explanation and no rating."""
    text = (answer or "").strip()
    found = _RATING.search(text) or _LEADING_NUMBER.search(text)
    value = float(found.group(1)) if found else None
    if value is None or value not in scale:
        return Judgement(None, text[:300])
    explained = _EXPLANATION.search(text)
    if explained:
        explanation = explained.group(1)
    else:  # the rating was found (value is not None): the rest of the answer explains it
        assert found is not None
        explanation = text[: found.start()] + text[found.end() :]
    return Judgement(int(value), " ".join(explanation.split()).strip(" *:-")[:1000])


def panel_rating(ratings: list[int], how: str) -> float | None:
    """A judge panel's rating from its judges' ratings (the unparseable left out): their mean,
    their median, or the rating most of them gave (a tie: the median of the tied ratings)."""
    if not ratings:
        return None
    ordered = sorted(ratings)
    middle = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    if how == "mean":
        return sum(ratings) / len(ratings)
    if how == "median":
        return middle
    counts = {r: ratings.count(r) for r in ordered}
    most = [r for r, n in counts.items() if n == max(counts.values())]
    return (most[(len(most) - 1) // 2] + most[len(most) // 2]) / 2


def rubric_problem(entry: Any) -> tuple[tuple[str | int, ...], str] | None:
    """What is wrong with one `rubrics` entry (a built-in name, or {name, template?, scale?}),
    as (field path within the entry, message), or None."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        return (), f"expected a built-in rubric name ({', '.join(BUILT_IN)}) or {{name, template, scale}}"
    unknown = set(entry) - {"name", "template", "scale", "labels", "min_agreement", "min_labels"}
    if unknown:
        return (sorted(unknown)[0],), "a rubric takes name, template, scale, labels, min_agreement and min_labels"
    problem = agreement_problem(entry)
    if problem:
        return problem
    name, template = entry.get("name"), entry.get("template")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name):
        return ("name",), f"expected a rubric name (letters, digits, _), got {name!r}"
    if template is None and name not in BUILT_IN:
        return ("name",), f"{name!r} is not a built-in rubric ({', '.join(BUILT_IN)}); give it a template"
    if template is not None:
        if not isinstance(template, str) or "$model_output" not in template:
            return ("template",), "a custom rubric's template must contain $model_output (the answer to judge)"
        unknown_placeholders = {
            m.group("named") or m.group("braced")
            for m in string.Template.pattern.finditer(template)
            if (m.group("named") or m.group("braced"))
        } - set(PLACEHOLDERS)
        if unknown_placeholders:
            return ("template",), (
                f"unknown placeholder ${sorted(unknown_placeholders)[0]}; the template may use "
                + ", ".join(f"${p}" for p in PLACEHOLDERS)
            )
    scale = entry.get("scale", DEFAULT_SCALE)
    if (
        not isinstance(scale, (list, tuple))
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in scale)
        or len(set(scale)) < 2
        or list(scale) != sorted(set(scale))
    ):
        return ("scale",), f"expected at least 2 distinct whole-number ratings in ascending order, got {scale!r}"
    return None


def agreement_problem(entry: dict[str, Any]) -> tuple[tuple[str | int, ...], str] | None:
    labels, floor, least = entry.get("labels"), entry.get("min_agreement"), entry.get("min_labels", 20)
    if labels is not None and (not isinstance(labels, str) or not labels.strip()):
        return ("labels",), "expected the labels file: a path under include/data, an absolute path or s3://bucket/key"
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not -1 <= floor <= 1):
        return ("min_agreement",), f"expected a kappa between -1 and 1, got {floor!r}"
    if floor is not None and labels is None:
        return ("min_agreement",), "min_agreement measures the judge against people: give the labels file too"
    if isinstance(least, bool) or not isinstance(least, int) or least < 2:
        return ("min_labels",), f"expected a whole number of labelled answers, at least 2, got {least!r}"
    return None


def rubrics_of(entries: list[Any]) -> list[Rubric]:
    """The rubrics of a (validated) `rubrics` list."""
    out = []
    for entry in entries:
        entry = {"name": entry} if isinstance(entry, str) else entry
        name = entry["name"]
        out.append(
            Rubric(
                name,
                entry.get("template") or BUILT_IN[name],
                tuple(entry.get("scale", DEFAULT_SCALE)),
                entry.get("labels"),
                entry.get("min_agreement"),
                entry.get("min_labels", 20),
            )
        )
    return out
