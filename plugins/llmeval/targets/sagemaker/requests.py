"""SageMaker requests for the SageMaker target, as plain functions over a boto3 client.

Names are deterministic from (config, model, run) and within AWS limits (63 characters,
alphanumerics and hyphens), so retries and re-runs find what they created instead of
creating it twice. Every resource this project creates carries the tag
`llmeval:pipeline=<pipeline name>`; teardown deletes only resources that carry it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmeval.config import EvalConfig, ModelSection
from llmeval.evaluation import cache_sync
from llmeval.evaluation.endpoint_release import SETTLING
from llmeval.evaluation.job_args import MODULE as EVALUATION_MODULE
from llmeval.evaluation.job_args import JobArgs, JudgeEndpoint
from llmeval.evaluation.served import ENV as SERVED_ENV
from llmeval.evaluation.served import ServedAt, encode

log = logging.getLogger("llmeval.sagemaker")

OWNER_TAG = "llmeval:pipeline"
CODE_DIR = "/opt/ml/processing/input/code"
RUN_DIR = "/opt/ml/processing/input/run"
OUTPUT_DIR = "/opt/ml/processing/output/results"
MODELS_DIR = "/opt/ml/processing/input/models"  # the pairwise job's view of every model's results
CACHE_DIR = "/opt/ml/processing/cache"


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def _stem(base: str) -> str:
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9-]", "-", base)).strip("-")
    return cleaned[: 63 - 8 - 1].rstrip("-")


def aws_name(base: str, *hash_parts: str) -> str:
    """`<base>-<hash>` cut to SageMaker's 63-character name limit."""
    return f"{_stem(base)}-{short_hash(base, *hash_parts)}"


def aws_name_pattern(base: str) -> str:
    """An IAM resource pattern matching every `aws_name(base, ...)`."""
    return f"{_stem(base)}-*"


def endpoint_name(cfg: EvalConfig, model: ModelSection) -> str:
    return model.endpoint_name or aws_name(f"llmeval-{model.name}", cfg.pipeline.name)


def processing_job_name(dag_id: str, run_id: str, model: str) -> str:
    return aws_name(f"eval-{model}", dag_id, run_id)


def pairwise_job_name(dag_id: str, run_id: str) -> str:
    return aws_name("pairwise", dag_id, run_id)


def training_job_name(dag_id: str, run_id: str, model: str) -> str:
    return aws_name(f"ft-{model}", dag_id, run_id)


def tags(cfg: EvalConfig, model: str, **extra: str) -> list[dict[str, str]]:
    values = {OWNER_TAG: cfg.pipeline.name, "llmeval:model": model, **cfg.sagemaker.tags, **extra}
    return [{"Key": k, "Value": str(v)[:256]} for k, v in values.items()]


def s3_encryption(cfg: EvalConfig) -> dict[str, str]:
    """PutObject arguments for the objects the DAG writes (code, inputs, metrics): SSE-KMS
    with `output_kms_key_id` when set, else the bucket's default encryption."""
    key = cfg.sagemaker.security.output_kms_key_id
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key} if key else {}


def container(resolved: dict[str, Any], accept_eula: bool | None = None) -> dict[str, Any]:
    """A CreateModel container for a resolved JumpStart model, as the SDK builds it: a model
    package, or the image with prefix artifacts (with the EULA answer when the config gives
    one) or a tarball."""
    if resolved.get("model_package_arn"):
        return {"ModelPackageName": resolved["model_package_arn"]}
    spec: dict[str, Any] = {"Image": resolved["image_uri"], "Environment": dict(resolved.get("environment") or {})}
    data = resolved.get("model_data")
    if isinstance(data, str) and data.endswith("/"):
        source: dict[str, Any] = {"S3Uri": data, "S3DataType": "S3Prefix", "CompressionType": "None"}
        if accept_eula is not None:
            source["ModelAccessConfig"] = {"AcceptEula": accept_eula}
        spec["ModelDataSource"] = {"S3DataSource": source}
    elif data:
        spec["ModelDataUrl"] = data
    return spec


