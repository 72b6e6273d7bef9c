"""A warm interpreter for the emulated Processing containers of the distributed-Airflow tests.

Each container start would spend about 6 s of CPU importing fmeval (and through it the
SageMaker SDK, Ray and pandas). This server imports those third-party modules once, then
forks a child per job that runs `python -m llmeval.evaluation` with the job's arguments,
environment and working folder. The child forgets every `llmeval` module first and imports
the project's code from the job's own code folder (its PYTHONPATH), as the container does.

Run as a script in the worker environment: `python warm_container.py SOCKET`.
"""

from __future__ import annotations

import contextlib
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

    import llmeval.evaluation.__main__  # noqa: F401
    from llmeval.algorithms import ALGORITHMS

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
    return run_main("llmeval.evaluation", request["args"])


def run_main(module: str, args: list[str]) -> int:
    """Run `python -m module args` in this process; its exit code."""
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(), sys.stderr.flush()
    return code


def serve_forking(path: str, handle) -> None:
    """Accept connections on the UNIX socket `path`; each is handled by `handle(conn)` in a
    forked child (which then exits), so every request starts from this process's imports."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            handle(conn)
            os._exit(0)
        conn.close()


def _handle(conn: socket.socket) -> None:
    code = _run_job(json.loads(conn.makefile().readline()))
    conn.sendall(json.dumps({"returncode": code}).encode() + b"\n")


class ForkServer:
    """A preloading server in its own session, ready once its socket exists; stopped by PID
    with its children."""

    def __init__(self, argv: list[str], sock: Path, env: dict[str, str] | None = None):
        self.socket = sock
        log = sock.with_suffix(".log")
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + 180
        while not sock.exists():  # bound once its imports are done
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                f"{sock.stem} did not start: {log.read_text(errors='replace')[-2000:]}"
            )
            time.sleep(0.2)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


class WarmContainer(ForkServer):
    """The server's client; started and stopped (by PID, with its children) by the tests."""

    def __init__(self, python: str, folder: Path, env: dict[str, str]):
        sock = folder / "warm-container.sock"
        super().__init__([python, __file__, str(sock)], sock, env)
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


if __name__ == "__main__":
    _preload()
    serve_forking(sys.argv[1], _handle)
