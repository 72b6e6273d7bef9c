"""Pairwise comparison: a judge sees two models' answers to the same record, in both orders.

A pair of models is judged on the records both answered. Each record is asked twice,
A's answer first then B's first, so position bias cancels: the record is a win for a
model only when both orders prefer it; orders that disagree (or both say tie) make a tie;
an answer without a verdict makes the record unparseable (counted, not an outcome). Win,
tie and loss rates carry bootstrap 95% intervals; a Bradley-Terry fit over every judged
pair ranks the models. Judge calls go through the generation client and its cache, so a
re-run asks nothing again.

    python -m llmeval.evaluation.pairwise --config run/config.json --runs-dir run/models \
        --output run/pairwise.json --cache-dir DIR [--cache-uri s3://...] --judge NAME=ENDPOINT[@URL]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import string
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmeval.agreement import answer_hash
from llmeval.config import AlgorithmSection, EvalConfig
from llmeval.dataset import read_jsonl
from llmeval.evaluation import cache_sync
from llmeval.evaluation.clients import judge_clients, read_config
from llmeval.evaluation.generate import ModelClient, Progress
from llmeval.evaluation.job_args import JudgeEndpoint
from llmeval.evaluation.score import bootstrap_ci
from llmeval.results import WIN_SHARE
from llmeval.store import OUTPUTS

log = logging.getLogger("llmeval.pairwise")

PROMPT = (
    "Compare two answers to the same question.\nQuestion: $model_input\nReference answer: $target_output\n"
    "Answer A: $answer_a\nAnswer B: $answer_b\n"
    "Which answer is better, judged by correctness first and clarity second?\n"
    "Reply in exactly this form:\nWinner: <A, B or tie>\nExplanation: <one sentence>"
)
_WINNER = re.compile(r"\bwinner[\s*_\"']*[:=-]?[\s*_\"']*(a|b|tie)\b", re.IGNORECASE)


def read_verdict(answer: str) -> str | None:
    """'A', 'B' or 'tie' from the asked-for form `Winner: A|B|tie` (case, spacing and markdown
    emphasis tolerated); None for anything else, so a sentence starting with "A" is no vote."""
    found = _WINNER.search(answer or "")
    if not found:
        return None
    value = found.group(1).lower()
    return "tie" if value == "tie" else value.upper()


def outcome(first: str | None, swapped: str | None) -> str | None:
    """One record's outcome for (a, b): 'a', 'b', 'tie', or None (unparseable). `first` is
    the verdict with a's answer as A, `swapped` with b's answer as A."""
    if first is None or swapped is None:
        return None
    votes = {"A": "a", "B": "b", "tie": "tie"}[first], {"A": "b", "B": "a", "tie": "tie"}[swapped]
    return votes[0] if votes[0] == votes[1] and votes[0] != "tie" else "tie"


@dataclass
class PairResult:
    a: str
    b: str
    records: int  # judged records with an outcome
    wins_a: int
    ties: int
    wins_b: int
    unparseable: int
    rates: dict[
        str, list[float | None]
    ]  # win_a / tie / win_b / preference_a (a tie is half a win) -> [rate, low, high]
    order_disagreement: float | None = None  # records whose two orders named different winners (position bias)


def pair_result(a: str, b: str, outcomes: list[str | None], disagreed: list[bool] | None = None) -> PairResult:
    """A pair's counts and rates; `disagreed`: per record, whether its two orders named different
    winners."""
    decided = [o for o in outcomes if o is not None]
    rates = {}
    points = {"win_a": {"a": 1.0}, "tie": {"tie": 1.0}, "win_b": {"b": 1.0}, "preference_a": {"a": 1.0, "tie": 0.5}}
    for name, scored in points.items():
        values = [scored.get(o, 0.0) for o in decided]
        rate = sum(values) / len(values) if values else None
        low, high = bootstrap_ci(values) if values else (None, None)
        rates[name] = [None if v is None else round(v, 4) for v in (rate, low, high)]
    return PairResult(
        a,
        b,
        len(decided),
        decided.count("a"),
        decided.count("tie"),
        decided.count("b"),
        len(outcomes) - len(decided),
        rates,
        round(sum(disagreed) / len(decided), 4) if disagreed is not None and decided else None,
    )


def orders_disagree(first: str | None, swapped: str | None) -> bool:
    """Whether a record's two orders named different winners (a judge swayed by position)."""
    if first is None or swapped is None:
        return False
    return {"A": "a", "B": "b", "tie": "tie"}[first] != {"A": "b", "B": "a", "tie": "tie"}[swapped]


