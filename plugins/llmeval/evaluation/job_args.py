"""The evaluation entry point's command line as one typed object.

Both targets build it (the local worker's command, the Processing job's container
arguments) and the entry point parses it, so the flags are written down once:

    python -m llmeval.evaluation --config run/config.json --model NAME \
        --dataset run/dataset.jsonl --output-dir run/models/NAME \
        [--endpoint-name NAME] [--endpoint-url http://127.0.0.1:PORT] [--region R] [--cache-dir DIR]
        [--outputs FILE]                        (a model given by its outputs: score them, ask nothing)
        [--cache-uri s3://...]                  (SageMaker: the response cache between jobs)
        [--judge NAME=ENDPOINT[@URL] ...]       (LLMJudge: where each judge answers)
        [--release-uri s3://... --wait-for-endpoint SECONDS]  (SageMaker: the endpoint's lifetime)
        [--training-metrics FILE --model-identity ID]          (a model fine-tuned in this run)
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

MODULE = "llmeval.evaluation"


@dataclass(frozen=True)
class JudgeEndpoint:
    """Where one of the config's judges answers: `NAME=ENDPOINT[@URL]` on the command line."""

    name: str
    endpoint_name: str
    url: str | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.endpoint_name}" + (f"@{self.url}" if self.url else "")

    @classmethod
    def parse(cls, text: str) -> JudgeEndpoint:
        name, _, endpoint = text.partition("=")
        endpoint_name, _, url = endpoint.partition("@")
        if not name or not endpoint_name:
            raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=ENDPOINT_NAME[@URL]")
        return cls(name, endpoint_name, url or None)


@dataclass(frozen=True)
class JobArgs:
    """One evaluation of one model. Paths are the job's own (a scratch folder, a container path)."""

    config: Path
    model: str
    dataset: Path
    output_dir: Path
    endpoint_name: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("LLM_EVAL_CACHE_DIR", ".cache")))
    outputs: Path | None = None
    cache_uri: str | None = None
    judges: tuple[JudgeEndpoint, ...] = ()
    release_uri: str | None = None
    wait_for_endpoint: float | None = None
    training_metrics: Path | None = None
    model_identity: str | None = None

    def to_argv(self) -> list[str]:
        """The arguments after `python -m llmeval.evaluation`, in field order."""
        argv: list[str] = []
        for item in fields(self):
            value = getattr(self, item.name)
            flag = "--" + item.name.replace("_", "-")
            if item.name == "judges":
                argv += [part for judge in value for part in ("--judge", str(judge))]
            elif value is not None:
                argv += [flag, str(value)]
        return argv

    @classmethod
    def from_argv(cls, argv: list[str] | None = None) -> JobArgs:
        parsed = _parser().parse_args(argv)
        return cls(**{**vars(parsed), "judges": tuple(parsed.judges)})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="Generate, then score, for one model.")
    parser.add_argument("--config", type=Path, required=True, help="config YAML, or the run's resolved config.json")
    parser.add_argument("--model", required=True, help="model name from the config")
    parser.add_argument("--dataset", type=Path, required=True, help="prepared dataset JSONL")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--endpoint-name", help="default: the model's endpoint_name, else its name")
    parser.add_argument("--endpoint-url", help="override for the sagemaker-runtime endpoint (local server)")
    parser.add_argument("--region")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("LLM_EVAL_CACHE_DIR", ".cache")))
    parser.add_argument("--outputs", type=Path, help="the model's provided outputs (JSONL): score them, ask nothing")
    parser.add_argument("--cache-uri", help="s3:// object holding the response cache between jobs (SageMaker)")
    parser.add_argument(
        "--judge",
        dest="judges",
        type=JudgeEndpoint.parse,
        action="append",
        default=[],
        metavar="NAME=ENDPOINT[@URL]",
        help="the endpoint (and runtime URL) of one of the config's judges (LLMJudge)",
    )
    parser.add_argument("--release-uri", help="s3:// object to write when the model is no longer needed")
    parser.add_argument(
        "--wait-for-endpoint",
        type=float,
        metavar="SECONDS",
        help="wait until the SageMaker endpoint is InService first, checking every SECONDS",
    )
    parser.add_argument("--training-metrics", type=Path, help="fine-tune metrics to keep in the result")
    parser.add_argument("--model-identity", help="cache identity; default model_id@model_version")
    return parser
