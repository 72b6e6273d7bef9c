"""The project on a real distributed Airflow (tests/celery_stack.py): CeleryExecutor with two
workers, PostgreSQL, Redis, the triggerer; the run store and the prompt catalog in S3
(moto), SageMaker jobs emulated by this process. Runs are triggered through the REST API (and
a backfill through `airflow backfill create`), with faults injected into the stack's own
processes. The tests run in file order on one stack; the last one stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest
import yaml

from celery_stack import LOCAL_QUEUE, PYTHON, Stack, call_api, group_alive, wait_for
from conftest import ROOT, WORKER_PYTHON, local_config
from fault_matrix import record
from latency_server import LatencyServer
from llmeval.store import safe_segment
from sagemaker_fixtures import BUCKET, EmulatedJobs, clients, jumpstart_bucket, sagemaker_config, target_env
from warm_container import WarmContainer

pytestmark = pytest.mark.slow

STORE = f"s3://aws_moto@{BUCKET}/store"
TUNING = {
    "finetuning": {
        "train_data_path": "finetune_qa_train.jsonl",
        "parameters": {"instance_type": "ml.g4dn.xlarge", "epoch": 1},
    }
}
QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Egypt?", "Cairo"),
]
DATES = ["2026-01-01", "2026-01-02", "2026-01-03"]
VERSIONS = ["v1", "v2", "v3"]  # a catalog published under names, not days
VERSIONS_ASSET = "s3://llmeval-catalog/versions"
LOAD_DAGS, LOAD_POOL_SLOTS, LOAD_QUOTA = 10, 4, 6
STACK = "sagemaker, Celery stack (2 workers)"
FAST = {"poll_interval_s": 2, "retry_delay_s": 2}  # a test stack need not wait 30 s between polls


def _sagemaker(name: str, models: list[str], **sagemaker) -> dict:
    cfg = sagemaker_config(name, models)
    cfg["sagemaker"].update(FAST, **sagemaker)
    return cfg


def _configs() -> dict[str, dict]:
    """Every DAG the tests run, written before the stack starts (parsed once)."""
    chat = {
        "output": "[0].generation.content",
        "content_template": [[{"role": "user", "content": "PROMPT_PLACEHOLDER"}]],
        "inference_parameters": {"max_new_tokens": 6},
    }
    local_models = [
        {"name": "rest-a", "model_id": "smollm2-135m-instruct", "evaluation_config": chat},
        {"name": "rest-b", "model_id": "smollm2-135m-instruct", "evaluation_config": chat},
    ]
    configs = {
        "stack-local": local_config("stack-local", models=local_models, local={"queue": LOCAL_QUEUE}),
        "stack-unpinned": local_config("stack-unpinned"),  # refused: no queue under Celery
        "stack-sm": _sagemaker("stack-sm", ["sm-alpha", "sm-beta", "sm-tuned"]),
        "stack-backfill": _sagemaker("stack-backfill", ["bf-model"], deferrable=False),  # waits: other tests
        "stack-versions": _sagemaker("stack-versions", ["vr-model"], deferrable=False),  # waits: other tests
        "stack-worker-kill": _sagemaker("stack-worker-kill", ["wk-model"], deferrable=False),
        "stack-scheduler": _sagemaker("stack-scheduler", ["sc-one", "sc-two"]),
        "stack-redis": _sagemaker("stack-redis", ["rd-one", "rd-two"]),
        "stack-triggerer": _sagemaker("stack-triggerer", ["tr-model"]),
    }
    configs["stack-sm"]["models"][2].update(TUNING)
    backfill = configs["stack-backfill"]
    backfill.update(schedule="@daily", start_date=DATES[0], end_date=DATES[-1])
    backfill["registry"]["gate"] = [{"metric": "FactualKnowledge/factual_knowledge", "min_delta": 0.0}]
    backfill["dataset"]["input_data_location"] = f"s3://aws_moto@{BUCKET}/catalog/{{catalog_version}}/qa.jsonl"
    versions = configs["stack-versions"]
    versions.update(catalog_asset=VERSIONS_ASSET, catalog_versions="v[0-9]+")
    versions["dataset"]["input_data_location"] = f"s3://aws_moto@{BUCKET}/versions/{{catalog_version}}/qa.jsonl"
    for i in range(LOAD_DAGS):
        name = f"stack-load-{i}"
        configs[name] = _sagemaker(
            name,
            [f"ld{i}-a", f"ld{i}-b", f"ld{i}-c"],
            pool_prefix="stack-load-",
            poll_interval_s=4,
            endpoint_quotas={"ml.g4dn.xlarge": LOAD_QUOTA},
        )
        configs[name]["num_records"] = 2
    return configs


def _catalog(s3) -> None:
    """Three prompt-catalog versions, dated and named: version i holds questions i..i+2 (each
    overlaps the last by two)."""
    for i, (day, name) in enumerate(zip(DATES, VERSIONS, strict=True)):
        rows = [
            {"question": q, "answer": a, "category": "capitals"}
            for j, (q, a) in enumerate(QUESTIONS)
            if i <= j <= i + 2
        ]
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        s3.put_object(Bucket=BUCKET, Key=f"catalog/{day}/qa.jsonl", Body=body)
        s3.put_object(Bucket=BUCKET, Key=f"versions/{name}/qa.jsonl", Body=body)


class Deployment:
    """The stack and what stands in for AWS around it."""

    def __init__(self, stack: Stack, jobs: EmulatedJobs, runtime: LatencyServer, moto_url: str):
        self.stack, self.jobs, self.runtime = stack, jobs, runtime
        self.sm, self.s3 = clients(moto_url)

    def json(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def results(self, dag_id: str, run_id: str, model: str) -> dict:
        return self.json(f"store/runs/{dag_id}/{safe_segment(run_id)}/models/{model}/results.json")

    def nothing_left(self) -> None:
        assert self.sm.list_endpoints()["Endpoints"] == []
        assert self.sm.list_endpoint_configs()["EndpointConfigs"] == []
        assert self.sm.list_models()["Models"] == []

    def run(self, dag_id: str, conf: dict | None = None, timeout_s: float = 600) -> tuple[str, str]:
        run_id = self.stack.trigger(dag_id, conf)
        return run_id, self.stack.wait_run(dag_id, run_id, timeout_s)

    def running_task(self, dag_id: str, run_id: str, task_id: str) -> dict:
        def running():
            return next(
                (
                    t
                    for t in self.stack.task_instances(dag_id, run_id)
                    if t["task_id"] == task_id and t["state"] in ("running", "deferred")
                ),
                None,
            )

        return wait_for(running, 300, f"{dag_id}: {task_id} running", every_s=0.5)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, moto_url):
    root = tmp_path_factory.mktemp("stack")
    configs = root / "configs"
    configs.mkdir()
    for name, cfg in _configs().items():
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    sm, s3 = clients(moto_url)
    s3.create_bucket(Bucket=BUCKET)
    jumpstart_bucket(s3)
    _catalog(s3)
    env = {**target_env(moto_url), "LLM_EVAL_ARTIFACTS_URL": STORE}
    stack = Stack(root, configs, env)
    warm = WarmContainer(WORKER_PYTHON, root, {**stack.env, "PYTHONPATH": str(ROOT / "plugins")})
    with LatencyServer(latency_s=0.05) as runtime, EmulatedJobs(moto_url, runtime.url, 3, warm) as jobs:
        try:
            stack.start()
            expected = len(_configs())  # all but the refused one, and stack-versions' republisher
            wait_for(
                lambda: stack.api("/dags?limit=100")[1]["total_entries"] == expected,
                300,
                f"{expected} DAGs parsed",
                every_s=2,
            )
            yield Deployment(stack, jobs, runtime, moto_url)
        finally:
            stack.stop()
            warm.stop()


def test_sagemaker_dag_runs_on_both_workers_with_deferred_waits(deployment):
    stack = deployment.stack
    run_id, state = deployment.run("stack-sm")
    tis = stack.task_instances("stack-sm", run_id)
    assert state == "success", stack.task_states("stack-sm", run_id)
    hosts = {t["hostname"] for t in tis if t["hostname"]}
    assert hosts == {"worker-a", "worker-b"}, hosts
    # the waits for endpoints and jobs ran in the triggerer, not on a worker
    fired = stack.fired_triggers("stack-sm", run_id)
    # (deploy only starts the endpoint: the job waits for InService, evaluate for its release and end)
    assert {"model.evaluate", "tuned_model.evaluate"} <= fired, fired
    for model in ("sm-alpha", "sm-beta", "sm-tuned"):
        result = deployment.results("stack-sm", run_id, model)
        assert result["status"] == "succeeded" and result["generation"]["records_evaluated"] == 6
    tuned = deployment.results("stack-sm", run_id, "sm-tuned")
    assert tuned["metadata"]["training"]["job_name"].startswith("ft-sm-tuned-")
    deployment.nothing_left()


def test_local_target_stays_on_its_queue_and_takes_params(deployment):
    stack = deployment.stack
    status, body = stack.api("/dags/stack-local/dagRuns", "POST", {"logical_date": None, "conf": {"models": ["nope"]}})
    assert status == 400 and "nope" in json.dumps(body)
    status, body = stack.api("/dags/stack-local/dagRuns", "POST", {"logical_date": None, "conf": {"num_records": 0}})
    assert status == 400 and "num_records" in json.dumps(body)
    run_id, state = deployment.run("stack-local", {"models": ["rest-b"], "num_records": 2})
    assert state == "success", stack.task_states("stack-local", run_id)
    hosts = {t["hostname"] for t in stack.task_instances("stack-local", run_id) if t["hostname"]}
    assert hosts == {"worker-a"}  # the one worker serving llmeval-local
    result = deployment.results("stack-local", run_id, "rest-b")
    assert result["status"] == "succeeded" and result["generation"]["records_total"] == 2
    models = deployment.keys(f"store/runs/stack-local/{safe_segment(run_id)}/models/")
    assert {k.split("/")[5] for k in models} == {"rest-b"}
    # the local config without a queue is refused, with its reason, as the DAG's import error
    errors = stack.api("/importErrors")[1]["import_errors"]
    message = next(e["stack_trace"] for e in errors if "stack-unpinned" in e["stack_trace"])
    assert "local.queue" in message and "CeleryExecutor" in message


def test_scheduler_driven_backfill_over_three_catalog_versions(deployment):
    stack = deployment.stack
    env = {**stack.env, "AIRFLOW_HOME": str(stack.root / "cli")}
    argv = [PYTHON, "-m", "airflow", "backfill", "create", "--dag-id", "stack-backfill"]
    argv += ["--from-date", DATES[0], "--to-date", DATES[-1], "--max-active-runs", "1"]
    created = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]

    def three_ended():
        runs = stack.api("/dags/stack-backfill/dagRuns?limit=10")[1]["dag_runs"]
        ended = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if len(ended) == 3 else None

    runs = sorted(wait_for(three_ended, 600, "three backfill runs ended", every_s=3), key=lambda r: r["partition_key"])
    assert [r["run_type"] for r in runs] == ["backfill"] * 3
    assert [r["partition_key"] for r in runs] == DATES  # a dated catalog: one partition per day
    assert [r["state"] for r in runs] == ["success"] * 3
    entries = [
        deployment.json(k) for k in sorted(deployment.keys("store/history/stack-backfill/")) if k.endswith(".json")
    ]
    assert [e["catalog_version"] for e in entries] == DATES
    stats = [deployment.results("stack-backfill", r["dag_run_id"], "bf-model")["generation"] for r in runs]
    assert [s["records_total"] for s in stats] == [3, 3, 3]
    assert [s["cache_hits"] for s in stats] == [0, 2, 2]
    endpoint = next(e for e in deployment.runtime.by_endpoint if "bf-model" in e)
    assert deployment.runtime.by_endpoint[endpoint] == 5  # 3 prompts, then one new prompt per version
    first = deployment.json(f"store/runs/stack-backfill/{safe_segment(runs[0]['dag_run_id'])}/registration.json")
    assert first["approval_status"] == "Approved" and "no approved champion yet" in first["gate"]["reason"]
    # the later versions are gated against that champion, its scores read from the history in S3
    last = deployment.json(f"store/runs/stack-backfill/{safe_segment(runs[-1]['dag_run_id'])}/registration.json")
    assert "champion bf-model" in last["gate"]["reason"], last["gate"]
    trend = deployment.s3.get_object(Bucket=BUCKET, Key="store/history/stack-backfill/trend.html")["Body"].read()
    assert trend.decode().count("<circle") >= 3
    deployment.nothing_left()


def _worker_log(stack: Stack, dag_id: str, run_id: str, task_id: str) -> str:
    """A task's log, from whichever worker ran it."""
    found = stack.root.glob(f"worker-*/logs/dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt=*.log")
    return "".join(path.read_text(errors="replace") for path in found)