def check_eula(model: ModelSection, resolved: dict[str, Any]) -> None:
    """Refuse a gated model whose EULA the config does not accept, before anything is created."""
    if resolved.get("gated") and not model.eula_accepted:
        eula = resolved.get("eula_key")
        raise PermissionError(
            f"{model.name}: {model.model_id} {resolved.get('version', '')} is gated behind its end-user license "
            f"agreement{f' (s3://jumpstart-cache-prod-<region>/{eula})' if eula else ''}: read it, then set "
            "accept_eula: true on the model (or evaluation_config.custom_attributes.accept_eula: true)"
        )


def endpoint_config(cfg: EvalConfig, model: ModelSection, resolved: dict[str, Any], role_arn: str) -> dict[str, Any]:
    """The provider's SageMakerEndpointOperator config: Model, EndpointConfig and Endpoint,
    with what JumpStartModel.deploy would send plus the project's names, tags, KMS and VPC."""
    name = endpoint_name(cfg, model)
    spec = container(resolved, model.eula_accepted)
    model_name = aws_name(f"{name[:40]}-model", repr(sorted(spec.items())))
    deployment = model.deployment_config
    config_name = aws_name(f"{name[:40]}-cfg", model_name, deployment.instance_type, str(deployment.num_instances))
    resource_tags = tags(cfg, model.name)
    security = cfg.sagemaker.security
    model_request: dict[str, Any] = {
        "ModelName": model_name,
        **({"Containers": [spec]} if "ModelPackageName" in spec else {"PrimaryContainer": spec}),
        "ExecutionRoleArn": role_arn,
        "Tags": resource_tags,
    }
    if security.vpc_config:
        model_request["VpcConfig"] = security.vpc_config
    if security.enable_network_isolation or resolved.get("network_isolation"):
        model_request["EnableNetworkIsolation"] = True
    variant: dict[str, Any] = {
        "VariantName": "AllTraffic",
        "ModelName": model_name,
        "InitialVariantWeight": 1,
        "InitialInstanceCount": deployment.num_instances,
        "InstanceType": deployment.instance_type,
        **(resolved.get("deploy_settings") or {}),
    }
    endpoint_config_request: dict[str, Any] = {
        "EndpointConfigName": config_name,
        "ProductionVariants": [variant],
        "Tags": resource_tags,
    }
    if security.volume_kms_key_id:
        endpoint_config_request["KmsKeyId"] = security.volume_kms_key_id
    return {
        "Model": model_request,
        "EndpointConfig": endpoint_config_request,
        "Endpoint": {"EndpointName": name, "EndpointConfigName": config_name, "Tags": resource_tags},
    }


def endpoint_status(client: Any, name: str) -> str | None:
    """Status of the endpoint called exactly `name`, searching every page; None if absent."""
    for page in client.get_paginator("list_endpoints").paginate(NameContains=name):
        for endpoint in page["Endpoints"]:
            if endpoint["EndpointName"] == name:
                return endpoint["EndpointStatus"]
    return None


def stop_job_if_running(client: Any, kind: str, name: str) -> dict[str, Any] | None:
    """Stop a "processing" or "training" job that is still running (its task timed out or
    failed), so it does not keep billing. Returns the job's description as read before any
    stop (None when there is no such job): status InProgress means it was stopped."""
    key = {f"{kind.title()}JobName": name}
    job = describe_or_none(getattr(client, f"describe_{kind}_job"), **key)
    if job and job[f"{kind.title()}JobStatus"] == "InProgress":
        log.warning("stopping %s job %s: its task ended while the job was running", kind, name)
        getattr(client, f"stop_{kind}_job")(**key)
    return job


