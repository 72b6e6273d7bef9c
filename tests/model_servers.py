"""Real model servers for the tests, each in its own process, stopped by PID: the project's
local server (SmolLM2 through every API it speaks) and llama.cpp's OpenAI-compatible server
(`make openai-server-env`) on the same GGUF model, an independent implementation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmeval.evaluation.local_models import GGUF_MODELS

ROOT = Path(__file__).resolve().parents[1]  # not from conftest: the benchmarks use this module too
WORKER_PYTHON = str(ROOT / ".venv-worker" / "bin" / "python")
LLAMA_CPP_PYTHON = ROOT / ".venv-openai-server" / "bin" / "python"
API_KEY = "test-key-123"


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def project_server(names: list[str], scratch: Path, api_key: str | None = API_KEY) -> Iterator[str]:
    """`llmeval.evaluation.server` serving SmolLM2 under every name in `names`; yields its URL."""
    ready = scratch / "ready.json"
    cmd = [WORKER_PYTHON, "-m", "llmeval.evaluation.server", "--model-id", "smollm2-135m-instruct"]
    cmd += [part for name in names for part in ("--endpoint-name", name)] + ["--ready-file", str(ready)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "HF_HUB_OFFLINE": "1"}
    if api_key:
        env["LLMEVAL_SERVER_API_KEY"] = api_key
    with open(scratch / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local server did not start: {(scratch / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield json.loads(ready.read_text())["url"]
    finally:
        _stop(proc)


@contextmanager
def llama_cpp_server(alias: str, scratch: Path, api_key: str = API_KEY) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python) on the shipped GGUF; yields its URL."""
    if not LLAMA_CPP_PYTHON.exists():
        raise RuntimeError(f"{LLAMA_CPP_PYTHON} is missing: run `make openai-server-env`")
    package, filename = GGUF_MODELS["smollm2-135m-instruct"]
    where = f"from llmeval.evaluation.local_models import package_dir; print(package_dir({package!r}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    folder = subprocess.run([WORKER_PYTHON, "-c", where], env=env, capture_output=True, text=True, check=True).stdout
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [str(LLAMA_CPP_PYTHON), "-m", "llama_cpp.server", "--model", str(Path(folder.strip()) / filename)]
    cmd += ["--model_alias", alias, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    cmd += ["--api_key", api_key, "--n_threads", "2"]
    with open(scratch / "llama-cpp.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp did not start: {(scratch / 'llama-cpp.log').read_text()[-2000:]}")
            try:
                request = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": f"Bearer {api_key}"})
                urllib.request.urlopen(request, timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        _stop(proc)
