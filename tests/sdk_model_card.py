"""Rebuild a model card's content (JSON on stdin) with the SageMaker SDK's model card classes
and print the SDK's serialization of it. Run in the worker environment; the classes check
field names, types, enums and list sizes."""

import json
import sys

from sagemaker.model_card import AdditionalInformation, EvaluationJob, IntendedUses, Metric, MetricGroup, ModelOverview
from sagemaker.model_card.helpers import _JSONEncoder

card = json.load(sys.stdin)
evaluations = [
    EvaluationJob(
        **{
            **e,
            "metric_groups": [
                MetricGroup(g["name"], [Metric(**m) for m in g["metric_data"]]) for g in e["metric_groups"]
            ],
        }
    )
    for e in card["evaluation_details"]
]
rebuilt = {
    "model_overview": ModelOverview(**card["model_overview"]),
    "intended_uses": IntendedUses(**card["intended_uses"]),
    "evaluation_details": evaluations,
    "additional_information": AdditionalInformation(**card["additional_information"]),
}
print(json.dumps(rebuilt, cls=_JSONEncoder))