def describe_or_none(describe: Any, **kwargs: str) -> dict[str, Any] | None:
    """The describe call's answer, or None when the resource does not exist."""
    from botocore.exceptions import ClientError

    try:
        return describe(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def missing_parts(client: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The endpoint operator config without a Model / EndpointConfig that already exists."""
    todo = dict(config)
    if describe_or_none(client.describe_model, ModelName=config["Model"]["ModelName"]):
        todo.pop("Model")
    if describe_or_none(
        client.describe_endpoint_config, EndpointConfigName=config["EndpointConfig"]["EndpointConfigName"]
    ):
        todo.pop("EndpointConfig")
    return todo


def _owned(client: Any, arn: str, pipeline: str) -> bool:
    return _tagged(client, arn).get(OWNER_TAG) == pipeline


def check_owner(client: Any, endpoint: str, pipeline: str) -> None:
    """Refuse to reuse an endpoint that another pipeline (or a person) created."""
    found = describe_or_none(client.describe_endpoint, EndpointName=endpoint)
    if found and not _owned(client, found["EndpointArn"], pipeline):
        owner = _tagged(client, found["EndpointArn"]).get(OWNER_TAG)
        raise RuntimeError(
            f"endpoint {endpoint} exists but was not created by pipeline {pipeline} "
            f"({f'its {OWNER_TAG} tag says {owner!r}' if owner else f'it has no {OWNER_TAG} tag'}): not reusing it; "
            "give this model another endpoint_name"
        )


DELETE_ORDER = ("endpoint", "endpoint config", "model")


def resource_names(config: dict[str, Any]) -> dict[str, list[str]]:
    """The names in an endpoint operator config (what the deploy step handed on by XCom)."""
    return {
        "endpoint": [config["Endpoint"]["EndpointName"]],
        "endpoint config": [config["EndpointConfig"]["EndpointConfigName"]],
        "model": [config["Model"]["ModelName"]],
    }


def _tagged(client: Any, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=arn).get("Tags", [])}


def discover_resources(client: Any, endpoint: str, pipeline: str, model: str) -> dict[str, list[str]]:
    """What this pipeline created for a model's endpoint, found without the deploy's XCom:
    the endpoint by its deterministic name, its config and model as it names them, and
    configs or models left without an endpoint by their name prefix and ownership tags."""
    found: dict[str, list[str]] = {"endpoint": [], "endpoint config": [], "model": []}
    live = describe_or_none(client.describe_endpoint, EndpointName=endpoint)
    if live:
        found["endpoint"].append(endpoint)
        found["endpoint config"].append(live["EndpointConfigName"])
        config = describe_or_none(client.describe_endpoint_config, EndpointConfigName=live["EndpointConfigName"])
        found["model"] += [v["ModelName"] for v in (config or {}).get("ProductionVariants", [])]
    searches = [
        (
            "endpoint config",
            "list_endpoint_configs",
            "EndpointConfigs",
            "EndpointConfigName",
            "EndpointConfigArn",
            "cfg",
        ),
        ("model", "list_models", "Models", "ModelName", "ModelArn", "model"),
    ]
    for kind, call, listed, name_key, arn_key, suffix in searches:
        stem = _stem(f"{endpoint[:40]}-{suffix}")
        for page in client.get_paginator(call).paginate(NameContains=stem):
            for item in page[listed]:
                if item[name_key] in found[kind] or not item[name_key].startswith(stem):
                    continue
                tags = _tagged(client, item[arn_key])
                if tags.get(OWNER_TAG) == pipeline and tags.get("llmeval:model") == model:
                    found[kind].append(item[name_key])
    return found


def delete_endpoint_resources(
    client: Any,
    names: dict[str, list[str]],
    pipeline: str,
    deleting: Callable[[str, dict], None] | None = None,
    poll_s: int = 30,
) -> list[str]:
    """Delete endpoints, endpoint configs and models by name, only where this pipeline created
    them; `deleting(kind, description)` sees each one just before it goes. An endpoint still
    being created or updated is waited for first (checked every `poll_s`): SageMaker refuses
    to delete it until it is InService or Failed."""
    calls = {
        "endpoint": (client.describe_endpoint, "EndpointArn", client.delete_endpoint, "EndpointName"),
        "endpoint config": (
            client.describe_endpoint_config,
            "EndpointConfigArn",
            client.delete_endpoint_config,
            "EndpointConfigName",
        ),
        "model": (client.describe_model, "ModelArn", client.delete_model, "ModelName"),
    }
    deleted: list[str] = []
    for kind in DELETE_ORDER:
        describe, arn_key, delete, key = calls[kind]
        for name in names.get(kind, []):
            found = describe_or_none(describe, **{key: name})
            if found is None:
                log.info("%s %s does not exist", kind, name)
            elif not _owned(client, found[arn_key], pipeline):
                log.warning("%s %s was not created by pipeline %s: left alone", kind, name, pipeline)
            else:
                if kind == "endpoint" and found["EndpointStatus"] in SETTLING:
                    found = _settled(client, name, found["EndpointStatus"], poll_s)
                if deleting:
                    deleting(kind, found)
                delete(**{key: name})
                deleted.append(f"{kind} {name}")
                log.info("deleted %s %s", kind, name)
    return deleted


def _settled(client: Any, name: str, status: str, poll_s: int) -> dict[str, Any]:
    """The endpoint's description once it is no longer being created or updated."""
    from botocore.exceptions import WaiterError

    log.info("endpoint %s is %s: waiting until it can be deleted", name, status)
    try:
        client.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": poll_s, "MaxAttempts": max(1, 7200 // poll_s)}
        )
    except WaiterError as exc:  # Failed (deletable) or still settling after two hours: try anyway
        log.warning("endpoint %s: %s; deleting it anyway", name, exc)
    return client.describe_endpoint(EndpointName=name)


def job_args(processing: dict[str, Any]) -> JobArgs:
    """The evaluation entry point's arguments in a Processing job request."""
    return JobArgs.from_argv(processing["AppSpecification"]["ContainerArguments"])


def outputs_name(model: str) -> str:
    """The object name of a model's provided outputs among the run's Processing inputs."""
    return f"outputs-{model}.jsonl"


def processing_config(
    cfg: EvalConfig,
    model: ModelSection,
    job_name: str,
    role_arn: str,
    image: str,
    code_uri: str,
    run_uri: str,
    output_uri: str,
    region: str,
    cache_uri: str | None = None,
    release_uri: str | None = None,
    judges: dict[str, str] | None = None,
    served: dict[str, ServedAt] | None = None,
) -> dict[str, Any]:
    """A Processing job running the project's evaluation entry point for one model.
    `cache_uri`: the S3 object that keeps the model's response cache between jobs;
    `release_uri`: the S3 object the job writes when it no longer needs the model's endpoint
    (the job then also waits for the endpoint to be InService before asking it);
    `judges`: the endpoint of each judge the run deployed, by judge name; `served`: where the
    OpenAI-compatible models it asks are (their keys' secrets, never the keys)."""
    arguments = JobArgs(
        config=Path(f"{RUN_DIR}/config.json"),
        model=model.name,
        dataset=Path(f"{RUN_DIR}/dataset.jsonl"),
        output_dir=Path(OUTPUT_DIR),
        endpoint_name=endpoint_name(cfg, model) if model.deploys else None,
        region=region,
        cache_dir=Path(CACHE_DIR),
        outputs=Path(f"{RUN_DIR}/{outputs_name(model.name)}") if model.outputs_location else None,
        cache_uri=cache_uri,
        judges=_judges(judges),
        release_uri=release_uri,
        wait_for_endpoint=cfg.sagemaker.poll_interval_s if release_uri else None,
    ).to_argv()
    return _processing_request(
        cfg,
        job_name,
        role_arn,
        image,
        EVALUATION_MODULE,
        arguments,
        [("code", code_uri, CODE_DIR), ("run", run_uri, RUN_DIR)],
        output_uri,
        region,
        model.name,
        served,
    )


def pairwise_config(
    cfg: EvalConfig,
    job_name: str,
    role_arn: str,
    image: str,
    code_uri: str,
    run_uri: str,
    results_uri: str,
    output_uri: str,
    region: str,
    cache_uri: str,
    judges: dict[str, str],
    served: dict[str, ServedAt] | None = None,
) -> dict[str, Any]:
    """A Processing job running the pairwise comparison over every model's outputs (the
    evaluation jobs' results under `results_uri`), writing pairwise.json to `output_uri`."""
    arguments = [
        "--config",
        f"{RUN_DIR}/config.json",
        "--runs-dir",
        MODELS_DIR,
        "--output",
        f"{OUTPUT_DIR}/pairwise.json",
        "--cache-dir",
        CACHE_DIR,
        "--cache-uri",
        cache_uri,
        "--region",
        region,
        *(part for judge in _judges(judges) for part in ("--judge", str(judge))),
    ]
    inputs = [("code", code_uri, CODE_DIR), ("run", run_uri, RUN_DIR), ("models", results_uri, MODELS_DIR)]
    return _processing_request(
        cfg,
        job_name,
        role_arn,
        image,
        "llmeval.evaluation.pairwise",
        arguments,
        inputs,
        output_uri,
        region,
        "pairwise",
        served,
    )


def _judges(judges: dict[str, str] | None) -> tuple[JudgeEndpoint, ...]:
    return tuple(JudgeEndpoint(judge, endpoint) for judge, endpoint in (judges or {}).items())


def _processing_request(
    cfg: EvalConfig,
    job_name: str,
    role_arn: str,
    image: str,
    module: str,
    arguments: list[str],
    inputs: list[tuple[str, str, str]],
    output_uri: str,
    region: str,
    owner: str,
    served: dict[str, ServedAt] | None = None,
) -> dict[str, Any]:
    """A Processing job running `python3 -m module arguments` on the S3 `inputs` (name, URI,
    local path), its output folder uploaded to `output_uri`; with the config's security."""
    sm = cfg.sagemaker
    security = sm.security
    request: dict[str, Any] = {
        "ProcessingJobName": job_name,
        "RoleArn": role_arn,
        "AppSpecification": {
            "ImageUri": image,
            "ContainerEntrypoint": ["python3", "-m", module],
            "ContainerArguments": arguments,
        },
        "Environment": {"PYTHONPATH": CODE_DIR, "AWS_DEFAULT_REGION": region},
        "ProcessingInputs": [
            {
                "InputName": name,
                "S3Input": {"S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix", "S3InputMode": "File"},
            }
            for name, uri, local in inputs
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "results",
                    "S3Output": {"S3Uri": output_uri, "LocalPath": OUTPUT_DIR, "S3UploadMode": "EndOfJob"},
                }
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": sm.processing_instance_type,
                "VolumeSizeInGB": sm.processing_volume_gb,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": sm.max_runtime_s},
        "Tags": tags(cfg, owner),
    }
    if security.volume_kms_key_id:
        request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] = security.volume_kms_key_id
    if security.output_kms_key_id:
        request["ProcessingOutputConfig"]["KmsKeyId"] = security.output_kms_key_id
        request["Environment"][cache_sync.KMS_ENV] = security.output_kms_key_id
    if any(at.api_key for at in (served or {}).values()):
        raise ValueError("an API key must not go into a Processing job's environment: use its secret's ARN")
    if served:
        request["Environment"][SERVED_ENV] = encode(served)
    network: dict[str, Any] = {}
    if security.enable_inter_container_traffic_encryption:
        network["EnableInterContainerTrafficEncryption"] = True
    if security.vpc_config:
        network["VpcConfig"] = security.vpc_config
    if network:
        request["NetworkConfig"] = network
    return request


