"""`llmeval preflight CONFIG`: is this AWS account ready for a SageMaker config's DAG? Each check
uses the config's Airflow connection and prints one line, OK or FAIL with the fix, before a run
creates (and bills) anything: the credentials, the execution role and its trust, the S3 prefix and
the run store writable, the evaluation image in ECR, every JumpStart model resolvable in the region
(not deprecated, not vulnerable unless allowed, its EULA answered), both principals' permissions
(IAM policy simulation of what `llmeval iam-policy` prints for this config), the service quotas of
each instance type for endpoints, training and processing, Bedrock models' access, the connections
of OpenAI-compatible models (and their keys' secrets), the VPC's subnets and security groups.
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


def principal_arn(caller: str) -> str:
    """The IAM principal behind a caller's ARN: an assumed role's session is its role."""
    found = re.match(r"^arn:(?P<partition>[\w-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/", caller)
    return f"arn:{found['partition']}:iam::{found['account']}:role/{found['role']}" if found else caller


def _context(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """A statement's StringEquals condition as the simulation's context (iam:PassedToService)."""
    equals = (statement.get("Condition") or {}).get("StringEquals") or {}
    return [
        {
            "ContextKeyName": key,
            "ContextKeyValues": [value] if isinstance(value, str) else list(value),
            "ContextKeyType": "stringList",
        }
        for key, value in equals.items()
    ]


def _denied(iam: Any, principal: str, policy: dict[str, Any]) -> list[str]:
    """The actions (on resources) of `policy` the principal's policies do not allow."""
    denied = []
    paginator = iam.get_paginator("simulate_principal_policy")
    for statement in policy["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        request = {"PolicySourceArn": principal, "ActionNames": statement["Action"], "ResourceArns": resources}
        if context := _context(statement):
            request["ContextEntries"] = context
        for page in paginator.paginate(**request):
            for result in page["EvaluationResults"]:
                details = result.get("ResourceSpecificResults") or [
                    {
                        "EvalResourceName": result.get("EvalResourceName", "*"),
                        "EvalResourceDecision": result["EvalDecision"],
                    }
                ]
                denied += [
                    f"{result['EvalActionName']} on {d['EvalResourceName']}"
                    for d in details
                    if d["EvalResourceDecision"] != "allowed"
                ]
    return sorted(set(denied))


def permissions(cfg: EvalConfig) -> list[Check]:
    """Both principals against what this config needs: the Airflow identity (the connection's)
    and the execution role, each simulated on `llmeval iam-policy`'s statements."""
    from llmeval.iam import airflow_policy, sagemaker_role_policy

    iam, prefix, role = _client(cfg, "iam"), s3_prefix(cfg), role_arn(cfg)
    airflow = principal_arn(_client(cfg, "sts").get_caller_identity()["Arn"])
    needs = [
        ("Airflow identity", airflow, airflow_policy(cfg, prefix, role, store.configured_url(cfg.artifacts_url))),
        ("execution role", role, sagemaker_role_policy(cfg, prefix)),
    ]
    checks = []
    for name, principal, policy in needs:
        denied = _denied(iam, principal, policy)
        if denied:
            shown = "; ".join(denied[:8]) + (f" and {len(denied) - 8} more" if len(denied) > 8 else "")
            which = "airflow" if name == "Airflow identity" else "sagemaker"
            fix = f"attach the policy of `llmeval iam-policy CONFIG --principal {which}` to {principal}"
            checks.append(Check(f"permissions of the {name}", False, f"{principal} may not: {shown}", fix))
        else:
            checks.append(Check(f"permissions of the {name}", True, f"{principal} may do all this config needs"))
    return checks


def _needed_instances(cfg: EvalConfig) -> dict[tuple[str, str], int]:
    """(usage, instance type) -> instances a run needs at once: its endpoints (bounded by
    endpoint_quotas), one fine-tuning job and one Processing job."""
    needed: dict[tuple[str, str], int] = {}
    for model in [m for m in [*cfg.models, *cfg.judged_by] if m.deploys]:
        key = ("endpoint", model.deployment_config.instance_type)
        needed[key] = needed.get(key, 0) + model.deployment_config.num_instances
    for (usage, kind), count in list(needed.items()):
        if kind in cfg.sagemaker.endpoint_quotas:
            needed[(usage, kind)] = min(count, cfg.sagemaker.endpoint_quotas[kind])
    for section in [m.finetuning for m in cfg.models if m.finetuning]:
        tuning = section.parameters
        key = ("training job", tuning.instance_type)
        needed[key] = max(needed.get(key, 0), tuning.num_instances)
    needed[("processing job", cfg.sagemaker.processing_instance_type)] = 1
    return needed


def quotas(cfg: EvalConfig) -> list[Check]:
    """The account's SageMaker quotas of each instance type the run uses, against what it needs at once."""
    service = _client(cfg, "service-quotas")
    values = {
        q["QuotaName"]: q["Value"]
        for page in service.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker")
        for q in page["Quotas"]
    }
    checks = []
    for (usage, kind), count in sorted(_needed_instances(cfg).items()):
        quota = f"{kind} for {usage} usage"
        value = values.get(quota)
        name = f"quota {quota}"
        if value is None:
            checks.append(Check(name, False, "no such quota in the region", "check the instance type and the region"))
        elif value < count:
            bound = " (set sagemaker.endpoint_quotas to it)" if usage == "endpoint" else ""
            fix = f"request an increase in Service Quotas to {count}{bound}"
            checks.append(Check(name, False, f"{value:g}, the run needs {count} at once", fix))
        else:
            checks.append(Check(name, True, f"{value:g} (the run needs {count})"))
    return checks


def bedrock_access(cfg: EvalConfig) -> list[Check]:
    """Each Bedrock model and judge: its foundation model is offered in the region and the account may call it."""
    from llmeval.iam import INFERENCE_PROFILE

    checks = []
    bedrock = None
    for model in [m for m in [*cfg.models, *cfg.judged_by] if m.kind == ModelKind.BEDROCK]:
        bedrock = bedrock or _client(cfg, "bedrock")
        base = model.model_id.rsplit("/", 1)[-1]
        base = found["model"] if (found := INFERENCE_PROFILE.match(base)) else base
        name = f"Bedrock {model.name}"
        try:
            offered = bedrock.get_foundation_model_availability(modelId=base)
        except Exception as exc:
            checks.append(Check(name, False, f"{base}: {type(exc).__name__}: {exc}", "check the model id and region"))
            continue
        closed = {
            key: value
            for key, value in (
                ("authorization", offered["authorizationStatus"]),
                ("entitlement", offered["entitlementAvailability"]),
                ("region", offered["regionAvailability"]),
                ("agreement", offered["agreementAvailability"]["status"]),
            )
            if value not in ("AUTHORIZED", "AVAILABLE")
        }
        if closed:
            shown = ", ".join(f"{k} {v}" for k, v in closed.items())
            fix = "request access to the model in the Bedrock console (Model access), or use a model you have"
            checks.append(Check(name, False, f"{base}: {shown}", fix))
        else:
            checks.append(Check(name, True, f"{base} is available to this account in {region(cfg)}"))
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
    permissions,
    quotas,
    bedrock_access,
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
