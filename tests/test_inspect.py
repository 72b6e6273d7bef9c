"""Inspect AI tasks run by the evaluation entry point against the real local model (SmolLM2):
the metrics equal what `inspect eval` reports with Inspect's own OpenAI provider on the same
server, every answer goes through the response cache (a killed evaluation resumes without
asking answered samples again; a re-run succeeds with the server stopped), and a real
`inspect_evals` task runs offline over a slice of its dataset the test builds."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, WORKER_PYTHON, local_config
from llmeval.config import EvalConfig
from llmeval.dataset import read_dataset, read_jsonl, write_jsonl
from model_servers import project_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fake_aws_credentials")]

MODEL = "m-one"
SETTINGS = {"max_tokens": 12, "temperature": 0}
CAPITALS = {"algorithm": "Inspect", "task": "inspect_tasks.py@capitals", "limit": 6}

# a slice of GSM8K in the datasets library's cache, as if it had been downloaded once: the task
# loads `openai/gsm8k` (config main) offline from it
GSM8K_SLICE = """
import datasets, glob, os, shutil, sys
cache, scratch = sys.argv[1], sys.argv[2]
os.makedirs(scratch, exist_ok=True)
rows = [{"question": f"Tom has {i} apples and buys {i} more. How many apples does he have?",
         "answer": f"{i} + {i} = {2 * i}\\n#### {2 * i}"} for i in range(2, 6)]
files = {}
for split in ("train", "test"):
    files[split] = os.path.join(scratch, f"{split}.jsonl")
    with open(files[split], "w") as out:
        out.writelines(__import__("json").dumps(r) + "\\n" for r in rows)
datasets.load_dataset("json", data_files=files, cache_dir=scratch)
built = next(p for p in glob.glob(os.path.join(scratch, "json", "*", "*", "*")) if os.path.isdir(p))
dest = os.path.join(cache, "openai___gsm8k", "default-data_dir=main", "0.0.0", os.path.basename(built))
os.makedirs(os.path.dirname(dest), exist_ok=True)
shutil.copytree(built, dest)
for name in os.listdir(dest):
    if name.startswith("json-"):
        os.rename(os.path.join(dest, name), os.path.join(dest, "gsm8k-" + name[len("json-"):]))
