"""The review task: Airflow's human-in-the-loop operator with the run's brief as its body
(`llmeval.review` says what a review is and decides)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from llmeval import review, targets
from llmeval.contracts import TaskId
from llmeval.dag.run_tasks import run_results
from llmeval.html import render
from llmeval.paired import read_records
from llmeval.registration import gate_decision
from llmeval.review import APPROVE, REJECT, flagged_records, leaderboard_link, outcome
from llmeval.selection import Selection
from llmeval.taskrun import current_run, planned, pulled


class ReviewOperator(HITLOperator):
    """Approve or reject the selected model, with a comment, before it is registered."""

    def __init__(self, *, flagged: int, **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's Params: a review form shows only its own
        super().__init__(
            options=[APPROVE, REJECT],
            params={
                "comment": Param(
                    None, type=["null", "string"], title="Comment", description="Why (kept in the registry)."
                )
            },
            **kwargs,
        )
        self.flagged = flagged

    def execute(self, context: Any) -> Any:
        self.body = self.brief(context)
        return super().execute(context)

    def brief(self, context: Any) -> str:
        from airflow.configuration import conf

        run = current_run()
        cfg = run.config()
        selection = Selection.from_dict(pulled(TaskId.SELECT))
        results = run_results(run, cfg, planned())
        by_model = {r.model: r for r in results}
        rule = selection.rules[0] if selection.rules else None
        gate = flags = None
        if selection.best:
            target = targets.get(cfg.target)
            gate = gate_decision(
                cfg,
                target.registry(cfg, run),
                run.dag_id,
                run.catalog_version,
                by_model[selection.best],
                results,
                run.folder,
            )
            records = {
                r.model: rows for r in results if r.succeeded and (rows := read_records(run.model_folder(r.model)))
            }
            if rule:
                flags = flagged_records(
                    records, selection.best, rule["metric"], rule["direction"] == "higher", self.flagged
                )
        return render(
            "review.md",
            selection=selection,
            rule=rule,
            scores={m: r.scores_by_metric().get(rule["metric"]) for m, r in by_model.items()} if rule else {},
            gate=gate,
            flags=flags or [],
            link=leaderboard_link(conf.get("api", "base_url", fallback="") or "", run.dag_id, run.run_id),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if "error" in event:  # the timeout: no decision, registered as PendingManualApproval
            self.log.warning("no review answer: %s", event.get("error_type"))
            return outcome(event)
        return outcome(super().execute_complete(context, event))


def review_task(timeout_minutes: float, flagged: int) -> ReviewOperator:
    return ReviewOperator(
        task_id=TaskId.REVIEW,
        subject="Register the selected model?",
        flagged=flagged,
        response_timeout=timedelta(minutes=timeout_minutes),
        doc_md=review.__doc__,
    )
