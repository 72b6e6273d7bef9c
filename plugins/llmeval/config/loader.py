"""Loading configs: YAML (with line numbers for errors), `defaults.yaml` merged under each
config, the secret scan, and a folder of configs checked together."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmeval.config.errors import ConfigError, FieldProblem, Problem
from llmeval.config.schema import EvalConfig
from llmeval.config.secrets import find_secrets
from llmeval.config.target_checks import check_target

DEFAULTS_FILE = "defaults.yaml"
CONFIGS_DIR_ENV = "LLM_EVAL_CONFIGS_DIR"
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node on the path `loc`."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            if match is None:
                return line
            line, node = (key.start_mark.line + 1 if key is not None else line), match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _expected(error: Mapping[str, Any]) -> str:
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown key (check its spelling and indentation)"
    if error["type"] == "missing":
        return "required key is missing"
    return f"{msg} (got {error['input']!r})" if error["type"] != "value_error" and "input" in error else msg


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> tuple[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(str(path), None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read file ({exc.strerror})")]) from None
    try:
        return text, yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark:
            reason += f" ({context} started at line {context_mark.line + 1})"
        raise ConfigError([Problem(str(path), line, "", f"invalid YAML: {reason}")]) from None


def load_defaults(folder: Path) -> dict[str, Any]:
    path = folder / DEFAULTS_FILE
    if not path.exists():
        return {}
    text, data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), 1, "", "expected a mapping of default keys")])
    _refuse_secrets(path, text, data)  # merged under every config: scanned like one
    return data


def _refuse_secrets(path: Path, text: str, data: dict[str, Any]) -> None:
    secrets = find_secrets(data)
    if secrets:
        root = yaml.compose(text, Loader=_SafeLoader)
        raise ConfigError([Problem(str(path), _line_of(root, loc), _field_path(loc), msg) for loc, msg in secrets])


def load_config(path: str | Path, defaults: dict[str, Any] | None = None) -> EvalConfig:
    """Load and validate one config file; raise ConfigError naming file, line and field."""
    path = Path(path)
    text, data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), 1, "", "expected a mapping with pipeline, dataset, models, algorithms")])
    _refuse_secrets(path, text, data)
    if defaults:
        data = _deep_merge(defaults, data)
    try:
        cfg = EvalConfig.model_validate(data)
        check_target(cfg)  # what the config's target can run
        return cfg
    except FieldProblem as exc:
        root = yaml.compose(text, Loader=_SafeLoader)
        raise ConfigError([Problem(str(path), _line_of(root, exc.loc), _field_path(exc.loc), str(exc))]) from None
    except ValidationError as exc:
        root = yaml.compose(text, Loader=_SafeLoader)
        problems = []
        for err in exc.errors():
            loc = _yaml_loc(err["loc"])
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, FieldProblem):
                loc += cause.loc
            problems.append(Problem(str(path), _line_of(root, loc), _field_path(loc), _expected(err)))
        raise ConfigError(problems) from None


def problem_at(path: Path, loc: tuple[Any, ...], message: str) -> Problem:
    """A problem found after loading (e.g. by the worker environment), placed at its field's line."""
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=_SafeLoader)
    return Problem(str(path), _line_of(root, loc), _field_path(loc), message)


def _yaml_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union/tag entries (e.g. 'function-after[...]') that are not YAML keys."""
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def configs_dir(default: Path) -> Path:
    return Path(os.environ.get(CONFIGS_DIR_ENV) or default)


def config_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.name != DEFAULTS_FILE and p.suffix in (".yaml", ".yml"))


def load_files(paths: list[Path]) -> tuple[list[tuple[Path, EvalConfig]], list[ConfigError]]:
    """Configs with the defaults.yaml of their folder: the valid ones and one ConfigError per
    broken file. Two configs with one pipeline name are both refused, each naming the other."""
    good: list[tuple[Path, EvalConfig]] = []
    bad: list[ConfigError] = []
    defaults: dict[Path, dict[str, Any]] = {}
    for path in paths:
        try:
            if path.parent not in defaults:
                defaults[path.parent] = load_defaults(path.parent)
            good.append((path, load_config(path, defaults[path.parent])))
        except ConfigError as exc:
            bad.append(exc)
    by_name: dict[str, list[Path]] = {}
    for path, cfg in good:
        by_name.setdefault(cfg.pipeline.name, []).append(path)
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    for name, clashing in clashes.items():
        for path in clashing:
            others = ", ".join(str(p) for p in clashing if p != path)
            bad.append(
                ConfigError(
                    [Problem(str(path), None, "pipeline.name", f"{name!r} is also the pipeline name of {others}")]
                )
            )
    return [(p, c) for p, c in good if c.pipeline.name not in clashes], bad


def load_folder(folder: Path) -> tuple[list[tuple[Path, EvalConfig]], list[ConfigError]]:
    """Every config in `folder`: the valid ones and one ConfigError per broken file."""
    return load_files(config_files(folder))


def json_schema() -> dict[str, Any]:
    return EvalConfig.model_json_schema()
