"""Typed evaluation configs: load YAML, validate, and explain what is wrong.

Rooms: `schema` (the pydantic models), `target_checks` (what a target can run), `loader`
(YAML with line numbers, defaults, folders), `secrets` (the credential scan), `errors`.
Errors name the file, the YAML line, the field path and what was expected.
"""

from llmeval.config.errors import ConfigError, FieldProblem, Problem
from llmeval.config.loader import (
    CONFIGS_DIR_ENV,
    DEFAULTS_FILE,
    config_files,
    configs_dir,
    json_schema,
    load_config,
    load_defaults,
    load_files,
    load_folder,
)
from llmeval.config.schema import (
    AlgorithmSection,
    EvalConfig,
    GateRule,
    MetricRule,
    ModelSection,
    SecuritySection,
)

__all__ = [
    "CONFIGS_DIR_ENV",
    "DEFAULTS_FILE",
    "AlgorithmSection",
    "ConfigError",
    "EvalConfig",
    "FieldProblem",
    "GateRule",
    "MetricRule",
    "ModelSection",
    "Problem",
    "SecuritySection",
    "config_files",
    "configs_dir",
    "json_schema",
    "load_config",
    "load_defaults",
    "load_files",
    "load_folder",
]
