"""The local target's worker jobs: the fine-tune, the evaluation entry point and the pairwise
comparison, each a command in the worker environment run in a scratch folder of its own, its
log streamed into the task log; inputs from and outputs to the run store."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from llmeval import store
from llmeval.config import EvalConfig
from llmeval.contracts import ModelKind
from llmeval.evaluation import RELEASE_MARK
from llmeval.evaluation.job_args import MODULE as EVALUATION_MODULE
from llmeval.evaluation.job_args import JobArgs, JudgeEndpoint
from llmeval.evaluation.served import ENV as SERVED_ENV
from llmeval.evaluation.served import encode
from llmeval.inputs import outputs_file
from llmeval.results import record_usage
from llmeval.runtime import PLUGINS_DIR, resolve_data_path, worker_python
from llmeval.targets.connections import served_models
from llmeval.targets.local.servers import worker_env

log = logging.getLogger("llmeval.local")
TRAINING_METRICS = "training_metrics.json"


def run_finetune(cfg: EvalConfig, model: str, run_folder: Any) -> dict[str, Any]:
    """Fine-tune the model on this machine; the tuned model goes to the model's folder in the
    run store. Returns the training metrics (loss per step, weights digest)."""
    spec = cfg.model(model)
    tuning = spec.tuning
    params = tuning.parameters
    with tempfile.TemporaryDirectory(prefix="llmeval-finetune-") as scratch:
        out = Path(scratch) / store.TUNED
        cmd = [
            worker_python(),
            "-m",
            "llmeval.evaluation.finetune",
            "--model-id",
            spec.model_id,
            "--train",
            str(resolve_data_path(tuning.train_data_path)),
            "--output-dir",
            str(out),
            "--epochs",
            str(params.epoch),
            "--max-input-length",
            str(params.max_input_length),
            "--instruction-tuned" if params.instruction_tuned else "--no-instruction-tuned",
        ]
        if tuning.validation_data_path:
            cmd += ["--validation", str(resolve_data_path(tuning.validation_data_path))]
        for key, value in (params.model_extra or {}).items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        stream_command(cmd, f"fine-tune of {model}")
        dest = store.model_folder(run_folder, model) / store.TUNED
        store.upload_tree(out, dest)
        log.info("tuned model saved to %s", store.describe(dest))
        return json.loads((out / TRAINING_METRICS).read_text())


def stream_command(
    cmd: list[str], what: str, on_line: Callable[[str], None] | None = None, env: dict[str, str] | None = None
) -> None:
    """Run a worker command (with `env` added to the worker environment), streaming its output
    into the task log (and to `on_line`); kill it if the task dies."""
    log.info("running %s", " ".join(cmd))
    proc = subprocess.Popen(
        cmd,
        cwd=PLUGINS_DIR,
        env={**worker_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    tail: list[str] = []
    try:
        for line in proc.stdout or ():
            line = line.rstrip()
            if line and not line.startswith("sagemaker.config INFO"):
                log.info("%s", line)
                tail = (tail + [line])[-20:]
                if on_line:
                    on_line(line)
        proc.wait()
    except BaseException:  # task killed or timed out: do not leave the worker behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n" + "\n".join(tail))


def run_evaluation(
    cfg: EvalConfig,
    model: str,
    run_folder: Any,
    endpoint: dict[str, Any] | None,
    cache: Any,
    training: dict[str, Any] | None = None,
    catalog_version: str = "",
    release: Callable[[], None] | None = None,
    judges: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the evaluation entry point for one model in a scratch folder, streaming its log
    into the task log; its outputs and the response cache go back to the run store, also
    when it fails. Returns the result summary (results.json). A model given by its outputs
    (no `endpoint`) has them scored. `release` is called when the entry point says the model
    is no longer needed (scoring may go on). `judges`: the judges' servers, by name."""
    spec = cfg.model(model)
    served = served_models(cfg, [model], for_processing=False)
    with tempfile.TemporaryDirectory(prefix="llmeval-evaluate-") as tmp:
        scratch = Path(tmp)
        out, cache_file = scratch / "out", scratch / "cache" / store.RESPONSE_CACHE
        store.download(run_folder / store.CONFIG, scratch / store.CONFIG)
        store.download(run_folder / store.DATASET, scratch / store.DATASET)
        if cache.exists():
            store.download(cache, cache_file)
        judge_endpoints = tuple(JudgeEndpoint(n, j["endpoint_name"], j["url"]) for n, j in (judges or {}).items())
        training_file = None
        if training:
            training_file = scratch / TRAINING_METRICS
            training_file.write_text(json.dumps(training))
        args = JobArgs(
            config=scratch / store.CONFIG,
            model=model,
            dataset=scratch / store.DATASET,
            output_dir=out,
            endpoint_name=endpoint["endpoint_name"] if endpoint else None,
            endpoint_url=endpoint["url"] if endpoint else None,
            cache_dir=cache_file.parent,
            outputs=outputs_file(cfg, model, catalog_version, scratch) if spec.kind == ModelKind.PROVIDED else None,
            judges=judge_endpoints,
            training_metrics=training_file,
            model_identity=(
                f"{cfg.model(model).model_id}+tuned:{training['weights_sha256'][:16]}" if training else None
            ),
        )
        cmd = [worker_python(), "-m", EVALUATION_MODULE, *args.to_argv()]

        def released(line: str) -> None:
            if release and RELEASE_MARK in line:
                try:
                    release()
                except Exception:  # teardown stops it anyway
                    log.exception("could not stop the server of %s early", model)

        try:
            stream_command(cmd, f"evaluation of {model}", released, {SERVED_ENV: encode(served)} if served else None)
        finally:
            if out.exists():
                store.upload_tree(out, store.model_folder(run_folder, model))
                record_usage(store.model_folder(run_folder, model), [])  # a server stopped early: in results.json
            if cache_file.exists():
                _checkpoint(cache_file)
                store.write_bytes(cache, cache_file.read_bytes())
        return json.loads((out / store.RESULTS).read_text())


