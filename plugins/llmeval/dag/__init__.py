"""The DAG factory: one Airflow DAG per evaluation config.

Rooms: `settings` (DAG arguments and Params), `run_tasks` (the run-level tasks), `graph`
(the whole graph, wired in one block), `review` (the human review), `import_errors` (a
broken config as its file's import error), `catalog_events` (the deprecated catalog events'
republisher). Parsing stays cheap: only the config model and
Airflow's SDK are imported at module level; everything heavy is imported inside tasks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from airflow.sdk import DAG, get_parsing_context

from llmeval import runtime
from llmeval.config import ConfigError, Problem, configs_dir, load_folder
from llmeval.dag.catalog_events import build_republisher, republisher_id
from llmeval.dag.graph import build_dag
from llmeval.dag.import_errors import report_import_errors

log = logging.getLogger("llmeval.dag")


def load_dags(folder: Path | None = None) -> dict[str, DAG]:
    """DAGs for every valid config in `folder` (default: $LLM_EVAL_CONFIGS_DIR or include/configs).
    When a worker parses the file to run one task, only that task's DAG is built."""
    good, bad = load_folder(folder or configs_dir(runtime.configs_dir()))
    running = get_parsing_context().dag_id
    if running is not None:
        good = [(path, cfg) for path, cfg in good if running in (cfg.pipeline.name, republisher_id(cfg))]
    dags: dict[str, DAG] = {}
    for path, cfg in good:
        try:
            built = [build_dag(cfg, path)]
            if cfg.versioned and cfg.catalog_asset:
                built.append(build_republisher(cfg))
            for dag in built:
                dag.validate()
            dags.update((dag.dag_id, dag) for dag in built)
        except ConfigError as exc:
            bad.append(exc)
        except Exception as exc:  # whatever Airflow rejects stays this config's error
            bad.append(ConfigError([Problem(str(path), None, "", f"{type(exc).__name__}: {exc}")]))
    if bad:
        report_import_errors(bad)
    return dags


__all__ = ["build_dag", "load_dags"]
