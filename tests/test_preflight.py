"""`llmeval preflight`: on a ready (moto) account every check is OK; each way an account is not
ready prints its FAIL line with the fix, and nothing is created but the probes it deletes."""

from __future__ import annotations

import json
import os

import boto3
import pytest
import yaml
from botocore.stub import Stubber

from conftest import ROOT
from llmeval.config import load_config
from sagemaker_fixtures import BUCKET, IMAGE, REGION, ROLE, claude, sagemaker_config

TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def _client(moto_url: str, service: str):
    return boto3.client(
        service, endpoint_url=moto_url, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t"
    )


class Unmocked:
    """What moto lacks, answered through botocore's Stubber (each request checked against the API
    model and the parameters expected): IAM's policy simulation, Service Quotas and Bedrock's model
    availability. Everything else goes to moto. `denied`: actions the simulation refuses;
    `quota`: each SageMaker quota's value; `bedrock`: a model's availability fields."""

    def __init__(self, monkeypatch, denied: tuple[str, ...] = (), quota: float = 4.0, bedrock: dict | None = None):
        from llmeval import preflight

        def client(service):
            return boto3.client(service, region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t")

        self.simulation, self.quotas, self.bedrock = client("iam"), client("service-quotas"), client("bedrock")
        self.stubs = [Stubber(c) for c in (self.simulation, self.quotas, self.bedrock)]
        self.denied, self.quota, self.availability = denied, quota, bedrock
        original = preflight._client

        def routed(cfg, service):
            if service == "service-quotas":
                return self.quotas
            if service == "bedrock":
                return self.bedrock
            found = original(cfg, service)
            return _Simulating(found, self.simulation) if service == "iam" else found

        monkeypatch.setattr(preflight, "_client", routed)

    def expect(self, path) -> None:
        """Queue the answers to the requests a preflight of this config makes, in its order."""
        from llmeval import preflight, store
        from llmeval.iam import airflow_policy, sagemaker_role_policy
        from llmeval.preflight import _needed_instances

        cfg = load_config(path)
        prefix = os.environ["AIRFLOW_VAR_LLM_EVAL_S3_PREFIX"]
        caller = preflight.principal_arn(preflight._client(cfg, "sts").get_caller_identity()["Arn"])
        role = ROLE
        for principal, policy in (
            (caller, airflow_policy(cfg, prefix, role, store.configured_url(cfg.artifacts_url))),
            (role, sagemaker_role_policy(cfg, prefix)),
        ):
            for statement in policy["Statement"]:
                resources = (
                    statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                )
                request = {"PolicySourceArn": principal, "ActionNames": statement["Action"], "ResourceArns": resources}
                if statement.get("Condition"):
                    ((key, value),) = statement["Condition"]["StringEquals"].items()
                    request["ContextEntries"] = [
                        {"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": "stringList"}
                    ]
                results = [
                    {
                        "EvalActionName": a,
                        "EvalResourceName": "*",
                        "EvalDecision": "implicitDeny" if a in self.denied else "allowed",
                    }
                    for a in statement["Action"]
                ]
                self.stubs[0].add_response("simulate_principal_policy", {"EvaluationResults": results}, request)
        quotas = [
            {"ServiceCode": "sagemaker", "QuotaName": f"{kind} for {usage} usage", "Value": self.quota}
            for usage, kind in _needed_instances(cfg)
        ]
        self.stubs[1].add_response("list_service_quotas", {"Quotas": quotas}, {"ServiceCode": "sagemaker"})
        for model in [m for m in [*cfg.models, *cfg.judged_by] if m.kind == "bedrock"]:
            base = model.model_id.removeprefix("us.")  # an inference profile's foundation model
            available = {
                "modelId": base,
                "agreementAvailability": {"status": "AVAILABLE"},
                "authorizationStatus": "AUTHORIZED",
                "entitlementAvailability": "AVAILABLE",
                "regionAvailability": "AVAILABLE",
                **(self.availability or {}),
            }
            self.stubs[2].add_response("get_foundation_model_availability", available, {"modelId": base})
        for stub in self.stubs:
            stub.activate()

    def all_asked(self) -> None:
        for stub in self.stubs:
            stub.assert_no_pending_responses()


class _Simulating:
    """An IAM client on moto whose policy simulation is the stubbed client's."""

    def __init__(self, moto, simulation):
        self.moto, self.simulation = moto, simulation

    def get_paginator(self, name):
        return (self.simulation if name == "simulate_principal_policy" else self.moto).get_paginator(name)

    def __getattr__(self, name):
        return getattr(self.moto, name)


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
    return path, cfg, Unmocked(monkeypatch)


def _preflight(path) -> tuple[int, list[str]]:
    import contextlib
    import io

    from llmeval.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["preflight", str(path)])
    return status, out.getvalue().splitlines()


