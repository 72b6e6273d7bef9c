"""Run every benchmark (`make benchmarks`), show its output, and write the verdicts to
docs/benchmarks.json, which the benchmarks page of the docs is made from.

Each benchmark prints its verdict as its last line: `<name>: <ratio>x (target <= <bound>x)`.
Exit status 1 when a benchmark failed to print one or is over its bound.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERDICT = re.compile(r"^(?P<name>\w+): (?P<ratio>[0-9.]+)x \(target <= (?P<bound>[0-9.]+)x\)$")
AIRFLOW, WORKER = ROOT / ".venv" / "bin" / "python", ROOT / ".venv-worker" / "bin" / "python"
NOISE = ("sagemaker.config", "row/s", "Tasks:", "\x1b[A", "Running 0:")  # SDK banners, Ray progress bars
BENCHMARKS = [  # (script, interpreter, what it compares)
    ("generate_throughput.py", WORKER, "2,000 prompts to a simulated endpoint and OpenAI-compatible URL, vs its limit"),
    ("score_overhead.py", WORKER, "the score stage over 1,000 saved outputs, vs three fmeval evaluate() calls"),
    ("robustness_throughput.py", WORKER, "1,000 robustness model calls while scoring, vs the endpoint's limit"),
    ("judge_throughput.py", WORKER, "LLMJudge rating 1,000 answers, vs the judge endpoint's limit"),
    ("inspect_overhead.py", WORKER, "an Inspect task of 400 samples through the project, vs plain `inspect eval`"),
    ("judge_agreement.py", WORKER, "how often the kappa's 95% interval misses a simulated judge's true one, vs 5%"),
    ("parse_time.py", AIRFLOW, "parsing 100 configs x 5 models, vs a hand-written DAG file with the same operators"),
    ("task_start.py", AIRFLOW, "a Celery task's start with llmeval.celery_config, vs Airflow's own preload"),
    ("endpoint_minutes.py", AIRFLOW, "each endpoint's life in a SageMaker-target run, vs its floor"),
]


def run(script: str, python: Path) -> dict | None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"))
    proc = subprocess.Popen(
        [str(python), str(ROOT / "benchmarks" / script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = ""
    for line in proc.stdout or ():
        if line.strip() and not any(noise in line for noise in NOISE):
            print(f"  {line.rstrip()}", flush=True)
            last = line.strip()
    proc.wait()
    found = VERDICT.match(last)
    return {k: (float(v) if k != "name" else v) for k, v in found.groupdict().items()} if found else None


def main() -> int:
    selected = sys.argv[1:]
    results, failed = [], []
    for script, python, what in BENCHMARKS:
        if selected and script.removesuffix(".py") not in selected:
            continue
        print(f">> {script}", flush=True)
        verdict = run(script, python)
        if verdict is None:
            failed.append(f"{script}: no verdict line")
            continue
        results.append({**verdict, "what": what})
        if verdict["ratio"] > verdict["bound"]:
            failed.append(f"{script}: {verdict['ratio']}x over {verdict['bound']}x")
    out = ROOT / "docs" / "benchmarks.json"
    previous = json.loads(out.read_text()).get("results", []) if out.exists() else []
    measured = {r["name"] for r in results}
    kept = [r for r in previous if r["name"] not in measured]  # a partial run keeps the others' figures
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    order = [script.removesuffix(".py") for script, _, _ in BENCHMARKS]
    rows = sorted(kept + results, key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    out.write_text(json.dumps({"machine": machine, "results": rows}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    for problem in failed:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
