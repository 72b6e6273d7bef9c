"""Command line: `python -m llmeval validate FILE...` and `python -m llmeval schema`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmeval.config import ConfigError, json_schema, load_config, load_defaults


def validate(files: list[Path]) -> int:
    """Print one block per problem; exit status 1 when any file is invalid."""
    failed = 0
    for path in files:
        try:
            cfg = load_config(path, load_defaults(path.parent))
        except ConfigError as exc:
            failed += 1
            print(f"INVALID {path} ({len(exc.problems)} problem(s))")
            for problem in exc.problems:
                print(f"  {problem}")
            continue
        print(f"ok      {path}: DAG {cfg.pipeline.name!r}, target {cfg.target}, {len(cfg.models)} model(s)")
    if failed:
        print(f"{failed} of {len(files)} config(s) invalid", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmeval", description="LLM evaluation pipelines on Airflow")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate config files")
    check.add_argument("files", nargs="+", type=Path)
    sub.add_parser("schema", help="print the config JSON Schema")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return validate(args.files)
    print(json.dumps(json_schema(), indent=2))
    return 0
