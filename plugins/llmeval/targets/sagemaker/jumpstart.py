"""JumpStart model resolution on the Airflow side, from the JumpStart spec files.

A JumpStart model is a spec document in the regional content bucket
(`jumpstart-cache-prod-<region>`): `models_manifest.json` maps (model id, version) to a
spec key. This module reads them with boto3 (or from local copies named by
`AWS_JUMPSTART_MANIFEST_LOCAL_ROOT_DIR_OVERRIDE` / `AWS_JUMPSTART_SPECS_LOCAL_ROOT_DIR_OVERRIDE`,
as the SageMaker SDK does) and resolves what the SDK's `image_uris`, `model_uris`,
`script_uris`, `environment_variables` and `hyperparameters` give for a (model, version,
region, instance type), with the same rules: instance-type variants (the exact type first,
then its family, e.g. `g5`), regional aliases (`$gpu_ecr_uri_1`), prepacked artifacts,
the gated content bucket. It needs no SageMaker SDK and runs at task run time only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("llmeval.jumpstart")

MANIFEST_KEY = "models_manifest.json"
MANIFEST_DIR_ENV = "AWS_JUMPSTART_MANIFEST_LOCAL_ROOT_DIR_OVERRIDE"
SPECS_DIR_ENV = "AWS_JUMPSTART_SPECS_LOCAL_ROOT_DIR_OVERRIDE"
CONTENT_BUCKET_ENV = "AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE"
GATED_BUCKET_ENV = "AWS_JUMPSTART_GATED_CONTENT_BUCKET_OVERRIDE"
MODEL_BUCKET_ENV = "AWS_JUMPSTART_MODEL_BUCKET_OVERRIDE"
SCRIPT_BUCKET_ENV = "AWS_JUMPSTART_SCRIPT_BUCKET_OVERRIDE"


class JumpStartError(ValueError):
    """A JumpStart model, version or instance type that cannot be resolved."""


class JumpStartRefused(JumpStartError):
    """A model the SageMaker SDK refuses: a deprecated version, or vulnerable dependencies."""


GATED_MODEL_ENV = "SageMakerGatedModelS3Uri"  # where a gated model's training weights are


@dataclass
class Resolved:
    """What the SDK's JumpStartModel.deploy (or JumpStartEstimator.fit) uses for one model on
    one instance type in one region."""

    model_id: str
    version: str
    image_uri: str | None
    model_data: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    gated: bool = False  # a EULA must be accepted (hosting_eula_key or the gated bucket)
    eula_key: str | None = None
    model_package_arn: str | None = None  # deploy from this model package instead of image + data
    network_isolation: bool = False
    deploy_settings: dict[str, int] = field(default_factory=dict)  # ProductionVariant timeouts and volume
    # training only
    model_uri: str | None = None  # None: the weights come through GATED_MODEL_ENV instead
    script_uri: str | None = None
    script_prepacked: bool = False  # a prepacked script comes through the `code` channel, else by its S3 URI
    hyperparameters: dict[str, str] = field(default_factory=dict)
    metric_definitions: list[dict[str, str]] = field(default_factory=list)
    estimator_kwargs: dict[str, Any] = field(default_factory=dict)  # the spec's, as JumpStartEstimator takes them
    training_volume_size: int | None = None  # GB, on instance types that take an EBS volume
    warnings: list[str] = field(default_factory=list)  # what allow_vulnerable let through

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, [], False)}


def content_bucket(region: str) -> str:
    return os.environ.get(CONTENT_BUCKET_ENV) or f"jumpstart-cache-prod-{region}"


def gated_bucket(region: str) -> str:
    return os.environ.get(GATED_BUCKET_ENV) or f"jumpstart-private-cache-prod-{region}"


class SpecSource:
    """Reads the manifest and spec documents: local override folders, else the content bucket."""

    def __init__(self, region: str, s3_client: Any = None):
        self.region = region
        self._s3 = s3_client

    def _read(self, key: str, local_root: str | None) -> Any:
        if local_root:
            path = Path(local_root) / key
            if not path.exists():
                raise JumpStartError(f"no JumpStart document {key} under {local_root}")
            return json.loads(path.read_text())
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3", region_name=self.region)
        bucket = content_bucket(self.region)
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise JumpStartError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        return json.loads(body)

    def manifest(self) -> list[dict[str, Any]]:
        return self._read(MANIFEST_KEY, os.environ.get(MANIFEST_DIR_ENV))

    def spec(self, model_id: str, version: str) -> dict[str, Any]:
        headers = [h for h in self.manifest() if h["model_id"] == model_id]
        if not headers:
            raise JumpStartError(f"JumpStart model {model_id!r} is not in the {self.region} manifest")
        chosen = _pick_version(version, [h["version"] for h in headers])
        if chosen is None:
            available = ", ".join(sorted({h["version"] for h in headers}))
            raise JumpStartError(f"JumpStart model {model_id!r} has no version {version!r} (available: {available})")
        header = next(h for h in headers if h["version"] == chosen)
        return self._read(header["spec_key"], os.environ.get(SPECS_DIR_ENV))


def _pick_version(wanted: str, available: list[str]) -> str | None:
    """The SDK's rule: '*' is the latest, '1.*' the latest 1.x, else an exact (PEP 440) match."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    if wanted == "*":
        candidates = available
    elif wanted.endswith("*"):
        candidates = [v for v in available if v.startswith(wanted[:-1])]
    else:
        try:
            candidates = list(SpecifierSet(f"=={wanted}").filter(available))
        except InvalidSpecifier:
            raise JumpStartError(f"bad JumpStart model version {wanted!r}") from None
    return str(max(candidates, key=Version)) if candidates else None


