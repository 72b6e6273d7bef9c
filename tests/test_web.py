"""The Airflow plugin's pages and API, served by Airflow's own api-server app (in process) with
the Simple auth manager in multi-team mode (conftest's `airflow_api`), so that DAG-level
authorization is Airflow's own: a reader of the evaluation DAGs' team, a viewer of another
team, and anonymous requests.

The run is real (two models given by their outputs, scored by the evaluation entry point);
the dataset and outputs hold `<script>`, quotes and an 8,000-character line.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
import yaml

from conftest import api_token, local_config, put_bundles_in_team, run_dag

LONG = "x" * 8000
XSS = "<script>document.title='pwned'</script>"
QUESTIONS = [  # (id, question, answer, category, output of given-a, output of given-b)
    ("r1", "What is the capital of France?", "Paris", "geo", "Paris", "Lyon"),
    ("r2", "What is the capital of Japan?", "Tokyo", "geo", "Kyoto", "Tokyo"),
    ("r3", f"Repeat {XSS}", XSS, "markup", XSS, "no"),
    ("r4", "Say \"hi\" & 'bye'", "\"hi\" & 'bye'", "markup", "\"hi\" & 'bye'", LONG),
]


@pytest.fixture(scope="module")
def web_run(airflow_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    data = folder / "markup.jsonl"
    data.write_text(
        "".join(json.dumps({"id": i, "question": q, "answer": a, "category": c}) + "\n" for i, q, a, c, *_ in QUESTIONS)
    )
    models = []
    for n, name in enumerate(("given-a", "given-b")):
        given = folder / f"{name}.jsonl"
        given.write_text(
            "".join(json.dumps({"record_id": row[0], "model_output": row[4 + n]}) + "\n" for row in QUESTIONS)
        )
        models.append({"name": name, "model_id": f"vendor-{name}", "outputs_location": str(given)})
    configs = folder / "configs"
    configs.mkdir()
    dataset = {
        "dataset_name": "markup",
        "input_data_location": str(data),
        "model_input_key": "question",
        "target_output_key": "answer",
        "category_key": "category",
    }
    cfg = local_config("web-evals", models=models, dataset=dataset, num_records=4)
    (configs / "web-evals.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    dag, dag_run = run_dag("web-evals", configs)
    assert dag_run.state == "success", [(t.task_id, t.state) for t in dag_run.get_task_instances()]
    return dag.dag_id, dag_run.run_id


@pytest.fixture(scope="module")
def client(web_run, airflow_api):
    put_bundles_in_team("evals")
    return airflow_api


def _urls(dag_id: str, run_id: str) -> dict[str, str]:
    run = f"/llm-evaluations/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return {
        "leaderboard": f"{run}/leaderboard",
        "records": f"{run}/models/given-a/records",
        "api": f"/llm-evaluations/api/dags/{dag_id}/runs/{quote(run_id, safe='')}",
        "api_records": f"/llm-evaluations/api/dags/{dag_id}/runs/{quote(run_id, safe='')}/models/given-a/records",
        "trend": f"/llm-evaluations/dags/{dag_id}/trend",
        "inspect_log": f"{run}/models/given-a/inspect/capitals.eval",
    }


def test_anonymous_and_bad_tokens_are_refused_everywhere(client, web_run):
    for url in ["/llm-evaluations/", *_urls(*web_run).values()]:
        assert client.get(url).status_code == 401, url
        bad = client.get(url, headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 403, url
        assert "Paris" not in bad.text


def test_a_user_who_may_not_read_the_dag_sees_none_of_its_results(client, web_run):
    headers = api_token(client, "outsider")
    for url in _urls(*web_run).values():
        response = client.get(url, headers=headers)
        assert response.status_code == 403, url
        assert "given-a" not in response.text
    index = client.get("/llm-evaluations/", headers=headers)
    assert index.status_code == 200 and "web-evals" not in index.text
    assert "No LLM evaluation DAG that you may read" in index.text


def test_the_evaluations_page_lists_the_dag_with_its_latest_run_and_selection(client, web_run):
    dag_id, run_id = web_run
    page = client.get("/llm-evaluations/", headers=api_token(client, "reader"))
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]  # no script may run at all
    row = re.search(r'<tr>\s*<td class="name">web-evals</td>(.*?)</tr>', page.text, re.S).group(1)
    assert f'href="dags/web-evals/runs/{quote(run_id, safe="")}/leaderboard"' in row
    assert "<td>given-a</td>" in row  # selected: 3 of 4 right against 1 of 4
    assert 'href="dags/web-evals/trend"' in row


def test_the_leaderboard_tab_shows_the_ranking_with_links_to_the_records(client, web_run):
    urls = _urls(*web_run)
    headers = api_token(client, "reader")
    page = client.get(urls["leaderboard"], headers=headers)
    assert page.status_code == 200, page.text
    assert "<b>Selected:</b> given-a." in page.text
    assert '<a href="models/given-a/records">given-a</a>' in page.text
    trend = client.get(urls["trend"], headers=headers)
    assert trend.status_code == 200 and "given-a" in trend.text
    api = client.get(urls["api"], headers=headers).json()
    assert api["selection"]["best"] == "given-a"
    assert [m["model"] for m in api["models"]] == ["given-a", "given-b"]
    factual = {m["model"]: m["algorithms"][0]["scores"][0]["value"] for m in api["models"]}
    assert factual == {"given-a": 0.75, "given-b": 0.25}


def test_the_records_view_filters_and_compares_and_escapes_what_models_wrote(client, web_run):
    urls = _urls(*web_run)
    headers = api_token(client, "reader")
    page = client.get(urls["records"], params={"category": "markup", "compare": "given-b"}, headers=headers)
    assert page.status_code == 200
    assert "2 of 4 records match" in page.text
    assert "<script>" not in page.text and "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in page.text
    assert "&#34;hi&#34; &amp; &#39;bye&#39;" in page.text
    assert LONG in page.text  # given-b's 8,000-character answer, side by side
    assert "Paris" not in page.text  # a geo record
    low = client.get(
        urls["api_records"],
        params={"metric": "FactualKnowledge/factual_knowledge", "max_score": "0.5"},
        headers=headers,
    ).json()
    assert [r["record_id"] for r in low["records"]] == ["r2"] and low["total"] == 4
    search = client.get(urls["api_records"], params={"q": "JAPAN", "compare": "given-b"}, headers=headers).json()
    assert [(r["record_id"], r["compared"]["model_output"]) for r in search["records"]] == [("r2", "Tokyo")]


def test_the_records_view_shows_peoples_ratings_beside_the_judges(client, web_run):
    """The labels the run's agreement matched (human_labels.json) beside the answer they rate;
    a label of another answer to the same record is not shown; what a labeller wrote is escaped."""
    from llmeval import store
    from llmeval.agreement import answer_hash

    dag_id, run_id = web_run
    folder = store.run_folder(dag_id, run_id)
    labels = [
        {"record_id": "r3", "answer_sha256": answer_hash(XSS), "rating": 2, "labeller": "<b>ana</b>"},
        {"record_id": "r1", "answer_sha256": answer_hash("Lyon"), "rating": 1, "labeller": "bo"},  # given-b's
    ]
    store.write_text(folder / store.HUMAN_LABELS, json.dumps({"correctness": labels}))
    agreement = [{"judge": "j", "rubric": "correctness", "labels": 1, "kappa": [], "reason": "not measured"}]
    store.write_text(folder / store.AGREEMENT, json.dumps(agreement))
    try:
        urls, headers = _urls(*web_run), api_token(client, "reader")
        page = client.get(urls["records"], headers=headers).text
        row = re.search(r'<td class="name">r3</td>(.*?)</tr>', page, re.S).group(1)
        assert '<span class="metric">correctness by &lt;b&gt;ana&lt;/b&gt;</span> 2' in row
        assert "correctness by bo" not in page
        found = client.get(urls["api_records"], headers=headers).json()["records"]
        people = {r["record_id"]: r["human_labels"] for r in found}
        assert people["r3"] == [{"rubric": "correctness", "rating": 2, "labeller": "<b>ana</b>"}] and people["r1"] == []
        assert client.get(urls["api"], headers=headers).json()["agreement"] == agreement  # the run's JSON
    finally:
        (folder / store.HUMAN_LABELS).unlink()
        (folder / store.AGREEMENT).unlink()


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/llm-evaluations/dags/web-evals/runs/no-such-run/leaderboard", 404, "has no run 'no-such-run'"),
        ("/llm-evaluations/dags/web-evals/runs/{run}/models/config.json/records", 404, "has no model 'config.json'"),
        ("/llm-evaluations/dags/web-evals/runs/{run}/models/..%2F..%2Fconfig.json/records", 404, "Not Found"),
        (
            "/llm-evaluations/dags/web-evals/runs/{run}/models/given-a/records?min_score=abc",
            404,
            "min_score must be a number",
        ),
        ("/llm-evaluations/dags/web-evals/runs/{run}/models/given-a/inspect/gsm8k.eval", 404, "no Inspect log 'gsm8k'"),
        ("/llm-evaluations/dags/web-evals/runs/{run}/models/given-a/inspect/a.b.eval", 404, "no Inspect log 'a.b'"),
        ("/llm-evaluations/dags/web-evals/runs/{run}/models/nobody/inspect/capitals.eval", 404, "no Inspect log"),
    ],
)
def test_unknown_runs_models_and_bad_filters_get_a_clear_answer(client, web_run, path, status, message):
    response = client.get(path.format(run=quote(web_run[1], safe="")), headers=api_token(client, "admin"))
    assert response.status_code == status and message in response.text
    assert "FactualKnowledge" not in response.text


def test_the_plugin_registers_the_nav_page_and_the_run_tab():
    from airflow import plugins_manager

    views = {v["name"]: v for v in plugins_manager._get_ui_plugins()[0]}
    assert views["Leaderboard"]["destination"] == "dag_run"
    assert "{DAG_ID}" in views["Leaderboard"]["href"] and "{RUN_ID}" in views["Leaderboard"]["href"]
    assert views["LLM evaluations"]["destination"] == "nav"


def test_one_unreachable_store_does_not_hide_the_other_dags(client, web_run, monkeypatch):
    from llmeval.web import runs

    def unreachable(run):
        raise ConnectionError(f"cannot reach the store of {run.dag_id}")

    monkeypatch.setattr(runs, "selection_of", unreachable)
    page = client.get("/llm-evaluations/", headers=api_token(client, "reader"))
    assert page.status_code == 200
    row = re.search(r'<tr>\s*<td class="name">web-evals</td>(.*?)</tr>', page.text, re.S).group(1)
    assert "results unavailable: ConnectionError: cannot reach the store of web-evals" in row


def test_the_evaluations_page_filters_by_catalog_version_the_runs_partition_key(client, web_run):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    dag_id, run_id = web_run
    headers = api_token(client, "reader")
    with create_session() as session:  # the run as a partitioned run of version v7 would be
        session.execute(update(DagRun).where(DagRun.run_id == run_id).values(partition_key="v7"))
    try:
        found = client.get("/llm-evaluations/?version=v7", headers=headers)
        row = re.search(r'<tr>\s*<td class="name">web-evals</td>(.*?)</tr>', found.text, re.S).group(1)
        assert quote(run_id, safe="") in row and "The latest run of catalog version <code>v7</code>" in found.text
        run = client.get(f"/llm-evaluations/api/dags/{dag_id}/runs/{quote(run_id, safe='')}", headers=headers).json()
        assert run["partition_key"] == "v7"  # the REST JSON names the run's partition
        other = client.get("/llm-evaluations/?version=%3Cb%3Ev8", headers=headers)  # escaped where shown
        row = re.search(r'<tr>\s*<td class="name">web-evals</td>(.*?)</tr>', other.text, re.S).group(1)
        assert "no run of this version" in row and "<code>&lt;b&gt;v8</code>" in other.text
    finally:
        with create_session() as session:
            session.execute(update(DagRun).where(DagRun.run_id == run_id).values(partition_key=None))


def test_an_inspect_log_is_a_download_and_its_samples_a_filter_of_the_records_view(client, web_run):
    from llmeval import store

    dag_id, run_id = web_run
    model = store.model_folder(store.run_folder(dag_id, run_id), "given-a")
    (model / store.INSPECT_LOGS).mkdir(exist_ok=True)
    (model / store.INSPECT_LOGS / "capitals.eval").write_bytes(b"PK\x03\x04<script>alert(1)</script>")
    records = model / store.RECORDS
    kept = records.read_text()
    sample = {"record_id": "capitals:c1", "task": "Inspect/capitals", "model_input": "Capital of Peru?"}
    records.write_text(
        kept + json.dumps({**sample, "model_output": "Lima", "scores": {"Inspect/capitals": {"accuracy": 1.0}}}) + "\n"
    )
    try:
        urls, reader = _urls(dag_id, run_id), api_token(client, "reader")
        found = client.get(urls["inspect_log"], headers=reader)
        assert found.status_code == 200 and found.content.startswith(b"PK")
        assert found.headers["content-type"] == "application/octet-stream"
        assert found.headers["content-disposition"] == 'attachment; filename="given-a-capitals.eval"'
        assert found.headers["x-content-type-options"] == "nosniff"
        page = client.get(urls["records"] + "?task=Inspect%2Fcapitals", headers=reader).text
        assert "1 of 5 records match" in page and "Capital of Peru?" in page
        assert '<option value="Inspect/capitals" selected>' in page
    finally:
        records.write_text(kept)
        (model / store.INSPECT_LOGS / "capitals.eval").unlink()
