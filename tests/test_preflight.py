"""`llmeval preflight`: on a ready (moto) account every check is OK; each way an account is not
ready prints its FAIL line with the fix, and nothing is created but the probes it deletes."""

from __future__ import annotations

import json

import boto3
import pytest
import yaml

from conftest import ROOT
from sagemaker_fixtures import BUCKET, IMAGE, REGION, ROLE, sagemaker_config

TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def _client(moto_url: str, service: str):
    return boto3.client(
        service, endpoint_url=moto_url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
    )


@pytest.fixture
def ready(aws_env, tmp_path, monkeypatch):
    """A ready account: the execution role trusted by SageMaker, the image in ECR, the run store in S3."""
    iam, ecr = _client(aws_env, "iam"), _client(aws_env, "ecr")
    iam.create_role(RoleName=ROLE.rsplit("/", 1)[-1], AssumeRolePolicyDocument=json.dumps(TRUST))
    repository = IMAGE.split("/", 1)[1].split(":")[0]
    ecr.create_repository(repositoryName=repository)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {},
        "layers": [],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=IMAGE.rsplit(":", 1)[1])
    monkeypatch.setenv("LLM_EVAL_ARTIFACTS_URL", f"s3://aws_moto@{BUCKET}/store")
    cfg = sagemaker_config("preflight", ["sm-alpha", "sm-beta"])
    path = tmp_path / "preflight.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def _preflight(path) -> tuple[int, list[str]]:
    import contextlib
    import io

    from llmeval.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["preflight", str(path)])
    return status, out.getvalue().splitlines()


def test_a_ready_account_passes_every_check(ready, aws_env):
    status, lines = _preflight(ready[0])
    assert status == 0, lines
    assert [line.split(":")[0] for line in lines if line.startswith(("OK", "FAIL"))] == [
        "OK   credentials",
        "OK   execution role",
        "OK   S3 prefix",
        "OK   run store",
        "OK   evaluation image",
        "OK   JumpStart sm-alpha",
        "OK   JumpStart sm-beta",
    ]
    assert lines[-1] == "7 of 7 checks passed"
    leftovers = _client(aws_env, "s3").list_objects_v2(Bucket=BUCKET, Prefix="llmeval/llmeval-preflight")
    assert leftovers["KeyCount"] == 0  # the probe objects were deleted


@pytest.mark.parametrize(
    "breakage, check, expected, fix",
    [
        ("no role", "execution role", "NoSuchEntity", "create the role"),
        ("untrusted role", "execution role", "is not trusted by sagemaker.amazonaws.com", "trust policy"),
        ("missing image", "evaluation image", "ImageNotFoundException", "push it"),
        ("unwritable prefix", "S3 prefix", "NoSuchBucket", "s3:PutObject"),
        ("unknown model", "JumpStart sm-alpha", "is not in the us-east-1 manifest", "another model"),
        ("deprecated model", "JumpStart sm-alpha", "no longer patched", "another model_version"),
    ],
)
def test_each_way_an_account_is_not_ready_fails_with_its_fix(
    ready, aws_env, monkeypatch, breakage, check, expected, fix
):
    path, cfg = ready
    iam, ecr = _client(aws_env, "iam"), _client(aws_env, "ecr")
    role = ROLE.rsplit("/", 1)[-1]
    if breakage == "no role":
        iam.delete_role(RoleName=role)
    elif breakage == "untrusted role":
        other = {**TRUST, "Statement": [{**TRUST["Statement"][0], "Principal": {"Service": "ec2.amazonaws.com"}}]}
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(other))
    elif breakage == "missing image":
        repository = IMAGE.split("/", 1)[1].split(":")[0]
        ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageTag": IMAGE.rsplit(":", 1)[1]}])
    elif breakage == "unwritable prefix":
        monkeypatch.setenv("AIRFLOW_VAR_LLM_EVAL_S3_PREFIX", "s3://no-such-bucket-here/llmeval")
    else:
        cfg["models"][0]["model_id"] = "no-such-model" if breakage == "unknown model" else cfg["models"][0]["model_id"]
        cfg["models"][0]["model_version"] = "1.0.0" if breakage == "deprecated model" else "*"
        path.write_text(yaml.safe_dump(cfg))
    status, lines = _preflight(path)
    assert status == 1
    (failed,) = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert lines[failed].startswith(f"FAIL {check}: ") and expected in lines[failed], lines
    assert lines[failed + 1].startswith("     fix: ") and fix in lines[failed + 1]
    assert lines[-1] == "6 of 7 checks passed"


def test_an_openai_compatible_models_connection_and_key_secret_are_checked(ready, aws_env, monkeypatch):
    path, cfg = ready
    cfg["models"].append(
        {"name": "sm-vllm", "model_id": "llama", "model_provider": "openai_compatible", "connection_id": "my_vllm"}
    )
    path.write_text(yaml.safe_dump(cfg))
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:llmeval/vllm-AbCdEf"
    connection = {"conn_type": "http", "host": "https://llm.example.com/v1", "extra": {"api_key_secret_arn": arn}}
    lines_of = {}
    for case in ("no connection", "no secret", "ready"):
        if case != "no connection":
            monkeypatch.setenv("AIRFLOW_CONN_MY_VLLM", json.dumps(connection))
        if case == "ready":
            arn = _client(aws_env, "secretsmanager").create_secret(Name="llmeval/vllm", SecretString="k")["ARN"]
            connection["extra"]["api_key_secret_arn"] = arn
            monkeypatch.setenv("AIRFLOW_CONN_MY_VLLM", json.dumps(connection))
        status, lines = _preflight(path)
        lines_of[case] = next(line for line in lines if "connection of sm-vllm" in line)
        assert status == (0 if case == "ready" else 1), lines
    assert "no Airflow connection 'my_vllm'" in lines_of["no connection"]
    assert lines_of["no secret"].startswith("FAIL") and "ResourceNotFoundException" in lines_of["no secret"]
    assert lines_of["ready"] == f"OK   connection of sm-vllm: my_vllm: https://llm.example.com/v1, key in {arn}"


def test_the_docs_name_what_preflight_does_not_check():
    page = (ROOT / "docs" / "getting-started" / "sagemaker.md").read_text()
    assert "llmeval preflight" in page and "Not checked by preflight" in page
