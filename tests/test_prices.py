"""Cost of a run: the shipped price table, a config's overrides, billed time from the SageMaker
API's timestamps, and the cost figures in results.json, selection, the leaderboard and the
registry metadata."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml

from conftest import ROOT, local_config
from helpers import failed, result
from llmeval.config import ConfigError, EvalConfig, load_config
from llmeval.prices import (
    PriceTable,
    endpoint_usage,
    processing_usage,
    read_table,
    shipped_table,
    table_for,
    training_usage,
)
from llmeval.report import run_cost
from llmeval.results import read_model_result, record_usage, write_result
from llmeval.selection import select
from llmeval.store import FAILURE, RESULTS, USAGE

TABLE = PriceTable({"ml.g5.2xlarge": 1.515, "ml.m5.xlarge": 0.23}, "us-east-1", "2026-11-30")
CLUSTER = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)


def dollars(value: float):
    return pytest.approx(value, abs=1e-6)  # costs are kept to a millionth of a dollar


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0.timestamp() + seconds, tz=UTC)


def test_an_endpoint_is_billed_from_its_creation_to_its_deletion_on_every_instance():
    described = {"EndpointName": "ep", "CreationTime": T0, "LastModifiedTime": _at(300)}
    used = endpoint_usage(described, _at(1800), "ml.g5.2xlarge", 2, TABLE)
    assert (used.resource, used.seconds, used.instance_count) == ("endpoint", 1800.0, 2)
    assert used.usd == dollars(1.515 * 0.5 * 2)
    assert used.started == T0.isoformat() and used.ended == _at(1800).isoformat()


def test_a_processing_job_is_billed_from_its_start_to_its_end_else_from_creation_to_last_change():
    job = {
        "ProcessingJobName": "job",
        "CreationTime": T0,
        "ProcessingStartTime": _at(120),
        "ProcessingEndTime": _at(720),
        "LastModifiedTime": _at(730),
    }
    assert processing_usage(job, CLUSTER, TABLE).seconds == 600.0
    assert processing_usage(job, CLUSTER, TABLE).usd == dollars(0.23 / 6)
    unstarted = {k: v for k, v in job.items() if k not in ("ProcessingStartTime", "ProcessingEndTime")}
    assert processing_usage(unstarted, CLUSTER, TABLE).seconds == 730.0  # stopped before it started: creation to stop


def test_a_training_job_is_billed_for_its_billable_seconds_when_sagemaker_states_them():
    job = {
        "TrainingJobName": "ft",
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2},
        "CreationTime": "2026-11-30T10:00:00Z",  # as XCom hands it on: a string
        "TrainingStartTime": "2026-11-30T10:05:00Z",
        "TrainingEndTime": "2026-11-30T11:05:00Z",
        "LastModifiedTime": "2026-11-30T11:06:00Z",
        "BillableTimeInSeconds": 3000,
    }
    used = training_usage(job, TABLE)
    assert used.seconds == 3000.0 and used.usd == dollars(1.515 * 3000 / 3600 * 2)
    del job["BillableTimeInSeconds"]
    assert training_usage(job, TABLE).seconds == 3600.0
    del job["TrainingEndTime"], job["LastModifiedTime"]  # still running when teardown stops it: billed until now
    assert training_usage(job, TABLE).seconds > 3600.0


def test_an_instance_type_without_a_price_is_shown_as_such_not_as_free():
    described = {"EndpointName": "ep", "CreationTime": T0}
    used = endpoint_usage(described, _at(60), "ml.x9.huge", 1, TABLE)
    assert used.usd is None and used.seconds == 60.0
    model = result("a")
    model.usage = [used, processing_usage(_job(), CLUSTER, TABLE)]
    assert model.cost_usd is None and "cost/usd" not in model.scores_by_metric()
    assert model.scores_by_metric()["cost/endpoint_seconds"].value == 60.0
    total = run_cost([model])
    assert total.unpriced == ["ml.x9.huge"] and "no price known" in total.text()


def _job() -> dict:
    return {
        "ProcessingJobName": "job",
        "CreationTime": T0,
        "LastModifiedTime": _at(360),
    }


def test_the_shipped_table_prices_every_instance_type_the_shipped_configs_use():
    table = shipped_table()
    assert table.region == "us-east-1" and table.taken
    used = set()
    for path in (ROOT / "include" / "configs").glob("*.yaml"):
        cfg = load_config(path)
        used |= {m.deployment_config.instance_type for m in cfg.models if cfg.target == "sagemaker"}
        used |= {m.finetuning.parameters.instance_type for m in cfg.models if m.finetuning}
        used.add(cfg.sagemaker.processing_instance_type)
    assert used and all(table.hourly(t) for t in used), sorted(t for t in used if not table.hourly(t))
    assert table_for({"ml.g5.2xlarge": 1.0}).hourly("ml.g5.2xlarge") == 1.0  # the config's override wins
    assert table_for({}).hourly("ml.g5.2xlarge") == table.hourly("ml.g5.2xlarge")


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("region: us-east-1\ntaken: '2026-11-30'\nusd_per_hour: {ml.g5.xlarge: cheap}\n", "usd_per_hour.ml.g5.xlarge"),
        ("region: us-east-1\ntaken: '2026-11-30'\nusd_per_hour: [1, 2]\n", "usd_per_hour: expected a mapping"),
        ("taken: '2026-11-30'\nusd_per_hour: {}\n", "region: expected a string"),
    ],
)
def test_a_malformed_price_table_names_its_file_and_field(tmp_path, text, fragment):
    path = tmp_path / "instance_prices.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="instance_prices.yaml") as info:
        read_table(path)
    assert fragment in str(info.value)


def test_usage_is_kept_beside_the_result_and_in_it_and_a_failed_model_keeps_its_cost(tmp_path):
    ok, broken = tmp_path / "ok", tmp_path / "broken"
    write_result(ok, result("ok"))
    record_usage(ok, [processing_usage(_job(), CLUSTER, TABLE)])
    endpoint = endpoint_usage({"EndpointName": "ep-ok", "CreationTime": T0}, _at(900), "ml.g5.2xlarge", 1, TABLE)
    record_usage(ok, [endpoint])
    record_usage(ok, [endpoint])  # measured again (a retried teardown): replaced, not added
    on_disk = json.loads((ok / RESULTS).read_text())
    assert [u["resource"] for u in on_disk["usage"]] == ["processing job", "endpoint"]
    assert len(json.loads((ok / USAGE).read_text())) == 2
    read = read_model_result(ok, "ok")
    assert read.cost_usd == dollars(0.23 / 10 + 1.515 / 4)
    assert read.scores_by_metric()["cost/usd"].value == dollars(read.cost_usd)
    assert read.endpoint_seconds == 900.0

    broken.mkdir()
    (broken / FAILURE).write_text(json.dumps({"step": "evaluate", "error": "boom"}))
    record_usage(
        broken, [endpoint_usage({"EndpointName": "ep-b", "CreationTime": T0}, _at(60), "ml.g5.2xlarge", 1, TABLE)]
    )
    lost = read_model_result(broken, "broken")
    assert not lost.succeeded and lost.cost_usd == dollars(1.515 / 60)
    assert run_cost([read, lost]).usd == dollars(read.cost_usd + lost.cost_usd)


def test_selection_can_prefer_the_cheaper_model():
    cfg = local_config(selection={"metrics": [{"metric": "cost/usd", "direction": "lower"}]})
    cheap, dear = result("cheap"), result("dear")
    cheap.usage = [endpoint_usage({"EndpointName": "a", "CreationTime": T0}, _at(600), "ml.g5.2xlarge", 1, TABLE)]
    dear.usage = [endpoint_usage({"EndpointName": "b", "CreationTime": T0}, _at(600), "ml.g5.2xlarge", 4, TABLE)]
    sel = select(EvalConfig.model_validate(cfg), [dear, cheap, failed("gone")])
    assert sel.best == "cheap" and [c.model for c in sel.ranking][:2] == ["cheap", "dear"]


def test_cost_figures_and_price_overrides_are_checked_when_the_config_loads(write_config):
    cfg = local_config(selection={"metrics": [{"metric": "cost/dollars", "direction": "lower"}]})
    with pytest.raises(ConfigError) as info:
        load_config(write_config("bad.yaml", cfg))
    problem = info.value.problems[0]
    assert problem.field == "selection.metrics[0].metric" and "cost/ one of usd, endpoint_seconds" in problem.message
    cfg = local_config(sagemaker={"instance_prices": {"ml.g5.2xlarge": -1}})
    with pytest.raises(ConfigError) as info:
        load_config(write_config("negative.yaml", yaml.safe_dump(cfg)))
    assert info.value.problems[0].field == "sagemaker.instance_prices.ml.g5.2xlarge"
