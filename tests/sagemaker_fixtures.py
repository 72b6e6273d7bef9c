"""A moto server (S3 + SageMaker control plane), the Airflow connection and Variables
that point the SageMaker target at it, and an emulator for Processing jobs: moto's jobs
run nothing, so the emulator runs the job's own container command (the project's
evaluation entry point) in the worker environment on the job's S3 inputs, against a
SageMaker-runtime-compatible server, and uploads its outputs where the job says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from moto.core.utils import utcnow

from conftest import DATASET, ROOT, WORKER_PYTHON
from latency_server import LatencyServer
from warm_container import ENTRY, WarmContainer

REGION = "us-east-1"
BUCKET = "llmeval-test"
ROLE = "arn:aws:iam::123456789012:role/llmeval-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llmeval-worker:latest"
JUMPSTART_FIXTURES = ROOT / "tests" / "data" / "jumpstart"


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_url, monkeypatch):
    """Airflow connection `aws_moto`, the target's Variables, a bucket; fresh moto state."""
    import urllib.request

    from airflow.sdk.io import store as object_stores

    object_stores._STORE_CACHE.clear()  # filesystems built for an earlier moto server (another port)

    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    _, s3 = clients(moto_url)
    s3.create_bucket(Bucket=BUCKET)
    jumpstart_bucket(s3)
    for name, value in target_env(moto_url).items():
        monkeypatch.setenv(name, value)
    return moto_url


def target_env(moto_url: str) -> dict[str, str]:
    """The environment that points the SageMaker target at the moto server: the connection
    `aws_moto`, the target's Variables and the JumpStart spec fixtures."""
    return {
        "AIRFLOW_CONN_AWS_MOTO": moto_connection(moto_url),
        "AIRFLOW_VAR_LLM_EVAL_SAGEMAKER_ROLE_ARN": ROLE,
        "AIRFLOW_VAR_LLM_EVAL_S3_PREFIX": f"s3://{BUCKET}/llmeval",
        "AIRFLOW_VAR_LLM_EVAL_PROCESSING_IMAGE": IMAGE,
        "AWS_JUMPSTART_MANIFEST_LOCAL_ROOT_DIR_OVERRIDE": str(JUMPSTART_FIXTURES),
        "AWS_JUMPSTART_SPECS_LOCAL_ROOT_DIR_OVERRIDE": str(JUMPSTART_FIXTURES),
    }


def moto_connection(moto_url: str) -> str:
    """The Airflow connection `aws_moto` (as AIRFLOW_CONN_AWS_MOTO) for the moto server."""
    extra = {"region_name": REGION, "endpoint_url": moto_url}
    return json.dumps({"conn_type": "aws", "login": "test", "password": "test", "extra": extra})


def jumpstart_bucket(s3) -> None:
    """Stand-in for the public JumpStart bucket: the fixture model's artifacts and scripts."""
    spec_file = JUMPSTART_FIXTURES / "community_models" / "huggingface-llm-test-7b" / "specs_v1.2.0.json"
    spec = json.loads(spec_file.read_text())
    bucket = f"jumpstart-cache-prod-{REGION}"
    s3.create_bucket(Bucket=bucket)
    for key in ("training_artifact_key", "training_script_key", "hosting_artifact_key"):
        name = spec[key] + ("weights.bin" if spec[key].endswith("/") else "")
        s3.put_object(Bucket=bucket, Key=name, Body=b"placeholder")


EMULATOR_AGENT = "llmeval-test-harness"


def clients(moto_url: str):
    from botocore.config import Config

    kw = {
        "config": Config(user_agent_extra=EMULATOR_AGENT),
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    return boto3.client("sagemaker", **kw), boto3.client("s3", **kw)


def sagemaker_config(name: str, models: list[str]) -> dict:
    return {
        "target": "sagemaker",
        "pipeline": {"name": name},
        "dataset": dict(DATASET),
        "num_records": 6,
        "models": [
            {
                "name": m,
                "model_id": "huggingface-llm-test-7b",
                "model_version": "*",
                "deployment_config": {"instance_type": "ml.g4dn.xlarge", "num_instances": 1},
                "evaluation_config": {
                    "output": "[0].generated_text",
                    "content_template": "PROMPT_PLACEHOLDER",
                    "inference_parameters": {"max_new_tokens": 8},
                },
            }
            for m in models
        ],
        "algorithms": [{"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>"}],
        # moto has no IAM policy simulation nor Service Quotas: preflight's own tests stub those
        "sagemaker": {"aws_conn_id": "aws_moto", "region": REGION, "poll_interval_s": 1, "preflight": False},
        "registry": {"model_package_group_name": f"{name}-models"},
    }


def claude(model_id: str, max_tokens: int) -> dict:
    """A Bedrock Anthropic model entry (its messages body and where its answer is)."""
    return {
        "model_provider": "bedrock",
        "model_id": model_id,
        "evaluation_config": {
            "output": "content[0].text",
            "content_template": {
                "anthropic_version": "bedrock-2023-05-31",
                "messages": [{"role": "user", "content": "PROMPT_PLACEHOLDER"}],
            },
            "inference_parameters": {"max_tokens": max_tokens},
        },
    }


CLAUDE_JUDGE = {"name": "sm-judge", **claude("anthropic.claude-3-5-sonnet-20240620-v1:0", 200)}  # LLMJudge's judge


def _download_prefix(s3, uri: str, local: Path) -> None:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            target = local / obj["Key"][len(prefix) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))