SEED_HYPERPARAMETERS = ("epoch", "max_input_length", "instruction_tuned", "chat_dataset")


def training_hyperparameters(model: ModelSection, resolved: dict[str, Any]) -> dict[str, str]:
    """What JumpStartEstimator sends: the spec's defaults (with instance variants), then what the
    config wrote (a seed key the config left out keeps the spec's default, or is not sent when the
    spec does not declare it; `keep_alive_period_in_seconds` is a resource setting, not one)."""
    params = model.tuning.parameters
    written = {k: getattr(params, k) for k in SEED_HYPERPARAMETERS if k in params.model_fields_set}
    extra = {k: v for k, v in (params.model_extra or {}).items() if k != "keep_alive_period_in_seconds"}
    values = {k: str(v) for k, v in (resolved.get("hyperparameters") or {}).items()}
    values.update({k: str(v) for k, v in {**written, **extra}.items()})
    return values


def training_runtime(cfg: EvalConfig, estimator: dict[str, Any]) -> int:
    """The training job's limit: the config's `max_runtime_s` when it sets one, else the spec's
    `max_run`, else the config's default."""
    if "max_runtime_s" not in cfg.sagemaker.model_fields_set and estimator.get("max_run"):
        return int(estimator["max_run"])
    return cfg.sagemaker.max_runtime_s


