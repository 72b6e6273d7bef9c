"""In a real headless Chromium (Debian's, driven by Playwright) against `airflow standalone`:
a reviewer logs in, reads the run's Leaderboard tab, filters the records view, approves in the
run's required actions, and the registry shows their approval; a user of another team is
refused the tab and the API; a `<script>` a model wrote does not run; the leaderboard prints
to PDF. Screenshots and the PDF go to test-output/browser/."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from airflow_standalone import USERS, Standalone
from celery_stack import free_port
from conftest import CONFIGS, ROOT
from llmeval.registry import LocalRegistry
from llmeval.store import safe_segment

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "browser"
DEMO = "llm-eval-local-demo"
XSS_DAG = "web-xss"
XSS = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
XSS_RECORDS = [  # id, question, answer, category, given-a's output, given-b's output
    ("x1", "Capital of France?", "Paris", "geo", "Paris", "Lyon"),
    ("x2", f"Repeat {XSS}", XSS, "markup", XSS, IMG),
    ("x3", "Say \"hi\" & 'bye'", "hi", "markup", IMG, "hi"),
]


def _configs(folder: Path, data: Path) -> None:
    demo = yaml.safe_load((CONFIGS / "local_demo.yaml").read_text())
    demo["registry"] = {**demo["registry"], "approval": "review", "review_flagged_records": 4}
    next(a for a in demo["algorithms"] if a["algorithm"] == "Inspect")["limit"] = 4  # of its dozen samples
    (folder / "local_demo.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    rows = data / "xss.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"id": i, "question": q, "answer": a, "category": c}) + "\n" for i, q, a, c, *_ in XSS_RECORDS
        )
    )
    models = []
    for n, name in enumerate(("given-a", "given-b")):
        given = data / f"{name}.jsonl"
        given.write_text("".join(json.dumps({"record_id": r[0], "model_output": r[4 + n]}) + "\n" for r in XSS_RECORDS))
        models.append({"name": name, "model_id": f"vendor-{name}", "outputs_location": str(given)})
    xss = {
        "target": "local",
        "pipeline": {"name": XSS_DAG},
        "dataset": {
            "dataset_name": "markup",
            "input_data_location": str(rows),
            "model_input_key": "question",
            "target_output_key": "answer",
            "category_key": "category",
        },
        "models": models,
        "algorithms": [{"algorithm": "FactualKnowledge"}],
        "registry": {"model_package_group_name": XSS_DAG},
    }
    (folder / "xss.yaml").write_text(yaml.safe_dump(xss, sort_keys=False))


class UI:
    def __init__(self, airflow: Standalone, browser, artifacts: Path):
        self.airflow, self.browser, self.artifacts = airflow, browser, artifacts

    def login(self, user: str):
        """A page of a new browser context, signed in through Airflow's login form."""
        page = self.browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(f"{self.airflow.url}/")
        page.get_by_label("Username").fill(user)
        page.get_by_label("Password").fill(USERS[user][2])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/" not in url)
        return page

    def shot(self, page, name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def run_folder(self, dag_id: str, run_id: str) -> Path:
        return self.artifacts / "runs" / safe_segment(dag_id) / safe_segment(run_id)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make services` installs it"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def ui(tmp_path_factory, browser):
    root = tmp_path_factory.mktemp("standalone")
    configs, data, artifacts = root / "configs", root / "data", root / "artifacts"
    configs.mkdir(), data.mkdir()
    _configs(configs, data)
    airflow = Standalone(root, configs, artifacts)
    try:
        airflow.start()
        yield UI(airflow, browser, artifacts)
    finally:
        assert airflow.stop(), "airflow standalone left processes behind"


def test_make_ui_opens_airflow_with_the_plugin_and_prints_the_login(tmp_path, browser):
    """`make ui` (scripts/ui.py): Airflow comes up on the printed URL, the printed login signs in,
    the evaluations page lists the shipped configs' DAGs; Ctrl-C stops every process it started."""
    home = tmp_path / "home"
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "LANG": "C.UTF-8",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT / "plugins"),
        "LLM_EVAL_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }
    migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "ui.py"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        printed = ""
        while "login:" not in printed:
            line = proc.stdout.readline()
            assert line, f"scripts/ui.py ended: {printed}\n{(home / 'ui.log').read_text()[-3000:]}"
            printed += line
        url, user, password = re.search(r"Airflow UI: (\S+)  login: (\S+) / (\S+)", printed).groups()
        assert url == f"http://127.0.0.1:{port}/"
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(url)
        page.get_by_label("Username").fill(user)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda u: "/auth/" not in u)
        page.goto(f"{url}plugin/llm-evaluations")
        listed = page.frame_locator("iframe[title='LLM evaluations']").locator("table")
        listed.get_by_text(DEMO).wait_for()
        assert "llm-eval-sm-hybrid" in listed.inner_text()
        ui_shot = SHOTS / "0-make-ui-evaluations.png"
        page.screenshot(path=str(ui_shot), full_page=True)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole group
        proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _processes_of(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_of(home) == [], "make ui left Airflow processes behind"


def _processes_of(home: Path) -> list[int]:
    """Live processes started with this Airflow home."""
    mark = f"AIRFLOW_HOME={home}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_reviewer_reads_the_leaderboard_filters_records_and_approves(ui):
    airflow = ui.airflow
    run_id = airflow.trigger(DEMO, {"models": ["smollm2-chat-greedy", "smollm2-completion"], "num_records": 13})
    airflow.wait_task_state(DEMO, run_id, "review[-1]", "awaiting_input")
    run = quote(run_id, safe="")
    page = ui.login("reviewer")

    page.goto(f"{airflow.url}/dags/{DEMO}/runs/{run}/plugin/llm-leaderboard")
    tab = page.frame_locator("iframe[title='Leaderboard']")
    selected = re.search(r"Selected: (\S+)\.", tab.locator("p", has_text="Selected:").inner_text()).group(1)
    folder = ui.run_folder(DEMO, run_id)
    assert selected == json.loads((folder / "selection.json").read_text())["best"]
    result = json.loads((folder / "models" / selected / "results.json").read_text())
    score = result["algorithms"][0]["scores"][0]["value"]
    first = tab.locator("table").first.locator("tr").nth(1).inner_text()
    assert first.split("\t")[:2] == ["1", selected] and f"{score:.3f}" in first
    ui.shot(page, "1-leaderboard-tab")
    page.emulate_media(color_scheme="dark")  # the plugin's pages follow the dark theme too
    assert tab.locator("body").evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(26, 32, 44)"
    ui.shot(page, "1-leaderboard-tab-dark")
    page.emulate_media(color_scheme="light")

    tab.get_by_role("link", name=selected, exact=True).click()
    tab.locator("select[name=category]").select_option("science")  # the 13th record; 12 are geography
    tab.get_by_role("button", name="Filter").click()
    tab.get_by_text("1 of 17 records match").wait_for()  # 13 records, 4 Inspect samples
    assert tab.locator("tr.record td:nth-child(2)").all_inner_texts() == ["science"]
    ui.shot(page, "2-records-view")
    _inspect_samples_and_log(ui, page, run, selected)

    page.goto(f"{airflow.url}/plugin/llm-evaluations")
    listed = page.frame_locator("iframe[title='LLM evaluations']").locator("table").inner_text()
    assert DEMO in listed and XSS_DAG in listed
    ui.shot(page, "3-llm-evaluations-page")

    page.goto(f"{airflow.url}/dags/{DEMO}/runs/{run}/required_actions")
    page.get_by_text("Records to look at", exact=True).wait_for()
    page.locator("input[name=element_comment]").fill("Checked the flagged answers <b>by hand</b>")
    page.locator("input[name=element_rating_1]").fill("5")  # the reviewer rates two of the flagged answers
    page.locator("input[name=element_rating_2]").fill("1")
    ui.shot(page, "4-required-action")
    page.get_by_role("button", name="Approve").click()
    assert airflow.wait_run(DEMO, run_id) == "success", airflow.task_states(DEMO, run_id)
    _ratings_are_labels(ui, folder)

    (version,) = LocalRegistry(ui.artifacts / "registry").versions(DEMO)
    assert version.model == selected and version.approval_status == "Approved"
    assert version.metadata["review"].startswith("Approved by reviewer at ")
    assert version.metadata["review"].endswith(": Checked the flagged answers <b>by hand</b>")
    card = (ui.artifacts / "registry" / DEMO / "v00001.model_card.json").read_text()
    assert "Approved by reviewer" in card


def _inspect_samples_and_log(ui, page, run: str, model: str) -> None:
    """From the Leaderboard tab: the model's samples of the demo's Inspect task in the records
    view, and Inspect's log, a download for a user who may read the run only."""
    airflow = ui.airflow
    page.goto(f"{airflow.url}/dags/{DEMO}/runs/{run}/plugin/llm-leaderboard")
    tab = page.frame_locator("iframe[title='Leaderboard']")
    row = tab.locator("tr", has_text="Inspect/capitals").filter(has_text=model)
    log = row.get_by_role("link", name="capitals.eval").get_attribute("href")
    row.get_by_role("link", name="samples").click()
    tab.get_by_text("4 of ").wait_for()
    assert tab.locator("select[name=task]").input_value() == "Inspect/capitals"
    assert "What is the capital of" in tab.locator("table#records").inner_text()
    ui.shot(page, "2-inspect-samples")
    url = f"{airflow.url}/llm-evaluations/dags/{DEMO}/runs/{run}/{log}"
    found = page.request.get(url)
    assert found.status == 200 and found.body()[:2] == b"PK", found.status  # the .eval zip, as is
    assert found.headers["content-disposition"].startswith("attachment;")
    assert ui.login("outsider").request.get(url).status == 403
    assert ui.browser.new_context().request.get(url).status == 401


def _ratings_are_labels(ui, folder: Path) -> None:
    """The reviewer's two ratings are labels of the flagged answers in the DAG's labels store, and
    the next run's agreement counts them."""
    from llmeval.config import EvalConfig
    from llmeval.steps import judge_agreement

    asked = json.loads((folder / "review_flags.json").read_text())
    kept = [
        json.loads(line) for line in (ui.artifacts / "labels" / DEMO / "correctness.jsonl").read_text().splitlines()
    ]
    assert [(k["record_id"], k["answer_sha256"], k["rating"], k["labeller"]) for k in kept] == [
        (asked["answers"][0]["record_id"], asked["answers"][0]["answer_sha256"], 5, "reviewer"),
        (asked["answers"][1]["record_id"], asked["answers"][1]["answer_sha256"], 1, "reviewer"),
    ]
    cfg = json.loads((folder / "config.json").read_text())
    judge = next(a for a in cfg["algorithms"] if a["algorithm"] == "LLMJudge")
    judge["rubrics"] = ["correctness"]  # only the reviewers' labels, not the shipped file's
    previous = os.environ.get("LLM_EVAL_ARTIFACTS_DIR")
    os.environ["LLM_EVAL_ARTIFACTS_DIR"] = str(ui.artifacts)
    try:
        (found,) = judge_agreement(
            EvalConfig.model_validate(cfg), folder, ["smollm2-chat-greedy", "smollm2-completion"]
        )
    finally:
        os.environ.pop("LLM_EVAL_ARTIFACTS_DIR") if previous is None else os.environ.update(
            LLM_EVAL_ARTIFACTS_DIR=previous
        )
    selected = json.loads((folder / "selection.json").read_text())["best"]
    records = {r["record_id"]: r for r in map(json.loads, (folder / "models" / selected / "records.jsonl").open())}
    rated = sum(
        records[a["record_id"]]["judgements"]["correctness"]["rating"] is not None for a in asked["answers"][:2]
    )
    assert found.labels == rated and found.reason == f"not measured (n = {rated} < 20 labelled answers)"


def test_another_team_is_refused_and_what_models_wrote_never_runs(ui):
    airflow = ui.airflow
    run_id = airflow.trigger(XSS_DAG)
    assert airflow.wait_run(XSS_DAG, run_id) == "success", airflow.task_states(XSS_DAG, run_id)
    run = quote(run_id, safe="")
    leaderboard = f"{airflow.url}/llm-evaluations/dags/{XSS_DAG}/runs/{run}/leaderboard"

    outsider = ui.login("outsider")
    assert outsider.goto(leaderboard).status == 403
    api = outsider.request.get(f"{airflow.url}/llm-evaluations/api/dags/{XSS_DAG}/runs/{run}")
    assert api.status == 403 and "given-a" not in api.text()
    outsider.goto(f"{airflow.url}/dags/{XSS_DAG}/runs/{run}/plugin/llm-leaderboard")
    tab = outsider.frame_locator("iframe[title='Leaderboard']")
    tab.locator("body").wait_for()
    assert "given-a" not in tab.locator("body").inner_text()
    ui.shot(outsider, "5-another-team-refused")
    outsider.goto(f"{airflow.url}/plugin/llm-evaluations")
    nav = outsider.frame_locator("iframe[title='LLM evaluations']").locator("body")
    nav.get_by_text("No LLM evaluation DAG that you may read").wait_for()

    reader = ui.login("reader")
    dialogs = []
    reader.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    reader.goto(f"{leaderboard.removesuffix('/leaderboard')}/models/given-a/records?compare=given-b")
    text = reader.locator("table#records").inner_text()
    assert XSS in text and IMG in text  # shown as text
    assert reader.title() == "given-a records" and reader.evaluate("document.images.length") == 0
    assert dialogs == []
    ui.shot(reader, "6-records-with-markup")

    reader.goto(leaderboard)
    reader.emulate_media(media="print")
    pdf = SHOTS / "leaderboard.pdf"
    reader.pdf(path=str(pdf), format="A4")
    from pypdf import PdfReader

    pages = PdfReader(pdf).pages
    printed = "\n".join(p.extract_text() for p in pages)
    assert 1 <= len(pages) <= 3, len(pages)
    assert "Ranking" in printed and "given-a" in printed and "given-b" in printed and "Selected: given-a" in printed