def volume_size_supported(instance_type: str) -> bool:
    """The SDK's rule: instance types with local NVMe storage (a "d" in the family, g5, g6, p5,
    trn1) take no EBS volume size."""
    family = instance_family(instance_type)
    return bool(family) and "d" not in family and not family.startswith(("g5", "g6", "p5", "trn1"))


def instance_family(instance_type: str) -> str:
    """`ml.g5.2xlarge` -> `g5` (the variant key the SDK falls back to); '' if not an ML type."""
    match = re.match(r"^ml[._]([a-z\d-]+)\.?\w*$", instance_type)
    return match[1] if match else ""


class Variants:
    """A spec's `hosting_instance_type_variants` or `training_instance_type_variants`."""

    def __init__(self, data: dict[str, Any] | None):
        data = data or {}
        self.variants: dict[str, Any] = data.get("variants") or {}
        self.aliases: dict[str, dict[str, str]] = data.get("regional_aliases") or {}

    def _for(self, instance_type: str) -> list[dict[str, Any]]:
        """The exact type's variant, then its family's."""
        keys = [instance_type, instance_family(instance_type)]
        return [self.variants.get(k) or {} for k in keys if k]

    def property(self, instance_type: str, name: str) -> Any:
        return next(
            (v["properties"][name] for v in self._for(instance_type) if (v.get("properties") or {}).get(name)), None
        )

    def merged(self, instance_type: str, name: str) -> dict[str, Any]:
        """A dict property with the family's values under the exact type's."""
        out: dict[str, Any] = {}
        for variant in reversed(self._for(instance_type)):
            out.update((variant.get("properties") or {}).get(name) or {})
        return out

    def named_list(self, instance_type: str, name: str, key: str = "name") -> list[dict[str, Any]]:
        """A list of {name, ...} with the exact type's entries winning over the family's."""
        seen: dict[str, dict[str, Any]] = {}
        for variant in self._for(instance_type):
            for item in (variant.get("properties") or {}).get(name) or []:
                seen.setdefault(item[key], item)
        return list(seen.values())

    def regional(self, instance_type: str, region: str, name: str) -> str | None:
        """A `regional_properties` value, its `$alias` looked up in the region's aliases."""
        alias = next(
            (
                v["regional_properties"][name]
                for v in self._for(instance_type)
                if (v.get("regional_properties") or {}).get(name)
            ),
            None,
        )
        if not alias or not alias.startswith("$") or region not in self.aliases:
            return None
        return self.aliases[region].get(alias[1:])


def _uri(bucket: str, key: str) -> str:
    return key if key.startswith("s3://") else f"s3://{bucket}/{key}"


