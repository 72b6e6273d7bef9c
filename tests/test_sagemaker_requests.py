"""Every request the SageMaker target sends, validated against the AWS API model with
botocore's Stubber (and member patterns); names within limits; idempotency and ownership
checked against a moto server."""

from __future__ import annotations

import json

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

from aws_model import assert_valid
from conftest import CONFIGS
from llmeval.config import EvalConfig, load_config
from llmeval.registry import APPROVED, SageMakerModelRegistry
from llmeval.targets.sagemaker import requests as req
from sagemaker_fixtures import IMAGE, JUMPSTART_FIXTURES, ROLE, clients, sagemaker_config

RESOLVED = {
    "image_uri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.1.1-gpu-py310",
    "model_data": "s3://jumpstart-cache-prod-us-east-1/huggingface-llm/test/artifacts/inference-prepack/v1.0.0/",
    "environment": {"SM_NUM_GPUS": "1", "HF_MODEL_ID": "/opt/ml/model"},
}


@pytest.fixture(scope="module")
def cfg() -> EvalConfig:
    return load_config(CONFIGS / "seed_scenario3_hybrid.yaml")


def _client(service: str = "sagemaker"):
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_names_are_deterministic_and_within_aws_limits(cfg):
    long = "m" + "-x" * 40
    name = req.aws_name(f"eval-{long}", "dag", "manual__2026-11-28T20:15:11+00:00")
    assert len(name) <= 63 and name == req.aws_name(f"eval-{long}", "dag", "manual__2026-11-28T20:15:11+00:00")
    assert name != req.aws_name(f"eval-{long}", "dag", "scheduled__2026-11-29T00:00:00+00:00")
    client = _client()
    for model in cfg.models:
        job = req.processing_job_name(cfg.pipeline.name, "manual__2026-11-28T20:15:11.357135+00:00", model.name)
        assert_valid(client, "DescribeProcessingJob", {"ProcessingJobName": job})


@pytest.mark.parametrize("index", [0, 1, 2])
def test_endpoint_requests_match_the_api_model(cfg, index):
    client = _client()
    config = req.endpoint_config(cfg, cfg.models[index], RESOLVED, ROLE)
    assert_valid(client, "CreateModel", config["Model"])
    assert_valid(client, "CreateEndpointConfig", config["EndpointConfig"])
    assert_valid(client, "CreateEndpoint", config["Endpoint"])
    assert config["EndpointConfig"]["ProductionVariants"][0]["InstanceType"] == "ml.g5.2xlarge"
    assert config["Model"]["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]["S3DataType"] == "S3Prefix"
    with Stubber(client) as stub:
        stub.add_response(
            "create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"}, config["Model"]
        )
        stub.add_response(
            "create_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
            config["Endpoint"],
        )
        client.create_model(**config["Model"])
        client.create_endpoint(**config["Endpoint"])


def test_tarball_artifacts_use_model_data_url(cfg):
    config = req.endpoint_config(cfg, cfg.models[0], dict(RESOLVED, model_data="s3://b/model.tar.gz"), ROLE)
    assert config["Model"]["PrimaryContainer"]["ModelDataUrl"] == "s3://b/model.tar.gz"
    assert_valid(_client(), "CreateModel", config["Model"])


def test_processing_job_request_matches_the_api_model(cfg):
    for model in cfg.models:
        job = req.processing_job_name(cfg.pipeline.name, "manual__2026-11-28T20:15:11.357135+00:00", model.name)
        request = req.processing_config(
            cfg,
            model,
            job,
            ROLE,
            IMAGE,
            "s3://b/p/code/",
            "s3://b/p/run/",
            f"s3://b/p/results/{model.name}/",
            "us-east-1",
            release_uri=f"s3://b/p/released/{model.name}.json" if model.deploys else None,
        )
        assert_valid(_client(), "CreateProcessingJob", request)
        args = request["AppSpecification"]["ContainerArguments"]
        assert args[args.index("--model") + 1] == model.name
        # a deployed model's job waits for its endpoint, and says when it no longer needs it
        assert req.job_args(request).release_uri == (f"s3://b/p/released/{model.name}.json" if model.deploys else None)
        assert ("--wait-for-endpoint" in args) == model.deploys
        assert args[args.index("--endpoint-name") + 1] == model.endpoint_name


