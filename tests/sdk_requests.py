"""The reference: the requests the SageMaker SDK's JumpStart classes send (run in the worker
environment, sagemaker 2.x). The client answers them itself (nothing leaves the machine;
botocore checks each request against the AWS API model first); they are printed as JSON.

    python tests/sdk_requests.py deploy MODEL_ID VERSION REGION INSTANCE_TYPE [--accept-eula]
    python tests/sdk_requests.py fit MODEL_ID VERSION REGION INSTANCE_TYPE TRAIN_URI VALIDATION_URI OUTPUT_URI \
        HYPERPARAMETERS_JSON [--accept-eula]
"""

from __future__ import annotations

import json
import sys

import boto3

ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
NO_TELEMETRY = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def _answers(region: str) -> dict[str, dict]:
    arn = f"arn:aws:sagemaker:{region}:123456789012:"
    return {
        "CreateModel": {"ModelArn": arn + "model/m"},
        "CreateEndpointConfig": {"EndpointConfigArn": arn + "endpoint-config/c"},
        "CreateEndpoint": {"EndpointArn": arn + "endpoint/e"},
        "CreateTrainingJob": {"TrainingJobArn": arn + "training-job/t"},
        "DescribeModelPackage": {
            "ModelPackageName": "p",
            "ModelPackageArn": arn + "model-package/p",
            "CreationTime": "2026-01-01T00:00:00Z",
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "InferenceSpecification": {
                "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/p:1"}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        },
    }


def _session(region: str):
    """A Session whose SageMaker client records each request and answers it here; requests
    are validated against the API model by botocore before they get this far."""
    from botocore.awsrequest import AWSResponse
    from sagemaker.session import Session
    from sagemaker.telemetry import telemetry_logging

    def no_telemetry(*args, **kwargs):
        raise AssertionError("the SDK tried to send telemetry")

    telemetry_logging._requests_helper = no_telemetry
    boto = boto3.Session(region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
    client = boto.client("sagemaker")
    calls: list[tuple[str, dict]] = []
    answers = _answers(region)

    def record(params, model, **_):
        calls.append((model.name, dict(params)))

    def answer(model, **_):
        return AWSResponse("https://sagemaker.invalid", 200, {}, None), answers[model.name]

    client.meta.events.register("provide-client-params.sagemaker.*", record)
    client.meta.events.register("before-call.sagemaker.*", answer)
    session = Session(
        boto_session=boto,
        sagemaker_client=client,
        sagemaker_runtime_client=boto.client("sagemaker-runtime"),
        default_bucket="reference-bucket",
        sagemaker_config=NO_TELEMETRY,
    )
    return session, calls


def deploy(model_id: str, version: str, region: str, instance_type: str, accept_eula: bool | None) -> list:
    from sagemaker.jumpstart.model import JumpStartModel

    session, calls = _session(region)
    model = JumpStartModel(
        model_id=model_id, model_version=version, instance_type=instance_type, role=ROLE, sagemaker_session=session
    )
    model.deploy(accept_eula=accept_eula, endpoint_name="reference-endpoint", wait=False)
    return calls


def fit(
    model_id: str,
    version: str,
    region: str,
    instance_type: str,
    train: str,
    validation: str,
    output: str,
    hyperparameters: str,
    accept_eula: bool,
) -> list:
    from sagemaker.jumpstart.estimator import JumpStartEstimator

    session, calls = _session(region)
    estimator = JumpStartEstimator(
        model_id=model_id,
        model_version=version,
        instance_type=instance_type,
        role=ROLE,
        sagemaker_session=session,
        output_path=output,
        hyperparameters=json.loads(hyperparameters),
        environment={"accept_eula": "true"} if accept_eula else None,
    )
    estimator.fit({"training": train, "validation": validation}, wait=False, job_name="reference-job")
    return calls


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--accept-eula"]
    eula = True if "--accept-eula" in sys.argv else None  # None: deploy() as called without the argument
    captured = deploy(*args[1:], accept_eula=eula) if args[0] == "deploy" else fit(*args[1:], accept_eula=eula)
    print(json.dumps(captured, default=str))
