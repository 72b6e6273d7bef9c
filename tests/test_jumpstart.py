"""JumpStart resolution on the Airflow side equals the SageMaker SDK's (the worker
environment's sagemaker 2.x, run as the reference), from local spec folders and from the
content bucket in S3 (moto); unknown models, versions and instance types are named."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import ROOT, WORKER_PYTHON
from llmeval.targets.sagemaker import jumpstart
from sagemaker_fixtures import JUMPSTART_FIXTURES, REGION, clients

MODEL = "huggingface-llm-test-7b"

SDK_REFERENCE = """
import json, sys
from sagemaker import environment_variables, hyperparameters, image_uris, model_uris, script_uris
model_id, version, region, instance_type, scope = sys.argv[1:]
kw = dict(model_id=model_id, model_version=version, region=region)
if scope == "inference":
    out = dict(
        image_uri=image_uris.retrieve(framework=None, image_scope="inference", instance_type=instance_type, **kw),
        model_data=model_uris.retrieve(model_scope="inference", instance_type=instance_type, **kw),
        environment=environment_variables.retrieve_default(  # what JumpStartModel uses: the model class's
            instance_type=instance_type, include_aws_sdk_env_vars=False, **kw
        ),
    )
else:
    out = dict(
        image_uri=image_uris.retrieve(framework=None, image_scope="training", instance_type=instance_type, **kw),
        model_uri=model_uris.retrieve(model_scope="training", instance_type=instance_type, **kw),
        script_uri=script_uris.retrieve(script_scope="training", **kw),
        hyperparameters=hyperparameters.retrieve_default(
            instance_type=instance_type, include_container_hyperparameters=True, **kw
        ),
    )
print(json.dumps(out))
"""


SDK_REFUSES = """
import sys
from sagemaker import image_uris
model_id, version, region, instance_type, scope = sys.argv[1:]
try:
    image_uris.retrieve(framework=None, image_scope=scope, instance_type=instance_type, model_id=model_id,
                        model_version=version, region=region)
    print("accepted")
except Exception as exc:
    print(type(exc).__name__)