"""


def _config(*algorithms: dict) -> dict:
    return local_config(
        "t-inspect",
        models=[
            {
                "name": MODEL,
                "model_id": "smollm2-135m-instruct",
                "evaluation_config": {"api": "messages", "inference_parameters": SETTINGS, "max_concurrency": 4},
            }
        ],
        num_records=4,
        algorithms=[{"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>"}, *algorithms],
    )


def _job(tmp: Path, cfg: dict, out: Path, url: str, cache: Path, env: dict | None = None) -> subprocess.Popen:
    config = tmp / "config.json"
    config.write_text(EvalConfig.model_validate(cfg).model_dump_json())
    dataset = tmp / "dataset.jsonl"
    if not dataset.exists():
        write_jsonl(
            dataset, read_dataset(ROOT / "include/data/qa_general_knowledge.jsonl", "question", "answer").records[:4]
        )
    command = [WORKER_PYTHON, "-m", "llmeval.evaluation", "--config", str(config), "--model", MODEL]
    command += ["--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache)]
    command += ["--endpoint-url", url, "--endpoint-name", MODEL]
    paths = f"{ROOT / 'plugins'}:{ROOT / 'include' / 'algorithms'}"
    environment = {**os.environ, "PYTHONPATH": paths, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)


def _finished(job: subprocess.Popen) -> dict:
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-4000:]
    return json.loads(Path(json.loads(output.strip().splitlines()[-1])["results"]).read_text())


def _cached(cache: Path) -> int:
    try:
        with sqlite3.connect(next(cache.rglob("*.sqlite"))) as db:
            return db.execute("SELECT count(*) FROM responses").fetchone()[0]
    except (StopIteration, sqlite3.Error):
        return 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with project_server([MODEL], tmp_path_factory.mktemp("server"), api_key=None) as url:
        yield url


def test_inspect_scores_equal_inspect_eval_and_every_answer_is_cached(server, tmp_path):
    cfg, cache = _config(CAPITALS), tmp_path / "cache"
    # killed once the dataset is answered and two of the task's samples are
    killed = _job(tmp_path, cfg, tmp_path / "killed", server, cache)
    deadline = time.monotonic() + 300
    while _cached(cache) < 4 + 2 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    answered_before = _cached(cache) - 4
    assert 2 <= answered_before < 6, answered_before

    result = _finished(_job(tmp_path, cfg, tmp_path / "ours", server, cache))
    asked = result["metadata"]["inspect"]
    assert asked["requests"] == 6 and asked["cache_hits"] == answered_before, asked  # resumed, not asked again
    ours = {a["algorithm"]: {s["name"]: s for s in a["scores"]} for a in result["algorithms"]}["Inspect/capitals"]
    accuracy = ours["accuracy"]
    assert accuracy["count"] == 6 and accuracy["ci_low"] <= accuracy["value"] <= accuracy["ci_high"]

    direct = subprocess.run(
        [WORKER_PYTHON, "-m", "inspect_ai", "eval", str(ROOT / "include/algorithms/inspect_tasks.py") + "@capitals"]
        + ["--model", f"openai-api/local/{MODEL}", "--max-tokens", "12", "--temperature", "0", "--limit", "6"]
        + ["--max-connections", "4", "--log-dir", str(tmp_path / "direct"), "--display", "none"],
        capture_output=True,
        text=True,
        env=dict(os.environ, LOCAL_BASE_URL=f"{server}/v1", LOCAL_API_KEY="unused", HF_HUB_OFFLINE="1"),
        timeout=600,
    )
    assert direct.returncode == 0, direct.stdout[-3000:] + direct.stderr[-3000:]
    theirs = _read_log(next((tmp_path / "direct").glob("*.eval")))
    mine = _read_log(tmp_path / "ours" / "inspect" / "capitals.eval")
    assert mine["answers"] == theirs["answers"]  # the same model answers...
    assert theirs["metrics"] == {"accuracy": accuracy["value"], "stderr": ours["stderr"]["value"]}  # ...same metrics
    records = [r for r in read_jsonl(tmp_path / "ours" / "records.jsonl") if r.get("task") == "Inspect/capitals"]
    assert sorted(r["record_id"] for r in records) == sorted(f"capitals:c0{i}" for i in range(1, 7))
    assert sum(r["scores"]["Inspect/capitals"]["accuracy"] for r in records) / 6 == accuracy["value"]

    rerun = _job(tmp_path, cfg, tmp_path / "rerun", "http://127.0.0.1:9", cache)  # nothing listens on port 9
    again = _finished(rerun)["metadata"]["inspect"]
    assert again["cache_hits"] == again["requests"] == 6


def test_a_real_inspect_evals_task_runs_offline_over_a_slice_of_its_dataset(server, tmp_path):
    cache = tmp_path / "hf-datasets"
    built = subprocess.run(
        [WORKER_PYTHON, "-c", GSM8K_SLICE, str(cache), str(tmp_path / "slice")], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-3000:]
    gsm8k = {"algorithm": "Inspect", "task": "inspect_evals/gsm8k", "task_args": {"fewshot": 0}, "limit": 3}
    result = _finished(
        _job(tmp_path, _config(gsm8k), tmp_path / "out", server, tmp_path / "cache", {"HF_DATASETS_CACHE": str(cache)})
    )
    scores = {a["algorithm"]: a for a in result["algorithms"]}["Inspect/gsm8k"]
    assert scores["error"] is None
    accuracy = next(s for s in scores["scores"] if s["name"] == "accuracy")
    assert accuracy["count"] == 3 and 0 <= accuracy["value"] <= 1
    rows = [r for r in read_jsonl(tmp_path / "out" / "records.jsonl") if r.get("task") == "Inspect/gsm8k"]
    assert len(rows) == 3 and all("How many apples" in r["model_input"] for r in rows)


def test_a_task_that_cannot_be_loaded_fails_the_model_before_it_is_asked(server, tmp_path):
    broken = {"algorithm": "Inspect", "task": "inspect_tasks.py@capitals", "task_args": {"instructions": 3}}
    cfg = _config(broken)
    cfg["algorithms"][1]["task"] = "inspect_evals/no_such_task"
    cfg["algorithms"][1].pop("task_args")
    job = _job(tmp_path, cfg, tmp_path / "out", server, tmp_path / "cache")
    output, _ = job.communicate(timeout=300)
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert job.returncode != 0 and result["status"] == "failed" and result["failed_step"] == "load", output[-3000:]
    assert "algorithms[1].task inspect_evals/no_such_task" in result["error"]
    assert _cached(tmp_path / "cache") == 0  # nothing was asked


def _read_log(path: Path) -> dict:
    script = (
        "import json, sys; from inspect_ai.log import read_eval_log; log = read_eval_log(sys.argv[1]); "
        "print(json.dumps({'metrics': {m.name: m.value for s in log.results.scores for m in s.metrics.values()}, "
        "'answers': {str(s.id): s.output.completion for s in log.samples}}))"
    )
    found = subprocess.run([WORKER_PYTHON, "-c", script, str(path)], capture_output=True, text=True, check=True)
    return json.loads(found.stdout)


ADDING = '''
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate, use_tools
from inspect_ai.tool import tool


@tool
def add():
    async def execute(x: int, y: int):
        """Add two numbers.

        Args:
            x: The first number.
            y: The second number.
        """
        return x + y

    return execute


@task
def adding():
    samples = [Sample(id=1, input="What is 1 + 2?", target="3"), Sample(id=2, input="What is 20 + 22?", target="42")]
    return Task(dataset=samples, solver=[use_tools(add()), generate()], scorer=includes())
'''


def _add_call(request: dict) -> list[dict] | None:
    """A tool-calling model: asked a sum, it calls `add`; given the tool's result, it answers."""
    import re

    last = request["messages"][-1]
    if last["role"] != "user":
        return None
    x, y = re.findall(r"\d+", str(last["content"]))
    return [
        {
            "id": "call-1",
            "type": "function",
            "function": {"name": "add", "arguments": json.dumps({"x": int(x), "y": int(y)})},
        }
    ]