def test_endpoint_lookup_pages_through_every_result():
    client = _client()
    with Stubber(client) as stub:
        stub.add_response(
            "list_endpoints",
            {"Endpoints": [_summary("llm-eval-a-old", "InService")], "NextToken": "t1"},
            {"NameContains": "llm-eval-a"},
        )
        stub.add_response(
            "list_endpoints",
            {"Endpoints": [_summary("llm-eval-a", "Creating")]},
            {"NameContains": "llm-eval-a", "NextToken": "t1"},
        )
        assert req.endpoint_status(client, "llm-eval-a") == "Creating"


def _summary(name: str, status: str) -> dict:
    import datetime

    now = datetime.datetime(2026, 1, 1)
    return {
        "EndpointName": name,
        "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}",
        "CreationTime": now,
        "LastModifiedTime": now,
        "EndpointStatus": status,
    }


def test_registry_requests_match_the_api_model():
    sm, s3 = _client(), _client("s3")
    group, arn = "llm-eval-models", "arn:aws:sagemaker:us-east-1:123456789012:model-package/llm-eval-models/1"
    container = req.container(RESOLVED)
    metrics = {
        "FactualKnowledge/factual_knowledge": {
            "name": "factual_knowledge",
            "value": 0.61,
            "ci_low": 0.5,
            "ci_high": 0.7,
            "count": 48,
        }
    }
    metadata = {
        "dataset": "qa_general_knowledge",
        "model_id": "meta-textgeneration-llama-3-8b",
        "note": "{braces}",
        "review": "Approved by alice at 2026-11-30T02:00:00+00:00: answers <b>checked</b>",  # approval: review
    }
    run_id = "manual__2026-11-28T20:15:11.357135+00:00"
    with Stubber(sm) as sm_stub, Stubber(s3) as s3_stub:
        sm_stub.add_client_error("describe_model_package_group", "ValidationException", "does not exist")
        sm_stub.add_response(
            "create_model_package_group",
            {"ModelPackageGroupArn": arn.rsplit("/", 1)[0]},
            {"ModelPackageGroupName": group, "ModelPackageGroupDescription": ANY},
        )
        sm_stub.add_response("list_model_packages", {"ModelPackageSummaryList": []}, {"ModelPackageGroupName": group})
        encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/llmeval"}
        s3_stub.add_response(
            "put_object",
            {},
            {"Bucket": "bkt", "Key": ANY, "Body": ANY, "ContentType": "application/json", **encryption},
        )
        captured = {}

        def capture(params, **_):
            captured.update(params)

        sm.meta.events.register("provide-client-params.sagemaker.CreateModelPackage", capture)
        sm_stub.add_response("create_model_package", {"ModelPackageArn": arn})
        sm_stub.add_response(
            "describe_model_package",
            {
                "ModelPackageName": group,
                "ModelPackageArn": arn,
                "ModelPackageVersion": 1,
                "CreationTime": "2026-01-01T00:00:00Z",
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": []},
                "ModelApprovalStatus": APPROVED,
                "CustomerMetadataProperties": {"llmeval:model": "m", "llmeval:run_id": run_id},
            },
            {"ModelPackageName": arn},
        )
        card = {"evaluation_details": [{"name": "qa", "metric_groups": [{"name": "FactualKnowledge"}]}]}
        version = SageMakerModelRegistry(sm, s3, "s3://bkt/prefix", lambda _: container, encryption).register(
            group, "m", run_id, APPROVED, metrics, metadata, card
        )
    assert version.version == 1 and version.run_id == run_id
    assert_valid(sm, "CreateModelPackage", captured)
    assert captured["ModelCard"] == {"ModelCardContent": json.dumps(card), "ModelCardStatus": "Approved"}
    assert captured["CustomerMetadataProperties"]["note"] == "_braces_"
    assert captured["CustomerMetadataProperties"]["review"] == (
        "Approved by alice at 2026-11-30T02:00:00+00:00: answers _b_checked_/b_"
    )
    assert captured["CustomerMetadataProperties"]["FactualKnowledge/factual_knowledge"] == "0.61"
    assert captured["ModelApprovalStatus"] == APPROVED


def _on_g4dn(model):
    """The model on an instance type moto accepts (it rejects ml.g5)."""
    deployment = model.deployment_config.model_copy(update={"instance_type": "ml.g4dn.xlarge"})
    return model.model_copy(update={"deployment_config": deployment})


def _execute_twice(operator_cls, config: dict, **extra) -> None:
    """Run an operator twice with the same request, as a cleared and re-run task would."""
    for attempt in range(2):
        operator_cls(
            task_id=f"try{attempt}",
            config=json.loads(json.dumps(config)),
            aws_conn_id="aws_moto",
            region_name="us-east-1",
            deferrable=False,
            check_interval=1,
            **extra,
        ).execute({})