def training_channels(resolved: dict[str, Any], train_uri: str, validation_uri: str | None) -> list[dict[str, Any]]:
    """The training job's channels as JumpStartEstimator.fit sends them: the data, the pretrained
    weights (`model`; a gated model's come through SageMakerGatedModelS3Uri instead) and a prepacked
    script (`code`)."""

    def channel(name: str, uri: str, **extra: str) -> dict[str, Any]:
        source = {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        return {"ChannelName": name, "DataSource": {"S3DataSource": source}, **extra}

    channels = [channel("training", train_uri)]
    if validation_uri:
        channels.append(channel("validation", validation_uri))
    if resolved.get("model_uri"):
        model_channel = {"ContentType": "application/x-sagemaker-model", "InputMode": "File"}
        channels.append(channel("model", resolved["model_uri"], **model_channel))
    if resolved.get("script_prepacked"):
        channels.append(channel("code", resolved["script_uri"]))
    return channels


def training_config(
    cfg: EvalConfig,
    model: ModelSection,
    job_name: str,
    role_arn: str,
    resolved: dict[str, Any],
    train_uri: str,
    validation_uri: str | None,
    output_uri: str,
    region: str,
) -> dict[str, Any]:
    """A JumpStart fine-tuning job as JumpStartEstimator.fit sends it: the model's training
    image, script and pretrained weights (a gated model's through its environment, with the
    EULA accepted), hyperparameters JSON-encoded as the SDK's framework estimators do, metric
    definitions, the spec's network isolation; plus the project's name, tags, KMS and VPC."""
    check_eula(model, resolved)
    params = model.tuning.parameters
    keep_alive = (params.model_extra or {}).get("keep_alive_period_in_seconds")
    hyper = {k: json.dumps(v) for k, v in training_hyperparameters(model, resolved).items()}
    hyper.update(
        sagemaker_container_log_level="20",  # the SDK's logging.INFO, unquoted
        sagemaker_job_name=json.dumps(job_name),
        sagemaker_region=json.dumps(region),
    )

    channels = training_channels(resolved, train_uri, validation_uri)
    if not resolved.get("script_prepacked"):  # the script goes by its S3 URI, as a framework estimator's source_dir
        hyper["sagemaker_submit_directory"] = json.dumps(resolved["script_uri"])
    estimator = resolved.get("estimator_kwargs") or {}
    resources: dict[str, Any] = {
        "InstanceType": params.instance_type,
        "InstanceCount": params.num_instances,
        "VolumeSizeInGB": resolved.get("training_volume_size") or estimator.get("volume_size") or 30,
    }
    if keep_alive is not None:  # SageMaker warm pools: the next job reuses the instances
        resources["KeepAlivePeriodInSeconds"] = int(keep_alive)
    security = cfg.sagemaker.security
    output: dict[str, Any] = {"S3OutputPath": output_uri}
    if estimator.get("disable_output_compression"):  # the tuned weights come back as files, not one tar.gz
        output["CompressionType"] = "NONE"
    if security.output_kms_key_id:
        output["KmsKeyId"] = security.output_kms_key_id
    if security.volume_kms_key_id:
        resources["VolumeKmsKeyId"] = security.volume_kms_key_id
    algorithm: dict[str, Any] = {"TrainingImage": resolved["image_uri"], "TrainingInputMode": "File"}
    if resolved.get("metric_definitions"):
        algorithm["MetricDefinitions"] = resolved["metric_definitions"]
    environment = dict(resolved.get("environment") or {})
    if resolved.get("gated"):
        environment["accept_eula"] = "true"  # checked above: the config accepts it
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": algorithm,
        "RoleArn": role_arn,
        "HyperParameters": hyper,
        "InputDataConfig": channels,
        "OutputDataConfig": output,
        "ResourceConfig": resources,
        "StoppingCondition": {"MaxRuntimeInSeconds": training_runtime(cfg, estimator)},
        "Tags": tags(cfg, model.name),
    }
    if environment:
        request["Environment"] = environment
    if security.enable_network_isolation or resolved.get("network_isolation"):
        request["EnableNetworkIsolation"] = True
    if security.enable_inter_container_traffic_encryption or estimator.get("encrypt_inter_container_traffic"):
        request["EnableInterContainerTrafficEncryption"] = True
    if security.vpc_config:
        request["VpcConfig"] = security.vpc_config
    return request
