"""`llmeval preflight CONFIG`: is this AWS account ready for a SageMaker config's DAG? Each check
uses the config's Airflow connection and prints one line, OK or FAIL with the fix, before a run
creates (and bills) anything: the credentials, the execution role and its trust, the S3 prefix and
the run store writable, the evaluation image in ECR, every JumpStart model resolvable in the region
(not deprecated, not vulnerable unless allowed, its EULA answered), the connections of
OpenAI-compatible models (and their keys' secrets), the VPC's subnets and security groups.
Checks not made here (IAM policy simulation, service quotas, Bedrock model access) are named in
the docs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind
from llmeval.targets.connections import ConnectionProblem, served_at
from llmeval.targets.sagemaker import jumpstart
from llmeval.targets.sagemaker import requests as req
from llmeval.targets.sagemaker.settings import processing_image, region, role_arn, s3_prefix
from llmeval.targets.sagemaker.staging import resolve_jumpstart

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
ECR_IMAGE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.[\w-]+\.amazonaws\.com/(?P<repo>[^:@]+)(?::(?P<tag>[^@]+))?$")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}" + (
            f"\n     fix: {self.fix}" if self.fix else ""
        )


def _client(cfg: EvalConfig, service: str) -> Any:
    """A client of `service` through the config's Airflow connection."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=cfg.sagemaker.aws_conn_id, client_type=service, region_name=region(cfg)).conn


def credentials(cfg: EvalConfig) -> Check:
    identity = _client(cfg, "sts").get_caller_identity()
    return Check("credentials", True, f"account {identity['Account']} as {identity['Arn']}")


def execution_role(cfg: EvalConfig) -> Check:
    arn = role_arn(cfg)
    name = arn.rsplit("/", 1)[-1]
    try:
        role = _client(cfg, "iam").get_role(RoleName=name)["Role"]
    except Exception as exc:
        fix = f"create the role {name} (trusted by {SAGEMAKER_PRINCIPAL}) or point the Variable at an existing one"
        return Check("execution role", False, f"{arn}: {type(exc).__name__}: {exc}", fix)
    services = [
        s.get("Principal", {}).get("Service")
        for s in role.get("AssumeRolePolicyDocument", {}).get("Statement", [])
        if s.get("Effect") == "Allow"
    ]
    trusted = any(SAGEMAKER_PRINCIPAL in (s if isinstance(s, list) else [s]) for s in services)
    if not trusted:
        fix = f"add {SAGEMAKER_PRINCIPAL} to the role's trust policy (sts:AssumeRole)"
        return Check("execution role", False, f"{arn} is not trusted by {SAGEMAKER_PRINCIPAL}", fix)
    return Check("execution role", True, f"{arn}, trusted by {SAGEMAKER_PRINCIPAL}")


def prefix_writable(cfg: EvalConfig) -> Check:
    prefix = s3_prefix(cfg)
    bucket, key = store.split_s3_uri(prefix)
    probe = (
        f"{key.rstrip('/')}/llmeval-preflight/{uuid.uuid4().hex}" if key else f"llmeval-preflight/{uuid.uuid4().hex}"
    )
    s3 = _client(cfg, "s3")
    try:
        s3.put_object(Bucket=bucket, Key=probe, Body=b"preflight", **req.s3_encryption(cfg))
        s3.delete_object(Bucket=bucket, Key=probe)
    except Exception as exc:
        fix = "give the Airflow identity s3:PutObject and s3:GetObject there (llmeval iam-policy --principal airflow)"
        return Check("S3 prefix", False, f"{prefix}: {type(exc).__name__}: {exc}", fix)
    return Check("S3 prefix", True, f"{prefix} is writable")


def run_store_writable(cfg: EvalConfig) -> Check:
    where = store.configured_url(cfg.artifacts_url)
    probe = store.root(cfg.artifacts_url) / "llmeval-preflight" / uuid.uuid4().hex
    try:
        store.write_text(probe, "preflight")
        probe.unlink()
    except Exception as exc:
        fix = "check LLM_EVAL_ARTIFACTS_URL (or artifacts_url), the bucket, and s3:PutObject/GetObject/ListBucket there"
        return Check("run store", False, f"{where}: {type(exc).__name__}: {exc}", fix)
    return Check("run store", True, f"{where} is writable")