def _image(spec: dict[str, Any], variants: Variants, region: str, instance_type: str, scope: str) -> str:
    image = variants.regional(instance_type, region, "image_uri")
    if not image:
        supported = spec.get(f"supported_{scope}_instance_types") or []
        raise JumpStartError(
            f"JumpStart model {spec['model_id']} {spec['version']} has no {scope} image for {instance_type} "
            f"in {region}; supported instance types: {', '.join(supported)}"
        )
    return image


def _model_bucket(spec: dict[str, Any], region: str) -> str:
    return os.environ.get(MODEL_BUCKET_ENV) or (
        gated_bucket(region) if spec.get("gated_bucket") else content_bucket(region)
    )


def _gating(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "gated": bool(spec.get("gated_bucket") or spec.get("hosting_eula_key")),
        "eula_key": spec.get("hosting_eula_key"),
    }


DEPLOY_KWARGS = {  # the spec's deploy_kwargs -> ProductionVariant fields (as the SDK maps them)
    "model_data_download_timeout": "ModelDataDownloadTimeoutInSeconds",
    "container_startup_health_check_timeout": "ContainerStartupHealthCheckTimeoutInSeconds",
}


def resolve_inference(spec: dict[str, Any], region: str, instance_type: str) -> Resolved:
    """Image, model artifacts (or model package), environment and deploy settings of a deploy
    on `instance_type`. The environment is the model class's: the spec's variables marked
    required_for_model_class, then the instance type's variant values."""
    variants = Variants(spec.get("hosting_instance_type_variants"))
    settings = {
        field: int(spec["deploy_kwargs"][k])
        for k, field in DEPLOY_KWARGS.items()
        if k in (spec.get("deploy_kwargs") or {})
    }
    if spec.get("inference_volume_size") and volume_size_supported(instance_type):
        settings["VolumeSizeInGB"] = int(spec["inference_volume_size"])
    package = variants.regional(instance_type, region, "model_package_arn") or (
        spec.get("hosting_model_package_arns") or {}
    ).get(region)
    if package:
        return Resolved(
            spec["model_id"],
            spec["version"],
            None,
            model_package_arn=package,
            deploy_settings=settings,
            **_gating(spec),
        )
    image = _image(spec, variants, region, instance_type, "inference")
    prepacked = variants.property(instance_type, "prepacked_artifact_key") or spec.get("hosting_prepacked_artifact_key")
    key = prepacked or variants.property(instance_type, "artifact_key") or spec.get("hosting_artifact_key")
    bucket = _model_bucket(spec, region)
    environment = {
        e["name"]: str(e["default"])
        for e in spec.get("inference_environment_variables") or []
        if e.get("required_for_model_class")
    }
    environment.update({k: str(v) for k, v in variants.merged(instance_type, "environment_variables").items()})
    return Resolved(
        spec["model_id"],
        spec["version"],
        image,
        _uri(bucket, key) if key else None,
        environment,
        network_isolation=bool(spec.get("inference_enable_network_isolation")),
        deploy_settings=settings,
        **_gating(spec),
    )


