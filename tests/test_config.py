"""Config model: the seed's schema loads unchanged; every malformed config gets a message
naming the file, the line, the field path and what was expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIGS, DATASET, ROOT, local_config
from llmeval.algorithms import ALGORITHMS
from llmeval.config import (
    ConfigError,
    EvalConfig,
    json_schema,
    load_config,
    load_folder,
)

# A config in the seed solution's schema (no `target` key: a SageMaker config).
SEED = """\
pipeline:
    name: "seed-style-hybrid"
dataset:
    dataset_name: "trivia_qa_sampled"
    input_data_location: "qa_general_knowledge.jsonl"
    dataset_mime_type: "jsonlines"
    model_input_key: "question"
    target_output_key: "answer"
models:
  - name: "llama3-8b-instruct"
    model_id: "meta-textgeneration-llama-3-8b-instruct"
    model_version: "*"
    endpoint_name: "llm-eval-llama3-8b-instruct"
    deployment_config:
      instance_type: "ml.g5.2xlarge"
      num_instances: 1
    evaluation_config:
      output: '[0].generation.content'
      content_template: [[{"role":"user", "content": "PROMPT_PLACEHOLDER"}]]
      inference_parameters:
        max_new_tokens: 100
        top_p: 0.9
        temperature: 0.6
      custom_attributes:
        accept_eula: True
      prompt_template: "$feature"
    cleanup_endpoint: True
  - name: "mistral-7b-tuned"
    model_id: "huggingface-llm-mistral-7b"
    model_version: "*"
    endpoint_name: "llm-eval-mistral-7b-tuned"
    finetuning:
      train_data_path: "train_dataset"
      validation_data_path: "val_dataset"
      parameters:
        instance_type: "ml.g5.12xlarge"
        num_instances: 1
        epoch: 1
        max_input_length: 100
        instruction_tuned: True
        chat_dataset: False
    evaluation_config:
      output: '[0].generated_text'
      content_template: "PROMPT_PLACEHOLDER"
      inference_parameters:
        max_new_tokens: 100
      prompt_template: "$feature"
    register_config:
      model_package_group_name: "FMEvaluationFineTunedModel"
    cleanup_endpoint: True
algorithms:
  - algorithm: "FactualKnowledge"
    module: "fmeval.eval_algorithms.factual_knowledge"
    config: "FactualKnowledgeConfig"
    target_output_delimiter: "<OR>"
