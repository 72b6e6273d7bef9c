"""A real model (SmolLM2) asked through every API the project speaks: the local server's
Messages API on the SageMaker runtime path, Bedrock Converse and OpenAI-compatible chat, and
llama.cpp's OpenAI-compatible server as an independent second implementation."""

from __future__ import annotations

import pytest

from helpers import generate
from llmeval.contracts import Api
from llmeval.evaluation.generate import Invoker, ModelClient, ResponseCache, Target
from llmeval.evaluation.transport import HttpError
from model_servers import API_KEY, llama_cpp_server, project_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fake_aws_credentials")]

PROFILE = "us.anthropic.claude-3-haiku-20240307-v1:0"
QUESTIONS = [
    {"record_id": str(i), "model_input": q, "target_output": a}
    for i, (q, a) in enumerate(
        [
            ("What is the capital of France?", "Paris"),
            ("How many legs does a spider have?", "8"),
            ("What color is the sky?", "blue"),
        ]
    )
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with project_server(["sm-classic", "sm-messages", PROFILE, "smollm2"], tmp_path_factory.mktemp("server")) as url:
        yield url


def _targets(url: str, tokens: int = 12) -> dict[str, Target]:
    common = {"model_identity": "smollm2@1", "output_path": "[0].generated_text", "region": "us-east-1"}
    return {
        "invoke": Target(
            "sm-classic",
            content_template=[[{"role": "user", "content": "PROMPT_PLACEHOLDER"}]],
            inference_parameters={"max_new_tokens": tokens, "temperature": 0},
            endpoint_url=url,
            **common,
        ),
        "messages": Target(
            "sm-messages",
            content_template=None,
            api=Api.MESSAGES,
            endpoint_url=url,
            inference_parameters={"max_tokens": tokens, "temperature": 0},
            **common,
        ),
        "converse": Target(
            PROFILE,
            content_template=None,
            provider="bedrock",
            api=Api.CONVERSE,
            endpoint_url=url,
            inference_parameters={"maxTokens": tokens, "temperature": 0},
            **common,
        ),
        "openai": Target(
            "smollm2",
            content_template=None,
            provider="openai_compatible",
            api=Api.MESSAGES,
            model_name="smollm2",
            base_url=f"{url}/v1",
            api_key=API_KEY,
            inference_parameters={"max_tokens": tokens, "temperature": 0},
            **common,
        ),
    }


def test_one_model_gives_the_same_greedy_answers_through_every_api(server, tmp_path):
    answers = {}
    for name, target in _targets(server).items():
        rows = generate(QUESTIONS, target, "$feature", ResponseCache(tmp_path / f"{name}.sqlite"))
        assert all(r["error"] is None and r["model_output"] for r in rows), (name, rows)
        assert all(r["tokens_exact"] and 0 < r["output_tokens"] <= 12 and r["latency_ms"] > 0 for r in rows), name
        answers[name] = [r["model_output"] for r in rows]
    # the same conversation and greedy decoding: the APIs are four doors to one model call
    assert answers["messages"] == answers["converse"] == answers["openai"] == answers["invoke"], answers


def test_a_system_prompt_and_few_shot_turns_reach_the_model(server, tmp_path):
    target = _targets(server, tokens=4)["openai"]
    target.system_prompt = "Answer with one word."
    plain = ModelClient(target, "$feature", ResponseCache(tmp_path / "a.sqlite")).ask("Capital of France?")
    few_shot = [
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "$feature"},
    ]
    shot = ModelClient(target, few_shot, ResponseCache(tmp_path / "b.sqlite")).ask("Capital of France?")
    # the model's own token count: both earlier turns were in its context, beside the system prompt
    assert shot["input_tokens"] >= plain["input_tokens"] + 8, (plain, shot)
    assert plain["prompt"] == "system: Answer with one word.\nuser: Capital of France?"
    assert shot["prompt"].startswith("system: Answer with one word.\nuser: Capital of Italy?\nassistant: Rome")