def test_rerunning_deploy_and_register_creates_nothing_twice(aws_env, cfg):
    from llmeval.targets.sagemaker.operators import ReusingEndpointOperator

    sm, s3 = clients(aws_env)
    model = _on_g4dn(cfg.models[0])
    config = req.endpoint_config(cfg, model, RESOLVED, ROLE)
    endpoint_op = ReusingEndpointOperator
    _execute_twice(endpoint_op, config)
    assert len(sm.list_models()["Models"]) == 1 and len(sm.list_endpoint_configs()["EndpointConfigs"]) == 1
    assert len(sm.list_endpoints()["Endpoints"]) == 1
    registry = SageMakerModelRegistry(sm, s3, "s3://llmeval-test/p", lambda _: req.container(RESOLVED))
    first = registry.register("grp", model.name, "run-1", APPROVED, {}, {})
    second = registry.register("grp", model.name, "run-1", APPROVED, {}, {})
    assert first.location == second.location
    assert len(sm.list_model_packages(ModelPackageGroupName="grp")["ModelPackageSummaryList"]) == 1
    deleted = req.delete_endpoint_resources(sm, req.resource_names(config), cfg.pipeline.name)
    assert len(deleted) == 3 and sm.list_endpoints()["Endpoints"] == []


def test_the_evaluation_code_is_uploaded_once_for_every_model_run_and_dag(aws_env, tmp_path, monkeypatch):
    """The code prefix is named by the code's content: a second upload finds the manifest and
    sends nothing; a changed custom algorithm is new code under a new prefix."""
    from llmeval.targets.sagemaker import settings, staging

    config = tmp_path / "code.yaml"
    config.write_text(yaml.safe_dump(sagemaker_config("code-once", ["m"])))
    code_cfg = load_config(config)
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "house_metric.py").write_text("SCORE = 1\n")
    (tmp_path / "algorithms" / "my_metrics").mkdir()  # custom:my_metrics.brevity:Brevity
    (tmp_path / "algorithms" / "my_metrics" / "brevity.py").write_text("SCORE = 3\n")
    monkeypatch.setenv("LLM_EVAL_INCLUDE_DIR", str(tmp_path))
    _, s3 = clients(aws_env)

    def objects(prefix: str) -> dict[str, str]:
        bucket, _, key = prefix.removeprefix("s3://").partition("/")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        return {o["Key"][len(key) :]: o["ETag"] for o in listed}

    first = staging.upload_code(code_cfg, settings.s3_hook(code_cfg))
    uploaded = objects(first)
    assert set(uploaded) == {*staging.code_files(), staging.CODE_MANIFEST}
    assert "llmeval/evaluation/__main__.py" in uploaded and "house_metric.py" in uploaded
    assert "my_metrics/brevity.py" in uploaded  # a dotted module ships whole
    bucket, _, key = first.removeprefix("s3://").partition("/")
    s3.delete_object(Bucket=bucket, Key=f"{key}house_metric.py")  # a second upload would put it back
    assert staging.upload_code(code_cfg, settings.s3_hook(code_cfg)) == first and "house_metric.py" not in objects(
        first
    )
    (tmp_path / "algorithms" / "house_metric.py").write_text("SCORE = 2\n")
    changed = staging.upload_code(code_cfg, settings.s3_hook(code_cfg))
    assert changed != first and set(objects(changed)) == set(uploaded)


def test_teardown_never_deletes_an_endpoint_it_did_not_create(aws_env, cfg):
    sm, _ = clients(aws_env)
    model = _on_g4dn(cfg.models[0])
    config = req.endpoint_config(cfg, model, RESOLVED, ROLE)
    foreign_tags = [{"Key": "team", "Value": "someone-else"}]
    sm.create_model(**dict(config["Model"], Tags=foreign_tags))
    sm.create_endpoint_config(**dict(config["EndpointConfig"], Tags=foreign_tags))
    sm.create_endpoint(**dict(config["Endpoint"], Tags=foreign_tags))
    assert req.delete_endpoint_resources(sm, req.resource_names(config), cfg.pipeline.name) == []
    assert len(sm.list_endpoints()["Endpoints"]) == 1 and len(sm.list_models()["Models"]) == 1


@pytest.mark.parametrize("bad", ["under_score", "-leading-hyphen", "x" * 64])
def test_the_pattern_check_rejects_names_aws_would_reject(bad):
    with pytest.raises(AssertionError):
        assert_valid(_client(), "CreateEndpoint", {"EndpointName": bad, "EndpointConfigName": "cfg"})