def evaluation_image(cfg: EvalConfig) -> Check:
    image = processing_image(cfg)
    found = ECR_IMAGE.match(image)
    if not found:
        return Check("evaluation image", True, f"{image} (not in ECR: not checked)")
    tag = found["tag"] or "latest"
    try:
        _client(cfg, "ecr").describe_images(
            registryId=found["account"], repositoryName=found["repo"], imageIds=[{"imageTag": tag}]
        )
    except Exception as exc:
        fix = "build docker/processing.Dockerfile and push it (commands in its header)"
        return Check("evaluation image", False, f"{image}: {type(exc).__name__}: {exc}", fix)
    return Check("evaluation image", True, f"{image} is in ECR")


def jumpstart_models(cfg: EvalConfig) -> list[Check]:
    """Each deployed model and judge: resolvable in the region, supported, its EULA answered."""
    checks = []
    for model in [m for m in [*cfg.models, *cfg.judged_by] if m.deploys]:
        name = f"JumpStart {model.name}"
        try:
            resolved = resolve_jumpstart(cfg, model, model.deployment_config.instance_type, region(cfg))
            req.check_eula(model, resolved)
        except (jumpstart.JumpStartError, PermissionError) as exc:
            fix = "see the message: another model_version, another model, or the config's answer"
            checks.append(Check(name, False, str(exc), fix))
            continue
        checks.append(
            Check(name, True, f"{model.model_id} {resolved['version']} on {model.deployment_config.instance_type}")
        )
    return checks


def served_models(cfg: EvalConfig) -> list[Check]:
    """Each OpenAI-compatible model and judge: its connection exists, keeps its key out of the job,
    and names a secret the account has."""
    checks = []
    for model in [m for m in [*cfg.models, *cfg.judged_by] if m.kind == ModelKind.OPENAI_COMPATIBLE]:
        name = f"connection of {model.name}"
        try:
            at = served_at(cfg, model.name, model.connection_id or "", for_processing=True)
            if at.api_key_secret_arn:
                _client(cfg, "secretsmanager").describe_secret(SecretId=at.api_key_secret_arn)
        except ConnectionProblem as exc:
            checks.append(Check(name, False, str(exc), "create or fix the Airflow connection"))
            continue
        except Exception as exc:
            fix = "create the secret, or name an existing one in the connection's extra api_key_secret_arn"
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}", fix))
            continue
        key = f"key in {at.api_key_secret_arn}" if at.api_key_secret_arn else "no API key"
        checks.append(Check(name, True, f"{model.connection_id}: {at.base_url}, {key}"))
    return checks


def network(cfg: EvalConfig) -> list[Check]:
    vpc = cfg.sagemaker.security.vpc_config
    if not vpc:
        return []
    ec2 = _client(cfg, "ec2")
    try:
        ec2.describe_subnets(SubnetIds=vpc["Subnets"])
        ec2.describe_security_groups(GroupIds=vpc["SecurityGroupIds"])
    except Exception as exc:
        return [Check("VPC", False, f"{type(exc).__name__}: {exc}", "name subnets and security groups that exist")]
    return [Check("VPC", True, f"subnets {', '.join(vpc['Subnets'])} and their security groups exist")]


STEPS: list[Callable[[EvalConfig], Check | list[Check]]] = [
    credentials,
    execution_role,
    prefix_writable,
    run_store_writable,
    evaluation_image,
    jumpstart_models,
    served_models,
    network,
]


def run(cfg: EvalConfig) -> list[Check]:
    """Every check; one that cannot even start (a missing Variable, no credentials) is a FAIL too."""
    checks: list[Check] = []
    for step in STEPS:
        try:
            found = step(cfg)
        except Exception as exc:
            found = Check(step.__name__.replace("_", " "), False, f"{type(exc).__name__}: {exc}", "see the message")
        checks += found if isinstance(found, list) else [found]
    return checks
