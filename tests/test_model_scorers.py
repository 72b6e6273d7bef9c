"""Algorithms that call the model while scoring (semantic robustness, prompt stereotyping),
run by the evaluation entry point against the real local model: the scores equal fmeval's
own `evaluate_sample`, and every model call goes through the response cache, so a re-run
in another record order succeeds with the server stopped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, WORKER_PYTHON, local_config
from llmeval.config import EvalConfig
from llmeval.dataset import read_dataset, read_jsonl, write_jsonl
from llmeval.targets.local.servers import _is_our_server, start_endpoint, stop_endpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fake_aws_credentials")]

DATA = ROOT / "tests" / "data" / "sentiment_and_pairs.jsonl"
TEMPLATE = (  # few-shot, so the one-token answer is a label
    "Review: Loved every minute.\nSentiment: positive\n\n"
    "Review: A dull mess.\nSentiment: negative\n\n"
    "Review: $feature\nSentiment:"
)
ROBUSTNESS = {
    "algorithm": "classification_accuracy_semantic_robustness",  # fmeval's registry name
    "perturbation_type": "butter_finger",
    "num_perturbations": 2,
    "butter_finger_perturbation_prob": 0.3,
    "valid_labels": ["positive", "negative"],
}
CONFIG = local_config(
    "t-model-scorers",
    models=[
        {
            "name": "m-one",
            "model_id": "smollm2-135m-instruct",
            "evaluation_config": {
                "content_template": "PROMPT_PLACEHOLDER",
                "inference_parameters": {"max_new_tokens": 1, "temperature": 0},
                "prompt_template": TEMPLATE,
                "log_probability": "sum([0].details.prefill[1:].logprob)",
                "max_retries": 0,
                "max_concurrency": 4,
            },
        }
    ],
    dataset={
        "dataset_name": "sentiment",
        "input_data_location": str(DATA),
        "model_input_key": "review",
        "target_output_key": "label",
        "sent_more_input_key": "sent_more",
        "sent_less_input_key": "sent_less",
    },
    algorithms=[ROBUSTNESS, {"algorithm": "PromptStereotyping"}],
)

# fmeval's own path, record by record with no cache: a fresh algorithm per record (its
# perturbation RNG seeded as at construction) and a ModelRunner that calls the server.
FMEVAL_REFERENCE = """
import json, sys, boto3
from fmeval.eval_algorithms.classification_accuracy_semantic_robustness import (
    ClassificationAccuracySemanticRobustness as CASR, ClassificationAccuracySemanticRobustnessConfig as Config)
from fmeval.eval_algorithms.prompt_stereotyping import PromptStereotyping
from fmeval.model_runners.model_runner import ModelRunner
url, template, options, dataset = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1")
def invoke(text, parameters):
    body = json.dumps({"inputs": text, "parameters": parameters})
    answer = client.invoke_endpoint(EndpointName="m-one", Body=body, ContentType="application/json")
    return json.loads(answer["Body"].read())
class Runner(ModelRunner):
    def __init__(self):
        pass
    def predict(self, prompt):
        answer = invoke(template.replace("$feature", prompt), {"max_new_tokens": 1, "temperature": 0})
        return answer[0]["generated_text"], None
def log_prob(text):
    params = {"max_new_tokens": 1, "temperature": 0, "details": True, "decoder_input_details": True}
    return sum(t["logprob"] for t in invoke(text, params)[0]["details"]["prefill"][1:])
out = {}
for line in open(dataset):
    r = json.loads(line)
    casr = CASR(Config(**options)).evaluate_sample(r["model_input"], r["target_output"], Runner(), "$model_input")
    st = PromptStereotyping().evaluate_sample(log_prob(r["sent_more_input"]), log_prob(r["sent_less_input"]))
    out[r["record_id"]] = {"casr": {s.name: s.value for s in casr}, "st": {s.name: s.value for s in st}}
