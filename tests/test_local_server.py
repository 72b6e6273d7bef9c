"""The local model server with the real SmolLM2 model, reached through boto3's
sagemaker-runtime client like a SageMaker endpoint; started and stopped by PID."""

from __future__ import annotations

import json
import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import WORKER_PYTHON, local_config
from llmeval.config import EvalConfig
from llmeval.targets.local.servers import (
    _is_our_server,
    find_servers,
    start_endpoint,
    stop_endpoint,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    cfg = EvalConfig.model_validate(local_config())
    run = tmp_path_factory.mktemp("run")
    state = start_endpoint(cfg, "m-one", run, WHO)
    yield cfg, run, state
    stop_endpoint(cfg, "m-one", WHO, state, run)
    assert not _is_our_server(state["pid"], WHO)


WHO = "t-local/run-1/m-one"  # the server's owner: dag / run / model


def _client(url: str):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}),
    )


def _invoke(url: str, name: str, payload: dict) -> list:
    body = _client(url).invoke_endpoint(EndpointName=name, Body=json.dumps(payload), ContentType="application/json")
    return json.loads(body["Body"].read())


def test_answers_chat_and_text_payloads_like_jumpstart(endpoint):
    _, _, state = endpoint
    chat = _invoke(
        state["url"],
        "m-one",
        {
            "inputs": [[{"role": "user", "content": "What is the capital of France?"}]],
            "parameters": {"max_new_tokens": 12},
        },
    )
    assert (
        chat[0]["generation"]["role"] == "assistant" and chat[0]["generation"]["content"] == chat[0]["generated_text"]
    )
    assert 0 < chat[0]["details"]["generated_tokens"] <= 12
    text = _invoke(state["url"], "m-one", {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 6}})
    assert isinstance(text[0]["generated_text"], str) and "generation" not in text[0]


def test_a_last_assistant_message_is_continued_not_answered(endpoint):
    """A prefill: the answer goes on from the assistant's words (a judge's "Rating:")."""
    _, _, state = endpoint
    question = [{"role": "user", "content": "Rate the answer 'Paris' to 'capital of France?' from 1 to 5."}]
    greedy = {"max_new_tokens": 4, "temperature": 0}
    fresh = _invoke(state["url"], "m-one", {"inputs": [question], "parameters": greedy})
    prefilled = [*question, {"role": "assistant", "content": "Rating:"}]
    continued = _invoke(state["url"], "m-one", {"inputs": [prefilled], "parameters": greedy})
    # only the tokens of "Rating:" (3); a new assistant turn after it would add five more (end, start, role, newlines)
    assert continued[0]["details"]["prompt_tokens"] - fresh[0]["details"]["prompt_tokens"] == 3, continued


def test_greedy_answers_are_deterministic_under_concurrent_batching(endpoint):
    from concurrent.futures import ThreadPoolExecutor

    _, _, state = endpoint
    payload = {"inputs": "Paris is the capital of", "parameters": {"max_new_tokens": 5, "temperature": 0}}
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _invoke(state["url"], "m-one", payload)[0]["generated_text"], range(6)))
    assert len(set(answers)) == 1


def test_unknown_endpoint_and_bad_payload_are_refused(endpoint):
    _, _, state = endpoint
    with pytest.raises(ClientError) as info:
        _invoke(state["url"], "someone-elses-endpoint", {"inputs": "hi"})
    assert info.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as info:
        _invoke(state["url"], "m-one", {"no_inputs": 1})
    assert info.value.response["Error"]["Code"] == "ModelError"


def test_binds_loopback_only_and_redeploy_reuses_the_live_server(endpoint):
    cfg, run, state = endpoint
    assert state["url"].startswith("http://127.0.0.1:")
    assert start_endpoint(cfg, "m-one", run, WHO, previous=state)["pid"] == state["pid"]
    assert find_servers(WHO) == [state["pid"]]  # how a teardown without the deploy's XCom finds it


def test_input_log_probabilities_match_the_model_and_do_not_depend_on_batching(endpoint):
    """TGI's `decoder_input_details`: per input token, log p(token | tokens before it)."""
    from concurrent.futures import ThreadPoolExecutor

    import jmespath

    _, _, state = endpoint
    sentences = ["The cat sat on the mat.", "Mat the on sat cat the.", "Paris is in France."]
    params = {"max_new_tokens": 1, "details": True, "decoder_input_details": True}
    with ThreadPoolExecutor(3) as pool:  # batched together: left padding must not change the figures
        answers = list(
            pool.map(lambda s: _invoke(state["url"], "m-one", {"inputs": s, "parameters": params}), sentences)
        )
    totals = [jmespath.search("sum([0].details.prefill[1:].logprob)", a) for a in answers]
    reference = subprocess.run(  # one unpadded forward pass per sentence, in the worker environment
        [WORKER_PYTHON, "-c", _REFERENCE_LOGPROBS, json.dumps(sentences)], capture_output=True, text=True, check=True
    )
    for answer, total, (ids, expected) in zip(answers, totals, json.loads(reference.stdout)):
        assert [t["id"] for t in answer[0]["details"]["prefill"]] == ids
        assert answer[0]["details"]["prefill"][0]["logprob"] is None
        assert total == pytest.approx(expected, abs=1e-3)
    assert totals[0] > totals[1]  # the grammatical order is the likelier one


_REFERENCE_LOGPROBS = """
import json, sys, torch
from llmeval.evaluation.local_models import load_causal_lm, resolve_model_dir
model, tokenizer = load_causal_lm(resolve_model_dir("smollm2-135m-instruct"))
out = []
for sentence in json.loads(sys.argv[1]):
    ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    out.append([ids[0].tolist(), logprobs.gather(-1, ids[0, 1:].unsqueeze(-1)).sum().item()])
print(json.dumps(out))
"""