def emulate_processing_job(
    config: dict, moto_url: str, runtime_url: str, warm: WarmContainer | None = None, scratch: Path | None = None
) -> None:
    """Run the Processing job's container command locally, as SageMaker would (in a child of
    the warm container when given: the same command without the interpreter's start-up), on
    a disk of its own under `scratch`."""
    _, s3 = clients(moto_url)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        root = Path(tmp)

        def local(path: str) -> str:
            return str(root / path.lstrip("/"))

        for item in config["ProcessingInputs"]:
            _download_prefix(s3, item["S3Input"]["S3Uri"], Path(local(item["S3Input"]["LocalPath"])))
        app = config["AppSpecification"]
        args = [local(a) if a.startswith("/opt/ml/") else a for a in app["ContainerArguments"]]
        env = {k: (local(v) if v.startswith("/opt/ml/") else v) for k, v in config["Environment"].items()}
        env.update(
            PATH=os.environ["PATH"],
            HOME=os.environ.get("HOME", "/root"),
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=runtime_url,
            AWS_ENDPOINT_URL_BEDROCK_RUNTIME=runtime_url,
            AWS_ENDPOINT_URL_S3=moto_url,  # the response cache kept between jobs, the release object
            AWS_ENDPOINT_URL_SAGEMAKER=moto_url,  # waiting for the endpoint to be InService
            AWS_ENDPOINT_URL_SECRETS_MANAGER=moto_url,  # the API keys of OpenAI-compatible models
            HF_HUB_OFFLINE="1",
        )
        if warm is not None and app["ContainerEntrypoint"] == ENTRY:
            done = warm.run(args, env, root)
        else:
            entry = [WORKER_PYTHON if part == "python3" else part for part in app["ContainerEntrypoint"]]
            done = subprocess.run(entry + args, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"SageMaker job failed because the container exited {done.returncode}: "
                f"{done.stdout[-1500:]}{done.stderr[-1500:]}"
            )
        for output in config["ProcessingOutputConfig"]["Outputs"]:
            bucket, _, prefix = output["S3Output"]["S3Uri"].removeprefix("s3://").partition("/")
            out_dir = Path(local(output["S3Output"]["LocalPath"]))
            for path in out_dir.rglob("*"):
                if path.is_file():
                    s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(out_dir)}")


@pytest.fixture(scope="session")
def warm_container(tmp_path_factory):
    """One warm interpreter for the session's in-process Processing jobs (stopped by PID)."""
    warm = WarmContainer(WORKER_PYTHON, tmp_path_factory.mktemp("warm"), {**os.environ})
    yield warm
    warm.stop()


@pytest.fixture
def processing_emulator(aws_env, warm_container):
    """SageMaker Processing as the DAG sees it: a job stays InProgress while its container
    command runs here (one at a time), then turns Completed or Failed. Yields the runtime."""
    server = LatencyServer(latency_s=0.001, failing_endpoints=frozenset({"llmeval-sm-gamma-failing"}))
    with server, EmulatedJobs(aws_env, server.url, parallel=1, warm=warm_container):
        yield server


def xcoms(dag_run, task_id: str, key: str = "return_value") -> dict[int, object]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            XComModel.get_many(run_id=dag_run.run_id, task_ids=task_id, dag_ids=dag_run.dag_id, key=key)
        )
        return {row.map_index: XComModel.deserialize_value(row) for (row,) in rows}


