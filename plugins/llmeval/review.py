"""Human review before promotion (`registry.approval: review`).

The `review` task sits between selection and registration: an Airflow human-in-the-loop task
(in Airflow 3.3 it waits in the awaiting-input state, holding no worker slot) whose body shows
the ranking with intervals, the champion gate's verdict, the records worth a look and a link
to the run's Leaderboard tab. Approve registers the version as Approved, Reject as Rejected (or
not at all when `on_gate_fail: skip`); no answer within the timeout leaves it
PendingManualApproval. The reviewer, time and comment go to the registry and the model card.

This module holds what the register step and the pages need; the task is `llmeval.dag.review`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from llmeval.config import EvalConfig
    from llmeval.rubrics import Rubric

APPROVE, REJECT = "Approve", "Reject"
LEADERBOARD_TAB = "llm-leaderboard"  # the plugin's dag_run view


@dataclass(frozen=True)
class Flag:
    record_id: str
    why: str
    prompt: str
    output: str
    reference: str
    score: float | None
    answer_sha256: str = ""  # the whole answer's, for a rating of it to become a label


def flagged_records(
    records: dict[str, list[dict[str, Any]]], best: str, metric: str, higher_is_better: bool, limit: int
) -> list[Flag]:
    """Up to `limit` of the selected model's records: half from its lowest-scoring on `metric`
    (below its best score), then those where it differs most from the other models' mean score
    on the same record."""
    from llmeval.agreement import answer_hash
    from llmeval.paired import score_of

    mine = {str(r.get("record_id")): r for r in records.get(best, [])}
    scored = {k: v for k, r in mine.items() if (v := score_of(r, metric)) is not None}
    sign = 1.0 if higher_is_better else -1.0
    top = max((sign * v for v in scored.values()), default=0.0)
    lowest = sorted((k for k in scored if sign * scored[k] < top), key=lambda k: (sign * scored[k], k))
    others: dict[str, list[float]] = {}
    for model, rows in records.items():
        if model != best:
            for row in rows:
                value = score_of(row, metric)
                if value is not None and str(row.get("record_id")) in scored:
                    others.setdefault(str(row.get("record_id")), []).append(value)
    gaps = {k: abs(scored[k] - sum(v) / len(v)) for k, v in others.items()}
    disagreeing = sorted((k for k in gaps if gaps[k] > 0), key=lambda k: (-gaps[k], k))
    chosen: dict[str, str] = {}
    for k in lowest[: (limit + 1) // 2]:
        chosen[k] = f"lowest {metric}"
    for k in [*disagreeing, *lowest]:  # then fill up from the rest of either list
        if len(chosen) >= limit:
            break
        chosen.setdefault(k, f"differs from the other models by {gaps[k]:.2f}" if gaps.get(k) else f"lowest {metric}")
    return [
        Flag(
            k,
            why,
            _short(mine[k].get("prompt") or mine[k].get("model_input")),
            _short(mine[k].get("model_output")),
            _short(mine[k].get("target_output")),
            scored.get(k),
            answer_hash(str(mine[k].get("model_output") or "")),
        )
        for k, why in chosen.items()
    ]


def _short(text: Any, limit: int = 200) -> str:
    """One line of plain text for a Markdown code span: no backticks, no line breaks."""
    flat = " ".join(str("" if text is None else text).replace("`", "'").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def leaderboard_link(base_url: str, dag_id: str, run_id: str) -> str:
    return (
        f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/plugin/{LEADERBOARD_TAB}"
    )


def outcome(event: dict[str, Any]) -> dict[str, Any]:
    """What the register step needs from the review task's answer (or its timeout)."""
    if "error" in event:
        return {"decision": None, "why": f"no review answer: {event.get('error_type', 'error')}"}
    by = event.get("responded_by_user") or {}
    at = event.get("responded_at")
    return {
        "decision": (event.get("chosen_options") or [None])[0],
        "by": by.get("name") or by.get("id") or "unknown",
        "at": at.isoformat() if isinstance(at, datetime) else str(at),
        "comment": str((event.get("params_input") or {}).get("comment") or ""),
    }


def rated_rubric(cfg: EvalConfig) -> Rubric | None:
    """The rubric the review form asks the reviewer to rate flagged answers on: LLMJudge's first
    labelled rubric, else its first; None without LLMJudge."""
    rubrics = [r for s in cfg.algorithms if s.asks_judge and not s.compares_models for r in s.rubrics]
    return next((r for r in rubrics if r.labels), rubrics[0] if rubrics else None)


def rating_param(k: int) -> str:
    return f"rating_{k}"


def reviewer_labels(asked: dict[str, Any], params_input: dict[str, Any], by: str, at: str, run_id: str) -> list[dict]:
    """The labels a reviewer gave in the form: a rating per flagged answer they rated."""
    labels = []
    for k, flagged in enumerate(asked["answers"], start=1):
        rating = params_input.get(rating_param(k))
        if rating is not None:
            labels.append({**flagged, "rating": int(rating), "labeller": by, "at": at, "run_id": run_id})
    return labels


def review_text(review: dict[str, Any] | None) -> str:
    """The review for the registry's metadata, the report and the model card."""
    if not review:
        return ""
    if not review.get("decision"):
        return review.get("why", "no review answer")
    comment = f": {review['comment']}" if review.get("comment") else ""
    done = {APPROVE: "Approved", REJECT: "Rejected"}.get(review["decision"], review["decision"])
    return f"{done} by {review['by']} at {review['at']}{comment}"
