"""SageMaker Model Registry: a model package group per config, a version per run, with its
metrics in S3 and its model card."""

from __future__ import annotations

import json
import re
from typing import Any

from llmeval.registry.base import CARD_STATUS, ModelVersion, Registry
from llmeval.store import split_s3_uri


def _metadata_value(value: Any) -> str:
    """CustomerMetadataProperties values: at most 256 of [letters digits space _.:/=+-@]."""
    return re.sub(r"[^\w\s.:/=+\-@]", "_", str(value))[:256]


class SageMakerModelRegistry(Registry):
    """SageMaker Model Registry: a model package group per config, a version per run.

    Each version carries ModelMetrics (a model-quality JSON written to S3), customer
    metadata (scores, dataset, run id) and the approval status from selection.
    `container_of(model)` gives the InferenceSpecification container of a model.
    """

    RUN_KEY = "llmeval:run_id"

    def __init__(
        self, client: Any, s3_client: Any, s3_prefix: str, container_of, s3_encryption: dict[str, str] | None = None
    ):
        self.client = client
        self.s3 = s3_client
        self.s3_encryption = s3_encryption or {}  # SSE-KMS arguments for the metrics object
        self.s3_prefix = s3_prefix.rstrip("/")
        self.container_of = container_of

    @staticmethod
    def model_card(card: dict[str, Any], approval_status: str) -> dict[str, str]:
        """CreateModelPackage's ModelCard: the content as JSON, its status from the approval."""
        return {"ModelCardContent": json.dumps(card), "ModelCardStatus": CARD_STATUS.get(approval_status, "Draft")}

    def _ensure_group(self, group: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.describe_model_package_group(ModelPackageGroupName=group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
                raise
            self.client.create_model_package_group(
                ModelPackageGroupName=group, ModelPackageGroupDescription="Models selected by llmeval pipelines"
            )

    def _describe_all(self, group: str) -> list[dict[str, Any]]:
        from botocore.exceptions import ClientError

        described = []
        try:
            pages = self.client.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group)
            arns = [p["ModelPackageArn"] for page in pages for p in page["ModelPackageSummaryList"]]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return []
            raise
        for arn in arns:
            described.append(self.client.describe_model_package(ModelPackageName=arn))
        return described

    @staticmethod
    def _version(group: str, desc: dict[str, Any]) -> ModelVersion:
        meta = desc.get("CustomerMetadataProperties", {})
        return ModelVersion(
            group=group,
            version=int(desc.get("ModelPackageVersion", 0)),
            model=meta.get("llmeval:model", ""),
            run_id=meta.get(SageMakerModelRegistry.RUN_KEY, ""),
            approval_status=desc.get("ModelApprovalStatus", ""),
            metadata=meta,
            location=desc["ModelPackageArn"],
        )

    def versions(self, group: str) -> list[ModelVersion]:
        return sorted((self._version(group, d) for d in self._describe_all(group)), key=lambda v: v.version)

    def register(
        self,
        group: str,
        model: str,
        run_id: str,
        approval_status: str,
        metrics: dict[str, Any],
        metadata: dict[str, Any],
        card: dict[str, Any] | None = None,
    ) -> ModelVersion:
        self._ensure_group(group)
        for existing in self.versions(group):
            if existing.run_id == _metadata_value(run_id):
                return existing
        bucket, prefix = split_s3_uri(self.s3_prefix)
        key = "/".join(
            p for p in (prefix, "registry", group, _metadata_value(run_id).replace(":", "_"), "model_quality.json") if p
        )
        self.s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps({"model": model, "metrics": metrics}).encode(),
            ContentType="application/json",
            **self.s3_encryption,
        )
        properties = {"llmeval:model": model, self.RUN_KEY: run_id}
        properties.update({k: v for k, v in metadata.items() if not isinstance(v, (dict, list))})
        properties.update(
            {
                k: v["value"] if isinstance(v, dict) else v
                for k, v in metrics.items()
                if not isinstance(v, dict) or "value" in v
            }
        )
        container = self.container_of(model)  # None: a Bedrock model, registered by its model id
        if container and "Image" not in container:  # a JumpStart model package: registered by reference too
            container = None
        inference = (
            {
                "InferenceSpecification": {
                    "Containers": [container],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                }
            }
            if container
            else {}
        )
        response = self.client.create_model_package(
            ModelPackageGroupName=group,
            ModelPackageDescription=f"{model} selected by run {run_id}"[:1024],
            **inference,
            ModelMetrics={
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": f"s3://{bucket}/{key}"}}
            },
            CustomerMetadataProperties={k[:128]: _metadata_value(v) for k, v in list(properties.items())[:50]},
            ModelApprovalStatus=approval_status,
            **({"ModelCard": self.model_card(card, approval_status)} if card is not None else {}),
        )
        desc = self.client.describe_model_package(ModelPackageName=response["ModelPackageArn"])
        return self._version(group, desc)
