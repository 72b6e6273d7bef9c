"""Targets: where a model is deployed, evaluated and registered. Each target is a package
with a class that implements `Target` (`base`); `get` imports only the one a config names."""

from __future__ import annotations

import importlib

from llmeval.contracts import TargetName
from llmeval.targets.base import JudgeSteps, Target

TARGETS = {  # TargetName -> "module:class", imported on first use
    TargetName.LOCAL: "llmeval.targets.local.target:LocalTarget",
    TargetName.SAGEMAKER: "llmeval.targets.sagemaker.target:SageMakerTarget",
}


def get(name: TargetName) -> Target:
    module, _, cls = TARGETS[TargetName(name)].partition(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["TARGETS", "JudgeSteps", "Target", "get"]
