"""Command line: `llmeval validate FILE...`, `schema`, `graph CONFIG`, `iam-policy CONFIG`, `preflight CONFIG`,
`backfill CONFIG` (also `python -m llmeval ...`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmeval.config import ConfigError, EvalConfig, Problem, json_schema, load_config, load_defaults, load_files
from llmeval.config.loader import problem_at


def validate(files: list[Path]) -> int:
    """Print one block per problem; exit status 1 when any file is invalid. The files are
    checked together, as the factory loads a folder: one pipeline name per DAG."""
    good, bad = load_files(files)
    for path, cfg in list(good):
        problems = _inspect_problems(Path(path), cfg)
        if problems:
            bad.append(ConfigError(problems))
            good.remove((path, cfg))
    for exc in bad:
        print(f"INVALID {exc.problems[0].file} ({len(exc.problems)} problem(s))")
        for problem in exc.problems:
            print(f"  {problem}")
    for path, cfg in good:
        print(f"ok      {path}: DAG {cfg.pipeline.name!r}, target {cfg.target}, {len(cfg.models)} model(s)")
    failed = len({exc.problems[0].file for exc in bad})
    if failed:
        print(f"{failed} of {len(files)} config(s) invalid", file=sys.stderr)
    return 1 if failed else 0


def _inspect_problems(path: Path, cfg: EvalConfig) -> list[Problem]:
    """A config's Inspect tasks loaded in the worker environment, as the evaluation loads them
    (arguments, registry names, datasets); without that environment, they were read from their
    source only, and a line says so."""
    import subprocess
    import tempfile

    from llmeval.runtime import PLUGINS_DIR, algorithms_dir, worker_python

    if not any(s.is_inspect for s in cfg.algorithms):
        return []
    try:
        python = worker_python()
    except FileNotFoundError as exc:
        print(f"note    {path}: Inspect tasks checked from their source only ({exc})")
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".json") as resolved:
        resolved.write(cfg.model_dump_json())
        resolved.flush()
        env = {**os.environ, "PYTHONPATH": f"{PLUGINS_DIR}{os.pathsep}{algorithms_dir()}"}
        found = subprocess.run(
            [python, "-m", "llmeval.evaluation.inspect_run", resolved.name],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
    try:
        listed = json.loads(found.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return [Problem(str(path), None, "algorithms", f"the Inspect check failed: {found.stderr.strip()[-500:]}")]
    return [problem_at(path, ("algorithms", p["index"], "task"), p["message"]) for p in listed]


@contextlib.contextmanager
def _include_beside(configs: list[Path]) -> Iterator[None]:
    """While a command runs, configs in `<x>/include/configs/` read their data (datasets, labels)
    from `<x>/include/data`, as the DAG factory does, unless LLM_EVAL_INCLUDE_DIR says otherwise (a
    pip-installed package has no include/ of its own)."""
    from llmeval.runtime import INCLUDE_DIR_ENV

    found = next((p.resolve().parent.parent for p in configs if p.resolve().parent.name == "configs"), None)
    if INCLUDE_DIR_ENV in os.environ or found is None or not (found / "data").is_dir():
        yield
        return
    os.environ[INCLUDE_DIR_ENV] = str(found)
    try:
        yield
    finally:
        os.environ.pop(INCLUDE_DIR_ENV, None)


def _backfill_parser(sub: Any) -> None:
    fill = sub.add_parser(
        "backfill", help="trigger one partitioned run per prompt-catalog version through Airflow's REST API"
    )
    fill.add_argument("config", type=Path)
    which = fill.add_mutually_exclusive_group(required=True)
    which.add_argument("--versions", nargs="+", metavar="VERSION")
    which.add_argument("--file", type=Path, help="a file with one version per line")
    which.add_argument("--missing", action="store_true", help="every version in the catalog without a result yet")
    fill.add_argument("--url", default=os.environ.get("AIRFLOW_API_URL", "http://localhost:8080"))
    fill.add_argument("--token", default=os.environ.get("AIRFLOW_API_TOKEN"))
    fill.add_argument("--username", default=os.environ.get("AIRFLOW_USERNAME"))
    fill.add_argument("--password", default=os.environ.get("AIRFLOW_PASSWORD"))
    fill.add_argument("--concurrency", type=int, default=1, help="runs in flight at once (default 1)")
    fill.add_argument("--rerun", action="store_true", help="run versions that already have a successful run again")
    fill.add_argument("--poll-s", type=float, default=5.0, help="seconds between state checks")


def run_backfill(args: argparse.Namespace) -> int:
    from llmeval.backfill import Api, ApiError, backfill, read_versions, versions_without_results

    cfg = load_config(args.config, load_defaults(args.config.parent))
    if not cfg.versioned:
        print(f"error: {args.config}: the dataset location has no {{catalog_version}}: no versions", file=sys.stderr)
        return 2
    versions = args.versions or (read_versions(args.file) if args.file else versions_without_results(cfg))
    if not versions:
        print("nothing to backfill: every version has a result")
        return 0
    try:
        api = Api.login(args.url, args.token, args.username, args.password)
        final = backfill(cfg, api, versions, args.concurrency, args.rerun, args.poll_s)
    except (ApiError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [v for v, state in final.items() if state != "success"]
    print(
        f"{len(final) - len(failed)} of {len(final)} version(s) succeeded"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmeval", description="LLM evaluation pipelines on Airflow")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate config files")
    check.add_argument("files", nargs="+", type=Path)
    sub.add_parser("schema", help="print the config JSON Schema")
    ready = sub.add_parser("preflight", help="check an AWS account for a SageMaker config before a run bills anything")
    ready.add_argument("config", type=Path)
    graph = sub.add_parser("graph", help="draw the DAG a config becomes (its tasks in the order they run)")
    graph.add_argument("config", type=Path)
    iam = sub.add_parser(
        "iam-policy",
        help="print the least-privilege IAM policies of a SageMaker config's DAG: the Airflow side's "
        "(the connection's identity; on MWAA the environment's execution role) and the SageMaker execution role's",
    )
    iam.add_argument("config", type=Path)
    iam.add_argument("--s3-prefix", help="default: the config's sagemaker.s3_prefix")
    iam.add_argument("--role-arn", default="*", help="the SageMaker execution role the DAG passes")
    iam.add_argument("--artifacts-url", help="the run store, when on S3 (default: the config's artifacts_url)")
    iam.add_argument(
        "--principal", choices=("both", "airflow", "sagemaker"), default="both", help="which policy to print"
    )
    _backfill_parser(sub)
    args = parser.parse_args(argv)
    configs = [*(getattr(args, "files", None) or []), *([args.config] if getattr(args, "config", None) else [])]
    with _include_beside(configs):
        return _command(args)


def _command(args: argparse.Namespace) -> int:
    if args.command == "backfill":
        return run_backfill(args)
    if args.command == "validate":
        return validate(args.files)
    if args.command == "preflight":
        from llmeval.preflight import run

        checks = run(load_config(args.config, load_defaults(args.config.parent)))
        for result in checks:
            print(result.line())
        failed = [c for c in checks if not c.ok]
        print(f"{len(checks) - len(failed)} of {len(checks)} checks passed")
        return 1 if failed else 0
    if args.command == "graph":
        from llmeval.dag.graph import build_dag
        from llmeval.dag.picture import draw

        print(draw(build_dag(load_config(args.config, load_defaults(args.config.parent)), args.config)), end="")
        return 0
    if args.command == "iam-policy":
        from llmeval.iam import render

        cfg = load_config(args.config, load_defaults(args.config.parent))
        prefix = args.s3_prefix or cfg.sagemaker.s3_prefix
        if not prefix:
            print("error: give --s3-prefix (the config has no sagemaker.s3_prefix)", file=sys.stderr)
            return 2
        print(render(cfg, prefix, args.role_arn, args.principal, args.artifacts_url))
        return 0
    print(json.dumps(json_schema(), indent=2))
    return 0
