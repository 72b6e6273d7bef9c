"""The project's SageMaker requests equal what the SageMaker SDK's JumpStart classes send for
the same model, instance type and config: `JumpStartModel(...).deploy(accept_eula=...)` and
`JumpStartEstimator(..., environment={"accept_eula": "true"}).fit(...)`, captured in the
worker environment (tests/sdk_requests.py), on spec documents written for these tests from
the SDK's spec schema (tests/data/jumpstart). Field by field, except what is listed below."""

from __future__ import annotations

import functools
import json
import os
import subprocess

import pytest

from conftest import CONFIGS, ROOT, WORKER_PYTHON
from llmeval.config import EvalConfig, load_config
from llmeval.targets.sagemaker import jumpstart
from llmeval.targets.sagemaker import requests as req
from sagemaker_fixtures import JUMPSTART_FIXTURES

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
TRAIN, VALIDATION, OUTPUT = "s3://b/train/", "s3://b/validation/", "s3://b/out/"
# What the project sends differently on purpose:
NAMES = {"ModelName", "EndpointConfigName", "EndpointName"}  # deterministic from (config, model, run)
PROJECT_ONLY = {"Tags"}  # the llmeval:pipeline ownership tag instead of the SDK's model-id tags
TRAINING_EXCEPTIONS = {
    "Tags",
    "StoppingCondition",  # the config's sagemaker.max_runtime_s (the SDK: 24 h)
    "DebugHookConfig",  # the project enables neither SageMaker Debugger
    "ProfilerConfig",  # nor the Profiler
}


@pytest.fixture(autouse=True)
def local_specs(monkeypatch):
    monkeypatch.setenv(jumpstart.MANIFEST_DIR_ENV, str(JUMPSTART_FIXTURES))
    monkeypatch.setenv(jumpstart.SPECS_DIR_ENV, str(JUMPSTART_FIXTURES))