def test_an_openai_compatible_server_refuses_a_missing_api_key(server, tmp_path):
    target = _targets(server)["openai"]
    target.api_key = None
    invoker = Invoker(target, sleep=lambda s: pytest.fail("a 401 is not retried"))
    with pytest.raises(HttpError, match="HTTP 401"):
        ModelClient(target, "$feature", ResponseCache(tmp_path / "c.sqlite"), invoker).ask("hi")


def test_llama_cpp_serves_an_openai_compatible_model_through_the_same_client(tmp_path):
    with llama_cpp_server("smollm2-gguf", tmp_path) as url:
        target = _targets(url, tokens=8)["openai"]
        target.model_name, target.base_url = "smollm2-gguf", f"{url}/v1"
        rows = generate(QUESTIONS, target, "$feature", ResponseCache(tmp_path / "c.sqlite"))
        again = generate(QUESTIONS, target, "$feature", ResponseCache(tmp_path / "c.sqlite"))
    assert all(r["error"] is None and r["model_output"] for r in rows), rows
    assert all(r["tokens_exact"] and 0 < r["output_tokens"] <= 8 for r in rows)
    assert [r["cached"] for r in again] == [True] * 3 and [r["model_output"] for r in again] == [
        r["model_output"] for r in rows
    ]


def test_the_local_target_calls_an_openai_compatible_model_with_its_connections_key(
    server, tmp_path, airflow_db, monkeypatch
):
    """A local-target run: a model on the local server through the Messages API beside one behind an
    OpenAI-compatible URL (its base URL and key from an Airflow connection): nothing is served for
    the latter, both are scored and ranked; a run whose connection does not exist stops at `plan`."""
    import json

    import yaml

    from conftest import local_config, run_dag
    from llmeval.store import run_folder

    models = [
        {
            "name": "m-messages",
            "model_id": "smollm2-135m-instruct",
            "evaluation_config": {
                "api": "messages",
                "system_prompt": "Answer briefly.",
                "inference_parameters": {"max_tokens": 8},
            },
        },
        {
            "name": "m-remote",
            "model_id": "smollm2",
            "model_provider": "openai_compatible",
            "connection_id": "remote_llm",
            "evaluation_config": {"inference_parameters": {"max_tokens": 8}},
        },
    ]
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "served-local.yaml").write_text(
        yaml.safe_dump(local_config("served-local", models=models, num_records=4))
    )
    monkeypatch.delenv("AIRFLOW_CONN_REMOTE_LLM", raising=False)
    _, refused = run_dag("served-local", configs)
    states = {t.task_id: t.state for t in refused.get_task_instances()}
    assert refused.state == "failed" and states["plan"] == "failed" and states.get("model.deploy") != "success"
    monkeypatch.setenv(
        "AIRFLOW_CONN_REMOTE_LLM", json.dumps({"conn_type": "http", "host": f"{server}/v1", "password": API_KEY})
    )
    dag, dag_run = run_dag("served-local", configs)
    assert dag_run.state == "success", [(t.task_id, t.map_index, t.state) for t in dag_run.get_task_instances()]
    assert "openai_model.evaluate" in dag.task_ids and not any(
        t.startswith("openai_model.deploy") for t in dag.task_ids
    )
    folder = run_folder(dag.dag_id, dag_run.run_id)
    for model in ("m-messages", "m-remote"):
        result = json.loads((folder / "models" / model / "results.json").read_text())
        assert result["status"] == "succeeded" and result["generation"]["records_evaluated"] == 4, model
        rows = [json.loads(line) for line in (folder / "models" / model / "outputs.jsonl").read_text().splitlines()]
        assert all(r["tokens_exact"] and r["model_output"] for r in rows), model
    remote = (folder / "models" / "m-remote" / "results.json").read_text()
    assert API_KEY not in remote and API_KEY not in (folder / "config.json").read_text()
