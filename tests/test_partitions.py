"""Prompt-catalog versions as Airflow partitions: the timetable each config gets, the version a
run evaluates (its partition key; the Param only for a smoke run; neither is refused), and the
checks of `catalog_versions`. The scheduler's side (REST triggers with a partition key, asset
events, `llmeval backfill`) is tested on a real Airflow in test_browser.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import DATASET, local_config, run_dag
from llmeval.config import ConfigError, EvalConfig, load_config
from llmeval.dag.run_tasks import NoCatalogVersion, catalog_version
from llmeval.dag.settings import schedule
from llmeval.history import entries

VERSIONED = {**DATASET, "input_data_location": "catalog/{catalog_version}/qa.jsonl"}


def _cfg(**extra) -> EvalConfig:
    return EvalConfig.model_validate(local_config("parts", dataset=VERSIONED, **extra))


def test_a_versioned_catalog_gets_a_partitioned_timetable_and_others_keep_theirs():
    from airflow.sdk import (
        AllowedKeyMapper,
        Asset,
        CronPartitionTimetable,
        IdentityMapper,
        PartitionedAssetTimetable,
        PartitionedAtRuntime,
    )

    assert isinstance(schedule(_cfg()), PartitionedAtRuntime)
    nightly = schedule(_cfg(schedule="0 2 * * *"))
    assert isinstance(nightly, CronPartitionTimetable) and nightly.key_format == "%Y-%m-%d"
    assert schedule(_cfg(schedule="@hourly")).key_format == "%Y-%m-%dT%H:%M"
    published = schedule(_cfg(catalog_asset="s3://bucket/catalog", catalog_versions=["v1", "v2"]))
    assert isinstance(published, PartitionedAssetTimetable)
    assert isinstance(published.default_partition_mapper, AllowedKeyMapper)
    anything = schedule(_cfg(catalog_asset="s3://bucket/catalog", catalog_versions="v[0-9]+"))
    assert isinstance(anything.default_partition_mapper, IdentityMapper)
    plain = EvalConfig.model_validate(local_config("plain", schedule="@daily"))
    assert schedule(plain) == "@daily"
    assert schedule(EvalConfig.model_validate(local_config("plain", catalog_asset="s3://b/c"))) == Asset("s3://b/c")


def _context(key: str | None, param: str | None) -> dict:
    return {"dag_run": SimpleNamespace(partition_key=key, run_after=None), "params": {"catalog_version": param}}


def test_the_partition_key_is_the_version_the_param_is_for_smoke_runs_and_neither_is_refused(caplog):
    cfg = _cfg(catalog_versions="v[0-9]+")
    assert catalog_version(_context("v12", None), cfg) == "v12"
    assert catalog_version(_context("v12", "v3"), cfg) == "v12" and "the Param 'v3' is ignored" in caplog.text
    assert catalog_version(_context(None, "v3"), cfg) == "v3" and "a smoke run of catalog version 'v3'" in caplog.text
    with pytest.raises(NoCatalogVersion, match=r"evaluates one prompt-catalog version per run .* names none"):
        catalog_version(_context(None, None), cfg)
    with pytest.raises(NoCatalogVersion, match=r"'2026-hotfix' does not match catalog_versions 'v\[0-9\]\+'"):
        catalog_version(_context("2026-hotfix", None), cfg)
    listed = _cfg(catalog_versions=["v1", "v2"])
    with pytest.raises(NoCatalogVersion, match=r"'v3' is not among catalog_versions \(v1, v2\)"):
        catalog_version(_context("v3", None), listed)


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"catalog_versions": "v("}, "catalog_versions", "not a valid regular expression"),
        ({"schedule": "@once"}, "schedule", "runs once per version on a cron schedule"),
    ],
)
def test_catalog_version_mistakes_name_the_field(write_config, extra, field, message):
    path = write_config("parts.yaml", local_config("parts", dataset=VERSIONED, **extra))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0].field == field and message in caught.value.problems[0].message


def test_versions_need_a_versioned_catalog(write_config):
    path = write_config("plain.yaml", local_config("plain", catalog_versions=["v1"]))
    with pytest.raises(ConfigError, match="the dataset location has no {catalog_version}"):
        load_config(path)


def test_a_run_without_a_version_stops_at_preprocess_and_a_smoke_run_evaluates_the_params(tmp_path, airflow_db):
    from llmeval.store import run_folder

    catalog = tmp_path / "catalog" / "v7"
    catalog.mkdir(parents=True)
    rows = [{"question": f"q{i}", "answer": "Paris", "id": f"r{i}"} for i in range(3)]
    (catalog / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    outputs = tmp_path / "outputs" / "v7"
    outputs.mkdir(parents=True)
    (outputs / "vendor.jsonl").write_text(
        "".join(json.dumps({"record_id": r["id"], "model_output": "Paris"}) + "\n" for r in rows)
    )
    model = {
        "name": "vendor",
        "model_id": "vendor",
        "outputs_location": str(tmp_path / "outputs/{catalog_version}/vendor.jsonl"),
    }
    dataset = {**VERSIONED, "input_data_location": str(tmp_path / "catalog/{catalog_version}/qa.jsonl")}
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "parts.yaml").write_text(json.dumps(local_config("parts-smoke", dataset=dataset, models=[model])))
    _, refused = run_dag("parts-smoke", configs)
    states = {t.task_id: t.state for t in refused.get_task_instances()}
    assert refused.state == "failed" and states["preprocess"] == "failed" and states["plan"] == "upstream_failed"
    dag, smoke = run_dag("parts-smoke", configs, {"catalog_version": "v7"})
    assert smoke.state == "success", [(t.task_id, t.state) for t in smoke.get_task_instances()]
    result = json.loads((run_folder(dag.dag_id, smoke.run_id) / "models" / "vendor" / "results.json").read_text())
    assert result["generation"]["records_evaluated"] == 3
    assert [e["catalog_version"] for e in entries("parts-smoke")] == ["v7"]  # the history keyed by the version
    _, missing = run_dag("parts-smoke", configs, {"catalog_version": "v9"})  # no catalog/v9: nothing evaluated
    states = {t.task_id: t.state for t in missing.get_task_instances()}
    assert states["preprocess"] == "failed" and states["plan"] == "upstream_failed"


def test_a_version_without_its_file_names_the_key_and_the_location(tmp_path):
    from llmeval.inputs import MissingCatalogVersion
    from llmeval.steps import prepare_run
    from llmeval.store import run_folder

    dataset = {**VERSIONED, "input_data_location": str(tmp_path / "catalog/{catalog_version}/qa.jsonl")}
    cfg = EvalConfig.model_validate(local_config("parts-missing", dataset=dataset))
    with pytest.raises(MissingCatalogVersion) as caught:
        prepare_run(cfg, run_folder("parts-missing", "r1"), None, "v9")
    assert f"catalog version 'v9' has no prompt catalog at {tmp_path}/catalog/v9/qa.jsonl" in str(caught.value)


def test_the_history_lists_versions_in_publication_order():
    """By when each version's file was written; entries without that (dated catalogs, entries
    written before it was recorded) by the version, its numbers compared as numbers."""
    from llmeval import history

    for version, published in (("v10", None), ("v2", None), ("v9", None)):
        history.record("order-old", version, f"run-{version}", [], published=published)
    assert [e["catalog_version"] for e in history.entries("order-old")] == ["v2", "v9", "v10"]
    for version, published in (("2026-12-01-hotfix", 300.0), ("v12", 100.0), ("v13", 200.0)):
        history.record("order-new", version, f"run-{version}", [], published=published)
    assert [e["catalog_version"] for e in history.entries("order-new")] == ["v12", "v13", "2026-12-01-hotfix"]


class _Runs:
    """Airflow's runs of one DAG as the backfill sees them through the REST API: each poll moves
    every unfinished run one state on (queued, running, then success; `failing` versions fail)."""

    def __init__(self, states: dict[str, str], failing: tuple[str, ...] = ()):
        self.states, self.failing, self.triggered, self.most_in_flight = dict(states), failing, [], 0

    def runs_by_version(self, dag_id: str) -> dict[str, str]:
        after = {"queued": "running", "running": "success"}
        for version, state in self.states.items():
            if state in after:
                self.states[version] = "failed" if version in self.failing and state == "running" else after[state]
        return dict(self.states)

    def trigger(self, dag_id: str, version: str) -> None:
        self.triggered.append(version)
        self.states[version] = "queued"
        in_flight = sum(s in ("queued", "running") for s in self.states.values())
        self.most_in_flight = max(self.most_in_flight, in_flight)


def test_backfill_skips_done_versions_waits_for_running_ones_and_keeps_its_concurrency():
    from llmeval.backfill import backfill

    cfg = _cfg(catalog_versions="v[0-9]+")
    said: list[str] = []
    api = _Runs({"v1": "success", "v2": "running"}, failing=("v5",))
    final = backfill(cfg, api, ["v1", "v2", "v3", "v4", "v5"], concurrency=2, poll_s=0, say=said.append)
    assert api.triggered == ["v3", "v4", "v5"]  # v1 done, v2 under way: neither triggered
    assert final == {"v1": "success", "v2": "success", "v3": "success", "v4": "success", "v5": "failed"}
    assert api.most_in_flight == 2  # v2 that was already running counts: never more than --concurrency
    assert "v1: skipped, it already has a successful run (--rerun to run it again)" in said
    assert any(line.startswith("v5: failed (") for line in said)
    again = _Runs({"v1": "success"})
    assert backfill(cfg, again, ["v1"], rerun=True, poll_s=0, say=said.append) == {"v1": "success"}
    assert again.triggered == ["v1"]
    with pytest.raises(ValueError, match="'latest' does not match catalog_versions"):
        backfill(cfg, _Runs({}), ["latest"], poll_s=0)


def _republish(cfg: EvalConfig, extras: list[dict], monkeypatch) -> set[str]:
    """Run the republisher's task on asset events with these extras; the partition keys it emits."""
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from llmeval.dag import catalog_events

    outlets = OutletEventAccessors()
    events = [SimpleNamespace(extra=extra) for extra in extras]
    context = {"triggering_asset_events": {Asset(cfg.catalog_asset): events}, "outlet_events": outlets}
    monkeypatch.setattr(catalog_events, "get_current_context", lambda: context)
    catalog_events.build_republisher(cfg).get_task("republish").python_callable()
    return outlets[Asset(cfg.catalog_asset)].partition_keys