@functools.cache
def _sdk(*args: str) -> dict[str, dict]:
    env = dict(
        os.environ,
        AWS_JUMPSTART_MANIFEST_LOCAL_ROOT_DIR_OVERRIDE=str(JUMPSTART_FIXTURES),
        AWS_JUMPSTART_SPECS_LOCAL_ROOT_DIR_OVERRIDE=str(JUMPSTART_FIXTURES),
    )
    done = subprocess.run(
        [WORKER_PYTHON, str(ROOT / "tests" / "sdk_requests.py"), *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    calls = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: params for name, params in calls if name != "DescribeModelPackage"}


def _model(model_id: str, instance_type: str, **extra) -> dict:
    return {
        "name": "candidate",
        "model_id": model_id,
        "model_version": "*",
        "deployment_config": {"instance_type": instance_type, "num_instances": 1},
        **extra,
    }


def _cfg(model: dict) -> EvalConfig:
    return EvalConfig.model_validate(_cfg_dict(model))


def _cfg_dict(model: dict) -> dict:
    return {
        "pipeline": {"name": "equivalence"},
        "dataset": {
            "dataset_name": "qa",
            "input_data_location": "qa.jsonl",
            "model_input_key": "q",
            "target_output_key": "a",
        },
        "models": [model],
        "algorithms": [{"algorithm": "FactualKnowledge"}],
        "sagemaker": {"region": REGION},
    }


def _without(request: dict, keys: set[str]) -> dict:
    return {k: v for k, v in request.items() if k not in keys}


def assert_deploy_equals_sdk(cfg: EvalConfig, model_name: str) -> dict:
    model = cfg.model(model_name)
    instance_type = model.deployment_config.instance_type
    resolved = jumpstart.resolve(model.model_id, model.model_version, REGION, instance_type).as_dict()
    ours = req.endpoint_config(cfg, model, resolved, ROLE)
    eula = ["--accept-eula"] if model.eula_accepted else []
    sdk = _sdk("deploy", model.model_id, model.model_version, REGION, instance_type, *eula)
    assert _without(ours["Model"], NAMES | PROJECT_ONLY) == _without(sdk["CreateModel"], NAMES | PROJECT_ONLY)
    (our_variant,) = ours["EndpointConfig"]["ProductionVariants"]
    (sdk_variant,) = sdk["CreateEndpointConfig"]["ProductionVariants"]
    assert _without(our_variant, NAMES) == _without(sdk_variant, NAMES)
    assert _without(ours["EndpointConfig"], NAMES | PROJECT_ONLY | {"ProductionVariants"}) == _without(
        sdk["CreateEndpointConfig"], NAMES | PROJECT_ONLY | {"ProductionVariants"}
    )
    assert set(ours["Endpoint"]) - PROJECT_ONLY == set(sdk["CreateEndpoint"]) - PROJECT_ONLY
    return ours


def assert_training_equals_sdk(cfg: EvalConfig, model_name: str) -> dict:
    model = cfg.model(model_name)
    instance_type = model.finetuning.parameters.instance_type
    resolved = jumpstart.resolve(model.model_id, model.model_version, REGION, instance_type, training=True).as_dict()
    ours = req.training_config(cfg, model, "reference-job", ROLE, resolved, TRAIN, VALIDATION, OUTPUT, REGION)
    params = model.finetuning.parameters  # the SDK gets what a user gives JumpStartEstimator: what the config wrote
    written = {k: str(getattr(params, k)) for k in req.SEED_HYPERPARAMETERS if k in params.model_fields_set}
    hyper = json.dumps(written | {k: str(v) for k, v in (params.model_extra or {}).items()})
    eula = ["--accept-eula"] if model.eula_accepted else []
    sdk = _sdk(
        "fit", model.model_id, model.model_version, REGION, instance_type, TRAIN, VALIDATION, OUTPUT, hyper, *eula
    )
    assert _without(ours, TRAINING_EXCEPTIONS) == _without(sdk["CreateTrainingJob"], TRAINING_EXCEPTIONS)
    return ours


def test_open_weights_model():
    ours = assert_deploy_equals_sdk(_cfg(_model("huggingface-llm-mistral-7b-instruct", "ml.g5.2xlarge")), "candidate")
    container = ours["Model"]["PrimaryContainer"]
    assert "ModelAccessConfig" not in container["ModelDataSource"]["S3DataSource"]  # no EULA asked, none given
    assert "SAGEMAKER_PROGRAM" not in container["Environment"]  # not required for the model class


def test_gated_model_with_its_eula_accepted():
    cfg = _cfg(_model("meta-textgeneration-llama-3-8b-instruct", "ml.g5.2xlarge", accept_eula=True))
    ours = assert_deploy_equals_sdk(cfg, "candidate")
    source = ours["Model"]["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]
    assert source["ModelAccessConfig"] == {"AcceptEula": True}
    assert source["S3Uri"].startswith("s3://jumpstart-private-cache-prod-us-east-1/")
    variant = ours["EndpointConfig"]["ProductionVariants"][0]
    assert (
        variant["ContainerStartupHealthCheckTimeoutInSeconds"] == variant["ModelDataDownloadTimeoutInSeconds"] == 3600
    )


def test_instance_variants_on_a_multi_gpu_type():
    ours = assert_deploy_equals_sdk(_cfg(_model("huggingface-llm-mistral-7b-instruct", "ml.g5.12xlarge")), "candidate")
    assert ours["Model"]["PrimaryContainer"]["Environment"]["SM_NUM_GPUS"] == "4"


def test_model_package_model():
    cfg = _cfg(_model("meta-textgeneration-llama-2-7b-f", "ml.g5.2xlarge", accept_eula=True))
    ours = assert_deploy_equals_sdk(cfg, "candidate")
    assert ours["Model"]["Containers"][0]["ModelPackageName"].startswith("arn:aws:sagemaker:us-east-1:865070037744:")


def test_a_model_package_model_is_fine_tuned_from_its_training_package_artifacts():
    """Llama-2-7b-f: no model channel from the private bucket (an ordinary role cannot read it); the
    spec's training_model_package_artifact_uris for the region, through SageMakerGatedModelS3Uri."""
    tuning = {"train_data_path": "finetune_qa_train.jsonl", "parameters": {"instance_type": "ml.g5.12xlarge"}}
    cfg = _cfg(_model("meta-textgeneration-llama-2-7b-f", "ml.g5.2xlarge", accept_eula=True, finetuning=tuning))
    ours = assert_training_equals_sdk(cfg, "candidate")
    assert ours["Environment"]["SageMakerGatedModelS3Uri"] == (
        "s3://jumpstart-private-cache-prod-us-east-1/meta-training/train-meta-textgeneration-llama-2-7b-f.tar.gz"
    )
    assert "model" not in [c["ChannelName"] for c in ours["InputDataConfig"]]
    with pytest.raises(jumpstart.JumpStartError, match="cannot be fine-tuned in eu-west-1: .* us-east-1, us-west-2"):
        jumpstart.resolve("meta-textgeneration-llama-2-7b-f", "*", "eu-west-1", "ml.g5.12xlarge", training=True)


def test_trainable_gated_model():
    tuning = {
        "train_data_path": "finetune_qa_train.jsonl",
        "parameters": {"instance_type": "ml.g5.12xlarge", "epoch": 2, "instruction_tuned": True},
    }
    cfg = _cfg(_model("meta-textgeneration-llama-3-8b", "ml.g5.2xlarge", accept_eula=True, finetuning=tuning))
    ours = assert_training_equals_sdk(cfg, "candidate")
    assert ours["Environment"]["accept_eula"] == "true"
    assert ours["Environment"]["SageMakerGatedModelS3Uri"].startswith("s3://jumpstart-private-cache-prod-us-east-1/")
    assert [c["ChannelName"] for c in ours["InputDataConfig"]] == ["training", "validation", "code"]  # no model channel
    assert ours["HyperParameters"]["per_device_train_batch_size"] == '"2"'  # the ml.g5.12xlarge variant


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("seed_*.yaml")))
def test_the_seed_configs_send_what_the_sdk_sends(config):
    cfg = load_config(CONFIGS / config)
    checked = 0
    for model in cfg.models:
        if model.kind == "bedrock":
            continue
        if model.finetuning:
            assert_training_equals_sdk(cfg, model.name)
        else:
            assert_deploy_equals_sdk(cfg, model.name)
        checked += 1
    assert checked >= 1


