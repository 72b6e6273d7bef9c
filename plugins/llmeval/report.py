"""Leaderboard report: an HTML page with a bar chart per metric (95% intervals drawn as
whiskers), the ranking, per-category scores and failures; and a Markdown summary.
Self-contained (inline SVG, no scripts), so it opens from disk or an S3 link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from llmeval.config.inspect_tasks import INSPECT
from llmeval.html import fmt, render
from llmeval.paired import paired_test, record_scores
from llmeval.results import COUNT_SUFFIXES, ModelResult, ResourceUsage, Score
from llmeval.selection import Selection


@dataclass
class ReportInput:
    title: str
    run_id: str
    dataset: str
    results: list[ModelResult]
    selection: Selection
    registration: str
    catalog_version: str = ""
    trend_link: str = ""
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model -> its scored records
    record_links: dict[str, str] = field(default_factory=dict)  # model -> its records view (in Airflow)
    pairwise: dict[str, Any] | None = None  # the run's pairwise comparison (pairwise.json)
    judge_usage: dict[str, list[ResourceUsage]] = field(default_factory=dict)  # judge -> what it was billed for
    agreement: list[dict[str, Any]] = field(default_factory=list)  # each labelled rubric's judge against people


def _scores(results: list[ModelResult]) -> dict[str, dict[str, Score]]:
    """metric -> model -> Score, for every dataset score of every succeeded model."""
    table: dict[str, dict[str, Score]] = {}
    for result in results:
        for metric, score in result.scores_by_metric().items():
            if metric.split("/")[0] not in ("generation", "cost"):  # these have their own tables
                table.setdefault(metric, {})[result.model] = score
    return table


def is_count(metric: str) -> bool:
    """A figure that counts records (e.g. a judge's unparseable answers): tabled, never charted as a score."""
    return metric.endswith(COUNT_SUFFIXES)


def _bar_chart(by_model: dict[str, Score]) -> dict[str, Any] | None:
    """Geometry of a bar per model with its 95% interval as whiskers (drawn by charts.html)."""
    rows = [(m, s, s.value) for m, s in by_model.items() if s.value is not None]
    if not rows:
        return None
    top = max([1.0] + [s.ci_high or value for _, s, value in rows])
    bar_h, label_w, plot_w = 26, 200, 380
    bars = []
    for i, (model, score, value) in enumerate(rows):
        ci = None
        if score.ci_low is not None and score.ci_high is not None:
            ci = (label_w + plot_w * score.ci_low / top, label_w + plot_w * score.ci_high / top)
        bars.append({"model": model, "score": score, "y": 10 + i * bar_h, "width": plot_w * value / top, "ci": ci})
    # room for "value [low, high]" after the bars
    return {
        "width": label_w + plot_w + 200,
        "height": bar_h * len(rows) + 30,
        "label_w": label_w,
        "plot_w": plot_w,
        "bars": bars,
    }


@dataclass(frozen=True)
class Versus:
    """How a model compares with the selected one: a chip (`short`, `verdict`) and the sentence
    behind it (`detail`)."""

    verdict: str  # "selected", "different", "not distinguishable", "no interval" or ""
    short: str = ""
    detail: str = ""


def _versus(
    model: ModelResult | None,
    best: ModelResult | None,
    rule: dict[str, Any] | None,
    records: dict[str, list[dict[str, Any]]],
) -> Versus:
    """Whether this model differs from the selected one on the first selection metric: by a
    paired test on the records both answered when their records are at hand, else by
    whether the 95% intervals overlap. Says which it used."""
    if model is None or best is None or not rule:
        return Versus("")
    if model.model == best.model:
        return Versus("selected", "selected", "the selected model")
    metric = rule["metric"]
    if model.model in records and best.model in records:
        test = paired_test(
            metric,
            record_scores(records[model.model], metric),
            record_scores(records[best.model], metric),
            higher_is_better=rule["direction"] == "higher",
        )
        if test.mean_delta is not None and test.ci_low is not None and test.ci_high is not None:
            verdict = "different" if test.ci_low > 0 or test.ci_high < 0 else "not distinguishable"
            detail = (
                f"{verdict} ({test.method}, {test.matched} records: {test.mean_delta:+.3f} "
                f"[{test.ci_low:+.3f}, {test.ci_high:+.3f}])"
            )
            return Versus(verdict, f"{test.mean_delta:+.3f}", detail)
    mine, theirs = model.scores_by_metric().get(metric), best.scores_by_metric().get(metric)
    if not mine or not theirs:
        return Versus("no interval", "n/a", "no interval to compare")
    low, high, their_low, their_high = mine.ci_low, mine.ci_high, theirs.ci_low, theirs.ci_high
    if low is None or high is None or their_low is None or their_high is None:
        return Versus("no interval", "n/a", "no interval to compare")
    verdict = "different" if high < their_low or low > their_high else "not distinguishable"
    return Versus(verdict, "95% CI", f"{verdict} (95% intervals)")


def render_html(data: ReportInput) -> str:
    sel = data.selection
    by_model = {r.model: r for r in data.results}
    first_rule = sel.rules[0] if sel.rules else None
    ranking = [
        {
            "candidate": cand,
            "versus": _versus(by_model.get(cand.model), by_model.get(sel.best or ""), first_rule, data.records),
            "cost": by_model[cand.model].cost_usd if cand.model in by_model else None,
        }
        for cand in sel.ranking
    ]
    categories = sorted({c for r in data.results for a in r.algorithms for c in a.category_scores})
    category_rows = [
        {
            "model": r.model,
            "metric": f"{a.algorithm}/{s.name}",
            "values": [
                next((x.value for x in a.category_scores.get(c, []) if x.name == s.name), None) for c in categories
            ],
        }
        for r in data.results
        for a in r.algorithms
        for s in a.scores
    ]
    return render(
        "leaderboard.html",
        data=data,
        inspect_tasks=_inspect_tasks(data),
        selection=sel,
        ranking=ranking,
        charts_by_metric=[(m, _bar_chart(scores)) for m, scores in _scores(data.results).items() if not is_count(m)],
        counts={m: scores for m, scores in _scores(data.results).items() if is_count(m)},
        tuned=[r for r in data.results if r.metadata.get("training")],
        categories=categories,
        category_rows=category_rows,
        cost=run_cost(data.results, data.judge_usage),
        warnings=[(r.model, w) for r in data.results for w in r.metadata.get("warnings") or []],
        failures=[r for r in data.results if not r.succeeded]
        + [r for r in data.results if r.succeeded and any(a.error for a in r.algorithms)],
    )


def _inspect_tasks(data: ReportInput) -> list[tuple[str, str, str, str]]:
    """(task, model, its samples in the records view, its Inspect log) of each model's Inspect
    task; the links only in Airflow (the run store's copy of the page has none)."""
    found = []
    for r in data.results:
        link = data.record_links.get(r.model, "")
        for a in r.algorithms:
            if a.algorithm.startswith(f"{INSPECT}/") and not a.error:
                task = a.algorithm.split("/", 1)[1]
                samples = f"{link}?task={quote(a.algorithm, safe='')}" if link else ""
                log = f"{link.removesuffix('/records')}/inspect/{quote(task)}.eval" if link else ""
                found.append((a.algorithm, r.model, samples, log))
    return found


@dataclass
class RunCost:
    """What a run's models cost together; `unpriced` names instance types without a price."""

    usd: float
    endpoint_seconds: float
    unpriced: list[str]

    def text(self) -> str:
        missing = f" (without {', '.join(self.unpriced)}: no price known)" if self.unpriced else ""
        return f"${self.usd:.4f}{missing}, endpoints alive {self.endpoint_seconds:.0f} s"


def run_cost(results: list[ModelResult], judges: dict[str, list[ResourceUsage]] | None = None) -> RunCost:
    """The models' cost together with the judges' (`judges`: their usage, by judge name)."""
    judged = [u for usage in (judges or {}).values() for u in usage]
    usage = [u for r in results for u in r.usage] + judged
    return RunCost(
        usd=round(sum(u.usd for u in usage if u.usd is not None), 6),
        endpoint_seconds=sum(r.endpoint_seconds or 0.0 for r in results)
        + sum(u.seconds for u in judged if u.resource in ("endpoint", "local model server")),
        unpriced=sorted({u.instance_type for u in usage if u.usd is None}),
    )


def render_markdown(data: ReportInput) -> str:
    sel = data.selection
    lines = [
        f"# {data.title}",
        "",
        f"Run `{data.run_id}`, dataset `{data.dataset}` (catalog version `{data.catalog_version}`). "
        f"Selected: **{sel.best or 'none'}**. "
        f"Registry: {data.registration}",
        "",
        f"Cost: {run_cost(data.results, data.judge_usage).text()}.",
        "",
        *(f"Left out of selection and the gate: {metric}: {why}." for metric, why in sel.excluded.items()),
        *([""] if sel.excluded else []),
        "| # | model | status | composite | " + " | ".join(r["metric"] for r in sel.rules) + " | reason |",
        "|---|---|---|---|" + "---|" * len(sel.rules) + "---|",
    ]
    for i, c in enumerate(sel.ranking, 1):
        vals = " | ".join(fmt(c.metrics.get(r["metric"])) for r in sel.rules)
        lines.append(f"| {i} | {c.model} | {c.status} | {fmt(c.composite)} | {vals} | {c.reason} |")
    return "\n".join(lines) + "\n"


def render_model_html(result: ModelResult, samples: list[dict] | None = None, limit: int = 20) -> str:
    """One model's report: every algorithm's scores with intervals, categories, sample records."""
    shown = (samples or [])[:limit]
    return render("model_report.html", result=result, samples=shown, judged=any(r.get("judgements") for r in shown))
