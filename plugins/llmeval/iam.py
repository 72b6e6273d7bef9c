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
from typing import Any

from llmeval.config import EvalConfig
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


def _arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:*:*:{kind}/{name}"


def airflow_policy(
    cfg: EvalConfig, s3_prefix: str, role_arn: str = "*", artifacts_url: str | None = None
) -> dict[str, Any]:
    """The policy for the identity behind the Airflow AWS connection. `artifacts_url`: the run
    store when it is on S3 (default: the config's `artifacts_url`)."""
    endpoints = sorted({req.endpoint_name(cfg, m) for m in [*cfg.models, *cfg.judged_by] if m.deploys})
    resources = []
    for name in endpoints:
        resources += [
            _arn("endpoint", name),
            _arn("endpoint-config", req.aws_name_pattern(f"{name[:40]}-cfg")),
            _arn("model", req.aws_name_pattern(f"{name[:40]}-model")),
        ]
    jobs = [_arn("processing-job", req.aws_name_pattern(f"eval-{m.name}")) for m in cfg.models]
    if any(s.compares_models for s in cfg.algorithms):
        jobs.append(_arn("processing-job", req.aws_name_pattern("pairwise")))
    groups = {cfg.registry_group} | {
        m.register_config.model_package_group_name for m in cfg.models if m.register_config
    }
    bucket, prefix = split_s3_uri(s3_prefix.rstrip("/"))
    statements = [
        {"Sid": "Endpoints", "Effect": "Allow", "Action": ENDPOINT_ACTIONS, "Resource": sorted(resources)},
        {"Sid": "EvaluationJobs", "Effect": "Allow", "Action": PROCESSING_ACTIONS, "Resource": sorted(jobs)},
        {
            "Sid": "Registry",
            "Effect": "Allow",
            "Action": REGISTRY_ACTIONS,
            "Resource": sorted(
                [_arn("model-package-group", g) for g in groups] + [_arn("model-package", f"{g}/*") for g in groups]
            ),
        },
        {"Sid": "Lists", "Effect": "Allow", "Action": UNSCOPED_ACTIONS, "Resource": "*"},
        {
            "Sid": "RunArtifacts",
            "Effect": "Allow",
            "Action": S3_OBJECT_ACTIONS,
            "Resource": [f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"],
        },
        {
            "Sid": "RunArtifactsList",
            "Effect": "Allow",
            "Action": S3_BUCKET_ACTIONS,
            "Resource": [f"arn:aws:s3:::{bucket}"],
        },
        {
            "Sid": "JumpStartCatalog",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": ["arn:aws:s3:::jumpstart-cache-prod-*/*"],
        },
        {
            "Sid": "PassExecutionRole",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": [role_arn],
            "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        },
    ]
    key = cfg.sagemaker.security.output_kms_key_id
    if key:  # SSE-KMS: S3 asks KMS on the caller's behalf when it writes and reads the run's objects
        statements.append(
            {
                "Sid": "RunArtifactsKey",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": [key],
            }
        )
    store_url = artifacts_url or cfg.artifacts_url
    if store_url and store_url.startswith("s3://"):
        store_bucket, store_objects = _objects(store_url)
        statements += [
            {"Sid": "RunStore", "Effect": "Allow", "Action": STORE_ACTIONS, "Resource": [store_objects]},
            {"Sid": "RunStoreList", "Effect": "Allow", "Action": S3_BUCKET_ACTIONS, "Resource": [store_bucket]},
        ]
    tuned = [m.name for m in cfg.models if m.finetuning]
    if tuned:
        statements.insert(
            2,
            {
                "Sid": "FineTuningJobs",
                "Effect": "Allow",
                "Action": TRAINING_ACTIONS,
                "Resource": sorted(_arn("training-job", req.aws_name_pattern(f"ft-{m}")) for m in tuned),
            },
        )
    return {"Version": "2012-10-17", "Statement": statements}


def sagemaker_role_policy(cfg: EvalConfig, s3_prefix: str) -> dict[str, Any]:
    """The policy for the SageMaker execution role: what the Processing job (the evaluation
    entry point), the fine-tuning job and the endpoints do with it."""
    bucket_arn, objects = _objects(s3_prefix)
    endpoints = sorted({req.endpoint_name(cfg, m) for m in [*cfg.models, *cfg.judged_by] if m.deploys})
    statements: list[dict[str, Any]] = [
        {
            "Sid": "RunInputsResultsCache",  # inputs, results, response cache, release objects, training output
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": [objects],
        },
        {"Sid": "RunPrefixList", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket_arn]},
        {
            "Sid": "JumpStartArtifacts",  # weights and scripts (public and gated buckets)
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{b}" for b in JUMPSTART_BUCKETS]
            + [f"arn:aws:s3:::{b}/*" for b in JUMPSTART_BUCKETS],
        },
        {
            "Sid": "PullImages",
            "Effect": "Allow",
            "Action": [
                "ecr:GetAuthorizationToken",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
                "ecr:BatchCheckLayerAvailability",
            ],
            "Resource": "*",
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": ["arn:aws:logs:*:*:log-group:/aws/sagemaker/*"],
        },
        {"Sid": "Metrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*"},
    ]
    if endpoints:
        statements.append(
            {
                "Sid": "InvokeEndpoints",  # generation; the job waits for InService (DescribeEndpoint) first
                "Effect": "Allow",
                "Action": ["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"],
                "Resource": sorted(_arn("endpoint", name) for name in endpoints),
            }
        )
    bedrock = sorted({m.model_id for m in [*cfg.models, *cfg.judged_by] if m.kind == "bedrock"})
    if bedrock:
        statements.append(
            {
                "Sid": "InvokeBedrock",
                "Effect": "Allow",
                "Action": ["bedrock:InvokeModel"],
                "Resource": [f"arn:aws:bedrock:*::foundation-model/{model}" for model in bedrock],
            }
        )
    security = cfg.sagemaker.security
    keys = sorted({k for k in (security.output_kms_key_id, security.volume_kms_key_id) if k})
    if keys:
        statements.append(
            {
                "Sid": "Keys",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant", "kms:DescribeKey"],
                "Resource": keys,
            }
        )
    if security.vpc_config:
        statements.append(
            {
                "Sid": "VpcNetworkInterfaces",
                "Effect": "Allow",
                "Action": [
                    "ec2:CreateNetworkInterface",
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                "Resource": "*",
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


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