class EmulatedJobs:
    """SageMaker as a deployment sees it, for processes outside this one (an Airflow stack):
    while active, a Processing job that the in-process moto server creates stays InProgress
    until its container command has run here (at most `parallel` at once), then turns
    Completed, or Failed with the container's error as FailureReason. A second job with a
    running job's name is refused, as SageMaker does. Endpoint creations and deletions are
    recorded in `endpoint_events` as (monotonic time, +1 or -1, name), job ends in `jobs_ended`.
    SageMaker's delays, scaled down: an endpoint stays Creating for `creating_s` after
    CreateEndpoint; a job starts its container `startup_s` after CreateProcessingJob (or after
    `slow_starts[prefix]` for a job whose name starts with that prefix)."""

    def __init__(
        self,
        moto_url: str,
        runtime_url: str,
        parallel: int = 2,
        warm: WarmContainer | None = None,
        creating_s: float = 0.0,
        startup_s: float = 0.0,
        slow_starts: dict[str, float] | None = None,
    ):
        self.moto_url, self.runtime_url, self.warm = moto_url, runtime_url, warm
        self.creating_s, self.startup_s, self.slow_starts = creating_s, startup_s, slow_starts or {}
        self.closing = threading.Event()
        self.jobs_ended: dict[str, float] = {}  # job name -> monotonic time it turned Completed or Failed
        self.in_service: dict[str, float] = {}  # endpoint -> monotonic time it turned InService
        self.scratch = Path(tempfile.mkdtemp(prefix="processing-jobs-"))  # SageMaker's disks, not a task's
        self.pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="processing-job")
        self.endpoint_events: list[tuple[float, int, str]] = []
        self.jobs_started: list[str] = []
        self.lock = threading.Lock()

    def __enter__(self):
        from moto.sagemaker import responses

        self._originals = {
            name: getattr(responses.SageMakerResponse, name)
            for name in ("create_processing_job", "create_endpoint", "delete_endpoint")
        }
        emulator = self

        def create_processing_job(response):
            name = response._get_param("ProcessingJobName")
            jobs = response.sagemaker_backend.processing_jobs
            if name in jobs and jobs[name].processing_job_status == "InProgress":
                from moto.sagemaker.exceptions import ValidationError

                raise ValidationError(message=f"Job name must be unique: {name} is running")
            result = emulator._originals["create_processing_job"](response)
            job = jobs[name]
            job.processing_job_status = "InProgress"
            request = json.loads(response.body)
            with emulator.lock:
                emulator.jobs_started.append(name)
            emulator.pool.submit(emulator._run, job, request)
            return result

        def create_endpoint(response):
            result = emulator._originals["create_endpoint"](response)
            name = response._get_param("EndpointName")
            emulator._event(+1, name)
            if emulator.creating_s:
                endpoint = response.sagemaker_backend.endpoints[name]
                endpoint.endpoint_status = "Creating"
                threading.Timer(emulator.creating_s, emulator._serve, (endpoint,)).start()
            return result

        def delete_endpoint(response):
            result = emulator._originals["delete_endpoint"](response)
            emulator._event(-1, response._get_param("EndpointName"))
            return result

        responses.SageMakerResponse.create_processing_job = create_processing_job
        responses.SageMakerResponse.create_endpoint = create_endpoint
        responses.SageMakerResponse.delete_endpoint = delete_endpoint
        return self

    def __exit__(self, *exc):
        from moto.sagemaker import responses

        for name, original in self._originals.items():
            setattr(responses.SageMakerResponse, name, original)
        self.closing.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _event(self, delta: int, name: str) -> None:
        with self.lock:
            self.endpoint_events.append((time.monotonic(), delta, name))

    def _serve(self, endpoint) -> None:
        if endpoint.endpoint_status == "Creating":  # not deleted meanwhile
            endpoint.endpoint_status = "InService"
            with self.lock:
                self.in_service[endpoint.endpoint_name] = time.monotonic()

    def _run(self, job, request: dict) -> None:
        name = job.processing_job_name
        startup_s = next((s for prefix, s in self.slow_starts.items() if name.startswith(prefix)), self.startup_s)
        starts = time.monotonic() + startup_s  # provisioning the instance, pulling the image, downloading inputs
        while time.monotonic() < starts and job.processing_job_status == "InProgress":
            self.closing.wait(min(0.2, startup_s))
        if job.processing_job_status != "InProgress" or self.closing.is_set():  # stopped meanwhile
            return
        try:
            emulate_processing_job(request, self.moto_url, self.runtime_url, self.warm, self.scratch)
            status, reason = "Completed", None
        except Exception as exc:  # the job's failure, as SageMaker reports it (at most 1024 characters)
            message = str(exc)
            status, reason = "Failed", message if len(message) <= 1000 else f"{message[:150]} ... {message[-800:]}"
        if job.processing_job_status == "InProgress":
            job.processing_job_status = status
            job.processing_end_time = job.last_modified_time = utcnow()
            with self.lock:
                self.jobs_ended[job.processing_job_name] = time.monotonic()
            if reason:
                job.failure_reason = reason

    @staticmethod
    def max_live(events: list[tuple[float, int, str]]) -> int:
        """The most endpoints alive at once over `events` (from `endpoint_events`)."""
        live = peak = 0
        for _, delta, _ in sorted(events):
            live += delta
            peak = max(peak, live)
        return peak
