"""The shape of the DAGs the factory builds: every task's id, class, upstream tasks, trigger
rule, setup/teardown flags, mapping and the settings a scheduler acts on. The snapshot in
tests/data/dag_shapes.json was taken before the factory's code moved into `llmeval.dag`
(changed since on purpose only where a commit says so: the SageMaker `finetune` task's execution
timeout); test_dag_shape.py compares each build with it, so a refactor cannot change a graph unseen.

`python tests/dag_shapes.py --write` retakes the snapshot (only when a change of shape is meant).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "dag_shapes.json"
SHIPPED = ROOT / "include" / "configs"


def _sagemaker_rich() -> dict:
    """Every kind of model and every run-level step the SageMaker target has."""
    from sagemaker_fixtures import CLAUDE_JUDGE, claude, sagemaker_config

    cfg = sagemaker_config("shape-sagemaker", ["sm-alpha", "sm-beta"])
    cfg["models"].append({"name": "sm-bedrock", **claude("anthropic.claude-3-haiku-20240307-v1:0", 32)})
    cfg["models"].append({"name": "sm-given", "model_id": "vendor", "outputs_location": "qa_general_knowledge.jsonl"})
    tuned = dict(cfg["models"][0], name="sm-tuned")
    tuned["finetuning"] = {"train_data_path": "finetune_qa_train.jsonl", "parameters": {"epoch": 1}}
    cfg["models"].append(tuned)
    cfg["judges"] = [{**cfg["models"][0], "name": "sm-judge"}, CLAUDE_JUDGE | {"name": "sm-bedrock-judge"}]
    cfg["algorithms"] += [
        {"algorithm": "LLMJudge", "judge": "sm-judge"},
        {"algorithm": "Pairwise", "judge": "sm-judge", "champion": "sm-alpha"},
    ]
    cfg["registry"]["approval"] = "review"
    cfg["sagemaker"]["pool_prefix"] = "gpu-"
    cfg["schedule"] = "0 3 * * *"
    return cfg


def _local_rich() -> dict:
    from conftest import local_config

    models = [
        {"name": "m-one", "model_id": "smollm2-135m-instruct"},
        {"name": "m-given", "model_id": "vendor", "outputs_location": "qa_general_knowledge.jsonl"},
    ]
    return local_config(
        "shape-local",
        models=models,
        judges=[{"name": "judge", "model_id": "smollm2-135m-instruct"}],
        algorithms=[
            {"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>"},
            {"algorithm": "LLMJudge", "judge": "judge"},
            {"algorithm": "Pairwise", "judge": "judge", "champion": "m-one"},
        ],
        registry={"approval": "review"},
        catalog_asset="s3://catalog/qa",
    )


def _task(task) -> dict:
    timeout = task.execution_timeout
    return {
        "class": getattr(task, "operator_class", type(task)).__name__,
        "upstream": sorted(task.upstream_task_ids),
        "trigger_rule": str(task.trigger_rule),
        "setup": task.is_setup,
        "teardown": task.is_teardown,
        "mapped": type(task).__name__ == "MappedOperator",
        "group": task.task_group.group_id if task.task_group else None,
        "retries": task.retries,
        "execution_timeout_s": timeout.total_seconds() if timeout else None,
        "pool": task.pool,
        "queue": task.queue,
        "weight_rule": str(task.weight_rule),
    }


def describe(dag) -> dict:
    """What a DAG is to the scheduler, in a form that compares as JSON."""
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    groups = {
        gid: {"mapped": isinstance(g, MappedTaskGroup), "parent": g.parent_group.group_id if g.parent_group else None}
        for gid, g in dag.task_group_dict.items()
    }
    return {
        "schedule": type(dag.timetable).__name__ + ":" + str(getattr(dag.timetable, "summary", "")),
        "params": sorted(dag.params.keys()),
        "tags": sorted(dag.tags),
        "max_active_runs": dag.max_active_runs,
        "groups": groups,
        "tasks": {t.task_id: _task(t) for t in sorted(dag.tasks, key=lambda t: t.task_id)},
    }


def build_all() -> dict[str, dict]:
    """The shapes of the shipped configs' DAGs and of two configs with every step."""
    from airflow.dag_processing.dagbag import DagBag

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for path in SHIPPED.glob("*.yaml"):
            (folder / path.name).write_text(path.read_text())
        for cfg in (_sagemaker_rich(), _local_rich()):
            (folder / f"{cfg['pipeline']['name']}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        previous = os.environ.get("LLM_EVAL_CONFIGS_DIR")
        os.environ["LLM_EVAL_CONFIGS_DIR"] = str(folder)
        try:
            bag = DagBag(dag_folder=str(ROOT / "dags"))
        finally:
            if previous is None:
                os.environ.pop("LLM_EVAL_CONFIGS_DIR")
            else:
                os.environ["LLM_EVAL_CONFIGS_DIR"] = previous
    assert not bag.import_errors, bag.import_errors
    return {dag_id: describe(dag) for dag_id, dag in sorted(bag.dags.items())}


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "plugins")]
    import conftest  # noqa: F401  (the isolated Airflow home)

    shapes = build_all()
    if "--write" in sys.argv:
        SNAPSHOT.write_text(json.dumps(shapes, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT} ({len(shapes)} DAGs)")
    else:
        print(json.dumps(shapes, indent=1, sort_keys=True))