TRAINING = {
    "image_uri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:2.0.0-gpu-py310",
    "model_uri": "s3://jumpstart-cache-prod-us-east-1/huggingface-training/train-test.tar.gz",
    "script_uri": "s3://jumpstart-cache-prod-us-east-1/source-directory-tarballs/llm/sourcedir.tar.gz",
    "script_prepacked": True,  # through the code channel
    "hyperparameters": {"epoch": "1", "learning_rate": "0.0001", "sagemaker_program": "transfer_learning.py"},
}


def test_training_request_matches_the_api_model_and_passes_validation_data(cfg):
    tuned = cfg.model("llama3-8b-tuned")
    params = tuned.finetuning.parameters.model_copy(update={"keep_alive_period_in_seconds": 1800})
    tuned = tuned.model_copy(update={"finetuning": tuned.finetuning.model_copy(update={"parameters": params})})
    job = req.training_job_name(cfg.pipeline.name, "manual__2026-11-28T20:15:11.357135+00:00", tuned.name)
    request = req.training_config(
        cfg, tuned, job, ROLE, TRAINING, "s3://b/p/train/", "s3://b/p/validation/", "s3://b/p/out/", "us-east-1"
    )
    assert_valid(_client(), "CreateTrainingJob", request)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {
        "training": "s3://b/p/train/",
        "validation": "s3://b/p/validation/",
        "model": TRAINING["model_uri"],
        "code": TRAINING["script_uri"],
    }
    hyper = {k: json.loads(v) for k, v in request["HyperParameters"].items()}  # JSON-encoded, as the SDK does
    assert hyper["epoch"] == "1" and hyper["instruction_tuned"] == "True" and hyper["max_input_length"] == "512"
    assert hyper["sagemaker_program"] == "transfer_learning.py" and "keep_alive_period_in_seconds" not in hyper
    assert hyper["sagemaker_job_name"] == job and hyper["sagemaker_region"] == "us-east-1"
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.g5.12xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
        "KeepAlivePeriodInSeconds": 1800,
    }
    assert job == req.training_job_name(cfg.pipeline.name, "manual__2026-11-28T20:15:11.357135+00:00", tuned.name)


def test_rerunning_finetune_does_not_start_a_second_job(aws_env, cfg):
    from llmeval.targets.sagemaker.operators import ReusingTrainingOperator

    sm, _ = clients(aws_env)
    tuned = cfg.model("llama3-8b-tuned")
    tuned = tuned.model_copy(
        update={
            "finetuning": tuned.finetuning.model_copy(
                update={
                    "parameters": tuned.finetuning.parameters.model_copy(update={"instance_type": "ml.g4dn.xlarge"})
                }
            )
        }
    )
    _, s3 = clients(aws_env)
    s3.put_object(Bucket="llmeval-test", Key="t/train.jsonl", Body=b"{}")
    spec = json.loads((JUMPSTART_FIXTURES / "community_models/huggingface-llm-test-7b/specs_v1.2.0.json").read_text())
    bucket = "s3://jumpstart-cache-prod-us-east-1/"
    resolved = dict(
        TRAINING, model_uri=bucket + spec["training_artifact_key"], script_uri=bucket + spec["training_script_key"]
    )
    request = req.training_config(
        cfg, tuned, "ft-job-1", ROLE, resolved, "s3://llmeval-test/t/", None, "s3://llmeval-test/out/", "us-east-1"
    )
    training_op = ReusingTrainingOperator
    _execute_twice(training_op, request, check_if_job_exists=False, print_log=False)
    assert [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]] == ["ft-job-1"]


def test_iam_policy_resources_cover_every_name_the_dag_uses(cfg):
    from fnmatch import fnmatch

    from llmeval.iam import airflow_policy

    policy = airflow_policy(cfg, "s3://bkt/prefix", ROLE)
    by_sid = {s["Sid"]: s["Resource"] for s in policy["Statement"]}
    run = "scheduled__2026-11-28T00:00:00+00:00"

    def covered(sid: str, arn: str) -> bool:
        resources = by_sid[sid] if isinstance(by_sid[sid], list) else [by_sid[sid]]
        return any(fnmatch(arn, pattern) for pattern in resources)

    for model in cfg.models:
        config = req.endpoint_config(cfg, model, RESOLVED, ROLE)
        arn = "arn:aws:sagemaker:us-east-1:123456789012:"
        assert covered("Endpoints", arn + "endpoint/" + config["Endpoint"]["EndpointName"])
        assert covered("Endpoints", arn + "endpoint-config/" + config["EndpointConfig"]["EndpointConfigName"])
        assert covered("Endpoints", arn + "model/" + config["Model"]["ModelName"])
        assert covered(
            "EvaluationJobs", arn + "processing-job/" + req.processing_job_name(cfg.pipeline.name, run, model.name)
        )
        if model.finetuning:
            assert covered(
                "FineTuningJobs", arn + "training-job/" + req.training_job_name(cfg.pipeline.name, run, model.name)
            )
    assert not covered("Endpoints", "arn:aws:sagemaker:us-east-1:123456789012:endpoint/someone-elses-endpoint")
    assert covered("RunArtifacts", "arn:aws:s3:::bkt/prefix/llm-eval-sm-hybrid/abc/run/config.json")
    assert not covered("RunArtifacts", "arn:aws:s3:::bkt/other/file")
    assert by_sid["PassExecutionRole"] == [ROLE]


