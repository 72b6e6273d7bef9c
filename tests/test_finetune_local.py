"""The local fine-tune runs for real (a few LoRA steps on tiny data) and the tuned
artifact loads and answers through the local model server."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from conftest import local_config
from llmeval import store
from llmeval.config import EvalConfig
from llmeval.targets.local.jobs import run_finetune
from llmeval.targets.local.servers import start_endpoint, stop_endpoint

pytestmark = pytest.mark.slow


def test_tiny_finetune_then_serve_the_tuned_model(tmp_path):
    models = [
        {
            "name": "tiny-tuned",
            "model_id": "smollm2-135m-instruct",
            "finetuning": {
                "train_data_path": "finetune_qa_train.jsonl",
                "validation_data_path": "finetune_qa_validation.jsonl",
                "parameters": {"epoch": 1, "max_steps": 3, "batch_size": 4, "max_input_length": 64},
            },
        }
    ]
    cfg = EvalConfig.model_validate(local_config("tiny", models=models))
    run = tmp_path / "run"  # the run folder of a local store
    metrics = run_finetune(cfg, "tiny-tuned", run)
    assert metrics["steps"] == 3 and len(metrics["loss_per_step"]) == 3
    assert all(step["loss"] > 0 for step in metrics["loss_per_step"])
    assert metrics["validation_loss_after"] < metrics["validation_loss_before"]  # it learned something
    assert (run / "models" / "tiny-tuned" / store.TUNED / "model.safetensors").exists()  # in the store
    assert len(metrics["weights_sha256"]) == 64

    who = "tiny/run-1/tiny-tuned"
    state = start_endpoint(cfg, "tiny-tuned", run, who)
    try:
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=state["url"],
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        payload = {
            "inputs": [[{"role": "user", "content": "What is the capital of Norway?"}]],
            "parameters": {"max_new_tokens": 8},
        }
        answer = json.loads(
            client.invoke_endpoint(EndpointName="tiny-tuned", Body=json.dumps(payload), ContentType="application/json")[
                "Body"
            ].read()
        )
        assert isinstance(answer[0]["generation"]["content"], str) and answer[0]["details"]["generated_tokens"] > 0
        assert store.TUNED in " ".join(Path(f"/proc/{state['pid']}/cmdline").read_text().split("\0"))
    finally:
        assert stop_endpoint(cfg, "tiny-tuned", who, state, run) == "stopped"
    assert (run / "models" / "tiny-tuned" / store.SERVER_LOG).exists()  # the server's log is kept
    assert not (tmp_path / state["scratch"]).exists()