def run_pairwise(
    cfg: EvalConfig, run_folder: Any, dag_id: str, models: list[str], judges: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Run the pairwise comparison (`llmeval.evaluation.pairwise`) over the models' outputs
    in the run store; pairwise.json and the judge's response cache go back to the store.
    Returns the Bradley-Terry ranking."""
    section = next(s for s in cfg.algorithms if s.compares_models)
    cache = store.cache_object(dag_id, f"pairwise-{section.options['judge']}", cfg.artifacts_url)
    with tempfile.TemporaryDirectory(prefix="llmeval-pairwise-") as tmp:
        scratch = Path(tmp)
        cache_file, output = scratch / "cache" / store.RESPONSE_CACHE, scratch / store.PAIRWISE
        store.download(run_folder / store.CONFIG, scratch / store.CONFIG)
        for model in models:
            outputs = store.model_folder(run_folder, model) / store.OUTPUTS
            if outputs.exists():
                store.download(outputs, scratch / "models" / model / store.OUTPUTS)
        if cache.exists():
            store.download(cache, cache_file)
        cmd = [worker_python(), "-m", "llmeval.evaluation.pairwise", "--config", str(scratch / store.CONFIG)]
        cmd += ["--runs-dir", str(scratch / "models"), "--output", str(output), "--cache-dir", str(cache_file.parent)]
        cmd += [
            part for n, j in judges.items() for part in ("--judge", str(JudgeEndpoint(n, j["endpoint_name"], j["url"])))
        ]
        (scratch / "models").mkdir(exist_ok=True)
        try:
            served = served_models(cfg, [], for_processing=False)
            stream_command(cmd, "pairwise comparison", None, {SERVED_ENV: encode(served)} if served else None)
        finally:
            if cache_file.exists():
                _checkpoint(cache_file)
                store.write_bytes(cache, cache_file.read_bytes())
        store.write_bytes(run_folder / store.PAIRWISE, output.read_bytes())
        return {"bradley_terry": json.loads(output.read_text())["bradley_terry"]}


def _checkpoint(database: Path) -> None:
    """Fold SQLite's write-ahead log into the database file (a killed worker leaves answers
    there), so the one file pushed to the store holds every answer."""
    with closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