print(json.dumps(out))
"""


def _evaluate(config: Path, dataset: Path, out: Path, url: str, cache: Path) -> subprocess.CompletedProcess:
    command = [WORKER_PYTHON, "-m", "llmeval.evaluation", "--config", str(config), "--model", "m-one"]
    command += ["--dataset", str(dataset), "--output-dir", str(out), "--endpoint-url", url, "--cache-dir", str(cache)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"), HF_HUB_OFFLINE="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_robustness_and_stereotyping_go_through_the_cached_client(tmp_path):
    cfg = EvalConfig.model_validate(CONFIG)
    config = tmp_path / "config.json"
    config.write_text(cfg.model_dump_json())
    prepared = read_dataset(
        DATA, "review", "label", text_columns={"sent_more_input": "sent_more", "sent_less_input": "sent_less"}
    )
    dataset = tmp_path / "dataset.jsonl"
    write_jsonl(dataset, prepared.records)
    who = "t-scorers/run-1/m-one"
    state = start_endpoint(cfg, "m-one", tmp_path / "run", who)
    try:
        first = _evaluate(config, dataset, tmp_path / "first", state["url"], tmp_path / "cache")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        options = {k: v for k, v in ROBUSTNESS.items() if k != "algorithm"}
        reference = subprocess.run(
            [WORKER_PYTHON, "-c", FMEVAL_REFERENCE, state["url"], TEMPLATE, json.dumps(options), str(dataset)],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "plugins")),
        )
        assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    finally:
        stop_endpoint(cfg, "m-one", who, state, tmp_path / "run")
    assert not _is_our_server(state["pid"], who)

    result = json.loads((tmp_path / "first" / "results.json").read_text())
    assert result["status"] == "succeeded", result
    by_name = {a["algorithm"]: a for a in result["algorithms"]}
    casr = {s["name"]: s for s in by_name["ClassificationAccuracySemanticRobustness"]["scores"]}
    stereo = {s["name"]: s for s in by_name["PromptStereotyping"]["scores"]}
    assert casr["classification_accuracy_score"]["count"] == casr["delta_classification_accuracy_score"]["count"] == 8
    assert casr["classification_accuracy_score"]["value"] >= 0.75  # the few-shot prompt classifies: not a vacuous 0
    assert 0 <= stereo["prompt_stereotyping"]["value"] <= 1 and stereo["log_probability_difference"]["count"] == 8
    assert "score ClassificationAccuracySemanticRobustness: 8/8" in first.stdout  # progress in the log

    expected = json.loads(reference.stdout.strip().splitlines()[-1])
    records = {r["record_id"]: r["scores"] for r in read_jsonl(tmp_path / "first" / "records.jsonl")}
    for record_id, scores in expected.items():
        assert records[record_id]["ClassificationAccuracySemanticRobustness"] == scores["casr"], record_id
        assert records[record_id]["PromptStereotyping"]["log_probability_difference"] == pytest.approx(
            scores["st"]["log_probability_difference"], abs=1e-3
        )

    # The server is stopped: a re-run in reverse order can only succeed from the cache.
    reversed_dataset = tmp_path / "reversed.jsonl"
    write_jsonl(reversed_dataset, list(reversed(prepared.records)))
    again = _evaluate(config, reversed_dataset, tmp_path / "again", state["url"], tmp_path / "cache")
    assert again.returncode == 0, again.stdout[-3000:]
    assert json.loads((tmp_path / "again" / "results.json").read_text())["generation"]["cache_hits"] == 8
    rerun = {r["record_id"]: r["scores"] for r in read_jsonl(tmp_path / "again" / "records.jsonl")}
    assert rerun == records


CONCURRENT_ROBUSTNESS = """
import json, sys, time
from pathlib import Path
from llmeval.config import AlgorithmSection
from llmeval.evaluation.generate import ModelClient, ResponseCache, Target, generate_with
from latency_server import LatencyServer
from llmeval.evaluation.score import score_outputs
records = [{"record_id": str(i), "model_input": f"review {i} was fine", "target_output": "fine"} for i in range(40)]
section = AlgorithmSection.model_validate({"algorithm": "ClassificationAccuracySemanticRobustness",
    "perturbation_type": "random_upper_case", "num_perturbations": 3, "valid_labels": ["fine", "bad"]})
with LatencyServer(latency_s=0.05, capacity=16, throttle_rate=0.1, seed=3) as server:
    target = Target("sim", "sim@1", "[0].generated_text", "PROMPT_PLACEHOLDER", {}, endpoint_url=server.url,
                    region="us-east-1", max_concurrency=8, max_retries=10)
    client = ModelClient(target, "$feature", ResponseCache(Path(sys.argv[1])))
    client.invoker.sleep = lambda s: time.sleep(min(s, 0.05))
    rows = generate_with(client, records)
    generated = sum(server.answered.values())
    plain = AlgorithmSection.model_validate({"algorithm": "FactualKnowledge"})
    released = []
    results, scored = score_outputs(rows, [plain, section], "loc", client,
                                    released=lambda: released.append(sum(server.answered.values())))
    first = dict(server.answered)
    score_outputs(rows, [section], "loc", client)
    print(json.dumps({"generated": generated, "answered": first, "requests_after_rerun": sum(server.answered.values()),
                      "max_in_flight": server.max_in_flight, "throttled": server.throttled,
                      "released_at": released, "order": [r.algorithm for r in results],
                      "scores": [s.__dict__ for s in results[1].scores],
                      "scored": sum(1 for r in scored if r["scores"]["ClassificationAccuracySemanticRobustness"])}))
"""


def test_robustness_calls_are_concurrent_cached_and_never_duplicated(tmp_path):
    """40 records x (1 + 3 perturbations) against a simulated endpoint that throttles 10%."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "tests")]))
    out = subprocess.run(
        [WORKER_PYTHON, "-c", CONCURRENT_ROBUSTNESS, str(tmp_path / "c.sqlite")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["generated"] == 40 and got["throttled"] > 0
    assert got["scored"] == 40
    assert set(got["answered"].values()) == {1}  # every distinct prompt answered exactly once
    assert 40 < len(got["answered"]) <= 160  # the originals from the cache, the perturbed ones asked
    assert got["requests_after_rerun"] == sum(got["answered"].values())  # a second scoring: all from the cache
    assert got["max_in_flight"] >= 4  # records are scored in parallel, not one call at a time
    # the scorer that asks the model ran first; the model was released after its last request
    assert got["order"] == ["FactualKnowledge", "ClassificationAccuracySemanticRobustness"]
    assert got["released_at"] == [sum(got["answered"].values())]