@dataclass
class Strengths:
    """Bradley-Terry strengths: None for a model with no decided comparison; each connected group
    of compared models normalised on its own (strengths of two groups are not comparable)."""

    strength: dict[str, float | None]
    group: dict[str, int | None]
    converged: bool
    iterations: int


def bradley_terry(
    pairs: list[PairResult], models: list[str], tolerance: float = 1e-10, limit: int = 100_000
) -> Strengths:
    """Each model's strength from the pairwise outcomes, a tie counting half a win to each side;
    Hunter's MM updates until no strength moves by `tolerance` (or `limit` iterations, said in
    the result), with half a win each way per judged pair as a prior so a model that won or
    lost everything keeps a finite strength."""
    decided = [p for p in pairs if p.records]
    groups = _components(models, decided)
    wins = {m: 0.0 for m in groups}
    games: dict[tuple[str, str], float] = {}
    for p in decided:
        wins[p.a] += p.wins_a + p.ties / 2 + 0.5
        wins[p.b] += p.wins_b + p.ties / 2 + 0.5
        games[(p.a, p.b)] = games.get((p.a, p.b), 0.0) + p.records + 1
    strength = {m: 1.0 for m in groups}
    converged, iterations = not strength, 0
    while not converged and iterations < limit:
        iterations += 1
        updated = {}
        for m in strength:
            denominator = sum(n / (strength[x] + strength[y]) for (x, y), n in games.items() if m in (x, y))
            updated[m] = wins[m] / denominator
        for group in set(groups.values()):  # each group sums to 1 on its own
            total = sum(v for m, v in updated.items() if groups[m] == group)
            updated.update({m: v / total for m, v in updated.items() if groups[m] == group})
        converged = max(abs(updated[m] - strength[m]) for m in strength) < tolerance
        strength = updated
    if not converged:
        log.warning("Bradley-Terry did not converge in %d iterations (tolerance %g)", limit, tolerance)
    return Strengths(
        {m: round(strength[m], 6) if m in strength else None for m in models},
        {m: groups.get(m) for m in models},
        converged,
        iterations,
    )


def _components(models: list[str], decided: list[PairResult]) -> dict[str, int]:
    """Connected groups of the models that have a decided comparison, numbered from 0."""
    neighbours: dict[str, set[str]] = {}
    for p in decided:
        neighbours.setdefault(p.a, set()).add(p.b)
        neighbours.setdefault(p.b, set()).add(p.a)
    group: dict[str, int] = {}
    for start in [m for m in models if m in neighbours]:
        if start in group:
            continue
        number, todo = len(set(group.values())), [start]
        while todo:
            m = todo.pop()
            if m not in group:
                group[m] = number
                todo += neighbours[m] - group.keys()
    return group


def pairs_to_judge(section: AlgorithmSection, models: list[str]) -> list[tuple[str, str]]:
    """(champion, candidate) for each candidate, or every pair when all_pairs is set."""
    champion = section.options["champion"]
    if section.options.get("all_pairs"):
        return [(a, b) for a, b in itertools.combinations(models, 2)]
    return [(champion, m) for m in models if m != champion]