CHECKS = [
    "credentials",
    "execution role",
    "S3 prefix",
    "run store",
    "evaluation image",
    "JumpStart sm-alpha",
    "JumpStart sm-beta",
    "permissions of the Airflow identity",
    "permissions of the execution role",
    "quota ml.g4dn.xlarge for endpoint usage",
    "quota ml.m5.xlarge for processing job usage",
]


def test_a_ready_account_passes_every_check(ready, aws_env):
    path, _, unmocked = ready
    unmocked.expect(path)
    status, lines = _preflight(path)
    assert status == 0, "\n".join(lines[-12:])
    assert [line.split(":")[0] for line in lines if line.startswith(("OK", "FAIL"))] == [f"OK   {c}" for c in CHECKS]
    assert lines[-1] == f"{len(CHECKS)} of {len(CHECKS)} checks passed"
    unmocked.all_asked()  # every statement of both policies simulated, the quotas listed once
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
        (
            "missing action",
            "permissions of the Airflow identity",
            "may not: sagemaker:CreateEndpoint on *",
            "llmeval iam-policy CONFIG --principal airflow",
        ),
        ("quota 0", "quota ml.g4dn.xlarge for endpoint usage", "0, the run needs 2 at once", "request an increase"),
    ],
)
def test_each_way_an_account_is_not_ready_fails_with_its_fix(
    ready, aws_env, monkeypatch, breakage, check, expected, fix
):
    path, cfg, unmocked = ready
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
    elif breakage == "missing action":
        unmocked.denied = ("sagemaker:CreateEndpoint",)
    elif breakage == "quota 0":
        unmocked.quota = 0.0
    else:
        cfg["models"][0]["model_id"] = "no-such-model" if breakage == "unknown model" else cfg["models"][0]["model_id"]
        cfg["models"][0]["model_version"] = "1.0.0" if breakage == "deprecated model" else "*"
        path.write_text(yaml.safe_dump(cfg))
    unmocked.expect(path)
    status, lines = _preflight(path)
    assert status == 1
    failed = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert lines[failed[0]].startswith(f"FAIL {check}: ") and expected in lines[failed[0]], lines
    assert lines[failed[0] + 1].startswith("     fix: ") and fix in lines[failed[0] + 1]
    assert lines[-1] == f"{len(CHECKS) - len(failed)} of {len(CHECKS)} checks passed"
    assert len(failed) == (2 if breakage == "quota 0" else 1)  # the endpoints' and the Processing job's quota


def test_an_openai_compatible_models_connection_and_key_secret_are_checked(ready, aws_env, monkeypatch):
    path, cfg, unmocked = ready
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
        unmocked = Unmocked(monkeypatch)
        unmocked.expect(path)
        status, lines = _preflight(path)
        lines_of[case] = next(line for line in lines if "connection of sm-vllm" in line)
        assert status == (0 if case == "ready" else 1), lines
    assert "no Airflow connection 'my_vllm'" in lines_of["no connection"]
    assert lines_of["no secret"].startswith("FAIL") and "ResourceNotFoundException" in lines_of["no secret"]
    assert lines_of["ready"] == f"OK   connection of sm-vllm: my_vllm: https://llm.example.com/v1, key in {arn}"