def test_an_event_naming_its_version_in_the_extra_is_republished_with_that_key(tmp_path, monkeypatch, caplog):
    """The deprecated form: a versioned catalog's asset gets a second DAG listening for events
    without a key; it warns and emits the version as a partition key (which starts the run)."""
    from airflow.sdk import Asset

    from llmeval.dag import load_dags

    configs = tmp_path / "configs"
    configs.mkdir()
    asset = "s3://bucket/catalog"
    for name, dataset in (("parts-pub", VERSIONED), ("plain-pub", DATASET)):
        cfg = local_config(name, dataset=dataset, catalog_asset=asset)
        (configs / f"{name}.yaml").write_text(json.dumps(cfg))
    dags = load_dags(configs)
    assert sorted(dags) == ["parts-pub", "parts-pub__catalog_events", "plain-pub"]  # only a versioned catalog's
    assert dags["parts-pub__catalog_events"].timetable.asset_condition == Asset(asset)
    cfg = _cfg(catalog_asset=asset, catalog_versions="v[0-9]+")
    assert _republish(cfg, [{"catalog_version": "v4"}, {"catalog_version": "v4"}], monkeypatch) == {"v4"}
    assert "DEPRECATED: the catalog version in an asset event's extra (catalog_version=v4)" in caplog.text
    with pytest.raises(ValueError, match="has no partition key, so it starts no run of parts.*partition_key=<version>"):
        _republish(cfg, [{}], monkeypatch)
    with pytest.raises(ValueError, match=r"'x4' does not match catalog_versions"):
        _republish(cfg, [{"catalog_version": "x4"}], monkeypatch)