def compare(
    section: AlgorithmSection, answers: dict[str, dict[str, dict[str, Any]]], client: ModelClient
) -> dict[str, Any]:
    """Judge every pair on the records both models answered; the pairwise document
    (pairs, Bradley-Terry strengths, each model's rates against the champion)."""
    models = sorted(answers)
    champion = section.options["champion"]
    if champion not in answers:
        raise ChampionMissing(
            f"Pairwise compares every model with the champion {champion!r}, which has no answers in this run "
            f"(not planned, failed, or answered nothing); compared models: {', '.join(models) or 'none'}. "
            "No Pairwise scores for this run: evaluate the champion with the others"
        )
    pairs = pairs_to_judge(section, models)
    work = [
        (a, b, rid) for a, b in pairs for rid in sorted(set(answers[a]) & set(answers[b]), key=str)
    ]  # records answered by both
    progress = Progress(len(work), "pairwise judge")

    def ask(a_answer: str, b_answer: str, record: dict[str, Any]) -> str | None:
        prompt = string.Template(PROMPT).safe_substitute(
            model_input=record["model_input"],
            target_output=record.get("target_output", ""),
            answer_a=a_answer,
            answer_b=b_answer,
        )
        return read_verdict(client.ask(prompt)["model_output"])

    def one(item: tuple[str, str, str]) -> tuple[str | None, bool]:
        a, b, rid = item
        record_a, record_b = answers[a][rid], answers[b][rid]
        try:
            first = ask(record_a["model_output"], record_b["model_output"], record_a)
            swapped = ask(record_b["model_output"], record_a["model_output"], record_a)
            result, disagreed = outcome(first, swapped), orders_disagree(first, swapped)
        except Exception as exc:
            log.warning("pair %s/%s record %s: the judge failed: %s", a, b, rid, exc)
            result, disagreed = None, False
        progress.tick(cached=False, failed=result is None)
        return result, disagreed

    with ThreadPoolExecutor(max_workers=client.target.max_concurrency, thread_name_prefix="pairwise") as pool:
        judged = list(pool.map(one, work))
    outcomes = [o for o, _ in judged]
    results = []
    for a, b in pairs:
        swayed = [d for (x, y, _), (o, d) in zip(work, judged) if (x, y) == (a, b) and o is not None]
        results.append(pair_result(a, b, _outcomes(work, outcomes, a, b), swayed))
    fitted = bradley_terry(results, models)
    versus = {}
    for p in results:
        if champion not in (p.a, p.b) or not p.records:
            continue
        other, won, lost = (p.b, "win_b", "win_a") if p.a == champion else (p.a, "win_a", "win_b")
        preference = p.rates["preference_a"]
        if other == p.b:  # the champion is a: b's preference is 1 - a's (the interval flips)
            preference = [None if v is None else round(1 - v, 4) for v in (preference[0], preference[2], preference[1])]
        won_share = [1.0 if o == ("a" if other == p.a else "b") else 0.0 for o in _outcomes(work, outcomes, p.a, p.b)]
        low, high = bootstrap_ci(won_share)
        versus[other] = {
            WIN_SHARE: [round(sum(won_share) / len(won_share), 4), round(low, 4), round(high, 4)],
            "compared_vs_champion": len(won_share),
            "win_rate_vs_champion": preference,
            "wins_vs_champion": p.rates[won],
            "ties_vs_champion": p.rates["tie"],
            "losses_vs_champion": p.rates[lost],
            "records_vs_champion": p.records,
        }
    return {
        "judge": section.options["judge"],
        "champion": champion,
        "pairs": [asdict(p) for p in results],
        "bradley_terry": sorted(
            ({"model": m, "strength": s, "group": fitted.group[m]} for m, s in fitted.strength.items()),
            key=lambda r: (r["strength"] is None, -(r["strength"] or 0.0), r["model"]),
        ),
        "bradley_terry_fit": {"converged": fitted.converged, "iterations": fitted.iterations},
        "versus_champion": versus,
        "verdicts": _verdicts(work, [o for o, _ in judged], answers),
    }


def _verdicts(
    work: list[tuple[str, str, str]], outcomes: list[str | None], answers: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Each record's outcome with the hashes of the two answers (matched to people's preferences)."""
    return [
        {
            "a": a,
            "b": b,
            "record_id": rid,
            "a_sha256": answer_hash(str(answers[a][rid]["model_output"])),
            "b_sha256": answer_hash(str(answers[b][rid]["model_output"])),
            "outcome": result,
        }
        for (a, b, rid), result in zip(work, outcomes)
    ]


class ChampionMissing(RuntimeError):
    """The champion has no answers to compare with."""


def _outcomes(work: list[tuple[str, str, str]], outcomes: list[str | None], a: str, b: str) -> list[str | None]:
    """The outcomes of the pair (a, b)'s records (unparseable ones included, as None)."""
    return [o for (x, y, _), o in zip(work, outcomes) if (x, y) == (a, b)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmeval.evaluation.pairwise", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, required=True, help="folder with <model>/outputs.jsonl")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--cache-uri", help="s3:// object holding the judge's response cache between jobs (SageMaker)")
    parser.add_argument("--judge", type=JudgeEndpoint.parse, action="append", default=[], metavar="NAME=ENDPOINT[@URL]")
    parser.add_argument("--region")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    cfg: EvalConfig = read_config(args.config)
    (section,) = [s for s in cfg.algorithms if s.compares_models]
    answers = {}
    for folder in sorted(p for p in args.runs_dir.iterdir() if (p / OUTPUTS).exists()):
        rows = read_jsonl(folder / OUTPUTS)
        answered = {r["record_id"]: r for r in rows if r.get("error") is None and r.get("model_output") is not None}
        if answered:  # a model that answered nothing is not compared
            answers[folder.name] = answered
    with cache_sync.opened(args.cache_dir, args.cache_uri) as cache:
        document = compare(
            section, answers, judge_clients(cfg, tuple(args.judge), args.region, cache)[section.options["judge"]]
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2), encoding="utf-8")
    log.info("pairwise: %s", ", ".join(f"{r['model']} {r['strength']}" for r in document["bradley_terry"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
