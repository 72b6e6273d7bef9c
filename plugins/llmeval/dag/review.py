"""The review task: Airflow's human-in-the-loop operator with the run's brief as its body
(`llmeval.review` says what a review is and decides)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from llmeval import review, store, targets
from llmeval.contracts import TaskId
from llmeval.dag.run_tasks import run_results
from llmeval.html import render
from llmeval.paired import read_records
from llmeval.registration import gate_decision
from llmeval.review import (
    APPROVE,
    REJECT,
    flagged_records,
    leaderboard_link,
    outcome,
    rating_param,
    reviewer_labels,
)
from llmeval.rubrics import Rubric
from llmeval.selection import Selection
from llmeval.taskrun import current_run, planned, pulled


class ReviewOperator(HITLOperator):
    """Approve or reject the selected model, with a comment, before it is registered; rate the
    flagged answers on the judge's rubric (each rating becomes a label of that answer)."""

    def __init__(self, *, flagged: int, rubric: Rubric | None = None, **kwargs: Any) -> None:
        kwargs.pop("params", None)  # the DAG's Params: a review form shows only its own
        form = {
            "comment": Param(None, type=["null", "string"], title="Comment", description="Why (kept in the registry).")
        }
        if rubric is not None:
            form.update({rating_param(k): _rating_field(rubric, k) for k in range(1, flagged + 1)})
        super().__init__(options=[APPROVE, REJECT], params=form, **kwargs)
        self.flagged, self.rubric = flagged, rubric

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
                self._ask_ratings(run, flags)
        return render(
            "review.md",
            selection=selection,
            rule=rule,
            scores={m: r.scores_by_metric().get(rule["metric"]) for m, r in by_model.items()} if rule else {},
            gate=gate,
            flags=flags or [],
            rubric=self.rubric,
            link=leaderboard_link(conf.get("api", "base_url", fallback="") or "", run.dag_id, run.run_id),
        )

    def _ask_ratings(self, run: Any, flags: list[Any]) -> None:
        """Which answers the form's ratings are of, for when the answer comes."""
        if self.rubric is None:
            return
        answers = [{"record_id": f.record_id, "answer_sha256": f.answer_sha256} for f in flags]
        asked = {"rubric": self.rubric.name, "answers": answers}
        store.write_text(run.folder / store.REVIEW_FLAGS, json.dumps(asked, indent=2))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if "error" in event:  # the timeout: no decision, registered as PendingManualApproval
            self.log.warning("no review answer: %s", event.get("error_type"))
            return outcome(event)
        decided = outcome(super().execute_complete(context, event))
        self._keep_ratings(decided, event.get("params_input") or {})
        return decided

    def _keep_ratings(self, decided: dict[str, Any], given: dict[str, Any]) -> None:
        """Append the reviewer's ratings to the DAG's labels store (labels/<dag>/<rubric>.jsonl)."""
        run = current_run()
        flags = run.folder / store.REVIEW_FLAGS
        if self.rubric is None or not flags.exists():
            return
        asked = json.loads(flags.read_text(encoding="utf-8"))
        labels = reviewer_labels(asked, given, decided["by"], decided["at"], run.run_id)
        if not labels:
            return
        path = store.labels_file(run.dag_id, asked["rubric"], run.config().artifacts_url)
        kept = path.read_text(encoding="utf-8") if path.exists() else ""
        store.write_text(path, kept + "".join(json.dumps(label) + "\n" for label in labels))
        self.log.info("kept %d rating(s) of %s as labels in %s", len(labels), asked["rubric"], store.describe(path))


def _rating_field(rubric: Rubric, k: int) -> Param:
    low, high = rubric.scale[0], rubric.scale[-1]
    return Param(
        None,
        type=["null", "integer"],
        minimum=low,
        maximum=high,
        title=f"{rubric.name} of record {k}",
        description=f"Your rating ({low}-{high}) of the answer numbered {k} under 'Records to look at'; kept as a "
        "label the judge is measured against. Empty: not rated.",
    )


def review_task(timeout_minutes: float, flagged: int, rubric: Rubric | None = None) -> ReviewOperator:
    return ReviewOperator(
        task_id=TaskId.REVIEW,
        subject="Register the selected model?",
        flagged=flagged,
        rubric=rubric,
        response_timeout=timedelta(minutes=timeout_minutes),
        doc_md=review.__doc__,
    )
