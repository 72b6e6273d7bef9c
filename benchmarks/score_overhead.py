"""Score stage overhead vs plain fmeval, over the same 1,000 saved model outputs.

Three algorithm configurations (FactualKnowledge with OR, FactualKnowledge with AND, and
ClassificationAccuracy: the fmeval algorithms that score saved outputs offline) are scored
(a) by this project's score stage in one process and (b) by three plain fmeval
evaluate() calls with the outputs in the dataset. fmeval is imported before either is
timed. The dataset scores must be identical. Run with the worker environment:

    PYTHONPATH=plugins .venv-worker/bin/python benchmarks/score_overhead.py
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from pathlib import Path

N, TARGET_RATIO = 1000, 0.1
LABELS = ["positive", "negative", "neutral"]
ALGORITHMS = [
    {"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>", "logical_operator": "OR"},
    {"algorithm": "FactualKnowledge", "target_output_delimiter": "<OR>", "logical_operator": "AND"},
    {"algorithm": "ClassificationAccuracy", "valid_labels": LABELS},
]


def rows() -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(N):
        label = rng.choice(LABELS)
        said = label if rng.random() < 0.7 else rng.choice(LABELS)
        out.append(
            {
                "record_id": str(i),
                "model_input": f"review {i}",
                "target_output": label,
                "model_output": said if rng.random() < 0.5 else f"The sentiment is {said}.",
            }
        )
    return out


def fmeval_scores(records: list[dict], folder: Path) -> list[dict[str, float]]:
    from fmeval.data_loaders.data_config import DataConfig
    from fmeval.eval_algorithms.classification_accuracy import (
        ClassificationAccuracy,
        ClassificationAccuracyConfig,
    )
    from fmeval.eval_algorithms.factual_knowledge import (
        FactualKnowledge,
        FactualKnowledgeConfig,
    )

    path = folder / "outputs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = DataConfig(
        dataset_name="bench",
        dataset_uri=str(path),
        dataset_mime_type="application/jsonlines",
        model_input_location="model_input",
        target_output_location="target_output",
        model_output_location="model_output",
    )
    algorithms = [
        FactualKnowledge(FactualKnowledgeConfig(target_output_delimiter="<OR>", logical_operator="OR")),
        FactualKnowledge(FactualKnowledgeConfig(target_output_delimiter="<OR>", logical_operator="AND")),
        ClassificationAccuracy(ClassificationAccuracyConfig(valid_labels=LABELS)),
    ]
    results = []
    for algorithm in algorithms:
        output = algorithm.evaluate(dataset_config=data, num_records=N, save=False)[0]
        results.append({s.name: s.value for s in output.dataset_scores})
    return results


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    import fmeval.eval_algorithms.classification_accuracy
    import fmeval.eval_algorithms.factual_knowledge

    from llmeval.config import AlgorithmSection
    from llmeval.evaluation.score import score_outputs

    records = rows()
    sections = [AlgorithmSection.model_validate(a) for a in ALGORITHMS]
    started = time.perf_counter()
    ours, _ = score_outputs([dict(r) for r in records], sections, "bench")
    project = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        theirs = fmeval_scores(records, Path(tmp))
        fmeval = time.perf_counter() - started
    for mine, reference, spec in zip(ours, theirs, ALGORITHMS):
        got = {s.name: s.value for s in mine.scores}
        assert set(got) == set(reference), f"{spec}: score names {sorted(got)} != fmeval's {sorted(reference)}"
        for name, value in reference.items():
            assert abs(got[name] - value) < 1e-12, f"{spec} {name}: {got[name]} != fmeval's {value}"
        print(f"identical to fmeval: {spec['algorithm']} {', '.join(f'{k}={v:.4f}' for k, v in reference.items())}")
    print(f"records: {N}, algorithm configurations: {len(ALGORITHMS)}")
    print(f"project score stage:        {project:.3f} s")
    print(f"three fmeval evaluate():    {fmeval:.2f} s")
    print(f"score_overhead: {project / fmeval:.4f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
