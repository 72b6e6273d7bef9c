"""LLMJudge: rubrics and their checks at load, how a judge's answer is read, and the
evaluation entry point against a simulated judge endpoint with known behaviour."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, WORKER_PYTHON, local_config
from latency_server import LatencyServer
from llmeval.config import load_config
from llmeval.config.errors import ConfigError
from llmeval.rubrics import BUILT_IN, read_judgement, rubrics_of

QA = [json.loads(line) for line in (ROOT / "include" / "data" / "qa_general_knowledge.jsonl").read_text().splitlines()]
JUDGE = {"name": "judge", "model_id": "smollm2-135m-instruct"}


def _judged(rubrics: list | None = None, **extra) -> dict:
    algorithm = {"algorithm": "LLMJudge", "judge": "judge", **({"rubrics": rubrics} if rubrics else {})}
    return local_config("judged", judges=[dict(JUDGE)], algorithms=[algorithm], **extra)


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "judged.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "change, field, message",
    [
        (lambda c: c["algorithms"][0].update(judge="nobody"), "algorithms[0].judge", "unknown judge 'nobody'"),
        (lambda c: c.pop("judges"), "algorithms[0].judge", "the config has no judges"),
        (
            lambda c: c["algorithms"][0].update(rubrics=[{"name": "tone", "template": "Rate $model_input"}]),
            "algorithms[0].rubrics[0].template",
            "must contain $model_output",
        ),
        (
            lambda c: c["algorithms"][0].update(rubrics=[{"name": "correctness", "scale": [3]}]),
            "algorithms[0].rubrics[0].scale",
            "at least 2 distinct",
        ),
        (
            lambda c: c["algorithms"][0].update(rubrics=[{"name": "tone", "template": "$model_output $answer"}]),
            "algorithms[0].rubrics[0].template",
            "unknown placeholder $answer",
        ),
        (lambda c: c["algorithms"][0].update(rubrics=["politeness"]), "algorithms[0].rubrics[0].name", "built-in"),
        (lambda c: c["algorithms"][0].update(rubrics=["faithfulness"]), "algorithms[0].rubrics[0]", "context_key"),
        (lambda c: c["judges"][0].update(name="m-one"), "judges[0].name", "duplicate model name 'm-one'"),
        (lambda c: c["judges"][0].update(model_id="gpt-x"), "judges[0].model_id", "not a local model"),
    ],
)
def test_a_bad_judge_or_rubric_is_refused_at_load_with_file_line_and_field(tmp_path, change, field, message):
    cfg = _judged()
    change(cfg)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, cfg))
    problem = err.value.problems[0]
    assert problem.file.endswith("judged.yaml") and problem.line, problem
    assert field in str(err.value) and message in str(err.value), str(err.value)


def test_rubrics_default_to_correctness_and_custom_ones_keep_their_scale(tmp_path):
    cfg = load_config(_write(tmp_path, _judged()))
    assert [r.name for r in cfg.algorithms[0].rubrics] == ["correctness"]
    assert [j.name for j in cfg.judged_by] == ["judge"] and [m.name for m in cfg.models] == ["m-one", "m-two"]
    custom = rubrics_of([{"name": "brief", "template": "Is $model_output brief?", "scale": [0, 1]}, "helpfulness"])
    assert custom[0].scale == (0, 1) and custom[1].template == BUILT_IN["helpfulness"]
    assert custom[0].prompt({"model_output": "Yes."}) == "Is Yes. brief?"


@pytest.mark.parametrize(
    "answer, rating, explanation",
    [
        ("Rating: 4\nExplanation: close to the reference.", 4, "close to the reference."),
        ("**Rating:** 2 - it names the wrong city", 2, "it names the wrong city"),
        ("5\nIt is right.", 5, "It is right."),
        ("Rating: 9\nExplanation: off the scale", None, "Rating: 9\nExplanation: off the scale"),
        ("I cannot judge this.", None, "I cannot judge this."),
        ("", None, ""),
    ],
)
def test_a_judges_answer_is_read_or_counted_unparseable(answer, rating, explanation):
    judgement = read_judgement(answer, (1, 2, 3, 4, 5))
    assert (judgement.rating, judgement.explanation) == (rating, explanation)


def _hidden_rule(prompt: str) -> str:
    """Rates 5 when the answer contains the reference, else 2; one record in five gets garbage
    when the answer starts with 'noisy'."""
    reference = re.search(r"Reference answer: (.*)", prompt).group(1)
    answer = re.search(r"Answer to grade: (.*)", prompt).group(1)
    if answer.startswith("noisy") and int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 5 == 0:
        return "The weather is nice today."
    good = reference.lower() in answer.lower()
    return f"Rating: {5 if good else 2}\nExplanation: {'it says' if good else '<b>it misses</b>'} {reference}"


def _evaluate(
    tmp_path: Path,
    url: str,
    model: str,
    outputs: dict[str, str],
    judge: dict | None = None,
    env: dict | None = None,
    panel: list[str] | None = None,
) -> subprocess.CompletedProcess:
    given = tmp_path / f"{model}.jsonl"
    given.write_text("".join(json.dumps({"record_id": k, "model_output": v}) + "\n" for k, v in outputs.items()))
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"record_id": r["id"], "model_input": r["question"], "target_output": r["answer"]}) + "\n"
            for r in QA[:20]
        )
    )
    models = [{"name": model, "model_id": "vendor", "outputs_location": str(given)}]
    cfg = _judged(models=models)
    if judge:
        cfg["judges"] = [judge]
    if panel:  # each judge a model behind an OpenAI-compatible URL
        served = {"model_provider": "openai_compatible", "connection_id": "judges"}
        cfg["judges"] = [{"name": name, "model_id": name, **served} for name in panel]
        cfg["algorithms"][0] = {"algorithm": "LLMJudge", "judges": panel, "aggregate": "median"}
    config = _write(tmp_path, cfg)
    command = [WORKER_PYTHON, "-m", "llmeval.evaluation", "--config", str(config), "--model", model]
    command += ["--dataset", str(dataset), "--output-dir", str(tmp_path / model), "--outputs", str(given)]
    command += ["--cache-dir", str(tmp_path / "cache")]
    if not (judge or panel):
        command += ["--judge", f"judge=judge@{url}"]
    aws = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    full = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"), **aws, **(env or {}))
    return subprocess.run(command, capture_output=True, text=True, env=full, timeout=300)


def _judge_scores(out: Path) -> dict[str, float]:
    result = json.loads((out / "results.json").read_text())
    (judged,) = [a for a in result["algorithms"] if a["algorithm"] == "LLMJudge"]
    return {s["name"]: s["value"] for s in judged["scores"]}


def test_a_judge_with_a_hidden_rule_gives_the_expected_ratings_and_a_rerun_asks_nothing(tmp_path):
    right = {r["id"]: f"It is {r['answer']}." for r in QA[:20]}
    half = {r["id"]: (f"It is {r['answer']}." if i % 2 else "I do not know.") for i, r in enumerate(QA[:20])}
    with LatencyServer(latency_s=0.01, reply=_hidden_rule) as server:
        for model, outputs in (("right", right), ("half", half)):
            done = _evaluate(tmp_path, server.url, model, outputs)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        asked = server.by_endpoint["judge"]
        again = _evaluate(tmp_path, server.url, "half", half)
        assert again.returncode == 0, again.stderr[-3000:]
        # one call per record of "right", and per record of "half" the judge had not seen (the 10 right answers
        # are the same prompts, answered from the cache); nothing on the re-run
        assert server.by_endpoint["judge"] == asked == 30
    assert _judge_scores(tmp_path / "right") == {"correctness": 1.0, "correctness_unparseable": 0.0}
    # 10 answers rated 5 (1.0) and 10 rated 2 (0.25)
    assert _judge_scores(tmp_path / "half") == {"correctness": 0.625, "correctness_unparseable": 0.0}
    records = [json.loads(line) for line in (tmp_path / "half" / "records.jsonl").read_text().splitlines()]
    assert {r["judgements"]["correctness"]["rating"] for r in records} == {2, 5}
    missed = next(r for r in records if r["judgements"]["correctness"]["rating"] == 2)
    assert missed["judgements"]["correctness"]["explanation"] == f"<b>it misses</b> {missed['target_output']}"
    report = (tmp_path / "half" / "report.html").read_text()
    assert "&lt;b&gt;it misses&lt;/b&gt;" in report and "<b>it misses</b>" not in report  # escaped where shown


def test_an_openai_compatible_judge_is_asked_with_its_system_prompt_and_key(tmp_path):
    """A judge behind an OpenAI-compatible URL (where the task found its connection: the
    environment): each rubric prompt is its user message after its system prompt, with its key."""
    from llmeval.evaluation.served import ENV, ServedAt, encode

    sent: list[tuple[str, dict]] = []

    class Recording(LatencyServer):
        def _answer(self, path, body):
            sent.append((path, json.loads(body)))
            return super()._answer(path, body)

    judge = {"name": "judge", "model_id": "grader", "model_provider": "openai_compatible", "connection_id": "grader"}
    judge["evaluation_config"] = {"system_prompt": "Grade strictly.", "inference_parameters": {"max_tokens": 40}}
    right = {r["id"]: f"It is {r['answer']}." for r in QA[:20]}
    with Recording(latency_s=0.001, reply=_hidden_rule) as server:
        served = encode({"judge": ServedAt(f"{server.url}/v1", api_key="k")})
        done = _evaluate(tmp_path, server.url, "right", right, judge, {ENV: served})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(sent) == 20 and {path for path, _ in sent} == {"/v1/chat/completions"}
    for _, body in sent:
        system, user = body["messages"]
        assert (
            system == {"role": "system", "content": "Grade strictly."} and "Answer to grade: It is" in user["content"]
        )
        assert body["model"] == "grader" and body["max_tokens"] == 40
    assert _judge_scores(tmp_path / "right") == {"correctness": 1.0, "correctness_unparseable": 0.0}


def test_a_panel_of_judges_keeps_each_rating_and_scores_their_median(tmp_path):
    """Four judges behind an OpenAI-compatible URL (four models: a judge's answers are cached by
    its model), each rating every answer its own way."""
    from llmeval.evaluation.served import ENV, ServedAt, encode

    class FourJudges(LatencyServer):
        def _answer(self, path, body):
            status, answer, error = super()._answer(path, body)
            rating = {"j-low": 1, "j-mid": 3, "j-high": 5, "j-mute": None}[json.loads(body)["model"]]
            text = "I cannot say." if rating is None else f"Rating: {rating}\nExplanation: fixed."
            answer["choices"][0]["message"]["content"] = text
            return status, answer, error

    panel = ["j-low", "j-mid", "j-high", "j-mute"]
    outputs = {r["id"]: r["answer"] for r in QA[:20]}
    with FourJudges(latency_s=0.001) as server:
        served = encode({name: ServedAt(f"{server.url}/v1") for name in panel})
        done = _evaluate(tmp_path, server.url, "right", outputs, env={ENV: served}, panel=panel)
        asked = dict(server.by_endpoint)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert asked == {"j-low": 20, "j-mid": 20, "j-high": 20, "j-mute": 20}  # every judge rates every answer
    records = [json.loads(line) for line in (tmp_path / "right" / "records.jsonl").read_text().splitlines()]
    verdict = records[0]["judgements"]["correctness"]
    assert verdict["rating"] == 3 and {n: v["rating"] for n, v in verdict["by_judge"].items()} == {
        "j-low": 1,
        "j-mid": 3,
        "j-high": 5,
        "j-mute": None,
    }
    assert _judge_scores(tmp_path / "right") == {"correctness": 0.5, "correctness_unparseable": 0.0}


def test_a_judge_answering_garbage_is_counted_not_scored(tmp_path):
    noisy = {r["id"]: f"noisy but right: {r['answer']}" for r in QA[:20]}
    with LatencyServer(latency_s=0.01, reply=_hidden_rule) as server:
        done = _evaluate(tmp_path, server.url, "noisy", noisy)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "noisy" / "records.jsonl").read_text().splitlines()]
    garbage = [r for r in records if r["judgements"]["correctness"]["rating"] is None]
    assert 1 <= len(garbage) <= 8  # about one in five
    assert all(r["judgements"]["correctness"]["unparseable"] == "The weather is nice today." for r in garbage)
    assert all(r["scores"]["LLMJudge"]["correctness"] is None for r in garbage)
    result = json.loads((tmp_path / "noisy" / "results.json").read_text())
    (judged,) = result["algorithms"]
    scores = {s["name"]: s for s in judged["scores"]}
    # the unparseable records are counted, and left out of the mean (not scored as 0)
    assert scores["correctness_unparseable"]["value"] == len(garbage)
    assert scores["correctness"]["value"] == 1.0 and scores["correctness"]["count"] == 20 - len(garbage)
    assert "unparseable" in (tmp_path / "noisy" / "report.html").read_text()


def test_sagemaker_refuses_a_gated_judge_without_its_eula_at_load(tmp_path):
    from sagemaker_fixtures import sagemaker_config

    cfg = sagemaker_config("sm-refused", ["sm-alpha"])
    cfg["judges"] = [{"name": "sm-judge", "model_id": "meta-textgeneration-llama-3-8b-instruct"}]
    cfg["algorithms"].append({"algorithm": "LLMJudge", "judge": "sm-judge"})
    (tmp_path / "refused.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=re.escape("judges[0].accept_eula")):
        load_config(tmp_path / "refused.yaml")