def test_sagemaker_role_policy_covers_what_the_jobs_and_endpoints_touch(cfg):
    from fnmatch import fnmatch

    from llmeval.iam import sagemaker_role_policy

    prefix = "s3://bkt/prefix"
    policy = sagemaker_role_policy(cfg, prefix)
    by_sid = {s["Sid"]: s for s in policy["Statement"]}

    def allowed(action: str, arn: str) -> bool:
        return any(
            action in s["Action"]
            and any(fnmatch(arn, r) for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]))
            for s in policy["Statement"]
        )

    for model in cfg.models:
        job = req.processing_config(
            cfg,
            model,
            "job",
            ROLE,
            "img",
            f"{prefix}/dag/abc/code/",
            f"{prefix}/dag/abc/run/",
            f"{prefix}/dag/abc/results/{model.name}/",
            "us-east-1",
            cache_uri=f"{prefix}/dag/cache/{model.name}/responses.sqlite",
        )
        s3_uris = [i["S3Input"]["S3Uri"] for i in job["ProcessingInputs"]] + [
            job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] + "results.json",
            job["AppSpecification"]["ContainerArguments"][-1],
        ]
        for uri in s3_uris:
            arn = "arn:aws:s3:::" + uri.removeprefix("s3://") + ("x" if uri.endswith("/") else "")
            assert allowed("s3:GetObject", arn) and allowed("s3:PutObject", arn), uri
        if model.kind != "bedrock":
            arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{req.endpoint_name(cfg, model)}"
            assert allowed("sagemaker:InvokeEndpoint", arn) and allowed("sagemaker:DescribeEndpoint", arn)
    assert not allowed("sagemaker:InvokeEndpoint", "arn:aws:sagemaker:us-east-1:1:endpoint/someone-elses")
    assert not allowed("s3:PutObject", "arn:aws:s3:::bkt/other/file")
    assert allowed("s3:GetObject", "arn:aws:s3:::jumpstart-private-cache-prod-us-east-1/meta/weights.bin")
    assert "Keys" not in by_sid and "VpcNetworkInterfaces" not in by_sid