"""


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_seed_schema_loads_unchanged(tmp_path):
    cfg = load_config(_write(tmp_path, SEED))
    assert cfg.target == "sagemaker"  # no target key: the seed's SageMaker configs
    assert [m.name for m in cfg.models] == ["llama3-8b-instruct", "mistral-7b-tuned"]
    assert cfg.models[1].finetuning.parameters.epoch == 1
    assert cfg.models[0].evaluation_config.custom_attributes == {"accept_eula": True}
    assert cfg.algorithms[0].options == {"target_output_delimiter": "<OR>"}
    assert cfg.num_records is None  # the whole dataset, not fmeval's silent 100
    assert cfg.models[1].register_config.model_package_group_name == "FMEvaluationFineTunedModel"


def test_example_configs_are_valid():
    good, bad = load_folder(CONFIGS)
    assert not bad, "\n".join(str(e) for e in bad)
    assert {cfg.target for _, cfg in good} >= {"local"}


def test_finetuning_parameters_pass_extra_hyperparameters(tmp_path):
    text = SEED.replace("        chat_dataset: False", "        chat_dataset: False\n        learning_rate: 0.0001")
    cfg = load_config(_write(tmp_path, text))
    assert cfg.models[1].finetuning.parameters.model_extra == {"learning_rate": 0.0001}


def test_defaults_file_is_merged_under_every_config(tmp_path):
    (tmp_path / "defaults.yaml").write_text("num_records: 7\nregistry:\n  approval: manual\n")
    _write(tmp_path, SEED)
    good, bad = load_folder(tmp_path)
    assert not bad and len(good) == 1
    assert good[0][1].num_records == 7 and good[0][1].registry.approval == "manual"


# (description, replace this, with this, expected line, expected field, message fragment)
BROKEN = [
    ("yaml syntax", '    name: "seed-style-hybrid"', '    name: "seed-style-hybrid', 4, "", "invalid YAML"),
    ("unknown top-level key", "dataset:\n", "datset:\n", 3, "datset", "unknown key"),
    (
        "unknown nested key",
        "      num_instances: 1\n",
        "      num_instance: 1\n",
        16,
        "models[0].deployment_config.num_instance",
        "unknown key",
    ),
    (
        "wrong type",
        "      num_instances: 1\n",
        "      num_instances: many\n",
        16,
        "models[0].deployment_config.num_instances",
        "valid integer",
    ),
    (
        "unknown algorithm",
        'algorithm: "FactualKnowledge"',
        'algorithm: "FactualKnowlege"',
        52,
        "algorithms[0].algorithm",
        "unknown algorithm 'FactualKnowlege'",
    ),
    (
        "algorithm option it does not accept",
        'algorithm: "FactualKnowledge"\n    module: "fmeval.eval_algorithms.factual_knowledge"'
        '\n    config: "FactualKnowledgeConfig"',
        'algorithm: "Toxicity"',
        53,
        "algorithms[0].target_output_delimiter",
        "accepted by: FactualKnowledge, QAAccuracy",
    ),
    (
        "module of another algorithm",
        'module: "fmeval.eval_algorithms.factual_knowledge"',
        'module: "fmeval.eval_algorithms.toxicity"',
        53,
        "algorithms[0].module",
        "must be 'fmeval.eval_algorithms.factual_knowledge'",
    ),
    (
        "duplicate model names",
        '- name: "mistral-7b-tuned"',
        '- name: "llama3-8b-instruct"',
        28,
        "models[1].name",
        "duplicate model name",
    ),
    (
        "endpoint name AWS rejects",
        'endpoint_name: "llm-eval-llama3-8b-instruct"',
        'endpoint_name: "llm_eval_llama3"',
        13,
        "models[0].endpoint_name",
        "should match pattern",
    ),
    (
        "endpoint name too long",
        'endpoint_name: "llm-eval-llama3-8b-instruct"',
        f'endpoint_name: "{"a" * 64}"',
        13,
        "models[0].endpoint_name",
        "should match pattern",
    ),
    (
        "model name escaping the output prefix",
        '- name: "llama3-8b-instruct"',
        '- name: "../x"',
        10,
        "models[0].name",
        "should match pattern",
    ),
    (
        "missing required key",
        '    model_input_key: "question"\n',
        "",
        3,
        "dataset.model_input_key",
        "required key is missing",
    ),
    (
        "content template without placeholder",
        'content_template: "PROMPT_PLACEHOLDER"',
        'content_template: "hello"',
        44,
        "models[1].evaluation_config.content_template",
        "PROMPT_PLACEHOLDER",
    ),
    (
        "prompt template without $feature",
        '      prompt_template: "$feature"\n    cleanup_endpoint',
        '      prompt_template: "no slot"\n    cleanup_endpoint',
        26,
        "models[0].evaluation_config.prompt_template",
        "$feature",
    ),
    (
        "invalid JMESPath",
        "output: '[0].generated_text'",
        "output: '[0.generated_text'",
        43,
        "models[1].evaluation_config.output",
        "JMESPath",
    ),
    (
        "bad instance type",
        'instance_type: "ml.g5.2xlarge"',
        'instance_type: "g5.2xlarge"',
        15,
        "models[0].deployment_config.instance_type",
        "should match pattern",
    ),
    ("unknown target", "pipeline:\n", "target: kubernetes\npipeline:\n", 1, "target", "'local' or 'sagemaker'"),
    (
        "negative num_records",
        "pipeline:\n",
        "num_records: 0\npipeline:\n",
        1,
        "num_records",
        "greater than or equal to 1",
    ),
    (
        "empty model list",
        SEED[SEED.index("models:") : SEED.index("algorithms:")],
        "models: []\n",
        9,
        "models",
        "at least 1 item",
    ),
    (
        "invalid cron schedule",
        "pipeline:\n",
        "schedule: '61 * * * *'\npipeline:\n",
        1,
        "schedule",
        "not a valid cron expression",
    ),
    ("unknown schedule preset", "pipeline:\n", "schedule: '@nightly'\npipeline:\n", 1, "schedule", "unknown preset"),
    (
        "secret key in custom attributes",
        "        accept_eula: True\n",
        "        accept_eula: True\n        api_key: sk-123\n",
        26,
        "models[0].evaluation_config.custom_attributes.api_key",
        "must not hold secrets",
    ),
    (
        "aws access key value",
        '    dataset_name: "trivia_qa_sampled"',
        '    dataset_name: "AKIAABCDEFGHIJKLMNOP"',
        4,
        "dataset.dataset_name",
        "AWS access key id",
    ),
    (
        "bad dag id",
        'name: "seed-style-hybrid"',
        'name: "seed style/hybrid"',
        2,
        "pipeline.name",
        "should match pattern",
    ),
]


@pytest.mark.parametrize("what,old,new,line,field,fragment", BROKEN, ids=[b[0] for b in BROKEN])
def test_malformed_config_names_file_line_field_and_expectation(tmp_path, what, old, new, line, field, fragment):
    assert old in SEED, f"test case {what!r} does not apply to the seed text"
    path = _write(tmp_path, SEED.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    match = [p for p in problems if p.field == field]
    assert match, f"no problem for field {field!r}: {[str(p) for p in problems]}"
    problem = match[0]
    assert problem.file == str(path)
    assert problem.line == line, str(problem)
    assert fragment in problem.message, str(problem)
    assert str(path) in str(info.value) and f":{line}:" in str(info.value)


def test_local_target_rejects_unknown_local_model(tmp_path):
    text = "target: local\n" + SEED
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert any(p.field == "models[0].model_id" and "not a local model" in p.message for p in info.value.problems)


def test_selection_metric_must_name_a_configured_algorithm(tmp_path):
    text = SEED + "selection:\n  metrics:\n    - metric: Toxicity/toxicity\n"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    problem = info.value.problems[0]
    assert problem.field == "selection.metrics[0].metric" and problem.line == 58
    assert "not among this config's algorithms" in problem.message


def test_non_utf8_config_is_refused_clearly(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("pipeline:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_folder_with_broken_config_still_loads_the_others(tmp_path):
    _write(tmp_path, SEED, "good.yaml")
    _write(tmp_path, SEED.replace("seed-style-hybrid", "other").replace("dataset:", "datset:"), "bad.yaml")
    good, bad = load_folder(tmp_path)
    assert [cfg.pipeline.name for _, cfg in good] == ["seed-style-hybrid"]
    assert len(bad) == 1 and "bad.yaml" in str(bad[0])


def test_duplicate_dag_ids_across_files_refuse_both_naming_each_other(tmp_path):
    a, b = _write(tmp_path, SEED, "a.yaml"), _write(tmp_path, SEED, "b.yaml")
    good, bad = load_folder(tmp_path)
    assert good == [] and len(bad) == 2
    assert f"{a}: pipeline.name: 'seed-style-hybrid' is also the pipeline name of {b}" in str(bad[0])
    assert str(a) in str(bad[1]) and str(b) in str(bad[1])
    checked = _cli("validate", str(a), str(b))  # the CLI checks the files together, as the factory does
    assert checked.returncode == 1 and checked.stdout.count("INVALID") == 2, checked.stdout
    assert "is also the pipeline name of" in checked.stdout


@pytest.mark.parametrize("target", ["sagemaker", "local"])
def test_two_models_with_one_endpoint_are_refused(tmp_path, target):
    models = [
        {"name": "m-one", "model_id": "smollm2-135m-instruct", "endpoint_name": "shared-endpoint"},
        {"name": "m-two", "model_id": "smollm2-135m-instruct", "endpoint_name": "shared-endpoint"},
    ]
    cfg = (
        local_config("t-clash", models) if target == "local" else {**local_config("t-clash", models), "target": target}
    )
    path = tmp_path / "clash.yaml"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "models[1].endpoint_name" in text and "endpoint 'shared-endpoint' is also models[0]'s" in text
    assert _cli("validate", str(path)).returncode == 1


def test_a_local_model_whose_endpoint_is_another_models_name_is_refused(tmp_path):
    models = [
        {"name": "m-one", "model_id": "smollm2-135m-instruct", "endpoint_name": "m-two"},
        {"name": "m-two", "model_id": "smollm2-135m-instruct"},
    ]
    path = tmp_path / "clash.yaml"
    path.write_text(json.dumps(local_config("t-clash", models)))
    with pytest.raises(ConfigError, match="endpoint 'm-two' is also models\\[0\\]'s"):
        load_config(path)


@pytest.mark.parametrize(
    "url", ["s3://", "s3://Bad_Bucket/x", "relative/folder", "file://relative", "gs://bucket/prefix", "s3:/x"]
)
def test_malformed_artifacts_url_is_refused_at_load(tmp_path, url):
    path = tmp_path / "store.yaml"
    path.write_text(json.dumps(local_config("t-store", artifacts_url=url)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "artifacts_url" in str(err.value) and "expected file:///absolute/path" in str(err.value)


@pytest.mark.parametrize("url", ["s3://bucket/prefix", "s3://aws_moto@my-bucket", "file:///tmp/x", "/tmp/x"])
def test_artifacts_url_forms(tmp_path, url):
    path = tmp_path / "store.yaml"
    path.write_text(json.dumps(local_config("t-store", artifacts_url=url)))
    assert load_config(path).artifacts_url == url


def test_a_malformed_store_url_in_the_environment_is_refused_at_load(tmp_path, monkeypatch):
    path = tmp_path / "store.yaml"
    path.write_text(json.dumps(local_config("t-store")))
    monkeypatch.setenv("LLM_EVAL_ARTIFACTS_URL", "s3://Bad_Bucket!!/x")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    (problem,) = err.value.problems
    assert problem.field == "artifacts_url" and "LLM_EVAL_ARTIFACTS_URL" in problem.message
    assert "not a valid S3 location" in problem.message
    monkeypatch.setenv("LLM_EVAL_ARTIFACTS_URL", "s3://good-bucket/x")
    assert load_config(path).artifacts_url is None  # a valid one is the store, not the config's


def test_secrets_in_defaults_yaml_are_refused_like_a_configs(tmp_path):
    (tmp_path / "defaults.yaml").write_text("sagemaker:\n  tags:\n    api_key: sk-live-123\n")
    _write(tmp_path, SEED)
    good, bad = load_folder(tmp_path)
    assert good == [] and len(bad) == 1
    (problem,) = bad[0].problems
    assert problem.file.endswith("defaults.yaml") and problem.line == 3
    assert problem.field == "sagemaker.tags.api_key" and "must not hold secrets" in problem.message


def test_json_schema_describes_the_config():
    schema = json_schema()
    assert set(schema["required"]) == {"pipeline", "dataset", "models", "algorithms"}
    assert "target" in schema["properties"] and "selection" in schema["properties"]
    EvalConfig.model_validate_json(
        EvalConfig.model_validate(load_config(CONFIGS / "local_demo.yaml")).model_dump_json()
    )


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmeval", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_validate_exit_status_and_errors(tmp_path):
    good = _write(tmp_path, SEED, "good.yaml")
    bad = _write(tmp_path, SEED.replace("      num_instances: 1\n", "      num_instances: many\n", 1), "bad.yaml")
    ok = _cli("validate", str(good))
    assert ok.returncode == 0 and "ok" in ok.stdout
    failed = _cli("validate", str(good), str(bad))
    assert failed.returncode == 1
    assert f"{bad}:16: models[0].deployment_config.num_instances" in failed.stdout


def test_cli_schema_prints_json_schema():
    out = _cli("schema")
    assert out.returncode == 0 and json.loads(out.stdout)["title"] == "EvalConfig"


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_algorithm_accepts_its_options_and_refuses_others(name):
    from llmeval.algorithms import NOT_FROM_YAML, OPTION_RANGES, OPTION_VALUES
    from llmeval.config import AlgorithmSection

    def valid(option: str):
        if option in OPTION_VALUES or option in OPTION_RANGES:
            return {**OPTION_VALUES, **OPTION_RANGES}[option][-1]
        examples = {"valid_labels": ["a"], "rubrics": ["helpfulness"], "all_pairs": True, "min_labels": 20}
        examples |= {"task": "inspect_evals/gsm8k", "task_args": {"fewshot": 0}, "limit": 5, "epochs": 2}
        return examples.get(option, "x")

    spec = ALGORITHMS[name]
    required = ({"judge": "j"} if spec.asks_judge else {}) | ({"champion": "c"} if spec.compares_models else {})
    required |= {"task": "inspect_evals/gsm8k"} if name == "Inspect" else {}
    for option in set(spec.options) - set(NOT_FROM_YAML):
        base = required
        if option in ("judges", "aggregate"):  # a panel of judges instead of one judge
            base = {k: v for k, v in required.items() if k != "judge"} | {"judges": ["j", "k"]}
        if option == "min_agreement":  # measured against people: their labels too
            base = base | {"labels": "labels/preferences.jsonl"}
        value = {"judges": ["j", "k"], "min_agreement": 0.4}.get(option, valid(option))
        AlgorithmSection.model_validate({"algorithm": name, **base, option: value})
    foreign = next(o for s in ALGORITHMS.values() for o in sorted(s.options) if o not in spec.options)
    with pytest.raises(ValueError, match=f"{name} does not accept option '{foreign}'"):
        AlgorithmSection.model_validate({"algorithm": name, **required, foreign: "x"})


def _local(**extra) -> dict:
    return local_config(**extra)


def _sagemaker(hub_access: bool, algorithms: list[dict]) -> dict:
    import yaml

    cfg = yaml.safe_load((CONFIGS / "seed_scenario1_foundation_models.yaml").read_text())
    return {**cfg, "algorithms": algorithms, "sagemaker": {"hub_access": hub_access}}


PAIRS = {"sent_more_input_key": "more", "sent_less_input_key": "less"}
LOGPROB = {"log_probability": "sum([0].details.prefill[1:].logprob)"}
CANNOT_RUN = {
    "local-hub-weights": (
        _local(algorithms=[{"algorithm": "FactualKnowledge"}, {"algorithm": "QAAccuracy"}]),
        "algorithms[1].algorithm",
        "QAAccuracy: downloads model weights (BERTScore or detoxify) from the Hugging Face Hub, so it cannot run on "
        "the local target; algorithms that run offline: ClassificationAccuracy, "
        "ClassificationAccuracySemanticRobustness, FactualKnowledge, Inspect, LLMJudge, Pairwise, PromptStereotyping, "
        "SemanticSimilarity",
    ),
    "unknown-perturbation": (
        _local(
            algorithms=[
                {"algorithm": "ClassificationAccuracySemanticRobustness", "perturbation_type": "back_translation"}
            ]
        ),
        "algorithms[0].perturbation_type",
        "perturbation_type must be one of butter_finger, random_upper_case, whitespace_add_remove; "
        "got 'back_translation'",
    ),
    "probability-above-one": (
        _local(algorithms=[{"algorithm": "ClassificationAccuracySemanticRobustness", "whitespace_add_prob": 1.5}]),
        "algorithms[0].whitespace_add_prob",
        "whitespace_add_prob must be a number from 0.0 to 1.0; got 1.5",
    ),
    "perturbations-not-an-integer": (
        _local(algorithms=[{"algorithm": "ClassificationAccuracySemanticRobustness", "num_perturbations": 2.5}]),
        "algorithms[0].num_perturbations",
        "num_perturbations must be an integer from 1 to 100",
    ),
    "one-baseline-sample": (
        _sagemaker(True, [{"algorithm": "GeneralSemanticRobustness", "num_baseline_samples": 1}]),
        "algorithms[0].num_baseline_samples",
        "num_baseline_samples must be an integer from 2 to 100",
    ),
    "unknown-rouge": (
        _sagemaker(True, [{"algorithm": "SummarizationAccuracy", "rouge_type": "rouge3"}]),
        "algorithms[0].rouge_type",
        "rouge_type must be one of rouge1, rouge2, rougeL",
    ),
    "unknown-toxicity-detector": (
        _sagemaker(True, [{"algorithm": "qa_toxicity", "model_type": "perspective"}]),
        "algorithms[0].model_type",
        "model_type must be one of toxigen, detoxify",
    ),
    "logical-operator": (
        _local(algorithms=[{"algorithm": "FactualKnowledge", "logical_operator": "XOR"}]),
        "algorithms[0].logical_operator",
        "logical_operator must be one of OR, AND",
    ),
    "converter-function": (
        _local(algorithms=[{"algorithm": "ClassificationAccuracy", "converter_fn": "my.module.fn"}]),
        "algorithms[0].converter_fn",
        "converter_fn cannot be set from a config",
    ),
    "empty-labels": (
        _local(algorithms=[{"algorithm": "ClassificationAccuracy", "valid_labels": []}]),
        "algorithms[0].valid_labels",
        "valid_labels must be a non-empty list",
    ),
    "sagemaker-without-hub": (
        _sagemaker(False, [{"algorithm": "toxicity"}]),
        "algorithms[0].algorithm",
        "Toxicity: downloads model weights (BERTScore or detoxify) from the Hugging Face Hub, so it cannot run with "
        "sagemaker.hub_access false",
    ),
    "stereotyping-without-pairs": (
        _local(algorithms=[{"algorithm": "PromptStereotyping"}]),
        "dataset.sent_more_input_key",
        "PromptStereotyping compares sentence pairs",
    ),
    "stereotyping-without-log-probability": (
        _local(
            algorithms=[{"algorithm": "prompt_stereotyping"}],
            dataset={**DATASET, **PAIRS},
        ),
        "models[0].evaluation_config.log_probability",
        "needs each sentence's log probability",
    ),
    "half-a-pair": (
        _local(dataset={**DATASET, "sent_more_input_key": "more"}),
        "dataset.sent_less_input_key",
        "give both sent_more_input_key and sent_less_input_key",
    ),
    "log-probability-not-jmespath": (
        _local(
            models=[{"name": "m", "model_id": "smollm2-135m-instruct", "evaluation_config": {"log_probability": "[0"}}]
        ),
        "models[0].evaluation_config.log_probability",
        "not a valid JMESPath expression",
    ),
}


@pytest.mark.parametrize("case", CANNOT_RUN)
def test_algorithms_that_cannot_run_are_refused_at_load(tmp_path, case):
    import yaml

    cfg, field, message = CANNOT_RUN[case]
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, yaml.safe_dump(cfg)))
    problem = info.value.problems[0]
    assert problem.field == field and message in problem.message, problem


def test_model_calling_algorithms_load_when_they_can_run(tmp_path):
    import yaml

    models = [{"name": "m", "model_id": "smollm2-135m-instruct", "evaluation_config": LOGPROB}]
    algorithms = [
        {"algorithm": "PromptStereotyping"},
        {"algorithm": "classification_accuracy_semantic_robustness", "perturbation_type": "whitespace_add_remove"},
    ]
    cfg = load_config(
        _write(tmp_path, yaml.safe_dump(_local(models=models, algorithms=algorithms, dataset={**DATASET, **PAIRS})))
    )
    assert [a.name for a in cfg.algorithms] == ["PromptStereotyping", "ClassificationAccuracySemanticRobustness"]
    online = load_config(_write(tmp_path, yaml.safe_dump(_sagemaker(True, [{"algorithm": "Toxicity"}]))))
    assert online.algorithms[0].name == "Toxicity"


def test_custom_algorithm_classes(tmp_path):
    import yaml

    from conftest import local_config

    cfg = local_config(
        algorithms=[{"algorithm": "custom:brevity:Brevity", "max_words": 5}],
        selection={"metrics": [{"metric": "Brevity/brevity"}]},
    )
    loaded = load_config(_write(tmp_path, yaml.safe_dump(cfg)))
    assert loaded.algorithms[0].name == "Brevity" and loaded.algorithms[0].options == {"max_words": 5}
    for bad in ("custom:brevity", "custom:../x:Y", "custom:brevity:Bre vity"):
        cfg["algorithms"] = [{"algorithm": bad}]
        with pytest.raises(ConfigError, match="expected custom:<module path>:<class name>"):
            load_config(_write(tmp_path, yaml.safe_dump(cfg)))


def test_end_date_before_start_date_is_refused(write_config):
    from llmeval.config import ConfigError, load_config

    path = write_config("dates.yaml", local_config("dates", start_date="2026-02-01", end_date="2026-01-01"))
    with pytest.raises(ConfigError, match=r"end_date.*2026-01-01 is before start_date 2026-02-01"):
        load_config(path)


def test_endpoint_quotas_need_instance_types_and_positive_counts(write_config):
    import yaml

    from llmeval.config import ConfigError, load_config

    cfg = yaml.safe_load((CONFIGS / "seed_scenario1_foundation_models.yaml").read_text())
    cfg["sagemaker"] = {"endpoint_quotas": {"g5.2xlarge": 2}}
    with pytest.raises(ConfigError, match=r"sagemaker\.endpoint_quotas"):
        load_config(write_config("bad-type.yaml", cfg))
    cfg["sagemaker"] = {"endpoint_quotas": {"ml.g5.2xlarge": 0}}
    with pytest.raises(ConfigError, match=r"sagemaker\.endpoint_quotas\.ml\.g5\.2xlarge"):
        load_config(write_config("zero.yaml", cfg))
    cfg["sagemaker"] = {"endpoint_quotas": {"ml.g5.2xlarge": 2}}
    assert load_config(write_config("good.yaml", cfg)).sagemaker.endpoint_quotas == {"ml.g5.2xlarge": 2}
