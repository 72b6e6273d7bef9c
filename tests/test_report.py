"""Leaderboard report: charts with intervals, ranking, failures, escaping."""

from __future__ import annotations

from conftest import local_config
from helpers import failed, result
from llmeval.config import EvalConfig
from llmeval.report import ReportInput, render_html, render_markdown
from llmeval.results import Score
from llmeval.selection import select


def _report(tmp_path, results):
    cfg = EvalConfig.model_validate(
        local_config(algorithms=[{"algorithm": "FactualKnowledge"}, {"algorithm": "SemanticSimilarity"}])
    )
    data = ReportInput(
        "demo <pipeline>", "run-1", "qa", results, select(cfg, results), "a registered as grp version 1 (Approved)"
    )
    html, md = tmp_path / "leaderboard.html", tmp_path / "summary.md"
    html.write_text(render_html(data))
    md.write_text(render_markdown(data))
    return html, md


def test_leaderboard_has_a_chart_per_metric_with_intervals(tmp_path):
    html, md = _report(tmp_path, [result("a", fk=0.7), result("b", fk=0.4)])
    page = html.read_text()
    assert page.count("<svg") == 2  # FactualKnowledge + SemanticSimilarity
    assert "0.700 [0.600, 0.800]" in page
    assert "demo &lt;pipeline&gt;" in page and "<pipeline>" not in page
    summary = md.read_text()
    assert "Selected: **a**" in summary and "| 1 | a | selected |" in summary


def test_ranking_says_whether_intervals_tell_models_apart(tmp_path):
    html, _ = _report(tmp_path, [result("a", fk=0.9), result("b", fk=0.85), result("c", fk=0.3)])
    page = html.read_text()
    ranking = page[page.index('<table class="ranking">') :].split("</table>")[0]
    row = {m: ranking[ranking.index(f'<td class="name">{m}</td>') :].split("</tr>")[0] for m in "abc"}
    assert '<span class="chip selected" title="highest composite' in row["a"]
    assert 'title="not distinguishable (95% intervals)">not distinguishable 95% CI</span>' in row["b"]
    assert 'title="different (95% intervals)">different 95% CI</span>' in row["c"]
    notes = page[page.index('<ul class="notes">') :].split("</ul>")[0]  # the details behind the chips
    assert "c vs the selected model: different (95% intervals)" in notes


def test_counts_are_tabled_not_charted_as_scores(tmp_path):
    from llmeval.results import AlgorithmResult, Score

    results = [result("a", fk=0.7), result("b", fk=0.4)]
    for r, unparseable in zip(results, (2.0, 0.0)):
        r.algorithms.append(
            AlgorithmResult(
                "LLMJudge", [Score("correctness", 0.5, 0.4, 0.6, 10), Score("correctness_unparseable", unparseable)]
            )
        )
    page = _report(tmp_path, results)[0].read_text()
    assert 'aria-label="LLMJudge/correctness"' in page and 'aria-label="LLMJudge/correctness_unparseable"' not in page
    counts = page[page.index("<h3>Counts</h3>") :].split("</table>")[0]
    assert (
        '<td class="metric">LLMJudge/correctness_unparseable</td><td class="num">2</td><td class="num">0</td>' in counts
    )


def test_failures_are_shown_with_step(tmp_path):
    html, md = _report(tmp_path, [result("a"), failed("b", "deploy", "no capacity <ml.g5>")])
    page = html.read_text()
    assert "Failures" in page and "deploy" in page and "no capacity &lt;ml.g5&gt;" in page
    assert "| b | failed |" in md.read_text()


def test_category_scores_are_tabulated(tmp_path):
    res = result("a")
    res.algorithms[0].category_scores = {"geo": [Score("factual_knowledge", 0.9, 0.8, 1.0, 10)]}
    html, _ = _report(tmp_path, [res])
    assert "By category" in html.read_text() and "0.900" in html.read_text()


def test_fine_tuned_models_get_a_training_section(tmp_path):
    res = result("tuned")
    res.metadata["training"] = {
        "base_model": "smollm2-135m-instruct",
        "steps": 18,
        "train_loss_first": 3.2,
        "train_loss_last": 0.85,
        "validation_loss_before": 7.97,
        "validation_loss_after": 1.44,
        "wall_seconds": 49.0,
    }
    html, _ = _report(tmp_path, [result("base"), res])
    page = html.read_text()
    assert "Fine-tuning" in page and "7.970 &rarr; 1.440" in page and "smollm2-135m-instruct" in page


def test_what_models_and_datasets_wrote_is_escaped_on_every_page(tmp_path):
    from llmeval import history
    from llmeval.report import render_model_html

    hostile = '<script>alert("x")</script> \' " ' + "long" * 2000
    scored = result(hostile, fk=0.7)
    html, md = _report(tmp_path, [scored, failed("b", "deploy", hostile)])
    sample = {"prompt": hostile, "model_output": hostile, "target_output": hostile, "scores": {hostile: {"s": 1.0}}}
    history.record("<script>dag", "<script>v1", "run", [scored])
    pages = [html.read_text(), render_model_html(scored, [sample]), history.write_trend("<script>dag").read_text()]
    for page in pages:
        assert "<script" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &#39; &#34;" in page
        assert "@media print" in page  # every page prints cleanly
