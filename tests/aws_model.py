"""Check a request against the AWS API model: botocore's validator (types, required
members, minimum lengths, ranges) plus what botocore does not check: the maximum length
and the `pattern` of every string member (AWS patterns use \\p{..} classes, hence the
`regex` module; they must match the whole value)."""

from __future__ import annotations

from typing import Any

import regex
from botocore.validate import ParamValidator


def pattern_errors(shape: Any, value: Any, path: str = "") -> list[str]:
    errors: list[str] = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                errors += pattern_errors(member, value[name], f"{path}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            errors += pattern_errors(shape.member, item, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += pattern_errors(shape.key, key, f"{path}<key {key}>")
            errors += pattern_errors(shape.value, item, f"{path}[{key}]")
    elif shape.type_name == "string" and isinstance(value, str):
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            errors.append(f"{path} is {len(value)} characters, more than {shape.metadata['max']}")
        if "pattern" in shape.metadata:
            compiled = regex.compile(shape.metadata["pattern"])
            if not compiled.fullmatch(value):  # AWS patterns must match the whole value
                errors.append(f"{path}={value!r} does not match {shape.metadata['pattern']}")
    return errors


def assert_valid(client: Any, operation: str, params: dict[str, Any]) -> None:
    op = client.meta.service_model.operation_model(operation)
    report = ParamValidator().validate(params, op.input_shape)
    assert not report.has_errors(), f"{operation}: {report.generate_report()}"
    errors = pattern_errors(op.input_shape, params)
    assert not errors, f"{operation}: " + "; ".join(errors)
