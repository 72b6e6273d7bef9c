"""The declared contracts: the evaluation job's command line round-trips through its typed
object, kinds and targets are enums, and an unknown target is a config error naming the
allowed ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import local_config
from llmeval.config import ConfigError, load_config
from llmeval.contracts import ModelKind, TargetName
from llmeval.evaluation.job_args import JobArgs, JudgeEndpoint


def test_job_args_round_trip_through_the_command_line():
    args = JobArgs(
        config=Path("/run/config.json"),
        model="m",
        dataset=Path("/run/dataset.jsonl"),
        output_dir=Path("/out"),
        endpoint_name="ep",
        endpoint_url="http://127.0.0.1:9",
        region="eu-west-1",
        cache_dir=Path("/cache"),
        cache_uri="s3://b/cache.sqlite",
        judges=(JudgeEndpoint("j1", "judge-ep"), JudgeEndpoint("j2", "ep2", "http://127.0.0.1:8")),
        release_uri="s3://b/released/m.json",
        wait_for_endpoint=30,
        training_metrics=Path("/run/training.json"),
        model_identity="base+tuned:abc",
    )
    argv = args.to_argv()
    assert argv.count("--judge") == 2 and "j2=ep2@http://127.0.0.1:8" in argv
    assert JobArgs.from_argv(argv) == args


def test_a_minimal_command_line_keeps_the_defaults():
    args = JobArgs.from_argv(["--config", "c.json", "--model", "m", "--dataset", "d.jsonl", "--output-dir", "o"])
    assert args.judges == () and args.release_uri is None and args.outputs is None
    assert JobArgs.from_argv(args.to_argv()) == args


def test_a_malformed_judge_argument_is_refused(capsys):
    with pytest.raises(SystemExit):
        JobArgs.from_argv(["--config", "c", "--model", "m", "--dataset", "d", "--output-dir", "o", "--judge", "x"])
    assert "expected NAME=ENDPOINT_NAME[@URL]" in capsys.readouterr().err


def test_every_kind_has_its_own_group_and_split_task():
    assert len({k.group_id for k in ModelKind}) == len({k.split_task for k in ModelKind}) == len(ModelKind)
    assert all(ModelKind.of_group(k.group_id) is k for k in ModelKind)
    assert [k for k in ModelKind if k.deploys] == [ModelKind.FOUNDATION, ModelKind.TUNED]


def test_an_unknown_target_is_a_config_error_naming_the_allowed_ones(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(local_config(target="kubernetes")))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.field == "target" and path.read_text().splitlines()[problem.line - 1].startswith("target:")
    assert all(f"'{name}'" in problem.message for name in TargetName)
