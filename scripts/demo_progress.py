"""`make demo`'s console: reads `airflow dags test` output on stdin, keeps all of it in the log
file named as the first argument, and prints as it happens one line per task (started, ended
with its state and time), the project's own progress lines (model servers, fine-tuning steps,
generation and judging progress, selection, registration), and the errors.
"""

from __future__ import annotations

import re
import sys
import time

STARTED = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>\S+) map_index=(?P<index>-?\d+)")
ENDED = re.compile(r"\[DAG TEST\] end task task_id=(?P<task>\S+) map_index=(?P<index>-?\d+)")
STATE = re.compile(r"new_state=(?P<state>\w+)")
# the project's loggers, as the task runner prints them: "<time> [info ] <message> [llmeval.x] loc=..."
OURS = re.compile(r"^\S+ \[(?P<level>\w+)\s*\] (?P<message>.*?)\s+\[llmeval[.\w]*\](?: loc=\S+)?\s*$")
WORKER = re.compile(r"^llmeval\.[\w.]+ (INFO|WARNING|ERROR) (?P<message>.*)$")  # a worker's own log line
SHOWN = (
    "rec/s",
    "step ",
    "evaluating ",
    "started model server",
    "is serving",
    "stopped model server",
    "leaderboard:",
    "registered ",
    "not registered",
    "champion gate",
    "selected",
    "failed",
    "tuned model",
)


def _name(task: str, index: str) -> str:
    return task if index == "-1" else f"{task}[{index}]"


def relay(lines, log, out) -> None:
    started: dict[str, float] = {}
    state = ""
    for line in lines:
        log.write(line)
        if found := STARTED.search(line):
            name = _name(found["task"], found["index"])
            started[name] = time.monotonic()
            print(f"  > {name}", file=out, flush=True)
        elif found := ENDED.search(line):
            name = _name(found["task"], found["index"])
            took = time.monotonic() - started.pop(name, time.monotonic())
            print(
                f"  {'x' if state == 'failed' else '='} {name} {state or 'done'} ({took:.0f} s)", file=out, flush=True
            )
            state = ""
        elif found := STATE.search(line):
            state = found["state"]
        elif found := OURS.match(line.rstrip("\n")):
            message = found["message"]
            inner = WORKER.match(message)
            text = inner["message"] if inner else message
            if found["level"] in ("error", "warning") or any(word in text for word in SHOWN):
                print(f"      {text[:200]}", file=out, flush=True)


def main() -> int:
    with open(sys.argv[1], "w", encoding="utf-8") as log:
        relay(sys.stdin, log, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