def resolve_training(spec: dict[str, Any], region: str, instance_type: str) -> Resolved:
    """Training image, pretrained weights (or, for a gated model, where its weights are),
    training script, default hyperparameters and metric definitions."""
    if not spec.get("training_supported"):
        raise JumpStartError(f"JumpStart model {spec['model_id']} {spec['version']} cannot be fine-tuned")
    variants = Variants(spec.get("training_instance_type_variants"))
    image = _image(spec, variants, region, instance_type, "training")
    environment = {k: str(v) for k, v in variants.merged(instance_type, "environment_variables").items()}
    gated_key = variants.property(instance_type, "gated_model_key_env_var_value")
    if gated_key:
        environment[GATED_MODEL_ENV] = _uri(gated_bucket(region), gated_key)
    packaged = spec.get("training_model_package_artifact_uris") or {}
    if packaged:  # a model-package model's training weights, read by the job through its environment
        if region not in packaged:
            raise JumpStartError(
                f"JumpStart model {spec['model_id']} {spec['version']} cannot be fine-tuned in {region}: its "
                f"training weights are in {', '.join(sorted(packaged))} only"
            )
        environment[GATED_MODEL_ENV] = packaged[region]
    model_key = (
        variants.property(instance_type, "training_artifact_uri")
        or variants.property(instance_type, "training_artifact_key")
        or spec["training_artifact_key"]
    )
    gated_anywhere = any(
        variants.property(t, "gated_model_key_env_var_value")
        for t in spec.get("supported_training_instance_types") or []
    )
    script_key = spec.get("training_prepacked_script_key") or spec["training_script_key"]
    script_bucket = os.environ.get(SCRIPT_BUCKET_ENV) or content_bucket(region)
    hyper = {
        h["name"]: str(h["default"])
        for h in spec.get("hyperparameters") or []
        if h.get("scope") in ("algorithm", "container")
    }
    hyper.update({h["name"]: str(h["default"]) for h in variants.named_list(instance_type, "hyperparameters")})
    specific = variants.named_list(instance_type, "metrics", key="Name")  # replace the spec's of the same name
    names = {m["Name"] for m in specific}
    metrics = [m for m in spec.get("metrics") or [] if m["Name"] not in names] + specific
    volume = spec.get("training_volume_size") if volume_size_supported(instance_type) else None
    return Resolved(
        spec["model_id"],
        spec["version"],
        image,
        environment=environment,
        network_isolation=bool(spec.get("training_enable_network_isolation")),
        estimator_kwargs=dict(spec.get("estimator_kwargs") or {}),
        training_volume_size=volume,
        model_uri=None if gated_anywhere or packaged else _uri(_model_bucket(spec, region), model_key),
        script_uri=_uri(script_bucket, script_key),
        script_prepacked=bool(spec.get("training_prepacked_script_key")),
        hyperparameters=hyper,
        metric_definitions=metrics,
        **_gating(spec),
    )


def check_supported(spec: dict[str, Any], scopes: tuple[str, ...], allow_vulnerable: bool) -> list[str]:
    """Refuse what the SageMaker SDK refuses for the scripts a run uses (`inference`, `training`):
    a deprecated version (with the spec's message), vulnerable dependencies unless
    `allow_vulnerable`. Returns what was let through, for the report."""
    name = f"JumpStart model {spec['model_id']} {spec['version']}"
    if spec.get("deprecated"):
        message = spec.get("deprecated_message") or f"{name} is deprecated"
        raise JumpStartRefused(f"{message} ({name}): pin another model_version, or choose another model")
    warnings = []
    for scope in scopes:
        if not spec.get(f"{scope}_vulnerable"):
            continue
        found = ", ".join(spec.get(f"{scope}_vulnerabilities") or []) or "not named"
        text = f"{name}: its {scope} script has dependencies with known vulnerabilities ({found})"
        if not allow_vulnerable:
            raise JumpStartRefused(
                f"{text}; pin another model_version, choose another model, or set allow_vulnerable: true on the "
                "model to evaluate it anyway (the report then flags it)"
            )
        warnings.append(text)
    return warnings


def resolve(
    model_id: str,
    version: str,
    region: str,
    instance_type: str,
    training: bool = False,
    s3_client: Any = None,
    allow_vulnerable: bool = False,
    tuned: bool = False,
) -> Resolved:
    """The model's `training` (fine-tuning) or inference settings, after `check_supported` for the
    scripts the run uses (a `tuned` model's inference settings check its training script too)."""
    spec = SpecSource(region, s3_client).spec(model_id, version)
    scopes = ("training",) if training else (("inference", "training") if tuned else ("inference",))
    warnings = check_supported(spec, scopes, allow_vulnerable)
    resolved = (
        resolve_training(spec, region, instance_type) if training else resolve_inference(spec, region, instance_type)
    )
    resolved.warnings = warnings
    log.info(
        "JumpStart %s %s (asked %s) on %s in %s: image %s",
        model_id,
        resolved.version,
        version,
        instance_type,
        region,
        resolved.image_uri or resolved.model_package_arn,
    )
    for warning in warnings:
        log.warning("%s: let through by allow_vulnerable", warning)
    return resolved