def test_the_docs_name_what_preflight_checks_and_what_it_does_not():
    page = (ROOT / "docs" / "getting-started" / "sagemaker.md").read_text()
    assert "llmeval preflight" in page and "Not checked:" in page and "sagemaker.preflight: false" in page


def test_the_dags_preflight_task_fails_the_run_before_anything_is_created(aws_env, airflow_db, tmp_path):
    """On by default for SageMaker: an account without the execution role (and, on moto, without
    the IAM simulation and Service Quotas) fails `preflight`; plan and every deploy never run."""
    from conftest import run_dag

    cfg = sagemaker_config("preflight-dag", ["sm-alpha"])
    cfg["sagemaker"].pop("preflight")  # the default
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "preflight-dag.yaml").write_text(yaml.safe_dump(cfg))
    dag, run = run_dag("preflight-dag", configs)
    states = {t.task_id: t.state for t in run.get_task_instances()}
    assert run.state == "failed" and states["preflight"] == "failed" and states["plan"] == "upstream_failed", states
    assert states["report"] == "success" and states["verdict"] == "failed"  # the leaderboard says nothing ran
    from llmeval.history import entries

    assert entries("preflight-dag") == []  # a run that evaluated nothing records no scores
    sm = _client(aws_env, "sagemaker")
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_processing_jobs()["ProcessingJobSummaries"] == []


def test_a_bedrock_model_without_access_and_an_assumed_roles_principal(ready, aws_env, monkeypatch):
    from llmeval.preflight import principal_arn

    path, cfg, _ = ready
    cfg["models"].append({"name": "sm-claude", **claude("us.anthropic.claude-3-5-haiku-20241022-v1:0", 50)})
    path.write_text(yaml.safe_dump(cfg))
    unmocked = Unmocked(monkeypatch, bedrock={"authorizationStatus": "NOT_AUTHORIZED"})
    unmocked.expect(path)
    status, lines = _preflight(path)
    (line,) = [i for i, text in enumerate(lines) if "Bedrock sm-claude" in text]
    assert status == 1 and lines[line] == (
        "FAIL Bedrock sm-claude: anthropic.claude-3-5-haiku-20241022-v1:0: authorization NOT_AUTHORIZED"
    )
    assert "Model access" in lines[line + 1]
    session = "arn:aws:sts::123456789012:assumed-role/airflow-workers/i-0abc"
    assert principal_arn(session) == "arn:aws:iam::123456789012:role/airflow-workers"


def test_the_airflow_policy_grants_what_the_dags_preflight_reads():
    from llmeval.config import EvalConfig
    from llmeval.iam import airflow_policy

    cfg = sagemaker_config("preflight-policy", ["sm-alpha"])
    cfg["models"].append({"name": "sm-claude", **claude("anthropic.claude-3-haiku-20240307-v1:0", 50)})
    checked = airflow_policy(
        EvalConfig.model_validate({**cfg, "sagemaker": {"aws_conn_id": "aws_moto"}}), "s3://b/p", ROLE
    )
    by_sid = {s["Sid"]: s for s in checked["Statement"]}
    assert by_sid["PreflightRole"]["Action"] == ["iam:GetRole"] and by_sid["PreflightRole"]["Resource"] == [ROLE]
    assert set(by_sid["PreflightChecks"]["Action"]) == {
        "iam:SimulatePrincipalPolicy",
        "servicequotas:ListServiceQuotas",
        "ecr:DescribeImages",
        "bedrock:GetFoundationModelAvailability",
    }
    unchecked = airflow_policy(EvalConfig.model_validate(cfg), "s3://b/p", ROLE)  # sagemaker.preflight: false
    assert not [s for s in unchecked["Statement"] if s["Sid"].startswith("Preflight")]
