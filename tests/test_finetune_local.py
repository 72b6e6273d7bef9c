"""The local fine-tune runs for real (a few LoRA steps on tiny data) and the tuned
artifact loads and answers through the local model server."""

from __future__ import annotations

import json

import boto3
import pytest
from conftest import local_config

from llmeval.config import EvalConfig
from llmeval.targets.local import TRAINING_METRICS, TUNED_DIR, run_finetune, start_endpoint, stop_endpoint

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
    metrics_path = run_finetune(cfg, "tiny-tuned", tmp_path)
    metrics = json.loads(metrics_path.read_text())
    assert metrics["steps"] == 3 and len(metrics["loss_per_step"]) == 3
    assert all(step["loss"] > 0 for step in metrics["loss_per_step"])
    assert metrics["validation_loss_after"] < metrics["validation_loss_before"]  # it learned something
    assert (tmp_path / "models" / "tiny-tuned" / TUNED_DIR / "model.safetensors").exists()
    assert metrics_path.name == TRAINING_METRICS and len(metrics["weights_sha256"]) == 64

    state = start_endpoint(cfg, "tiny-tuned", tmp_path)
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
        assert TUNED_DIR in " ".join(open(f"/proc/{state['pid']}/cmdline").read().split("\0"))
    finally:
        assert stop_endpoint(cfg, "tiny-tuned", tmp_path) == "stopped"
