"""The evaluation entry point: generate, then score, for one model.

The same command line (`llmeval.evaluation.job_args.JobArgs`) runs in the local worker
environment and in a SageMaker Processing container (the package shipped as its code input).
Writes outputs.jsonl (one row per record), records.jsonl (answered rows with every
score), results.json (the result schema) and report.html (this model's scores with
intervals, categories and sample records). Exit status 0 when the model succeeded.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmeval.config import EvalConfig, ModelSection
from llmeval.dataset import read_jsonl, write_jsonl
from llmeval.evaluation import RELEASE_MARK, cache_sync
from llmeval.evaluation.clients import judge_clients, model_target, read_config
from llmeval.evaluation.endpoint_release import announce_release, wait_in_service
from llmeval.evaluation.generate import (
    ModelClient,
    generate_with,
)
from llmeval.evaluation.job_args import JobArgs
from llmeval.evaluation.provided import provided_rows, read_outputs
from llmeval.evaluation.score import score_outputs
from llmeval.report import render_model_html
from llmeval.results import AlgorithmResult, GenerationStats, ModelResult, ResourceUsage, token_usage, write_result
from llmeval.store import MODEL_REPORT, OUTPUTS, RECORDS

log = logging.getLogger("llmeval.evaluation")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 2)


def run(args: JobArgs) -> ModelResult:
    cfg = read_config(args.config)
    model = cfg.model(args.model)
    records = read_jsonl(args.dataset)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with cache_sync.opened(args.cache_dir, args.cache_uri) as cache:
        judges = judge_clients(cfg, args.judges, args.region, cache)
        if args.outputs:  # a model served elsewhere: its outputs were given, nothing to ask
            started = time.perf_counter()
            shown = model.outputs_location or str(args.outputs)
            rows = provided_rows(records, read_outputs(args.outputs, shown), shown)
            return _score(cfg, model, rows, args, started, 0, None, judges)
        target = model_target(model, args.endpoint_name, args.endpoint_url, args.model_identity, args.region)
        if args.wait_for_endpoint:  # the job started while the endpoint was being created
            wait_in_service(target.endpoint_name, target.region or "us-east-1", args.wait_for_endpoint)
        client = ModelClient(target, model.evaluation_config.prompt_template, cache)
        try:
            tasks = _inspect_tasks(cfg)  # loaded before the model is asked anything
        except ValueError as exc:
            return ModelResult(
                model.name, "failed", failed_step="load", error=f"an Inspect task cannot be loaded: {exc}"
            )
        started = time.perf_counter()
        rows = generate_with(client, records)
        return _score(cfg, model, rows, args, started, client.invoker.retries, client, judges, tasks)


def _inspect_tasks(cfg: EvalConfig) -> dict[str, Any]:
    sections = [(i, s) for i, s in enumerate(cfg.algorithms) if s.is_inspect]
    if not sections:
        return {}
    from llmeval.evaluation import inspect_run

    return inspect_run.load(sections)


def _run_inspect(
    cfg: EvalConfig, model: ModelSection, client: ModelClient, tasks: dict[str, Any], out: Path
) -> tuple[dict[str, AlgorithmResult], list[dict], list[dict]]:
    """Each Inspect task, asked of the model: (results by name, scored samples, the answers)."""
    results: dict[str, AlgorithmResult] = {}
    rows: list[dict] = []
    answers: list[dict] = []
    if not tasks:
        return results, rows, answers
    from llmeval.evaluation import inspect_run

    for section in [s for s in cfg.algorithms if s.is_inspect]:
        log.info("%s: asking %s (Inspect)", section.name, model.name)
        try:
            result, more, asked = inspect_run.run_task(
                section, tasks[section.name], model.name, client, out, cfg.max_failed_ratio
            )
            rows, answers = rows + more, answers + asked
        except Exception as exc:  # this task's failure: the model's other scores stand
            log.error("%s failed: %s", section.name, exc)
            result = AlgorithmResult(section.name, [], error=f"{type(exc).__name__}: {exc}"[:1000])
        results[section.name] = result
    return results, rows, answers


def _score(
    cfg: EvalConfig,
    model: ModelSection,
    rows: list[dict],
    args: JobArgs,
    started: float,
    retries: int,
    client: ModelClient | None,
    judges: dict[str, ModelClient],
    tasks: dict[str, Any] | None = None,
) -> ModelResult:
    out = args.output_dir
    write_jsonl(out / OUTPUTS, rows)
    answered = [r for r in rows if r["error"] is None]
    timed = [r for r in answered if r["latency_ms"] is not None]
    latencies = [r["latency_ms"] for r in timed if not r["cached"]] or [r["latency_ms"] for r in timed]
    stats = GenerationStats(
        records_total=len(rows),
        records_evaluated=len(answered),
        records_failed=len(rows) - len(answered),
        cache_hits=sum(r["cached"] for r in rows),
        retries=retries,
        latency_p50_ms=_percentile(latencies, 0.5),
        latency_p95_ms=_percentile(latencies, 0.95),
        input_tokens_total=sum(r["input_tokens"] for r in answered),
        output_tokens_total=sum(r["output_tokens"] for r in answered),
        wall_seconds=round(time.perf_counter() - started, 2),
    )
    result = ModelResult(
        model=model.name,
        status="succeeded",
        generation=stats,
        usage=_billed_tokens(model, answered, started),
        outputs_location=str(out / OUTPUTS),
        metadata={
            "model_id": model.model_id,
            "model_version": model.model_version,
            "endpoint": client.target.endpoint_name if client else None,
            **({"outputs_location": model.outputs_location} if model.outputs_location else {}),
        },
    )
    if args.training_metrics:
        training = json.loads(args.training_metrics.read_text(encoding="utf-8"))
        result.metadata["training"] = {k: v for k, v in training.items() if k != "loss_per_step"}
    failed_ratio = stats.records_failed / max(1, stats.records_total)
    if not answered or failed_ratio > cfg.max_failed_ratio:
        first = next((r["error"] for r in rows if r["error"]), "no records")
        result.status, result.failed_step = "failed", "generate"
        result.error = (
            f"{stats.records_failed} of {stats.records_total} records failed "
            f"(more than max_failed_ratio {cfg.max_failed_ratio:.0%}); first: {first}"
        )
        if not answered:
            return result
    inspected, samples, asked = _run_inspect(cfg, model, client, tasks or {}, out) if client else ({}, [], [])
    released = (lambda: _released(model.name, args.release_uri)) if client else None
    scores, scored = score_outputs(rows, cfg.algorithms, str(out / RECORDS), client, released=released, judges=judges)
    by_name = {a.algorithm: a for a in scores} | inspected
    result.algorithms = [by_name[s.name] for s in cfg.algorithms if s.name in by_name]
    if asked:
        result.metadata["inspect"] = {
            "requests": len(asked),
            "cache_hits": sum(a["cached"] for a in asked),
            "input_tokens": sum(a["input_tokens"] for a in asked),
            "output_tokens": sum(a["output_tokens"] for a in asked),
        }
        result.usage = _billed_tokens(model, answered + asked, started)
    write_jsonl(out / RECORDS, scored + samples)
    errors = [a for a in result.algorithms if a.error]
    if result.succeeded and len(errors) == len(result.algorithms):
        result.status, result.failed_step = "failed", "score"
        result.error = "; ".join(f"{a.algorithm}: {a.error}" for a in errors)
    return result


def _billed_tokens(model: ModelSection, answered: list[dict], started: float) -> list[ResourceUsage]:
    """A model billed by the token: what its answers cost (cached answers were not billed)."""
    prices = model.price_per_million_tokens
    if prices is None:
        return []
    asked = [r for r in answered if not r["cached"]]
    seconds = round(time.perf_counter() - started, 3)
    ended = datetime.now(UTC)
    return [
        token_usage(
            model.model_id,
            sum(r["input_tokens"] for r in asked),
            sum(r["output_tokens"] for r in asked),
            prices.input,
            prices.output,
            seconds,
            (ended - timedelta(seconds=seconds)).isoformat(),
            ended.isoformat(),
        )
    ]


def _released(model: str, release_uri: str | None) -> None:
    log.info("%s the model is no longer needed (generation and the scorers that ask it are done)", RELEASE_MARK)
    sys.stdout.flush()
    if release_uri:
        announce_release(release_uri, model)


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = JobArgs.from_argv(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not a line per client it builds
    signal.signal(signal.SIGTERM, _stop)  # SageMaker stops a job with SIGTERM: unwind, so the cache is kept
    result = run(args)
    path = write_result(args.output_dir, result)
    records = args.output_dir / RECORDS
    samples = read_jsonl(records) if records.exists() else []
    (args.output_dir / MODEL_REPORT).write_text(render_model_html(result, samples), encoding="utf-8")
    log.info("wrote %s (status %s)", path, result.status)
    print(json.dumps({"results": str(path), "status": result.status}))
    return 0 if result.succeeded else 3


if __name__ == "__main__":
    sys.exit(main())
