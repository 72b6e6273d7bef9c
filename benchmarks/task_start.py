"""Task start-up on a Celery worker: with `llmeval.celery_config` vs Airflow's own preload.

A Celery worker forks each task process from itself; the task then parses its DAG file
(only its own DAG is built), reaches the run store through s3fs and creates an AWS client
through a provider hook. This forks such task starts from a parent that imported what
Airflow's worker preloads, alternately from a parent that also imported
`llmeval.celery_config.PRELOADED` and mapped the modules' files as the worker does at
start (`map_module_files`), and compares the children's median CPU time. Run with the
Airflow environment:

    PYTHONPATH=plugins .venv/bin/python benchmarks/task_start.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "include" / "configs" / "seed_scenario1_foundation_models.yaml"
DAG_ID, FORKS, ROUNDS, TARGET_RATIO = "llm-eval-sm-foundation-models", 5, 3, 0.3

PARENT = """
import importlib, json, os, runpy, sys, time
import jinja2.ext, airflow.sdk.execution_time.task_runner  # what Airflow's worker imports
import airflow.providers.standard.operators.python, airflow.providers.standard.operators.bash
from llmeval.celery_config import PRELOADED, map_module_files
if sys.argv[1] == "preloaded":
    for name in PRELOADED:
        importlib.import_module(name)
    map_module_files()
cpu = []
for _ in range({forks}):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a task process: parse the DAG file, reach the store, create an AWS client
        start = time.process_time()
        dags = runpy.run_path({dag_file!r})
        import s3fs
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        assert {dag_id!r} in dags and s3fs.S3FileSystem
        S3Hook(aws_conn_id=None, region_name="us-east-1").get_conn()
        os.write(w, str(time.process_time() - start).encode())
        os._exit(0)
    os.close(w)
    cpu.append(float(os.read(r, 64)))
    os.waitpid(pid, 0)
print(json.dumps(cpu))
"""


def starts(mode: str, configs: Path) -> list[float]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "plugins"),
        "LLM_EVAL_CONFIGS_DIR": str(configs),
        "_AIRFLOW_PARSING_CONTEXT_DAG_ID": DAG_ID,
    }
    code = PARENT.format(forks=FORKS, dag_file=str(ROOT / "dags" / "llm_evaluation.py"), dag_id=DAG_ID)
    out = subprocess.run([sys.executable, "-c", code, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(ROUNDS):
        cold += starts("airflow", CONFIG.parent)
        warm += starts("preloaded", CONFIG.parent)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"task start (parse {DAG_ID}, reach s3fs, create an S3 client); medians of {len(cold)} forked starts each")
    print(f"Airflow's worker preload only:    {c:.2f} s CPU")
    print(f"with llmeval.celery_config:       {w:.2f} s CPU")
    print(f"task_start: {w / c:.2f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
