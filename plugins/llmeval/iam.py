"""Least-privilege IAM policies for a SageMaker-target config.

Two principals act: the Airflow worker (control plane: create/describe/delete the
pipeline's resources, the registry, its S3 prefix) and the SageMaker execution role
(what the training and Processing containers and the endpoint need). The Airflow
policy lists exactly the API actions the DAG calls, scoped to the names this config
produces where the action supports resource-level permissions.
"""

from __future__ import annotations

import json
from typing import Any

from llmeval.config import EvalConfig
from llmeval.targets import sagemaker_requests as req

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
# Only when a task ends with its job still running (a timeout): exercised by the Stubber tests.
ON_FAILURE_ACTIONS = ["sagemaker:StopProcessingJob", "sagemaker:StopTrainingJob"]
PROCESSING_ACTIONS = ["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob"]
TRAINING_ACTIONS = ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"]
REGISTRY_ACTIONS = [
    "sagemaker:CreateModelPackageGroup",
    "sagemaker:DescribeModelPackageGroup",
    "sagemaker:CreateModelPackage",
    "sagemaker:DescribeModelPackage",
]
UNSCOPED_ACTIONS = ["sagemaker:ListEndpoints", "sagemaker:ListModelPackages"]  # list calls take no resource ARN
S3_OBJECT_ACTIONS = ["s3:PutObject", "s3:GetObject"]
S3_BUCKET_ACTIONS = ["s3:ListBucket"]


def _arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:*:*:{kind}/{name}"


def airflow_policy(cfg: EvalConfig, s3_prefix: str, role_arn: str = "*") -> dict[str, Any]:
    """The policy for the identity behind the Airflow AWS connection."""
    endpoints = sorted({req.endpoint_name(cfg, m) for m in cfg.models if m.kind != "bedrock"})
    resources = []
    for name in endpoints:
        resources += [
            _arn("endpoint", name),
            _arn("endpoint-config", req.aws_name_pattern(f"{name[:40]}-cfg")),
            _arn("model", req.aws_name_pattern(f"{name[:40]}-model")),
        ]
    jobs = [_arn("processing-job", req.aws_name_pattern(f"eval-{m.name}")) for m in cfg.models]
    groups = {cfg.registry_group} | {
        m.register_config.model_package_group_name for m in cfg.models if m.register_config
    }
    bucket, _, prefix = s3_prefix.removeprefix("s3://").rstrip("/").partition("/")
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
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": ["arn:aws:s3:::jumpstart-cache-prod-*", "arn:aws:s3:::jumpstart-cache-prod-*/*"],
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


def actions(policy: dict[str, Any]) -> set[str]:
    return {a for statement in policy["Statement"] for a in statement["Action"]}


def render(cfg: EvalConfig, s3_prefix: str, role_arn: str) -> str:
    return json.dumps(airflow_policy(cfg, s3_prefix, role_arn), indent=2)