"""


def _sdk_run(
    instance_type: str, scope: str, version: str = "*", script: str = SDK_REFERENCE
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        AWS_JUMPSTART_MANIFEST_LOCAL_ROOT_DIR_OVERRIDE=str(JUMPSTART_FIXTURES),
        AWS_JUMPSTART_SPECS_LOCAL_ROOT_DIR_OVERRIDE=str(JUMPSTART_FIXTURES),
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION=REGION,
    )
    return subprocess.run(
        [WORKER_PYTHON, "-c", script, MODEL, version, REGION, instance_type, scope],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _sdk(instance_type: str, scope: str, version: str = "*") -> dict:
    done = _sdk_run(instance_type, scope, version)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def local_specs(monkeypatch):
    monkeypatch.setenv(jumpstart.MANIFEST_DIR_ENV, str(JUMPSTART_FIXTURES))
    monkeypatch.setenv(jumpstart.SPECS_DIR_ENV, str(JUMPSTART_FIXTURES))


@pytest.mark.parametrize("instance_type", ["ml.g4dn.xlarge", "ml.g5.12xlarge"])
@pytest.mark.parametrize("training", [False, True])
def test_resolution_equals_the_sdks(local_specs, instance_type, training):
    ours = jumpstart.resolve(MODEL, "*", REGION, instance_type, training=training).as_dict()
    reference = _sdk(instance_type, "training" if training else "inference")
    assert {k: ours.get(k) for k in reference} == reference
    assert ours["version"] == "1.2.0"


def test_specs_are_read_from_the_content_bucket_with_the_connections_client(aws_env, monkeypatch):
    monkeypatch.delenv(jumpstart.MANIFEST_DIR_ENV)
    monkeypatch.delenv(jumpstart.SPECS_DIR_ENV)
    _, s3 = clients(aws_env)
    bucket = f"jumpstart-cache-prod-{REGION}"  # created by the fixture with the model's artifacts
    manifest = json.loads((JUMPSTART_FIXTURES / "models_manifest.json").read_text())
    s3.put_object(Bucket=bucket, Key="models_manifest.json", Body=json.dumps(manifest).encode())
    for header in manifest:
        s3.put_object(
            Bucket=bucket, Key=header["spec_key"], Body=(JUMPSTART_FIXTURES / header["spec_key"]).read_bytes()
        )
    resolved = jumpstart.resolve(MODEL, "1.*", REGION, "ml.g5.2xlarge", s3_client=s3)
    assert resolved.image_uri.startswith("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi")
    assert resolved.model_data == f"s3://{bucket}/huggingface-llm/{MODEL}/artifacts/inference-prepack/v1.0.0/"


@pytest.mark.parametrize(
    ("model", "version", "instance_type", "message"),
    [
        ("no-such-model", "*", "ml.g5.2xlarge", "'no-such-model' is not in the us-east-1 manifest"),
        (MODEL, "9.*", "ml.g5.2xlarge", "has no version '9.*' (available: 1.0.0, 1.1.0, 1.2.0)"),
        (MODEL, "*", "ml.m5.xlarge", "has no inference image for ml.m5.xlarge in us-east-1; supported instance types"),
    ],
)
def test_what_cannot_be_resolved_is_named(local_specs, model, version, instance_type, message):
    with pytest.raises(
        jumpstart.JumpStartError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")
    ):
        jumpstart.resolve(model, version, REGION, instance_type)


@pytest.mark.parametrize(
    ("instance_type", "family"),
    [("ml.g5.2xlarge", "g5"), ("ml.p4d.24xlarge", "p4d"), ("local", ""), ("ml_trn1", "trn1")],
)
def test_instance_family(instance_type, family):
    assert jumpstart.instance_family(instance_type) == family


@pytest.mark.parametrize(
    ("version", "scope", "sdk_error", "message"),
    [
        ("1.0.0", "inference", "DeprecatedJumpStartModelError", "its container is no longer patched"),
        ("1.0.0", "training", "DeprecatedJumpStartModelError", "its container is no longer patched"),
        ("1.1.0", "inference", "VulnerableJumpStartModelError", "transformers==4.30.0"),
        ("1.1.0", "training", "VulnerableJumpStartModelError", "accelerate==0.20.0"),
    ],
)
def test_deprecated_and_vulnerable_versions_are_refused_where_the_sdk_refuses_them(
    local_specs, version, scope, sdk_error, message
):
    training = scope == "training"
    with pytest.raises(jumpstart.JumpStartRefused, match=re.escape(message)) as refused:
        jumpstart.resolve(MODEL, version, REGION, "ml.g5.12xlarge", training)
    assert "pin another model_version" in str(refused.value)
    sdk = _sdk_run("ml.g5.12xlarge", scope, version, script=SDK_REFUSES)
    assert sdk.stdout.strip().splitlines()[-1] == sdk_error, sdk.stderr[-2000:]  # the SDK refuses the same version


def test_allow_vulnerable_lets_a_vulnerable_version_through_with_its_warnings(local_specs):
    resolved = jumpstart.resolve(MODEL, "1.1.0", REGION, "ml.g5.2xlarge", allow_vulnerable=True, tuned=True)
    assert resolved.version == "1.1.0" and resolved.image_uri
    assert [w.split(": ", 1)[1].split(" script")[0] for w in resolved.warnings] == ["its inference", "its training"]
    with pytest.raises(jumpstart.JumpStartRefused, match="set allow_vulnerable: true"):
        jumpstart.resolve(MODEL, "1.1.0", REGION, "ml.g5.2xlarge")
    with pytest.raises(jumpstart.JumpStartRefused, match="deprecated"):  # no way around a deprecated version
        jumpstart.resolve(MODEL, "1.0.0", REGION, "ml.g5.2xlarge", allow_vulnerable=True)
