"""Endpoint minutes: how long each model's endpoint lives, against the floor.

A full SageMaker-target DAG run (3 models) on a real Airflow (`airflow standalone`: scheduler,
triggerer, LocalExecutor) against a simulated control plane with SageMaker's delays scaled
down (1 minute -> 3 s): an endpoint is Creating for 18 s, a Processing job starts its
container 12 s after it is created, the endpoint answers 40 prompts at 4 at once and 3 s
each (30 s of generation), and a scorer that does not ask the model takes 15 s. Each
endpoint's alive time runs from CreateEndpoint to DeleteEndpoint (the control plane's clock).

The floor of an endpoint: creation until InService, plus first request to last answer.
The same config runs twice: with `early_release` (today's design: the job starts while the
endpoint is created and the endpoint is deleted when the job releases it) and without it
(the previous design: deploy waits for InService, teardown after collect). The seed
solution kept every endpoint until the pipeline's last step: its figure is the second
run's endpoints alive until the run ended. Run with the Airflow environment:

    PYTHONPATH=plugins:tests .venv/bin/python benchmarks/endpoint_minutes.py
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_EVAL_WORKER_PYTHON", str(ROOT / ".venv-worker" / "bin" / "python"))
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests")]

import yaml  # noqa: E402

from airflow_standalone import Standalone  # noqa: E402
from latency_server import LatencyServer  # noqa: E402
from sagemaker_fixtures import BUCKET, EmulatedJobs, clients, jumpstart_bucket, sagemaker_config, target_env  # noqa: E402
from warm_container import WarmContainer  # noqa: E402

CREATING_S, STARTUP_S, LATENCY_S, CAPACITY, RECORDS, SCORE_S = 18.0, 12.0, 3.0, 4, 40, 15.0
MODELS, TARGET_RATIO = ["alpha", "beta", "gamma"], 1.15


def config(name: str, early: bool) -> dict:
    cfg = sagemaker_config(name, MODELS)
    cfg["num_records"] = RECORDS
    cfg["sagemaker"].update(early_release=early, poll_interval_s=1, retry_delay_s=1)
    cfg["algorithms"].append({"algorithm": "custom:slow_scorer:SlowScorer", "seconds": SCORE_S / RECORDS})
    for model in cfg["models"]:
        model["evaluation_config"]["max_concurrency"] = CAPACITY
    return cfg


def include_folder(root: Path) -> Path:
    """The project's include folder, with the slow scorer among the custom algorithms."""
    include = root / "include"
    (include / "algorithms").mkdir(parents=True)
    for name in ("data", "instance_prices.yaml"):
        (include / name).symlink_to(ROOT / "include" / name)
    shutil.copy(ROOT / "tests" / "data" / "algorithms" / "slow_scorer.py", include / "algorithms")
    return include


def endpoint_names(name: str, early: bool) -> list[str]:
    from llmeval.config import EvalConfig
    from llmeval.targets.sagemaker.requests import endpoint_name

    cfg = EvalConfig.model_validate(config(name, early))
    return [endpoint_name(cfg, model) for model in cfg.models]


def main() -> int:
    from moto.server import ThreadedMotoServer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what it started on a kill too
    root = Path(tempfile.mkdtemp(prefix="llmeval-bench-endpoints-"))
    configs = root / "configs"
    configs.mkdir()
    pipelines = {"bench-early": True, "bench-late": False}
    for name, early in pipelines.items():
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(config(name, early)))
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    _, s3 = clients(moto_url)
    s3.create_bucket(Bucket=BUCKET)
    jumpstart_bucket(s3)
    env = {**target_env(moto_url), "LLM_EVAL_INCLUDE_DIR": str(include_folder(root))}
    airflow = Standalone(root, configs, root / "artifacts", env, teams=False)
    warm = WarmContainer(os.environ["LLM_EVAL_WORKER_PYTHON"], root, {**airflow.env, **os.environ})
    clock = time.time() - time.monotonic()  # wall clock -> monotonic
    ended: dict[str, float] = {}
    try:
        with (
            LatencyServer(latency_s=LATENCY_S, capacity=CAPACITY) as runtime,
            EmulatedJobs(moto_url, runtime.url, 3, warm, creating_s=CREATING_S, startup_s=STARTUP_S) as jobs,
        ):
            airflow.start()
            for name in pipelines:  # one after the other: the same machine for both
                run_id = airflow.trigger(name)
                state = airflow.wait_run(name, run_id, timeout_s=900)
                assert state == "success", airflow.task_states(name, run_id)
                run = airflow.api(f"/dags/{name}/dagRuns/{quote(run_id, safe='')}")[1]
                ended[name] = datetime.fromisoformat(run["end_date"]).timestamp() - clock
    finally:
        airflow.stop()
        warm.stop()
        moto.stop()
    created = {name: at for at, delta, name in jobs.endpoint_events if delta > 0}
    alive = {name: at - created[name] for at, delta, name in jobs.endpoint_events if delta < 0}
    floor = {
        name: jobs.in_service[name] - created[name] + last - first for name, (first, last) in runtime.asked.items()
    }
    design, floors = {}, {}
    for pipeline, early in pipelines.items():
        names = endpoint_names(pipeline, early)
        design[pipeline] = [alive[n] for n in names]
        floors[pipeline] = [floor[n] for n in names]
    design["seed"] = [ended["bench-late"] - created[n] for n in endpoint_names("bench-late", False)]
    ratio = {
        "today": sum(design["bench-early"]) / sum(floors["bench-early"]),
        "previous": sum(design["bench-late"]) / sum(floors["bench-late"]),
        "seed": sum(design["seed"]) / sum(floors["bench-late"]),
    }
    print(f"floor per endpoint (s): {', '.join(f'{f:.1f}' for f in floors['bench-early'])}")
    print(f"alive, today's design (s): {', '.join(f'{a:.1f}' for a in design['bench-early'])}")
    print(f"alive, previous design (s): {', '.join(f'{a:.1f}' for a in design['bench-late'])}")
    print(f"alive, seed design (s): {', '.join(f'{a:.1f}' for a in design['seed'])}")
    print(f"seed design: {ratio['seed']:.2f}x the floor; previous design: {ratio['previous']:.2f}x")
    shutil.rmtree(root, ignore_errors=True)
    print(f"endpoint_minutes: {ratio['today']:.2f}x (target <= {TARGET_RATIO}x)")
    return 0 if ratio["today"] <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
