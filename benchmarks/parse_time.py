"""DAG parse time: the factory over 100 YAML configs x 5 models vs a hand-written DAG file.

Both build the same 100 DAGs with the same tasks and operator classes: the factory from
YAML (load, validate, build), the hand-written file from Python literals. Each is parsed
by a DagBag in a fresh process, alternately, 3 times; medians are compared. It also
checks that parsing imported none of fmeval, torch, transformers, ray, sagemaker.
Run with the Airflow environment:

    PYTHONPATH=plugins .venv/bin/python benchmarks/parse_time.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS, MODELS, RUNS, TARGET_RATIO = 100, 5, 3, 1.3
HEAVY = ("fmeval", "torch", "transformers", "ray", "sagemaker", "sentence_transformers", "s3fs")

HAND_WRITTEN = '''
"""Hand-written baseline: the factory's DAG shape for the SageMaker target, no YAML."""
from datetime import datetime, timezone
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointOperator, SageMakerProcessingOperator, SageMakerTrainingOperator)
from airflow.sdk import DAG, Param, task, task_group

PIPELINES = {pipelines!r}

for name, models, tuned_models in PIPELINES:
    with DAG(dag_id=name, schedule=None, start_date=datetime(2025, 1, 1, tzinfo=timezone.utc), catchup=False,
             max_active_runs=1, tags=["llm-eval", "sagemaker"], doc_md=f"### {{name}}",
             params={{
                 "models": Param(models, type="array", items={{"type": "string", "enum": models}}, minItems=1,
                                 uniqueItems=True, title="Models",
                                 description="Which of the config's models to evaluate in this run."),
                 "num_records": Param(None, type=["null", "integer"], minimum=1, title="Record limit",
                                      description="Evaluate only the first N records (a smoke run)."),
                 "catalog_version": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$",
                                          title="Catalog version", description="Prompt-catalog version to evaluate."),
                 "register": Param(True, type="boolean", title="Register", description="Register the selected model."),
                 "keep_endpoints": Param(False, type="boolean", title="Keep endpoints",
                                         description="Leave endpoints running after the run.")}}) as dag:
        @task
        def preprocess(): return {{}}
        @task
        def plan(prepared): return []
        @task
        def split(models, tuned): return []
        def steps(model, tuned):
            @task(multiple_outputs=True)
            def prepare(model): return {{}}
            @task(trigger_rule="all_done")
            def collect_results(model): return ""
            @task
            def teardown_endpoint(model): return []
            prepared = prepare(model)
            if tuned:
                @task
                def prepare_training_job(model): return {{}}
                training = prepare_training_job(model)
                finetune = SageMakerTrainingOperator(task_id="finetune", config=training, deferrable=True)
                training >> finetune >> prepared
            deploy = SageMakerEndpointOperator(task_id="deploy", config=prepared["endpoint"], deferrable=True)
            evaluate = SageMakerProcessingOperator(task_id="evaluate", config=prepared["processing"], deferrable=True)
            collected = collect_results(model)
            stop = teardown_endpoint(model)
            prepared >> deploy >> evaluate >> collected >> stop
            stop.as_teardown(setups=[prepared, deploy])
        @task_group(group_id="model")
        def per_model(model_name): steps(model_name, False)
        @task_group(group_id="tuned_model")
        def per_tuned_model(model_name): steps(model_name, True)
        @task(trigger_rule="all_done")
        def select(models): return {{}}
        @task
        def register(selection): return {{}}
        @task(trigger_rule="all_done")
        def report(models): return ""
        @task(trigger_rule="all_done")
        def verdict(models): return None
        models_ = plan(preprocess())
        chosen = select(models_)
        per_model.expand(model_name=split.override(task_id="foundation_models")(models_, tuned=False)) >> chosen
        per_tuned_model.expand(model_name=split.override(task_id="tuned_models")(models_, tuned=True)) >> chosen
        register(chosen) >> report(models_) >> verdict(models_)
    globals()[name] = dag
'''

PARSE = """
import json, sys, time
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
imported = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
done = time.perf_counter()
heavy = [m for m in {heavy!r} if m in sys.modules]
tasks = sum(len(d.tasks) for d in bag.dags.values())
print(json.dumps({{"seconds": done - imported, "dags": len(bag.dags), "tasks": tasks, "errors": len(bag.import_errors),
                  "heavy": heavy}}))
"""


def config(i: int) -> dict:
    models = []
    for j in range(MODELS):
        model = {
            "name": f"model-{j}",
            "model_id": "huggingface-llm-mistral-7b-instruct",
            "model_version": "*",
            "endpoint_name": f"bench-{i}-model-{j}",
            "deployment_config": {"instance_type": "ml.g5.2xlarge", "num_instances": 1},
            "evaluation_config": {
                "output": "[0].generated_text",
                "content_template": "PROMPT_PLACEHOLDER",
                "inference_parameters": {"max_new_tokens": 64},
                "prompt_template": "$feature",
            },
        }
        if j == MODELS - 1:
            model["finetuning"] = {"train_data_path": "s3://bucket/train/", "parameters": {"epoch": 1}}
        models.append(model)
    return {
        "target": "sagemaker",
        "pipeline": {"name": f"bench-pipeline-{i:03d}"},
        "dataset": {
            "dataset_name": "qa",
            "input_data_location": "qa_general_knowledge.jsonl",
            "model_input_key": "question",
            "target_output_key": "answer",
        },
        "models": models,
        "algorithms": [
            {"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>"},
            {"algorithm": "SemanticSimilarity"},
        ],
    }


def parse(folder: Path, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PARSE.format(heavy=HEAVY), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        configs, factory_dags, hand_dags = tmp_path / "configs", tmp_path / "factory", tmp_path / "hand"
        for folder in (configs, factory_dags, hand_dags):
            folder.mkdir()
        pipelines = []
        for i in range(CONFIGS):
            cfg = config(i)
            (configs / f"bench_{i:03d}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            names = [m["name"] for m in cfg["models"]]
            pipelines.append((cfg["pipeline"]["name"], names, [names[-1]]))
        (factory_dags / "llm_evaluation.py").write_text((ROOT / "dags" / "llm_evaluation.py").read_text())
        (hand_dags / "hand_written.py").write_text(HAND_WRITTEN.format(pipelines=pipelines))
        env = dict(
            os.environ,
            LLM_EVAL_CONFIGS_DIR=str(configs),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
        )
        factory, hand = [], []
        for _ in range(RUNS):
            factory.append(parse(factory_dags, env))
            hand.append(parse(hand_dags, env))
    for name, runs in (("factory", factory), ("hand-written", hand)):
        first = runs[0]
        assert first["dags"] == CONFIGS and first["errors"] == 0, (name, first)
        assert not first["heavy"], f"{name} imported {first['heavy']} at parse time"
    assert factory[0]["tasks"] == hand[0]["tasks"], (factory[0]["tasks"], hand[0]["tasks"])
    f = statistics.median(r["seconds"] for r in factory)
    h = statistics.median(r["seconds"] for r in hand)
    print(f"{CONFIGS} DAGs x {MODELS} models, {factory[0]['tasks']} tasks; medians of {RUNS} fresh-process parses")
    print(f"factory (YAML + validation):  {f:.2f} s")
    print(f"hand-written DAG file:        {h:.2f} s")
    print(f"heavy modules imported at parse time: none of {', '.join(HEAVY)}")
    print(f"parse_time: {f / h:.2f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
