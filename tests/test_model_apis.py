"""How models are asked, whatever serves them: the request each API makes of a conversation
(checked against the bedrock-runtime API model for Converse), the answer and token counts
read back, retries of OpenAI-compatible 429s after their Retry-After, and the config checks
of providers, APIs, chat templates and connections."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from aws_model import assert_valid
from conftest import DATASET, local_config
from helpers import generate, records
from latency_server import LatencyServer
from llmeval.config import ConfigError, load_config
from llmeval.contracts import Api
from llmeval.evaluation import apis
from llmeval.evaluation.generate import Invoker, ModelClient, ResponseCache, Target
from llmeval.evaluation.transport import HttpError

pytestmark = pytest.mark.usefixtures("fake_aws_credentials")

FEW_SHOT = [
    {"role": "user", "content": "Capital of Italy?"},
    {"role": "assistant", "content": "Rome"},
    {"role": "user", "content": "$feature"},
]
PROFILE = "us.anthropic.claude-3-haiku-20240307-v1:0"  # a cross-region inference profile


def _target(api: Api, provider: str = "sagemaker", **kw) -> Target:
    return Target(
        endpoint_name=kw.pop("endpoint_name", "ep"),
        model_identity="m@1",
        output_path="[0].generated_text",
        content_template="PROMPT_PLACEHOLDER",
        inference_parameters=kw.pop("inference_parameters", {}),
        region="us-east-1",
        provider=provider,
        api=api,
        **kw,
    )


def test_a_message_list_template_keeps_its_turns_and_the_system_prompt():
    asked = apis.conversation(FEW_SHOT, "Answer briefly.", "Capital of France?")
    assert asked.turns == (("user", "Capital of Italy?"), ("assistant", "Rome"), ("user", "Capital of France?"))
    body = apis.request(_target(Api.MESSAGES, inference_parameters={"max_tokens": 8}), asked, {"max_tokens": 8})
    assert body == {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome"},
            {"role": "user", "content": "Capital of France?"},
        ],
        "max_tokens": 8,
    }
    assert asked.text.splitlines() == [
        "system: Answer briefly.",
        "user: Capital of Italy?",
        "assistant: Rome",
        "user: Capital of France?",
    ]
    plain = apis.conversation("Q: $feature", None, "hi")  # the seed's form: one string, shown as it was sent
    assert plain.text == "Q: hi"
    openai = apis.request(_target(Api.MESSAGES, "openai_compatible", model_name="llama"), plain, {})
    assert openai == {"messages": [{"role": "user", "content": "Q: hi"}], "model": "llama"}


@pytest.mark.parametrize("model_id", ["anthropic.claude-3-haiku-20240307-v1:0", PROFILE])
def test_converse_requests_follow_the_bedrock_runtime_api_model(model_id):
    target = _target(Api.CONVERSE, "bedrock", endpoint_name=model_id)
    asked = apis.conversation(FEW_SHOT, "Answer briefly.", "Capital of France?")
    parameters = {"maxTokens": 32, "temperature": 0, "stopSequences": ["\n"], "top_k": 5}
    call = apis.request(target, asked, parameters)
    assert call["system"] == [{"text": "Answer briefly."}]
    assert call["inferenceConfig"] == {"maxTokens": 32, "temperature": 0, "stopSequences": ["\n"]}
    assert call["additionalModelRequestFields"] == {"top_k": 5}  # a model's own field
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    assert_valid(client, "Converse", call)
    response = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Paris"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 21, "outputTokens": 2, "totalTokens": 23},
        "metrics": {"latencyMs": 80},
    }
    with Stubber(client) as stub:  # the response shape is the API model's too
        stub.add_response("converse", response, expected_params=call)
        invoker = Invoker(target, client)
        answer = invoker(call)["response"]
    assert apis.read(target, answer, asked.text) == apis.Answer("Paris", 21, 2, True)


def test_messages_answers_and_usage_are_read_and_a_missing_answer_is_named():
    target = _target(Api.MESSAGES)
    response = {
        "choices": [{"message": {"role": "assistant", "content": "Paris"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1},
    }
    assert apis.read(target, response, "q") == apis.Answer("Paris", 12, 1, True)
    assert apis.read(target, {"choices": [{"message": {"content": "a b"}}]}, "q x") == apis.Answer("a b", 2, 2, False)
    with pytest.raises(ValueError, match=r"no choices\[0\].message.content in the response"):
        apis.read(target, [{"generated_text": "x"}], "q")


def test_every_provider_answers_through_one_client(tmp_path):
    """A SageMaker Messages-API endpoint, Bedrock Converse (by inference profile) and an
    OpenAI-compatible URL, against one simulated server: each record its own answer, exact tokens."""
    retries = 0
    with LatencyServer(latency_s=0.001, throttle_rate=0.2) as server:  # 429s: ThrottlingException, rate limits
        targets = {
            "messages": _target(Api.MESSAGES, endpoint_url=server.url),
            "converse": _target(Api.CONVERSE, "bedrock", endpoint_name=PROFILE, endpoint_url=server.url),
            "openai": _target(Api.MESSAGES, "openai_compatible", model_name="llama", base_url=f"{server.url}/v1"),
        }
        for name, target in targets.items():
            invoker = Invoker(target, sleep=lambda s: None)
            rows = generate(records(12), target, "$feature", ResponseCache(tmp_path / f"{name}.sqlite"), invoker)
            assert [r["model_output"] for r in rows] == [f"answer to: question {i}" for i in range(12)], name
            assert all(r["tokens_exact"] and r["output_tokens"] == 3 for r in rows), name
            retries += invoker.retries
        assert server.by_endpoint == {"ep": 12, PROFILE: 12, "llama": 12}
        assert retries == server.throttled > 0  # every throttle retried through the same client


def test_openai_compatible_throttling_waits_for_retry_after_without_losing_records(tmp_path):
    waits: list[float] = []
    with LatencyServer(latency_s=0.001, throttle_rate=0.3, retry_after_s=2) as server:
        target = _target(
            Api.MESSAGES, "openai_compatible", model_name="llama", base_url=f"{server.url}/v1", max_concurrency=4
        )
        invoker = Invoker(target, sleep=waits.append)
        rows = generate(records(40), target, "$feature", ResponseCache(tmp_path / "c.sqlite"), invoker)
    assert [r["model_output"] for r in rows] == [f"answer to: question {i}" for i in range(40)]
    assert server.throttled > 0 and len(waits) == server.throttled == invoker.retries
    assert min(waits) >= 2.0  # the server's Retry-After, not the shorter back-off
    assert invoker.limit.limit < 4  # throttling also lowered the concurrency


def test_a_wrong_api_key_fails_at_once_with_the_servers_message(tmp_path):
    class Refusing(LatencyServer):
        def _answer(self, path, body):
            return 401, {"message": "Incorrect API key provided"}, None

    with Refusing(latency_s=0.001) as server:
        target = _target(Api.MESSAGES, "openai_compatible", model_name="m", base_url=f"{server.url}/v1", api_key="x")
        invoker = Invoker(target, sleep=lambda s: pytest.fail("a 401 is not retried"))
        with pytest.raises(HttpError, match="HTTP 401.*Incorrect API key"):
            ModelClient(target, "$feature", ResponseCache(tmp_path / "c.sqlite"), invoker).ask("q")


def _sm(models: list[dict], **extra) -> dict:
    return {"pipeline": {"name": "served"}, "dataset": DATASET, "models": models, **extra} | {
        "algorithms": [{"algorithm": "FactualKnowledge"}]
    }


BEDROCK = {"name": "claude", "model_id": PROFILE, "model_provider": "bedrock"}
OPENAI = {"name": "vllm", "model_id": "llama", "model_provider": "openai_compatible", "connection_id": "my_vllm"}


@pytest.mark.parametrize(
    ("model", "extra", "line", "where", "expected"),
    [
        (
            {**BEDROCK, "evaluation_config": {"api": "messages"}},
            {},
            1,
            "models[0].evaluation_config.api",
            "bedrock models take api converse or invoke, not messages",
        ),
        (
            {"name": "m", "model_id": "x", "evaluation_config": {"api": "converse"}},
            {},
            1,
            "models[0].evaluation_config.api",
            "jumpstart models take api invoke or messages, not converse",
        ),
        (
            {"name": "m", "model_id": "x", "evaluation_config": {"api": "messages", "output": "[0].x"}},
            {},
            1,
            "models[0].evaluation_config.output",
            r"output is for api invoke \(the answer is choices\[0\]",
        ),
        (
            {"name": "m", "model_id": "x", "evaluation_config": {"system_prompt": "Be brief."}},
            {},
            1,
            "models[0].evaluation_config.system_prompt",
            "api invoke sends one prompt string",
        ),
        (
            {**BEDROCK, "evaluation_config": {"prompt_template": [{"role": "assistant", "content": "$feature"}]}},
            {},
            1,
            "models[0].evaluation_config.prompt_template",
            "must end with the user's message",
        ),
        ({**OPENAI, "connection_id": None}, {}, 1, "models[0].connection_id", "needs the Airflow connection"),
        ({**BEDROCK, "connection_id": "x"}, {}, 1, "models[0].connection_id", "only model_provider: openai_compat"),
        (
            {"name": "m", "model_id": "x", "price_per_million_tokens": {"input": 1, "output": 2}},
            {},
            1,
            "models[0].price_per_million_tokens",
            "billed per instance-hour",
        ),
        ({**BEDROCK, "model_provider": "vertex"}, {}, 1, "models[0].model_provider", "jumpstart"),
        (OPENAI, {"sagemaker": {"hub_access": False}}, 1, "models[0].model_provider", "no internet access"),
    ],
)
def test_provider_and_api_mistakes_name_the_file_line_and_field(write_config, model, extra, line, where, expected):
    path = write_config("served.yaml", _sm([{k: v for k, v in model.items() if v is not None}], **extra))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problem = caught.value.problems[0]
    assert problem.field == where and problem.file == str(path) and problem.line is not None
    assert __import__("re").search(expected, problem.message), problem.message


def test_new_configs_ask_bedrock_by_converse_and_the_seeds_bodies_keep_invoke(write_config):
    seed_body = {"content_template": {"messages": [{"role": "user", "content": "PROMPT_PLACEHOLDER"}]}}
    cfg = load_config(
        write_config(
            "served.yaml",
            _sm(
                [
                    BEDROCK,
                    {**BEDROCK, "name": "seed", "evaluation_config": seed_body},
                    OPENAI,
                    {"name": "js", "model_id": "x"},
                ]
            ),
        )
    )
    assert [m.api for m in cfg.models] == [Api.CONVERSE, Api.INVOKE, Api.MESSAGES, Api.INVOKE]
    local = load_config(
        write_config(
            "local.yaml",
            local_config(
                models=[
                    OPENAI,
                    {"name": "m", "model_id": "smollm2-135m-instruct", "evaluation_config": {"api": "messages"}},
                ]
            ),
        )
    )
    assert [m.kind for m in local.models] == ["openai_compatible", "foundation"]


def test_a_models_connection_must_exist_and_keep_its_key_out_of_a_processing_job(write_config, monkeypatch):
    import json

    from llmeval.targets.connections import ConnectionProblem, check_connections, served_models

    cfg = load_config(write_config("served.yaml", _sm([OPENAI])))
    monkeypatch.delenv("AIRFLOW_CONN_MY_VLLM", raising=False)
    with pytest.raises(ConnectionProblem, match=r"model 'vllm' \(connection_id 'my_vllm'.*no Airflow connection"):
        check_connections(cfg, ["vllm"], for_processing=False)
    conn = {"conn_type": "http", "host": "llm.internal", "schema": "http", "port": 8000, "password": "k"}
    monkeypatch.setenv("AIRFLOW_CONN_MY_VLLM", json.dumps(conn))
    assert served_models(cfg, ["vllm"], for_processing=False)["vllm"].base_url == "http://llm.internal:8000"
    assert served_models(cfg, ["vllm"], for_processing=False)["vllm"].api_key == "k"
    with pytest.raises(ConnectionProblem, match="store it in Secrets Manager"):
        check_connections(cfg, ["vllm"], for_processing=True)
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:llmeval/vllm-AbCdEf"
    conn.update(host="https://llm.example.com/v1", port=None, extra={"api_key_secret_arn": arn})
    monkeypatch.setenv("AIRFLOW_CONN_MY_VLLM", json.dumps(conn))
    at = served_models(cfg, ["vllm"], for_processing=True)["vllm"]
    assert (at.base_url, at.api_key, at.api_key_secret_arn) == ("https://llm.example.com/v1", None, arn)


def test_the_role_may_invoke_bedrock_models_profiles_and_read_api_keys(write_config):
    from llmeval.iam import sagemaker_role_policy

    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{PROFILE}"
    models = [BEDROCK, {**BEDROCK, "name": "direct", "model_id": "amazon.nova-lite-v1:0"}]
    models += [{**BEDROCK, "name": "by-arn", "model_id": arn}, OPENAI]
    policy = sagemaker_role_policy(load_config(write_config("served.yaml", _sm(models))), "s3://b/p")
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["InvokeBedrock"]["Action"] == ["bedrock:InvokeModel"]  # Converse is allowed by it
    assert sorted(statements["InvokeBedrock"]["Resource"]) == sorted(
        [
            "arn:aws:bedrock:*::foundation-model/amazon.nova-lite-v1:0",
            "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
            f"arn:aws:bedrock:*:*:inference-profile/{PROFILE}",
            arn,
        ]
    )
    assert statements["ReadApiKeys"]["Action"] == ["secretsmanager:GetSecretValue"]