def test_a_gated_model_without_eula_acceptance_is_refused_before_anything_is_created(tmp_path):
    from llmeval.config import ConfigError

    path = tmp_path / "gated.yaml"
    path.write_text(json.dumps(_cfg_dict(_model("meta-textgeneration-llama-3-8b-instruct", "ml.g5.2xlarge"))))
    with pytest.raises(
        ConfigError, match=r"models\[0\]\.accept_eula: meta-textgeneration-llama-3-8b-instruct is gated"
    ):
        load_config(path)
    # a gated model the config's naming does not reveal: refused at the deploy step, before any request
    cfg = _cfg(_model("huggingface-llm-mistral-7b-instruct", "ml.g5.2xlarge"))
    resolved = dict(jumpstart.resolve("huggingface-llm-mistral-7b-instruct", "*", REGION, "ml.g5.2xlarge").as_dict())
    with pytest.raises(PermissionError, match="candidate: huggingface-llm-mistral-7b-instruct .*is gated"):
        req.check_eula(cfg.model("candidate"), dict(resolved, gated=True, eula_key="fmhMetadata/eula/x.txt"))


def test_the_specs_estimator_settings_volume_and_model_channel():
    """A spec with estimator_kwargs (inter-container encryption, uncompressed output, max_run) and a
    training volume size, fine-tuned on an instance type that takes an EBS volume, with only the
    epoch set: the request equals JumpStartEstimator.fit's, the spec's defaults kept."""
    tuning = {
        "train_data_path": "finetune_qa_train.jsonl",
        "parameters": {"instance_type": "ml.p3.2xlarge", "epoch": 2},
    }
    cfg = _cfg(_model("huggingface-llm-test-7b-tuning", "ml.g5.2xlarge", finetuning=tuning))
    ours = assert_training_equals_sdk(cfg, "candidate")
    assert ours["EnableInterContainerTrafficEncryption"] is True
    assert ours["OutputDataConfig"]["CompressionType"] == "NONE"
    assert ours["ResourceConfig"]["VolumeSizeInGB"] == 512
    assert ours["StoppingCondition"]["MaxRuntimeInSeconds"] == 360000  # the spec's max_run: the config set none
    (model_channel,) = [c for c in ours["InputDataConfig"] if c["ChannelName"] == "model"]
    assert (model_channel["ContentType"], model_channel["InputMode"]) == ("application/x-sagemaker-model", "File")
    hyper = ours["HyperParameters"]
    assert (hyper["epoch"], hyper["max_input_length"], hyper["instruction_tuned"]) == ('"2"', '"-1"', '"False"')
    assert "chat_dataset" not in hyper  # neither written nor declared by this spec


