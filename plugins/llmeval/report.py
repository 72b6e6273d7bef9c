"""Leaderboard report: an HTML page with a bar chart per metric (95% intervals drawn as
whiskers), the ranking, per-category scores and failures; and a Markdown summary.
Self-contained (inline SVG, no scripts), so it opens from disk or an S3 link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from llmeval.paired import paired_test, record_scores
from llmeval.results import ModelResult, Score
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


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _scores(results: list[ModelResult]) -> dict[str, dict[str, Score]]:
    """metric -> model -> Score, for every dataset score of every succeeded model."""
    table: dict[str, dict[str, Score]] = {}
    for result in results:
        for metric, score in result.scores_by_metric().items():
            if not metric.startswith("generation/"):  # generation figures have their own table
                table.setdefault(metric, {})[result.model] = score
    return table


def _chart(metric: str, by_model: dict[str, Score]) -> str:
    rows = [(m, s) for m, s in by_model.items() if s.value is not None]
    if not rows:
        return ""
    top = max([1.0] + [s.ci_high or s.value for _, s in rows])
    bar_h, label_w, plot_w = 26, 200, 380
    width = label_w + plot_w + 200  # room for "value [low, high]" after the bars
    height = bar_h * len(rows) + 30
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(metric)}">']
    for i, (model, score) in enumerate(rows):
        y = 10 + i * bar_h
        w = plot_w * score.value / top
        parts.append(f'<text x="0" y="{y + 16}" font-size="13">{escape(model)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="16" fill="#4f7cac"/>')
        if score.ci_low is not None and score.ci_high is not None:
            x1, x2 = label_w + plot_w * score.ci_low / top, label_w + plot_w * score.ci_high / top
            parts.append(f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y + 12}" y2="{y + 12}" stroke="#222"/>')
            for x in (x1, x2):
                parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 7}" y2="{y + 17}" stroke="#222"/>')
        parts.append(
            f'<text x="{label_w + plot_w + 10}" y="{y + 16}" font-size="12">{_fmt(score.value)} '
            f"[{_fmt(score.ci_low)}, {_fmt(score.ci_high)}]</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _versus(
    model: ModelResult | None,
    best: ModelResult | None,
    rule: dict[str, Any] | None,
    records: dict[str, list[dict[str, Any]]],
) -> str:
    """Whether this model differs from the selected one on the first selection metric: by a
    paired test on the records both answered when their records are at hand, else by
    whether the 95% intervals overlap. Says which it used."""
    if model is None or best is None or not rule:
        return ""
    if model.model == best.model:
        return "selected"
    metric = rule["metric"]
    if model.model in records and best.model in records:
        test = paired_test(
            metric,
            record_scores(records[model.model], metric),
            record_scores(records[best.model], metric),
            higher_is_better=rule["direction"] == "higher",
        )
        if test.mean_delta is not None:
            verdict = "different" if test.ci_low > 0 or test.ci_high < 0 else "not distinguishable"
            return (
                f"{verdict} ({test.method}, {test.matched} records: {test.mean_delta:+.3f} "
                f"[{test.ci_low:+.3f}, {test.ci_high:+.3f}])"
            )
    mine, theirs = model.scores_by_metric().get(metric), best.scores_by_metric().get(metric)
    if not mine or not theirs or None in (mine.ci_low, mine.ci_high, theirs.ci_low, theirs.ci_high):
        return "no interval"
    apart = mine.ci_high < theirs.ci_low or mine.ci_low > theirs.ci_high
    return f"{'different' if apart else 'not distinguishable'} (95% intervals)"


def render_html(data: ReportInput) -> str:
    scores = _scores(data.results)
    sel = data.selection
    e = escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(data.title)} leaderboard</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}td:last-child{min-width:14em}"
        ".failed{color:#b00}</style></head><body>",
        f"<h1>{e(data.title)}</h1>",
        f"<p>Run <code>{e(data.run_id)}</code> on dataset <code>{e(data.dataset)}</code>, catalog version "
        f"<code>{e(data.catalog_version)}</code>."
        + (f" <a href='{e(data.trend_link)}'>Trend over catalog versions</a>." if data.trend_link else "")
        + "</p>",
        f"<p><b>Selected:</b> {e(sel.best or 'none')}. <b>Registry:</b> {e(data.registration)}</p>",
        "<h2>Ranking</h2><table><tr><th>#</th><th>model</th><th>status</th><th>composite</th>",
    ]
    out += [f"<th>{e(r['metric'])} ({e(r['direction'])})</th>" for r in sel.rules]
    out.append("<th>vs selected</th><th>reason</th></tr>")
    by_model = {r.model: r for r in data.results}
    for i, cand in enumerate(sel.ranking, 1):
        cls = ' class="failed"' if cand.status == "failed" else ""
        cells = "".join(f"<td>{_fmt(cand.metrics.get(r['metric']))}</td>" for r in sel.rules)
        versus = _versus(
            by_model.get(cand.model), by_model.get(sel.best or ""), sel.rules[0] if sel.rules else None, data.records
        )
        out.append(
            f"<tr{cls}><td>{i}</td><td>{e(cand.model)}</td><td>{e(cand.status)}</td>"
            f"<td>{_fmt(cand.composite)}</td>{cells}<td>{e(versus)}</td><td>{e(cand.reason)}</td></tr>"
        )
    out.append("</table><h2>Scores (95% bootstrap intervals)</h2>")
    for metric, by_model in scores.items():
        out.append(f"<h3>{e(metric)}</h3>{_chart(metric, by_model)}")
    out.append(
        "<h2>Generation</h2><table><tr><th>model</th><th>records</th><th>failed</th><th>cache hits</th>"
        "<th>p50 ms</th><th>p95 ms</th><th>output tokens</th><th>seconds</th></tr>"
    )
    for r in data.results:
        g = r.generation
        out.append(
            f"<tr><td>{e(r.model)}</td><td>{g.records_evaluated}/{g.records_total}</td><td>{g.records_failed}</td>"
            f"<td>{g.cache_hits}</td><td>{_fmt(g.latency_p50_ms, 0)}</td><td>{_fmt(g.latency_p95_ms, 0)}</td>"
            f"<td>{g.output_tokens_total}</td><td>{g.wall_seconds:.1f}</td></tr>"
        )
    out.append("</table>")
    tuned = [r for r in data.results if r.metadata.get("training")]
    if tuned:
        out.append(
            "<h2>Fine-tuning</h2><table><tr><th>model</th><th>base</th><th>steps</th>"
            "<th>train loss (first &rarr; last)</th><th>validation loss (before &rarr; after)</th>"
            "<th>seconds</th></tr>"
        )
        for r in tuned:
            t = r.metadata["training"]
            out.append(
                f"<tr><td>{e(r.model)}</td><td>{e(str(t.get('base_model', '')))}</td><td>{t.get('steps', '')}</td>"
                f"<td>{_fmt(t.get('train_loss_first'))} &rarr; {_fmt(t.get('train_loss_last'))}</td>"
                f"<td>{_fmt(t.get('validation_loss_before'))} &rarr; {_fmt(t.get('validation_loss_after'))}</td>"
                f"<td>{t.get('wall_seconds', '')}</td></tr>"
            )
        out.append("</table>")
    categories = sorted({c for r in data.results for a in r.algorithms for c in a.category_scores})
    if categories:
        out.append("<h2>By category</h2><table><tr><th>model</th><th>metric</th>")
        out += [f"<th>{e(c)}</th>" for c in categories]
        out.append("</tr>")
        for r in data.results:
            for a in r.algorithms:
                for s in a.scores:
                    vals = {
                        c: next((x for x in a.category_scores.get(c, []) if x.name == s.name), None) for c in categories
                    }
                    cells = "".join(f"<td>{_fmt(v.value if v else None)}</td>" for v in vals.values())
                    out.append(f"<tr><td>{e(r.model)}</td><td>{e(a.algorithm)}/{e(s.name)}</td>{cells}</tr>")
        out.append("</table>")
    failures = [r for r in data.results if not r.succeeded] + [
        r for r in data.results if r.succeeded and any(a.error for a in r.algorithms)
    ]
    if failures:
        out.append("<h2 class='failed'>Failures</h2><ul>")
        for r in failures:
            if not r.succeeded:
                out.append(
                    f"<li class='failed'><b>{e(r.model)}</b>: step <code>{e(r.failed_step or '?')}</code> "
                    f"failed: <pre>{e(r.error or '')}</pre></li>"
                )
            for a in r.algorithms:
                if a.error:
                    out.append(f"<li class='failed'><b>{e(r.model)}</b>: {e(a.algorithm)}: {e(a.error)}</li>")
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def render_markdown(data: ReportInput) -> str:
    sel = data.selection
    lines = [
        f"# {data.title}",
        "",
        f"Run `{data.run_id}`, dataset `{data.dataset}` (catalog version `{data.catalog_version}`). "
        f"Selected: **{sel.best or 'none'}**. "
        f"Registry: {data.registration}",
        "",
        "| # | model | status | composite | " + " | ".join(r["metric"] for r in sel.rules) + " | reason |",
        "|---|---|---|---|" + "---|" * len(sel.rules) + "---|",
    ]
    for i, c in enumerate(sel.ranking, 1):
        vals = " | ".join(_fmt(c.metrics.get(r["metric"])) for r in sel.rules)
        lines.append(f"| {i} | {c.model} | {c.status} | {_fmt(c.composite)} | {vals} | {c.reason} |")
    return "\n".join(lines) + "\n"


def render_model_html(result: ModelResult, samples: list[dict] | None = None, limit: int = 20) -> str:
    """One model's report: every algorithm's scores with intervals, categories, sample records."""
    e = escape
    g = result.generation
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(result.model)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}</style></head><body>",
        f"<h1>{e(result.model)}</h1><p>Status <b>{e(result.status)}</b>"
        + (f" (failed at {e(result.failed_step or '')}: {e(result.error or '')})" if not result.succeeded else "")
        + f". {g.records_evaluated} of {g.records_total} records answered, {g.cache_hits} from the cache, "
        f"{g.retries} requests retried; "
        f"latency p50 {_fmt(g.latency_p50_ms, 0)} ms, p95 {_fmt(g.latency_p95_ms, 0)} ms.</p>",
    ]
    for algo in result.algorithms:
        out.append(f"<h2>{e(algo.algorithm)}</h2>")
        if algo.error:
            out.append(f"<p>Not scored: {e(algo.error)}</p>")
            continue
        out.append("<table><tr><th>score</th><th>value</th><th>95% interval</th><th>records</th></tr>")
        out += [
            f"<tr><td>{e(sc.name)}</td><td>{_fmt(sc.value)}</td><td>[{_fmt(sc.ci_low)}, {_fmt(sc.ci_high)}]</td>"
            f"<td>{sc.count}</td></tr>"
            for sc in algo.scores
        ]
        out.append("</table>")
        for category, scores in algo.category_scores.items():
            listed = ", ".join(f"{e(sc.name)} {_fmt(sc.value)}" for sc in scores)
            out.append(f"<p>Category <b>{e(category)}</b>: {listed}</p>")
    if samples:
        out.append(
            f"<h2>First {min(limit, len(samples))} records</h2><table><tr><th>prompt</th><th>output</th>"
            "<th>reference</th><th>scores</th></tr>"
        )
        for row in samples[:limit]:
            scores = "; ".join(
                f"{k}: " + ", ".join(f"{n}={_fmt(v)}" for n, v in vals.items())
                for k, vals in (row.get("scores") or {}).items()
            )
            out.append(
                f"<tr><td>{e(str(row.get('prompt', '')))}</td><td>{e(str(row.get('model_output')))}</td>"
                f"<td>{e(str(row.get('target_output', '')))}</td><td>{e(scores)}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