def test_iam_policy_command(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmeval",
            "iam-policy",
            str(CONFIGS / "seed_scenario3_hybrid.yaml"),
            "--s3-prefix",
            "s3://my-bucket/llm-eval",
            "--role-arn",
            ROLE,
            "--artifacts-url",
            "s3://aws_default@my-store/llm-eval-runs",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    both = json.loads(out.stdout)
    policy, role = both["airflow"], both["sagemaker"]
    assert {s["Sid"] for s in policy["Statement"]} >= {"Endpoints", "EvaluationJobs", "FineTuningJobs", "Registry"}
    store = {s["Sid"]: s for s in policy["Statement"]}["RunStore"]
    assert store["Resource"] == ["arn:aws:s3:::my-store/llm-eval-runs/*"] and "s3:DeleteObject" in store["Action"]
    by_sid = {s["Sid"]: s for s in role["Statement"]}
    assert by_sid["RunInputsResultsCache"]["Resource"] == ["arn:aws:s3:::my-bucket/llm-eval/*"]
    assert "sagemaker:InvokeEndpoint" in by_sid["InvokeEndpoints"]["Action"]
    assert all(":endpoint/" in arn for arn in by_sid["InvokeEndpoints"]["Resource"])
    missing = subprocess.run(
        [sys.executable, "-m", "llmeval", "iam-policy", str(CONFIGS / "seed_scenario3_hybrid.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert missing.returncode == 2 and "--s3-prefix" in missing.stderr


def test_encryption_and_network_options_reach_every_request(cfg):
    kms = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    secured = cfg.model_copy(
        update={
            "sagemaker": cfg.sagemaker.model_copy(
                update={
                    "security": cfg.sagemaker.security.model_validate(
                        {
                            "volume_kms_key_id": kms,
                            "output_kms_key_id": kms,
                            "subnets": ["subnet-0abc1234"],
                            "security_group_ids": ["sg-0abc1234"],
                            "enable_network_isolation": True,
                            "enable_inter_container_traffic_encryption": True,
                        }
                    )
                }
            )
        }
    )
    client = _client()
    vpc = {"Subnets": ["subnet-0abc1234"], "SecurityGroupIds": ["sg-0abc1234"]}
    endpoint = req.endpoint_config(secured, secured.models[0], RESOLVED, ROLE)
    assert_valid(client, "CreateModel", endpoint["Model"])
    assert_valid(client, "CreateEndpointConfig", endpoint["EndpointConfig"])
    assert endpoint["Model"]["VpcConfig"] == vpc and endpoint["Model"]["EnableNetworkIsolation"] is True
    assert endpoint["EndpointConfig"]["KmsKeyId"] == kms
    model = secured.models[0]
    processing = req.processing_config(
        secured, model, "eval-job", ROLE, IMAGE, "s3://b/c/", "s3://b/r/", "s3://b/o/", "us-east-1"
    )
    assert_valid(client, "CreateProcessingJob", processing)
    assert processing["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == kms
    assert processing["ProcessingOutputConfig"]["KmsKeyId"] == kms
    assert processing["NetworkConfig"] == {"EnableInterContainerTrafficEncryption": True, "VpcConfig": vpc}
    tuned = secured.model("llama3-8b-tuned")
    training = req.training_config(
        secured, tuned, "ft-job", ROLE, TRAINING, "s3://b/t/", None, "s3://b/o/", "us-east-1"
    )
    assert_valid(client, "CreateTrainingJob", training)
    assert training["VpcConfig"] == vpc and training["EnableNetworkIsolation"] is True
    assert training["ResourceConfig"]["VolumeKmsKeyId"] == kms and training["OutputDataConfig"]["KmsKeyId"] == kms
    assert training["EnableInterContainerTrafficEncryption"] is True
    encryption = req.s3_encryption(secured)  # the objects the DAG writes itself
    assert encryption == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms} and req.s3_encryption(cfg) == {}
    assert_valid(_client("s3"), "PutObject", {"Bucket": "b", "Key": "k", "Body": b"x", **encryption})
    from llmeval.iam import airflow_policy

    statements = {s["Sid"]: s for s in airflow_policy(secured, "s3://b/p")["Statement"]}
    assert statements["RunArtifactsKey"]["Resource"] == [kms]  # S3 calls KMS for the DAG's own objects
    assert "RunArtifactsKey" not in {s["Sid"] for s in airflow_policy(cfg, "s3://b/p")["Statement"]}


def test_vpc_needs_subnets_and_security_groups_together():
    from pydantic import ValidationError

    from llmeval.config import SecuritySection

    with pytest.raises(ValidationError, match="both subnets and security_group_ids"):
        SecuritySection(subnets=["subnet-0abc1234"])


def _processing_job(status: str) -> dict:
    """DescribeProcessingJob's answer for the job `eval-job` in `status`."""
    return {
        "ProcessingJobName": "eval-job",
        "ProcessingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/eval-job",
        "ProcessingJobStatus": status,
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
        },
        "AppSpecification": {"ImageUri": IMAGE},
        "CreationTime": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize("status, stopped", [("InProgress", True), ("Completed", False), ("Failed", False)])
def test_a_still_running_evaluation_job_is_stopped(status, stopped):
    """When the evaluate task ends (timeout) with its job running, the job is stopped, not left billing."""
    client = _client()
    with Stubber(client) as stub:
        stub.add_response(
            "describe_processing_job",
            _processing_job(status),
            {"ProcessingJobName": "eval-job"},
        )
        if stopped:
            stub.add_response("stop_processing_job", {}, {"ProcessingJobName": "eval-job"})
        job = req.stop_job_if_running(client, "processing", "eval-job")
        assert job["ProcessingJobStatus"] == status  # the stop_processing_job call is checked by the Stubber
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("status", ["InProgress", "Completed", None])
def test_teardown_stops_a_training_job_left_running(status, cfg, monkeypatch, tmp_path):
    """A fine-tuning task that timed out leaves its job running: teardown stops it (GPU hours)."""
    from llmeval.targets.sagemaker import resources as target

    client = _client()
    monkeypatch.setattr(target, "hook", lambda _cfg: type("Hook", (), {"conn": client})())
    with Stubber(client) as stub:
        if status is None:
            stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found")
        else:
            stub.add_response("describe_training_job", _training_job(status), {"TrainingJobName": "ft-job"})
        if status == "InProgress":
            stub.add_response("stop_training_job", {}, {"TrainingJobName": "ft-job"})
        # no deployment was handed on: look for the endpoint by name, then for leftovers by prefix
        endpoint = req.endpoint_name(cfg, cfg.models[0])
        stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint")
        stub.add_response("list_endpoint_configs", {"EndpointConfigs": []}, {"NameContains": ANY})
        stub.add_response("list_models", {"Models": []}, {"NameContains": ANY})
        deleted = target.teardown(cfg, cfg.models[0].name, keep=False, endpoint=None, training_job="ft-job")
        stub.assert_no_pending_responses()
    assert deleted == (["training job ft-job (stopped)"] if status == "InProgress" else [])  # nothing deployed
    assert endpoint == cfg.models[0].endpoint_name  # looked up by its deterministic name


ENDPOINT_ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/llmeval-x"


def _endpoint(status: str) -> dict:
    return {
        "EndpointName": "llmeval-x",
        "EndpointArn": ENDPOINT_ARN,
        "EndpointConfigName": "llmeval-x-cfg",
        "EndpointStatus": status,
        "CreationTime": "2026-01-01T00:00:00Z",
        "LastModifiedTime": "2026-01-01T00:05:00Z",
        **({"FailureReason": "capacity"} if status == "Failed" else {}),
    }


@pytest.mark.parametrize("settles_as", ["InService", "Failed"])
def test_an_endpoint_still_being_created_is_waited_for_before_it_is_deleted(settles_as):
    """SageMaker refuses to delete a Creating endpoint: teardown (say, after a job that failed
    while its endpoint was still being created) waits until it is InService or Failed."""
    client = _client()
    seen = []
    with Stubber(client) as stub:
        stub.add_response("describe_endpoint", _endpoint("Creating"), {"EndpointName": "llmeval-x"})
        tags = {"Tags": [{"Key": req.OWNER_TAG, "Value": "pipe"}]}
        stub.add_response("list_tags", tags, {"ResourceArn": ENDPOINT_ARN})
        stub.add_response("describe_endpoint", _endpoint(settles_as), {"EndpointName": "llmeval-x"})  # the waiter
        stub.add_response("describe_endpoint", _endpoint(settles_as), {"EndpointName": "llmeval-x"})
        stub.add_response("delete_endpoint", {}, {"EndpointName": "llmeval-x"})
        deleted = req.delete_endpoint_resources(
            client, {"endpoint": ["llmeval-x"]}, "pipe", lambda kind, found: seen.append(found["EndpointStatus"]), 1
        )
        stub.assert_no_pending_responses()
    assert deleted == ["endpoint llmeval-x"] and seen == [settles_as]


@pytest.mark.parametrize(
    "marker, job_status, state",
    [
        (True, "InProgress", "released"),
        (False, "InProgress", None),
        (False, "Completed", "ended"),
        (False, "Failed", "ended"),
    ],
)
def test_the_release_check_reads_the_release_object_then_the_job(marker, job_status, state):
    from llmeval.targets.sagemaker.release import release_state

    s3, sm = _client("s3"), _client()
    with Stubber(s3) as s3_stub, Stubber(sm) as sm_stub:
        key = {"Bucket": "b", "Key": "p/released/m.json"}
        if marker:
            s3_stub.add_response("head_object", {"ContentLength": 40}, key)
        else:
            s3_stub.add_client_error("head_object", "404", "Not Found", 404, expected_params=key)
            sm_stub.add_response(
                "describe_processing_job", _processing_job(job_status), {"ProcessingJobName": "eval-job"}
            )
        found = release_state(s3, sm, "eval-job", "s3://b/p/released/m.json")
        s3_stub.assert_no_pending_responses()
        sm_stub.assert_no_pending_responses()
    assert (found and found["status"]) == state


def _training_job(status: str) -> dict:
    return {
        "TrainingJobName": "ft-job",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/ft-job",
        "TrainingJobStatus": status,
        "SecondaryStatus": "Training",
        "FailureReason": "ClientError: bad data",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/o/model.tar.gz"},
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": IMAGE},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.g5.12xlarge", "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": "2026-01-01T00:00:00Z",
    }


def _training_operator(client, **kwargs):
    from llmeval.targets.sagemaker.operators import ReusingTrainingOperator

    operator = ReusingTrainingOperator(task_id="finetune", config={"TrainingJobName": "ft-job"}, retries=2, **kwargs)
    operator.__dict__["hook"] = type("Hook", (), {"conn": client})()  # the cached hook, on the stubbed client
    return operator


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_training_job_that_failed_fails_the_task_for_good(status):
    """A retry would only find the job failed again: the task fails without its retries."""
    from airflow.sdk.exceptions import AirflowFailException

    client = _client()
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _training_job(status), {"TrainingJobName": "ft-job"})
        with pytest.raises(AirflowFailException, match=f"training job ft-job is {status}: ClientError: bad data"):
            _training_operator(client).execute({})
        stub.assert_no_pending_responses()


def test_a_running_training_job_is_waited_for_in_the_triggerer_at_the_configured_interval():
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
    from airflow.sdk.exceptions import TaskDeferred

    client = _client()
    operator = _training_operator(client, deferrable=True, check_interval=45, max_attempts=400, max_ingestion_time=9000)
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _training_job("InProgress"), {"TrainingJobName": "ft-job"})
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, SageMakerTrigger) and trigger.job_type == "Training"
    assert (trigger.waiter_delay, trigger.attempts) == (45, 400)
    assert deferred.value.timeout.total_seconds() == 9000


def test_an_endpoint_an_earlier_try_is_creating_is_waited_for_in_the_triggerer(monkeypatch):
    """A retried deploy finds its endpoint still Creating: it waits in the triggerer, polling
    at the configured interval up to max_ingestion_time, not with botocore's default waiter."""
    from airflow.sdk.exceptions import TaskDeferred

    from llmeval.targets.sagemaker.operators import ReusingEndpointOperator

    monkeypatch.setattr(req, "endpoint_status", lambda client, name: "Creating")
    monkeypatch.setattr(req, "check_owner", lambda client, name, pipeline: None)
    config = {
        "Endpoint": {"EndpointName": "ep", "Tags": [{"Key": req.OWNER_TAG, "Value": "p"}]},
        "EndpointConfig": {"ProductionVariants": [{"InstanceType": "ml.g5.2xlarge"}]},
    }
    operator = ReusingEndpointOperator(
        task_id="deploy", config=config, deferrable=True, check_interval=20, max_ingestion_time=3000
    )
    operator.__dict__["hook"] = type("Hook", (), {"conn": object()})()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    trigger = deferred.value.trigger
    assert (trigger.job_type, trigger.job_name, trigger.waiter_delay, trigger.attempts) == ("endpoint", "ep", 20, 150)
    assert deferred.value.method_name == "execute_complete" and deferred.value.timeout.total_seconds() == 3000


def test_the_policies_read_the_s3_data_the_config_names(cfg):
    """The catalog and provided outputs (read by the Airflow side) and the training data (read by
    the training job) get read statements; nothing else of those buckets."""
    from fnmatch import fnmatch

    from llmeval.iam import airflow_policy, sagemaker_role_policy

    tuned = cfg.model("llama3-8b-tuned")
    data = cfg.model_copy(
        update={
            "dataset": cfg.dataset.model_copy(
                update={"input_data_location": "s3://catalog/qa/{catalog_version}/qa.jsonl"}
            ),
            "models": [
                *[m for m in cfg.models if m.name != tuned.name],
                tuned.model_copy(
                    update={"finetuning": tuned.tuning.model_copy(update={"train_data_path": "s3://train-bucket/qa/"})}
                ),
            ],
        }
    )

    def allowed(policy: dict, action: str, arn: str) -> bool:
        return any(
            action in s["Action"]
            and any(fnmatch(arn, r) for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]))
            for s in policy["Statement"]
        )

    airflow = airflow_policy(data, "s3://llmeval-test/p")
    assert allowed(airflow, "s3:GetObject", "arn:aws:s3:::catalog/qa/v12/qa.jsonl")
    assert allowed(airflow, "s3:ListBucket", "arn:aws:s3:::catalog")
    assert not allowed(airflow, "s3:GetObject", "arn:aws:s3:::catalog/other/secret.jsonl")
    role = sagemaker_role_policy(data, "s3://llmeval-test/p")
    assert allowed(role, "s3:GetObject", "arn:aws:s3:::train-bucket/qa/part-1.jsonl")
    assert allowed(role, "s3:ListBucket", "arn:aws:s3:::train-bucket")
    assert not allowed(role, "s3:GetObject", "arn:aws:s3:::train-bucket/elsewhere.jsonl")
    assert assert_valid_policies(airflow, role)


def assert_valid_policies(*policies: dict) -> bool:
    """Every statement has the IAM shape (the policies go to IAM as they are)."""
    for policy in policies:
        assert policy["Version"] == "2012-10-17"
        for statement in policy["Statement"]:
            assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"} and statement["Resource"]
    return True
