"""The config layer's algorithm table matches fmeval's own registry and config dataclasses
(read from the worker environment's fmeval sources, since several modules cannot be
imported offline)."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from conftest import WORKER_PYTHON
from llmeval.algorithms import ALGORITHMS


@pytest.fixture(scope="module")
def fmeval_root() -> Path:
    out = subprocess.run(
        [
            WORKER_PYTHON,
            "-c",
            "import importlib.util, json; "
            "print(json.dumps(list(importlib.util.find_spec('fmeval').submodule_search_locations)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(json.loads(out.stdout)[0])


@pytest.fixture(scope="module")
def fmeval_configs(fmeval_root) -> dict[str, set[str]]:
    root = fmeval_root / "eval_algorithms"
    classes: dict[str, tuple[list[str], set[str]]] = {}
    for path in root.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                fields = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
                classes[node.name] = ([getattr(b, "id", "") for b in node.bases], fields)

    def all_fields(name: str) -> set[str]:
        bases, fields = classes[name]
        return fields.union(*(all_fields(b) for b in bases if b in classes))

    return {name: all_fields(name) for name in classes}


@pytest.mark.parametrize("name", [n for n, s in ALGORITHMS.items() if s.fmeval_module])
def test_options_match_fmeval_config_dataclass(name, fmeval_configs):
    spec = ALGORITHMS[name]
    if spec.fmeval_config_class is None:
        assert not spec.options and f"{name}Config" not in fmeval_configs
        return
    assert spec.fmeval_config_class in fmeval_configs, f"fmeval has no {spec.fmeval_config_class}"
    assert set(spec.options) == fmeval_configs[spec.fmeval_config_class]


def test_table_is_fmeval_registry(fmeval_root):
    """`fmeval.eval_algo_mapping.EVAL_ALGORITHMS`: the same algorithms, under the registry
    names a config may use (EvalAlgorithm.X.value -> class)."""
    enum = {}
    for node in ast.parse((fmeval_root / "eval_algorithms" / "__init__.py").read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "EvalAlgorithm":
            enum = {a.targets[0].id: a.value.value for a in node.body if isinstance(a, ast.Assign)}
    registry = {}
    for node in ast.parse((fmeval_root / "eval_algo_mapping.py").read_text()).body:
        if isinstance(node, ast.AnnAssign) and node.target.id == "EVAL_ALGORITHMS":
            registry = {enum[k.value.attr]: v.id for k, v in zip(node.value.keys, node.value.values)}
    assert len(registry) == 12
    ours = {spec.eval_name: name for name, spec in ALGORITHMS.items() if spec.fmeval_module}
    assert ours == registry


def test_registry_names_select_the_algorithm_with_its_options():
    from llmeval.config import AlgorithmSection

    section = AlgorithmSection.model_validate({"algorithm": "factual_knowledge", "target_output_delimiter": "<OR>"})
    assert section.name == "FactualKnowledge" and section.options == {"target_output_delimiter": "<OR>"}
    with pytest.raises(ValueError, match="does not accept option 'rouge_type'"):
        AlgorithmSection.model_validate({"algorithm": "qa_accuracy", "rouge_type": "rouge1"})


FMEVAL_VALUES = """
import json, os
os.environ["HF_HUB_OFFLINE"] = "1"
from fmeval.eval_algorithms.semantic_robustness_utils import SEMANTIC_PERTURBATIONS
from fmeval.eval_algorithms.helper_models.helper_model import BertscoreHelperModelTypes
from fmeval.eval_algorithms.toxicity import MODEL_TYPES_SUPPORTED
print(json.dumps({"perturbation_type": list(SEMANTIC_PERTURBATIONS), "model_type": list(MODEL_TYPES_SUPPORTED),
                  "model_type_for_bertscore": BertscoreHelperModelTypes.model_list()}))
"""


def test_option_values_are_the_ones_fmeval_accepts(fmeval_root):
    from llmeval.algorithms import OPTION_VALUES

    out = subprocess.run([WORKER_PYTHON, "-c", FMEVAL_VALUES], capture_output=True, text=True, check=True)
    for option, values in json.loads(out.stdout.strip().splitlines()[-1]).items():
        assert sorted(OPTION_VALUES[option]) == sorted(values), option
    metrics = ast.parse((fmeval_root / "transforms" / "summarization_accuracy_metrics.py").read_text())
    constants = {  # the module loads BERTScore at import: read its constants from the source
        n.targets[0].id: n.value
        for n in metrics.body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
    }
    assert sorted(OPTION_VALUES["rouge_type"]) == sorted(constants[e.id].value for e in constants["ROUGE_TYPES"].elts)
    factual = (fmeval_root / "eval_algorithms" / "factual_knowledge.py").read_text()
    assert 'self.logical_operator not in ["OR", "AND"]' in factual
    general = (fmeval_root / "eval_algorithms" / "general_semantic_robustness.py").read_text()
    assert "self.num_baseline_samples >= 2" in general
