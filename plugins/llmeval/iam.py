"""Least-privilege IAM policies for a SageMaker-target config.

Two principals act: the Airflow side (the identity behind the AWS connection; on MWAA the
environment's execution role: control plane, registry, the S3 prefix, the run store) and
the SageMaker execution role (what the training and Processing containers and the endpoint
need: inputs and results in S3, the response cache, invoking the endpoints, JumpStart
artifacts, images, logs, KMS). Each lists exactly the API actions its side calls, scoped to
the names this config produces where the action supports resource-level permissions.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind
from llmeval.store import split_s3_uri
from llmeval.targets.sagemaker import requests as req

# Actions the DAG's tasks call, by resource. Names are derived from the config; jobs and
# models include a run hash, so they are scoped by the pipeline's name prefixes.
ENDPOINT_ACTIONS = [
    "sagemaker:CreateModel",
    "sagemaker:DescribeModel",
    "sagemaker:DeleteModel",
    "sagemaker:CreateEndpointConfig",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:DeleteEndpointConfig",
    "sagemaker:CreateEndpoint",
    "sagemaker:DescribeEndpoint",
    "sagemaker:DeleteEndpoint",
    "sagemaker:AddTags",
    "sagemaker:ListTags",
]
# Only on failure paths: a task ends with its job still running (a timeout), or a teardown
# has no deploy XCom and searches by name prefix (exercised by the Stubber and moto tests).
ON_FAILURE_ACTIONS = [
    "sagemaker:StopProcessingJob",
    "sagemaker:StopTrainingJob",
    "sagemaker:ListModels",
    "sagemaker:ListEndpointConfigs",
]
PROCESSING_ACTIONS = ["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob"]
TRAINING_ACTIONS = ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"]
REGISTRY_ACTIONS = [
    "sagemaker:CreateModelPackageGroup",
    "sagemaker:DescribeModelPackageGroup",
    "sagemaker:CreateModelPackage",
    "sagemaker:DescribeModelPackage",
]
# list calls take no resource ARN
UNSCOPED_ACTIONS = [
    "sagemaker:ListEndpoints",
    "sagemaker:ListModelPackages",
    "sagemaker:ListModels",
    "sagemaker:ListEndpointConfigs",
]
S3_OBJECT_ACTIONS = ["s3:PutObject", "s3:GetObject"]
S3_BUCKET_ACTIONS = ["s3:ListBucket"]
STORE_ACTIONS = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]  # the run store (s3fs)
JUMPSTART_BUCKETS = ["jumpstart-cache-prod-*", "jumpstart-private-cache-prod-*"]


def _objects(s3_uri: str) -> tuple[str, str]:
    """(bucket ARN, objects ARN pattern) of an s3://bucket/prefix (a conn_id@ is ignored)."""
    bucket, prefix = split_s3_uri(s3_uri.rstrip("/"))
    bucket = bucket.rpartition("@")[2]
    return f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"


def _read_only(uris: list[str]) -> tuple[list[str], list[str]]:
    """(bucket ARNs, object ARN patterns) to read s3:// data a config names: objects, prefixes
    (a training channel) and per-version paths ({catalog_version} matches any version)."""
    buckets, objects = set(), set()
    for uri in uris:
        bucket, key = split_s3_uri(re.sub(r"\{catalog_version\}.*$", "*", uri))
        bucket = bucket.rpartition("@")[2]
        buckets.add(f"arn:aws:s3:::{bucket}")
        objects.add(f"arn:aws:s3:::{bucket}/{key + '*' if key.endswith('/') or not key else key}")
    return sorted(buckets), sorted(objects)


def config_data(cfg: EvalConfig) -> list[str]:
    """The s3:// data the Airflow side reads for a run: the prompt catalog, models' provided outputs."""
    locations = [cfg.dataset.input_data_location, *(m.outputs_location or "" for m in cfg.models)]
    return [location for location in locations if location.startswith("s3://")]


def training_data(cfg: EvalConfig) -> list[str]:
    """The s3:// training and validation data the training jobs read (as S3 prefixes)."""
    tuned = [m.tuning for m in cfg.models if m.finetuning]
    locations = [t.train_data_path for t in tuned] + [t.validation_data_path or "" for t in tuned]
    return [location.rstrip("/") + "/" for location in locations if location.startswith("s3://")]


def _arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:*:*:{kind}/{name}"


