"""A warm worker interpreter for the in-process local-target tests.

Each local model's deploy starts a model server and its evaluate an evaluation worker, both
`$LLM_EVAL_WORKER_PYTHON -m <module> ...`; each spends 5-9 s of CPU importing torch,
transformers and fmeval and loading SmolLM2 before any work. This server does that once per
test session (the packaged model's weights are shared copy-on-write), then forks a child per
command. The tests give the product a launcher as its worker interpreter: the launcher hands
its module, arguments, environment, working folder and standard streams to the server and
stays the process the product sees. It forwards SIGTERM and SIGINT to the child and exits
with the child's code; when the launcher is killed (the product's SIGKILL to its process
group), the child kills itself.

    python warm_worker.py serve SOCKET        # started and stopped by the tests' fixture
    python -S warm_worker.py launch -m MODULE ARGS...
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import threading
from pathlib import Path

from warm_container import ForkServer, run_main, serve_forking

SOCKET_ENV = "LLM_EVAL_TEST_WARM_WORKER"
PRELOADED_MODEL = "smollm2-135m-instruct"


def _preload() -> None:
    """Import what the workers import and load the packaged model once; a server child asking
    for that model gets the loaded one."""
    import llmeval.evaluation.server  # noqa: F401
    from llmeval.evaluation import local_models
    from warm_container import _preload as import_fmeval

    import_fmeval()
    model_dir = local_models.resolve_model_dir(PRELOADED_MODEL)
    loaded, load = local_models.load_causal_lm(model_dir), local_models.load_causal_lm
    local_models.load_causal_lm = lambda path: loaded if Path(path) == model_dir else load(path)


def _die_with(launcher: int) -> None:
    """Kill this process once the launcher has ended (killed or not)."""
    pidfd = os.pidfd_open(launcher)
    select.select([pidfd], [], [])
    os.kill(os.getpid(), signal.SIGKILL)


def _run(conn: socket.socket) -> None:
    """Receive a launcher's request and streams, then run its module here."""
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while not message.endswith(b"\n"):
        message += conn.recv(1 << 20)
    request = json.loads(message)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[:0] = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    threading.Thread(target=_die_with, args=(request["launcher"],), daemon=True).start()
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    logging.root.handlers.clear()  # the module configures its own logging, as in a fresh process
    code = run_main(request["module"], request["args"])
    conn.sendall(json.dumps({"returncode": code}).encode() + b"\n")


def launch(argv: list[str]) -> None:
    """Be `python -m MODULE ARGS...` for the product, running in a child of the warm server."""
    assert argv[0] == "-m", f"the warm worker runs modules only: {argv}"
    request = {"module": argv[1], "args": argv[2:], "env": dict(os.environ), "cwd": os.getcwd()}
    request["launcher"] = os.getpid()
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(os.environ[SOCKET_ENV])
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    replies = conn.makefile()
    child = json.loads(replies.readline())["pid"]
    forwarded: list[int] = []

    def forward(sig, _frame):
        forwarded.append(sig)
        os.kill(child, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    reply = replies.readline()
    if reply:
        sys.exit(json.loads(reply)["returncode"])
    sig = forwarded[-1] if forwarded else signal.SIGKILL  # the child died of a signal: so do we
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


class WarmWorker(ForkServer):
    """The server (stopped by PID with its children) and its launcher script."""

    def __init__(self, python: str, folder: Path):
        self.launcher = folder / "python"
        self.launcher.write_text(f'#!/bin/sh\nexec "{python}" -S "{__file__}" launch "$@"\n')
        self.launcher.chmod(0o755)
        sock = folder / "warm-worker.sock"
        super().__init__([python, __file__, "serve", str(sock)], sock)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _preload()
        serve_forking(sys.argv[2], _run)
    else:
        launch(sys.argv[2:])
