"""`make test`: the whole suite, as two pytest processes at once.

Run one after the other, the tests keep about half of two cores busy: most of their time is
spent waiting on Airflow's processes, model servers and emulated SageMaker jobs. So the tests
that run Airflow's own processes (the Celery stack, the browser's standalone Airflow), then the
SageMaker DAG's (moto and emulated jobs), run in one process while the others run in a second:
about the same time each. Each process has its own Airflow home, artifacts
folder and ports (tests/conftest.py). The second's output is shown as it runs, the first's
(also kept in test-output/stack-tests.log) when it ends. Exit status: the first process's when
it failed, else the second's.

    python scripts/run_tests.py            # the whole suite
    python scripts/run_tests.py ARGS...    # pytest ARGS, in one process
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACKS = ["tests/test_celery_stack.py", "tests/test_browser.py", "tests/test_sagemaker_dag.py"]


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if argv:
        return subprocess.call([*pytest, *argv], cwd=ROOT)
    log = ROOT / "test-output" / "stack-tests.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:
        stacks = subprocess.Popen([*pytest, *STACKS], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            rest = subprocess.call([*pytest, *(f"--ignore={path}" for path in STACKS)], cwd=ROOT)
            stacks.wait()
        except KeyboardInterrupt:  # pytest tears its fixtures down on SIGINT (a terminal's Ctrl-C reaches both)
            try:
                stacks.wait(timeout=2)
            except subprocess.TimeoutExpired:
                stacks.send_signal(signal.SIGINT)
                stacks.wait()
            raise
    print(f"\n>> {' '.join(STACKS)} (ran beside the tests above; also in {log.relative_to(ROOT)})", flush=True)
    print(log.read_text(), flush=True)
    return stacks.returncode or rest


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
