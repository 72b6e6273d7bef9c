"""`make ui`: `airflow standalone` with this project's DAGs and plugin on 127.0.0.1, in the
Airflow home `make demo` used (so the demo's runs are there). Prints the URL and the login once
the UI answers; Ctrl-C stops every Airflow process it started.

    python scripts/ui.py [--port 8080]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

USER = "admin"


def login(home: Path) -> str:
    """The admin's password, made once per Airflow home and kept there."""
    passwords = home / "ui-passwords.json"
    if not passwords.exists():
        home.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({USER: secrets.token_urlsafe(12)}))
        passwords.chmod(0o600)
    return json.loads(passwords.read_text())[USER]


def environment(home: Path, port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=url,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "ui-passwords.json"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as resp:
            body = json.loads(resp.read())
    except OSError:
        return False
    return all(body.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))


def stop(proc: subprocess.Popen) -> None:
    """SIGINT to the whole group (standalone stops its children on it), then SIGKILL."""
    for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: the Airflow processes go too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("UI_PORT", "8080")))
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the UI")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("AIRFLOW_HOME", Path.cwd() / ".airflow"))
    password = login(home)
    env = environment(home, args.port)
    log = open(home / "ui.log", "ab")  # noqa: SIM115  (open for the life of the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    print(f">> starting Airflow (api-server, scheduler, dag-processor, triggerer); log: {home / 'ui.log'}", flush=True)
    try:
        deadline = time.monotonic() + args.timeout
        while not healthy(args.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"Airflow did not come up; see {home / 'ui.log'}", file=sys.stderr)
                return 1
            time.sleep(2)
        print(f">> Airflow UI: http://127.0.0.1:{args.port}/  login: {USER} / {password}", flush=True)
        print(
            ">> the demo's runs: LLM evaluations in the navigation, or a run's Leaderboard tab; Ctrl-C stops",
            flush=True,
        )
        proc.wait()
        return proc.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop(proc)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
