"""Inspect AI tasks as evaluations: loaded before the model is asked anything, run against the
project's provider (`llmeval.evaluation.inspect_model`), their results turned into the project's.

Each scorer's metrics become the task's scores (`Inspect/<task>/<metric>`, `<scorer>.<metric>`
when the task has several scorers), a mean metric (accuracy, mean) with the project's bootstrap
95% interval over the samples' reduced scores; Inspect's own stderr is kept beside it. Every
scored sample becomes a scored record, and Inspect's log is kept as `inspect/<task>.eval`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai._eval.loader import load_tasks
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.scorer import value_to_float

from llmeval.config import AlgorithmSection
from llmeval.config.inspect_tasks import TaskRef, parse_task
from llmeval.evaluation.generate import ModelClient
from llmeval.evaluation.inspect_model import ANSWERS, CLIENTS, PROVIDER
from llmeval.evaluation.score import bootstrap_ci
from llmeval.results import AlgorithmResult, Score
from llmeval.store import INSPECT_LOGS, RECORDS

log = logging.getLogger("llmeval.inspect")

MEAN_METRICS = ("accuracy", "mean")  # a metric that is the mean of the samples' scores: bootstrapped


class NotLoaded(ValueError):
    """An Inspect task of the config that cannot be loaded; `index` is its place in algorithms."""

    def __init__(self, index: int, message: str):
        super().__init__(f"algorithms[{index}].task {message}")
        self.index, self.reason = index, message


def task_location(ref: TaskRef) -> str:
    """What Inspect loads: an inspect_evals registry name, or the task file found on the path
    (include/algorithms, or the Processing job's code folder)."""
    if ref.file is None:
        return ref.spec
    for folder in sys.path:
        if folder and (path := Path(folder) / ref.file).is_file():
            return f"{path}@{ref.name}"
    raise FileNotFoundError(f"task file {ref.file} is not in include/algorithms (searched {sys.path})")


def load(sections: list[tuple[int, AlgorithmSection]]) -> dict[str, Task]:
    """Each Inspect task of the config, loaded (its arguments applied, its registry name resolved,
    its dataset read) before the model is asked anything; NotLoaded names the one that cannot be."""
    loaded = {}
    for i, section in sections:
        ref = parse_task(section.options["task"])
        try:
            tasks = load_tasks([task_location(ref)], section.options.get("task_args", {}))
        except Exception as exc:
            raise NotLoaded(i, f"{ref.spec}: {type(exc).__name__}: {exc}") from exc
        if len(tasks) != 1:
            raise NotLoaded(i, f"{ref.spec}: no such Inspect task")
        loaded[section.name] = tasks[0]
    return loaded


def main(argv: list[str] | None = None) -> int:
    """`python -m llmeval.evaluation.inspect_run CONFIG.json`: load the config's Inspect tasks as
    the evaluation would (`llmeval validate` runs it in this environment); prints a JSON list of
    {index, message}, exit status 1 when a task cannot be loaded."""
    from llmeval.evaluation.clients import read_config

    cfg = read_config(Path((argv or sys.argv[1:])[0]))
    problems = []
    for i, section in enumerate(cfg.algorithms):
        if section.is_inspect:
            try:
                load([(i, section)])
            except NotLoaded as exc:
                problems.append({"index": exc.index, "message": exc.reason})
    print(json.dumps(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())


def run_task(
    section: AlgorithmSection, task: Task, model: str, client: ModelClient, out_dir: Path, max_failed_ratio: float
) -> tuple[AlgorithmResult, list[dict[str, Any]], list[dict[str, Any]]]:
    """(the task's scores, its scored samples as records, the model's answers) for one model."""
    ref = parse_task(section.options["task"])
    CLIENTS[model] = client
    answers: list[dict[str, Any]] = []
    ANSWERS[model] = answers
    scratch = out_dir / INSPECT_LOGS / f".{ref.name}"
    with _logging_kept():
        logs = _evaluate(task, model, section, scratch, client, max_failed_ratio)
    kept = out_dir / INSPECT_LOGS / f"{ref.name}.eval"
    shutil.move(logs[0].location, kept)
    shutil.rmtree(scratch, ignore_errors=True)
    found = read_eval_log(str(kept))
    log.info("%s: Inspect's log of %s is %s", ref.algorithm, model, kept)
    if found.status != "success" or found.results is None:
        raise RuntimeError(f"{ref.spec}: {found.error.message if found.error else found.status}")
    result, rows = convert(ref, found)
    result.records_location = str(out_dir / RECORDS)
    return result, rows, answers


@contextmanager
def _logging_kept() -> Iterator[None]:
    """Inspect sets the root logger's level and adds its handler: the entry point's log lines
    (progress, the release mark the local target watches for) must go on as before."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def _evaluate(
    task: Task, model: str, section: AlgorithmSection, scratch: Path, client: ModelClient, max_failed_ratio: float
) -> list[EvalLog]:
    return inspect_eval(
        task,
        model=f"{PROVIDER}/{model}",
        limit=section.options.get("limit"),
        epochs=section.options.get("epochs", 1),
        log_dir=str(scratch),
        log_format="eval",
        display="none",
        log_level="warning",
        score_display=False,
        fail_on_error=max_failed_ratio or True,
        retry_on_error=0,  # the client retries; a sample that still fails counts against max_failed_ratio
        max_connections=client.target.max_concurrency,
    )


def convert(ref: TaskRef, found: EvalLog) -> tuple[AlgorithmResult, list[dict[str, Any]]]:
    """The task's metrics as scores, and its samples as scored records."""
    to_float = value_to_float()
    reduced: dict[str, dict[str, float]] = {}  # scorer -> sample id -> its reduced score
    for reduction in found.reductions or []:
        reduced[reduction.scorer] = {
            str(s.sample_id): to_float(s.value) for s in reduction.samples if isinstance(s.value, (int, float, str))
        }
    assert found.results is not None
    scorers = found.results.scores
    scores: list[Score] = []
    per_sample: dict[str, dict[str, float]] = {}
    for scorer in scorers:
        values = reduced.get(scorer.name, {})
        for metric in scorer.metrics.values():
            name = metric.name if len(scorers) == 1 else f"{scorer.name}.{metric.name}"
            if metric.name in MEAN_METRICS and values:
                low, high = bootstrap_ci(list(values.values()))
                scores.append(Score(name, float(metric.value), low, high, len(values)))
                for sample_id, value in values.items():
                    per_sample.setdefault(sample_id, {})[name] = value
            else:
                scores.append(Score(name, float(metric.value), count=len(values)))
    rows = []
    for sample in found.samples or []:
        sample_id = str(sample.id)
        if sample.epoch != 1 or sample_id not in per_sample:
            continue
        text = sample.input if isinstance(sample.input, str) else "\n".join(m.text for m in sample.input)
        usage = sample.model_usage.get(found.eval.model)
        rows.append(
            {
                "record_id": f"{ref.name}:{sample_id}",
                "task": ref.algorithm,
                "model_input": text,
                "target_output": sample.target if isinstance(sample.target, str) else " | ".join(sample.target),
                "model_output": sample.output.completion,
                "input_tokens": usage.input_tokens if usage else 0,
                "output_tokens": usage.output_tokens if usage else 0,
                "error": None,
                "scores": {ref.algorithm: per_sample[sample_id]},
            }
        )
    return AlgorithmResult(ref.algorithm, scores), rows
