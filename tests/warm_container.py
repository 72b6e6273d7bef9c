"""A warm interpreter for the emulated Processing containers of the distributed-Airflow tests.

Each container start would spend about 6 s of CPU importing fmeval (and through it the
SageMaker SDK, Ray and pandas). This server imports those third-party modules once, then
forks a child per job that runs `python -m llmeval.evaluation` with the job's arguments,
environment and working folder. The child forgets every `llmeval` module first and imports
the project's code from the job's own code folder (its PYTHONPATH), as the container does.

Run as a script in the worker environment: `python warm_container.py SOCKET`.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

ENTRY = ["python3", "-m", "llmeval.evaluation"]  # the container command this server runs


def _preload() -> None:
    """The third-party modules every job imports (fmeval's algorithms pull in the rest)."""
    import importlib

    from llmeval.algorithms import ALGORITHMS
    import llmeval.evaluation.__main__  # noqa: F401

    for spec in ALGORITHMS.values():
        if spec.fmeval_module and not spec.needs_hub_download:  # those load models from a hub when imported
            importlib.import_module(spec.fmeval_module)


def _run_job(request: dict) -> int:
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for name in [m for m in sys.modules if m == "llmeval" or m.startswith("llmeval.")]:
        del sys.modules[name]
    sys.path[:0] = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.argv = ["llmeval.evaluation", *request["args"]]
    try:
        runpy.run_module("llmeval.evaluation", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(), sys.stderr.flush()
    return code


def serve(path: str) -> None:
    _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        request = json.loads(conn.makefile().readline())
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = _run_job(request)
            conn.sendall(json.dumps({"returncode": code}).encode() + b"\n")
            os._exit(0)
        conn.close()


class WarmContainer:
    """The server's client; started and stopped (by PID, with its children) by the tests."""

    def __init__(self, python: str, folder: Path, env: dict[str, str]):
        self.socket = folder / "warm-container.sock"
        self.folder = folder
        log = folder / "warm-container.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [python, __file__, str(self.socket)], env=env, stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + 180
        while not self.socket.exists():  # bound once its imports are done
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                f"the warm container did not start: {log.read_text(errors='replace')[-2000:]}"
            )
            time.sleep(0.2)
        self.jobs = 0

    def run(self, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
        """Run one job like `subprocess.run([python, -m, llmeval.evaluation, *args])`."""
        self.jobs += 1
        out, err = cwd / f"job-{self.jobs}.stdout", cwd / f"job-{self.jobs}.stderr"
        request = {"args": args, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(self.socket))
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply = conn.makefile().readline()
        code = json.loads(reply)["returncode"] if reply else -signal.SIGKILL  # no reply: the child died
        return subprocess.CompletedProcess(args, code, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve(sys.argv[1])