def test_the_volume_size_applies_only_where_an_ebs_volume_can_be_attached():
    for instance_type, expected in (("ml.p3.2xlarge", 512), ("ml.g5.12xlarge", None), ("ml.g4dn.xlarge", None)):
        resolved = jumpstart.resolve("huggingface-llm-test-7b-tuning", "*", REGION, instance_type, training=True)
        assert resolved.training_volume_size == expected, instance_type


def test_the_specs_inference_volume_size_on_instance_types_that_take_one():
    on_p3 = assert_deploy_equals_sdk(_cfg(_model("huggingface-llm-test-7b-tuning", "ml.p3.2xlarge")), "candidate")
    assert on_p3["EndpointConfig"]["ProductionVariants"][0]["VolumeSizeInGB"] == 256
    on_g5 = assert_deploy_equals_sdk(_cfg(_model("huggingface-llm-test-7b-tuning", "ml.g5.2xlarge")), "candidate")
    assert "VolumeSizeInGB" not in on_g5["EndpointConfig"]["ProductionVariants"][0]  # local NVMe storage


def test_a_neuron_model_on_inf2_and_trn1():
    """The Neuron image of each family, the inf2 variant's environment and the inf2.24xlarge's own,
    the inference volume on inf2 (no local disk), and fine-tuning on trn1 with its variants'
    hyperparameters and no training volume (trn1 has local NVMe)."""
    small = assert_deploy_equals_sdk(_cfg(_model("huggingface-llm-test-7b-neuron", "ml.inf2.xlarge")), "candidate")
    container = small["Model"]["PrimaryContainer"]
    assert "djl-inference:0.28.0-neuronx" in container["Image"]
    assert container["Environment"]["OPTION_TENSOR_PARALLEL_DEGREE"] == "2"
    assert small["EndpointConfig"]["ProductionVariants"][0]["VolumeSizeInGB"] == 256
    large = assert_deploy_equals_sdk(_cfg(_model("huggingface-llm-test-7b-neuron", "ml.inf2.24xlarge")), "candidate")
    assert large["Model"]["PrimaryContainer"]["Environment"]["OPTION_TENSOR_PARALLEL_DEGREE"] == "12"
    tuning = {"train_data_path": "finetune_qa_train.jsonl", "parameters": {"instance_type": "ml.trn1.32xlarge"}}
    cfg = _cfg(_model("huggingface-llm-test-7b-neuron", "ml.inf2.xlarge", finetuning=tuning))
    tuned = assert_training_equals_sdk(cfg, "candidate")
    assert "pytorch-training-neuronx" in tuned["AlgorithmSpecification"]["TrainingImage"]
    assert tuned["HyperParameters"]["tensor_parallel_degree"] == '"32"'
    assert tuned["ResourceConfig"]["VolumeSizeInGB"] == 30  # trn1's local NVMe: the spec's 512 is not asked