def test_a_task_with_tools_calls_them_through_the_cached_client(tmp_path):
    from latency_server import LatencyServer

    tasks = tmp_path / "algorithms"
    tasks.mkdir()
    (tasks / "tools_task.py").write_text(ADDING)
    cfg = _config({"algorithm": "Inspect", "task": "tools_task.py@adding"})
    cfg["models"][0]["evaluation_config"]["tools"] = True
    server = LatencyServer(latency_s=0.001, tool_calls=_add_call, reply=lambda said: f"The sum is {said}.")
    paths = {"PYTHONPATH": f"{ROOT / 'plugins'}:{tasks}"}
    with server:
        first = _finished(_job(tmp_path, cfg, tmp_path / "first", server.url, tmp_path / "cache", paths))
        asked = server.requests
        again = _finished(_job(tmp_path, cfg, tmp_path / "again", server.url, tmp_path / "cache", paths))
    scores = {a["algorithm"]: a for a in first["algorithms"]}["Inspect/adding"]
    assert scores["error"] is None and scores["scores"][0]["value"] == 1.0, scores  # "The sum is 3." and 42
    offered = server.with_tools[0]
    assert offered["tools"][0]["function"]["name"] == "add" and offered["tool_choice"] == "auto"
    answered = [r for r in server.with_tools if r["messages"][-1]["role"] == "tool"]
    assert sorted(r["messages"][-1]["content"] for r in answered) == ["3", "42"]
    assert first["metadata"]["inspect"]["requests"] == 4  # a call and an answer per sample
    assert again["metadata"]["inspect"]["cache_hits"] == 4 and server.requests == asked  # asked nothing again


FAILING = """
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import solver


@solver
def broken():
    async def solve(state, generate):
        raise RuntimeError("this solver always fails")

    return solve


@task
def failing():
    return Task(dataset=[Sample(input="Anything?", target="x")], solver=[broken()], scorer=includes())
"""


def test_a_task_that_fails_while_running_keeps_the_models_other_scores(tmp_path):
    from latency_server import LatencyServer

    tasks = tmp_path / "algorithms"
    tasks.mkdir()
    (tasks / "failing_task.py").write_text(FAILING)
    cfg = _config({"algorithm": "Inspect", "task": "failing_task.py@failing"})
    with LatencyServer(latency_s=0.001) as server:
        result = _finished(
            _job(
                tmp_path,
                cfg,
                tmp_path / "out",
                server.url,
                tmp_path / "cache",
                {"PYTHONPATH": f"{ROOT / 'plugins'}:{tasks}"},
            )
        )
    by_name = {a["algorithm"]: a for a in result["algorithms"]}
    assert result["status"] == "succeeded" and by_name["FactualKnowledge"]["error"] is None
    assert "this solver always fails" in by_name["Inspect/failing"]["error"]
    assert (tmp_path / "out" / "inspect" / "failing.eval").exists()  # Inspect's log of the failure is kept