def _allow(sid: str, actions: list[str], resources: Any, **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def _deployed_endpoints(cfg: EvalConfig) -> list[str]:
    return sorted({req.endpoint_name(cfg, m) for m in [*cfg.models, *cfg.judged_by] if m.deploys})


def _endpoint_resources(cfg: EvalConfig) -> list[str]:
    """Each deployed endpoint with the endpoint configs and models named after it."""
    resources = []
    for name in _deployed_endpoints(cfg):
        resources += [
            _arn("endpoint", name),
            _arn("endpoint-config", req.aws_name_pattern(f"{name[:40]}-cfg")),
            _arn("model", req.aws_name_pattern(f"{name[:40]}-model")),
        ]
    return sorted(resources)


def _registry_resources(cfg: EvalConfig) -> list[str]:
    groups = {cfg.registry_group} | {
        m.register_config.model_package_group_name for m in cfg.models if m.register_config
    }
    return sorted([_arn("model-package-group", g) for g in groups] + [_arn("model-package", f"{g}/*") for g in groups])


def airflow_policy(
    cfg: EvalConfig, s3_prefix: str, role_arn: str = "*", artifacts_url: str | None = None
) -> dict[str, Any]:
    """The policy for the identity behind the Airflow AWS connection. `artifacts_url`: the run
    store when it is on S3 (default: the config's `artifacts_url`)."""
    jobs = [_arn("processing-job", req.aws_name_pattern(f"eval-{m.name}")) for m in cfg.models]
    if any(s.compares_models for s in cfg.algorithms):
        jobs.append(_arn("processing-job", req.aws_name_pattern("pairwise")))
    bucket_arn, objects = _objects(s3_prefix)
    statements = [
        _allow("Endpoints", ENDPOINT_ACTIONS, _endpoint_resources(cfg)),
        _allow("EvaluationJobs", PROCESSING_ACTIONS, sorted(jobs)),
        _allow("Registry", REGISTRY_ACTIONS, _registry_resources(cfg)),
        _allow("Lists", UNSCOPED_ACTIONS, "*"),
        _allow("RunArtifacts", S3_OBJECT_ACTIONS, [objects]),
        _allow("RunArtifactsList", S3_BUCKET_ACTIONS, [bucket_arn]),
        _allow("JumpStartCatalog", ["s3:GetObject"], ["arn:aws:s3:::jumpstart-cache-prod-*/*"]),
        _allow(
            "PassExecutionRole",
            ["iam:PassRole"],
            [role_arn],
            Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        ),
    ]
    key = cfg.sagemaker.security.output_kms_key_id
    if key:  # SSE-KMS: S3 asks KMS on the caller's behalf when it writes and reads the run's objects
        statements.append(_allow("RunArtifactsKey", ["kms:GenerateDataKey", "kms:Decrypt"], [key]))
    store_url = artifacts_url or cfg.artifacts_url
    if store_url and store_url.startswith("s3://"):
        store_bucket, store_objects = _objects(store_url)
        statements.append(_allow("RunStore", STORE_ACTIONS, [store_objects]))
        statements.append(_allow("RunStoreList", S3_BUCKET_ACTIONS, [store_bucket]))
    read = config_data(cfg)
    if read:  # the catalog and provided outputs, read through the config's connection
        data_buckets, data_objects = _read_only(read)
        statements.append(_allow("ConfigData", ["s3:GetObject"], data_objects))
        statements.append(_allow("ConfigDataList", S3_BUCKET_ACTIONS, data_buckets))
    tuned = [m.name for m in cfg.models if m.finetuning]
    if tuned:
        jobs = sorted(_arn("training-job", req.aws_name_pattern(f"ft-{m}")) for m in tuned)
        statements.insert(2, _allow("FineTuningJobs", TRAINING_ACTIONS, jobs))
    if cfg.sagemaker.preflight:  # the DAG's preflight task checks the account as this identity
        statements += _preflight_statements(cfg, role_arn)
    return {"Version": "2012-10-17", "Statement": statements}


def _preflight_statements(cfg: EvalConfig, role_arn: str) -> list[dict[str, Any]]:
    """What `preflight` reads: the role, the policy simulation of both principals (the Airflow
    identity's own ARN is not known here), the quotas, the image, Bedrock access, the VPC and the
    API keys' secrets."""
    checks = ["iam:SimulatePrincipalPolicy", "servicequotas:ListServiceQuotas", "ecr:DescribeImages"]
    if any(m.kind == ModelKind.BEDROCK for m in [*cfg.models, *cfg.judged_by]):
        checks.append("bedrock:GetFoundationModelAvailability")
    if cfg.sagemaker.security.vpc_config:
        checks += ["ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]
    found = [_allow("PreflightRole", ["iam:GetRole"], [role_arn]), _allow("PreflightChecks", checks, "*")]
    if any(m.kind == ModelKind.OPENAI_COMPATIBLE for m in [*cfg.models, *cfg.judged_by]):
        found.append(_allow("PreflightApiKeys", ["secretsmanager:DescribeSecret"], [API_KEY_SECRETS]))
    return found


PULL_IMAGES = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
]
LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
KEYS = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant", "kms:DescribeKey"]
VPC_INTERFACES = [
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
]


def sagemaker_role_policy(cfg: EvalConfig, s3_prefix: str) -> dict[str, Any]:
    """The policy for the SageMaker execution role: what the Processing job (the evaluation
    entry point), the fine-tuning job and the endpoints do with it."""
    bucket_arn, objects = _objects(s3_prefix)
    jumpstart = [f"arn:aws:s3:::{b}" for b in JUMPSTART_BUCKETS] + [f"arn:aws:s3:::{b}/*" for b in JUMPSTART_BUCKETS]
    statements: list[dict[str, Any]] = [
        # inputs, results, response cache, release objects, training output
        _allow("RunInputsResultsCache", ["s3:GetObject", "s3:PutObject"], [objects]),
        _allow("RunPrefixList", ["s3:ListBucket"], [bucket_arn]),
        _allow("JumpStartArtifacts", ["s3:GetObject", "s3:ListBucket"], jumpstart),  # public and gated buckets
        _allow("PullImages", PULL_IMAGES, "*"),
        _allow("Logs", LOGS, ["arn:aws:logs:*:*:log-group:/aws/sagemaker/*"]),
        _allow("Metrics", ["cloudwatch:PutMetricData"], "*"),
    ]
    endpoints = _deployed_endpoints(cfg)
    if endpoints:  # generation; the job waits for InService (DescribeEndpoint) first
        invoked = sorted(_arn("endpoint", name) for name in endpoints)
        statements.append(
            _allow("InvokeEndpoints", ["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"], invoked)
        )
    bedrock = sorted({m.model_id for m in [*cfg.models, *cfg.judged_by] if m.kind == ModelKind.BEDROCK})
    if bedrock:  # InvokeModel also allows Converse
        models = sorted({arn for model in bedrock for arn in bedrock_resources(model)})
        statements.append(_allow("InvokeBedrock", ["bedrock:InvokeModel"], models))
    if any(m.kind == ModelKind.OPENAI_COMPATIBLE for m in [*cfg.models, *cfg.judged_by]):
        # the API keys of OpenAI-compatible models: name the secrets of their connections here
        statements.append(_allow("ReadApiKeys", ["secretsmanager:GetSecretValue"], [API_KEY_SECRETS]))
    training = training_data(cfg)
    if training:  # the training jobs' channels, given as s3:// prefixes in the config
        data_buckets, data_objects = _read_only(training)
        statements.append(_allow("TrainingData", ["s3:GetObject", "s3:ListBucket"], data_buckets + data_objects))
    security = cfg.sagemaker.security
    keys = sorted({k for k in (security.output_kms_key_id, security.volume_kms_key_id) if k})
    if keys:
        statements.append(_allow("Keys", KEYS, keys))
    if security.vpc_config:
        statements.append(_allow("VpcNetworkInterfaces", VPC_INTERFACES, "*"))
    return {"Version": "2012-10-17", "Statement": statements}


API_KEY_SECRETS = "arn:aws:secretsmanager:*:*:secret:llmeval/*"  # where the docs suggest keeping the keys
INFERENCE_PROFILE = re.compile(r"^(?:(?:us|eu|apac|us-gov|ca|jp|au|global)\.)(?P<model>.+)$")


def bedrock_resources(model_id: str) -> list[str]:
    """What InvokeModel must be allowed on for a Bedrock model id: the foundation model, or a
    cross-region inference profile (by id or ARN) and the foundation model in every region it
    routes to."""
    if model_id.startswith("arn:"):
        profile = model_id.rsplit("/", 1)[-1]
        found = INFERENCE_PROFILE.match(profile)
        return [model_id] + ([f"arn:aws:bedrock:*::foundation-model/{found['model']}"] if found else [])
    found = INFERENCE_PROFILE.match(model_id)
    if found:
        return [
            f"arn:aws:bedrock:*:*:inference-profile/{model_id}",
            f"arn:aws:bedrock:*::foundation-model/{found['model']}",
        ]
    return [f"arn:aws:bedrock:*::foundation-model/{model_id}"]


def actions(policy: dict[str, Any]) -> set[str]:
    return {a for statement in policy["Statement"] for a in statement["Action"]}


def render(
    cfg: EvalConfig, s3_prefix: str, role_arn: str, principal: str = "both", artifacts_url: str | None = None
) -> str:
    """`airflow`, `sagemaker`, or both (a JSON object with the two policies)."""
    policies = {
        "airflow": airflow_policy(cfg, s3_prefix, role_arn, artifacts_url),
        "sagemaker": sagemaker_role_policy(cfg, s3_prefix),
    }
    return json.dumps(policies if principal == "both" else policies[principal], indent=2)