def test_named_catalog_versions_are_backfilled_published_and_rerun_by_partition_key(deployment):
    """`llmeval backfill --versions` runs one partition per version through the scheduler (and
    skips, or finds, what is done); `airflow dags clear --partition-key` re-runs a version and
    replaces its history entry; the catalog asset's event with a partition key starts a run of
    that version, the deprecated event naming it in its extra is republished with the key, an
    event with neither starts nothing. (A key outside the pattern or without a catalog file:
    test_partitions.py.)"""
    stack, dag_id = deployment.stack, "stack-versions"
    base = f"http://127.0.0.1:{stack.api_port}"
    token = call_api(f"{base}/auth/token")[1]["access_token"]
    config = str(stack.configs / f"{dag_id}.yaml")
    env = {**stack.env, "AIRFLOW_HOME": str(stack.root / "cli")}

    def llmeval(*args: str) -> str:
        argv = [PYTHON, "-m", "llmeval", "backfill", config, *args, "--url", base, "--token", token, "--poll-s", "2"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    def runs() -> list[dict]:
        return stack.api(f"/dags/{dag_id}/dagRuns?limit=50&order_by=run_after")[1]["dag_runs"]

    def history(version: str) -> dict:
        return deployment.json(f"store/history/{dag_id}/{version}.json")

    said = llmeval("--versions", "v1", "v2", "--concurrency", "2")
    assert "v1: triggered" in said and "2 of 2 version(s) succeeded" in said, said
    said = llmeval("--versions", "v1", "v2")  # nothing to do again
    assert "v1: skipped, it already has a successful run" in said and len(runs()) == 2, said
    said = llmeval("--missing")  # v3: the one version under the catalog prefix without a result
    assert "v3: triggered" in said and "v1" not in said, said
    by_key = {r["partition_key"]: r for r in runs()}
    assert sorted(by_key) == VERSIONS and {r["state"] for r in by_key.values()} == {"success"}
    assert {r["run_type"] for r in by_key.values()} == {"manual"}
    stats = [deployment.results(dag_id, by_key[v]["dag_run_id"], "vr-model")["generation"] for v in VERSIONS]
    assert [s["records_total"] for s in stats] == [3, 3, 3]  # each version evaluated on its own file
    assert [s["cache_hits"] for s in stats] == [0, 2, 2]  # the prompts two versions share are asked once
    assert [history(v)["run_id"] for v in VERSIONS] == [by_key[v]["dag_run_id"] for v in VERSIONS]

    # a version re-run: every run of partition v2 cleared, run again, its history entry replaced
    before = history("v2")
    argv = [PYTHON, "-m", "airflow", "dags", "clear", dag_id, "--partition-key", "v2", "-y"]
    cleared = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert cleared.returncode == 0, cleared.stdout[-2000:] + cleared.stderr[-2000:]
    wait_for(lambda: history("v2")["recorded_at"] > before["recorded_at"], 300, "v2 recorded again", every_s=2)
    assert stack.wait_run(dag_id, before["run_id"], 300) == "success" and history("v2")["run_id"] == before["run_id"]

    # the publisher: an asset event with the partition key starts that version's run
    status, assets = stack.api(f"/assets?uri_pattern={urllib.parse.quote(VERSIONS_ASSET, safe='')}")
    asset_id = assets["assets"][0]["id"]

    def publish(body: dict) -> None:
        status, event = stack.api("/assets/events", "POST", {"asset_id": asset_id, **body})
        assert status == 200, event

    def new_run(known: int) -> dict:
        found = wait_for(lambda: (r := runs())[known:] and r, 120, "a new run", every_s=1)[known]
        return {**found, "state": stack.wait_run(dag_id, found["dag_run_id"], 300)}

    publish({"partition_key": "v2"})
    published = new_run(3)
    assert published["partition_key"] == "v2" and published["run_type"] == "asset_triggered", published
    assert published["state"] == "success" and history("v2")["run_id"] == published["dag_run_id"]
    # the deprecated form: the version in the event's extra, republished with the key
    publish({"extra": {"catalog_version": "v3"}})
    republished = new_run(4)
    assert republished["partition_key"] == "v3" and republished["state"] == "success", republished
    shim = stack.api(f"/dags/{dag_id}__catalog_events/dagRuns")[1]["dag_runs"]
    assert [r["state"] for r in shim] == ["success"]
    assert "DEPRECATED: the catalog version in an asset event's extra" in _worker_log(
        stack, f"{dag_id}__catalog_events", shim[0]["dag_run_id"], "republish"
    )

    endpoints = dict(deployment.runtime.by_endpoint)
    publish({})  # neither a key nor a version: the republisher fails saying how to publish, nothing runs

    def shim_runs() -> list[dict]:
        return stack.api(f"/dags/{dag_id}__catalog_events/dagRuns?order_by=run_after")[1]["dag_runs"]

    failed = wait_for(lambda: (r := shim_runs())[1:] and r[1]["state"] == "failed" and r[1], 120, "republisher failed")
    said = _worker_log(stack, f"{dag_id}__catalog_events", failed["dag_run_id"], "republish")
    assert f"an event of {VERSIONS_ASSET} has no partition key, so it starts no run of {dag_id}" in said
    assert len(runs()) == 5 and deployment.runtime.by_endpoint == endpoints
    deployment.nothing_left()


@pytest.mark.faults
def test_worker_killed_while_evaluating(deployment):
    stack = deployment.stack
    run_id = stack.trigger("stack-worker-kill")
    ti = deployment.running_task("stack-worker-kill", run_id, "model.evaluate")
    victim = ti["hostname"]
    job = wait_for(lambda: next((j for j in deployment.jobs.jobs_started if "wk-model" in j), None), 120, "job")
    stack.processes[victim].stop(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        state = stack.wait_run("stack-worker-kill", run_id)
    finally:
        stack.processes[victim].start()
    evaluate = [t for t in stack.task_instances("stack-worker-kill", run_id) if t["task_id"] == "model.evaluate"][0]
    assert state == "success", stack.task_states("stack-worker-kill", run_id)
    assert evaluate["try_number"] == 2 and evaluate["hostname"] != victim
    assert deployment.jobs.jobs_started.count(job) == 1  # the retry re-attached to the running job
    endpoint = next(e for e in deployment.runtime.by_endpoint if "wk-model" in e)
    assert deployment.runtime.by_endpoint[endpoint] == 6  # every prompt asked once
    assert deployment.results("stack-worker-kill", run_id, "wk-model")["status"] == "succeeded"
    deployment.nothing_left()
    record(
        "Celery worker SIGKILLed while evaluate waits on it",
        STACK,
        **{
            "failed model / step": "wk-model / evaluate (worker lost)",
            "resources left": "none",
            "report": "success",
            "retry": f"on the other worker after {time.monotonic() - killed_at:.0f}s: re-attached to the running "
            "job, 0 prompts asked twice",
        },
    )


def _fault_mid_run(deployment, dag_id: str, task_id: str, inject, fault: str) -> None:
    stack = deployment.stack
    run_id = stack.trigger(dag_id)
    deployment.running_task(dag_id, run_id, task_id)
    started = time.monotonic()
    inject(stack)
    state = stack.wait_run(dag_id, run_id)
    assert state == "success", stack.task_states(dag_id, run_id)
    models = [m["name"] for m in _configs()[dag_id]["models"]]
    assert all(deployment.results(dag_id, run_id, m)["status"] == "succeeded" for m in models)
    deployment.nothing_left()
    record(
        fault,
        STACK,
        **{
            "failed model / step": f"none (during {task_id})",
            "resources left": "none",
            "other models": f"all {len(models)} succeeded",
            "report": f"success {time.monotonic() - started:.0f}s after the fault",
        },
    )


@pytest.mark.faults
def test_scheduler_stopped_and_restarted_mid_run(deployment):
    _fault_mid_run(
        deployment,
        "stack-scheduler",
        "model.evaluate",
        lambda stack: stack.restart("scheduler"),
        "scheduler stopped (SIGTERM) and started again mid-run",
    )


@pytest.mark.faults
def test_redis_restarted_mid_run(deployment):
    def restart_redis(stack):
        stack.processes["redis"].stop(signal.SIGKILL)
        time.sleep(5)
        stack.processes["redis"].start()

    _fault_mid_run(
        deployment, "stack-redis", "model.deploy", restart_redis, "Redis killed mid-run, back empty 5 s later"
    )


@pytest.mark.faults
def test_triggerer_killed_while_a_wait_is_deferred(deployment):
    stack = deployment.stack
    run_id = stack.trigger("stack-triggerer")
    wait_for(
        lambda: any(
            t["state"] == "deferred"
            for t in stack.task_instances("stack-triggerer", run_id)
            if "evaluate" in t["task_id"]
        ),
        300,
        "evaluate deferred",
        every_s=0.5,
    )
    started = time.monotonic()
    stack.restart("triggerer", signal.SIGKILL)
    state = stack.wait_run("stack-triggerer", run_id)
    assert state == "success", stack.task_states("stack-triggerer", run_id)
    assert deployment.results("stack-triggerer", run_id, "tr-model")["status"] == "succeeded"
    deployment.nothing_left()
    record(
        "triggerer SIGKILLed while evaluate is deferred",
        STACK,
        **{
            "failed model / step": "none (tr-model / evaluate deferred)",
            "resources left": "none",
            "report": f"success {time.monotonic() - started:.0f}s after the kill",
            "retry": "the new triggerer took the trigger over",
        },
    )


@pytest.mark.timeout(2400)  # about 15 minutes on 2 cores: Airflow's own cost per task dominates
def test_ten_dags_at_once_within_the_pool_and_the_endpoint_quota(deployment):
    stack = deployment.stack
    pool = "stack-load-ml.g4dn.xlarge"
    status, body = stack.api("/pools", "POST", {"name": pool, "slots": LOAD_POOL_SLOTS, "include_deferred": False})
    assert status in (200, 201), body
    events_before = len(deployment.jobs.endpoint_events)
    occupied: list[int] = []
    sampling = threading.Event()

    def sample_the_pool():
        while not sampling.is_set():
            occupied.append(stack.api(f"/pools/{pool}")[1]["occupied_slots"])
            time.sleep(1)

    sampler = threading.Thread(target=sample_the_pool, daemon=True)
    started = time.monotonic()
    sampler.start()
    try:
        runs = {f"stack-load-{i}": stack.trigger(f"stack-load-{i}") for i in range(LOAD_DAGS)}
        states = {dag: stack.wait_run(dag, run, timeout_s=1200) for dag, run in runs.items()}
    finally:
        sampling.set()
        sampler.join()
    wall = time.monotonic() - started
    assert set(states.values()) == {"success"}, states
    tis = [t for dag, run in runs.items() for t in stack.task_instances(dag, run)]
    assert {t["task_id"].rpartition(".")[2] for t in tis if t["pool"] == pool} == {"deploy"}
    assert max(occupied) <= LOAD_POOL_SLOTS and max(occupied) > 0, max(occupied)
    events = deployment.jobs.endpoint_events[events_before:]
    live = EmulatedJobs.max_live(events)
    assert len(events) == 2 * LOAD_DAGS * 3 and live <= LOAD_QUOTA, (len(events), live)
    assert deployment.keys("store/leases/") == []  # every lease given back
    deployment.nothing_left()
    print(
        f"load: {LOAD_DAGS} DAGs x 3 models, {len(tis)} task instances in {wall:.0f}s "
        f"({len(tis) / wall * 60:.0f} tasks/min); pool slots used <= {max(occupied)}; live endpoints <= {live}"
    )
    record(
        f"load: {LOAD_DAGS} DAGs x 3 models triggered at once",
        STACK,
        **{
            "resources left": "none, every lease given back",
            "other models": f"all {LOAD_DAGS * 3} succeeded",
            "report": f"{wall:.0f}s, {len(tis) / wall * 60:.0f} tasks/min; pool of {LOAD_POOL_SLOTS}: <= "
            f"{max(occupied)} deploys at once; quota {LOAD_QUOTA}: <= {live} live endpoints",
        },
    )


def test_the_stack_stops_every_process_it_started(deployment):
    left = deployment.stack.stop()
    assert left == [], f"still running after SIGKILL: {left}"
    assert deployment.jobs.warm.jobs > 0  # the emulated containers ran in the warm interpreter
    deployment.jobs.warm.stop()
    assert not group_alive(deployment.jobs.warm.proc.pid)
