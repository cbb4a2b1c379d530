"""Parameter values checked against declarations, as plan and execute will do."""

from __future__ import annotations

from typing import Any

import pytest

from opsgate.spec.model import FieldSpec, ParameterSpec
from opsgate.spec.parameters import is_secret_reference, validate_parameters


def _declare(**fields: dict[str, Any]) -> dict[str, ParameterSpec]:
    return {name: ParameterSpec.model_validate(spec) for name, spec in fields.items()}


def _problems(declared: dict[str, ParameterSpec], given: dict[str, Any]) -> list[str]:
    return [problem.message for problem in validate_parameters(declared, given)[1]]


def test_defaults_fill_what_is_not_given_and_optional_values_are_null() -> None:
    declared = _declare(
        service={"type": "string", "required": True},
        batch={"type": "integer", "default": 2},
        hosts={"type": "array", "default": ["a"]},
        note={"type": "string"},
    )
    values, problems = validate_parameters(declared, {"service": "nginx", "note": None})
    assert problems == []
    assert values == {"service": "nginx", "batch": 2, "hosts": ["a"], "note": None}
    values["hosts"].append("b")
    assert declared["hosts"].default == ["a"], "a default is copied, never shared"


def test_a_missing_required_parameter_is_named_with_what_to_give() -> None:
    declared = _declare(service={"type": "string", "required": True, "description": "the unit"})
    _, (problem,) = validate_parameters(declared, {})
    assert (problem.path, problem.message) == ("service", "missing required parameter 'service'")
    assert problem.hint == "give text: the unit"


def test_an_unknown_parameter_suggests_the_close_one() -> None:
    declared = _declare(service={"type": "string"}, hosts={"type": "string"})
    _, (problem,) = validate_parameters(declared, {"servce": "x"})
    assert problem.message == "unknown parameter 'servce'"
    assert problem.hint == "did you mean 'service'?"
    _, (other,) = validate_parameters(declared, {"zzz": 1})
    assert other.hint == "this blueprint's parameters: hosts, service"


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("integer", "3", "must be an integer, not the text '3'"),
        ("integer", True, "must be an integer, not true"),
        ("integer", 2.0, "must be an integer, not the number 2.0"),
        ("number", float("nan"), "must be a number, not the value nan"),
        ("number", False, "must be a number, not false"),
        ("boolean", "true", "must be true or false, not the text 'true'"),
        ("boolean", 1, "must be true or false, not the integer 1"),
        ("string", 5, "must be text, not the integer 5"),
        ("array", "a,b", "must be a list, not the text 'a,b'"),
        ("object", [1], "must be a mapping, not a list"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(kind: str, value: Any, message: str) -> None:
    assert _problems(_declare(p={"type": kind}), {"p": value}) == [f"parameter 'p' {message}"]


@pytest.mark.parametrize(
    ("kind", "value"),
    [("integer", 3), ("number", 3), ("number", 2.5), ("boolean", False), ("string", "")],
)
def test_a_value_of_the_right_type_is_accepted(kind: str, value: Any) -> None:
    assert _problems(_declare(p={"type": kind}), {"p": value}) == []


def test_bounds_are_inclusive() -> None:
    declared = _declare(n={"type": "integer", "min": 1, "max": 10})
    assert _problems(declared, {"n": 1}) == [] and _problems(declared, {"n": 10}) == []
    assert _problems(declared, {"n": 0}) == ["parameter 'n' must be at least 1, not the integer 0"]
    assert _problems(declared, {"n": 11}) == [
        "parameter 'n' must be at most 10, not the integer 11"
    ]


def test_lengths_count_characters_of_text_and_items_of_lists() -> None:
    text = _declare(s={"type": "string", "min_length": 2, "max_length": 3})
    assert _problems(text, {"s": "ab"}) == []
    assert _problems(text, {"s": "abcd"}) == [
        "parameter 's' must have at most 3 character(s), not 4"
    ]
    items = _declare(a={"type": "array", "min_length": 1})
    assert _problems(items, {"a": []}) == ["parameter 'a' must have at least 1 item(s), not 0"]


def test_a_pattern_is_searched_so_anchors_matter() -> None:
    loose = _declare(s={"type": "string", "pattern": "[a-z]+"})
    anchored = _declare(s={"type": "string", "pattern": "^[a-z]+$"})
    assert _problems(loose, {"s": "ABc"}) == []
    assert _problems(anchored, {"s": "ABc"}) == [
        "parameter 's' must match the pattern '^[a-z]+$', not the text 'ABc'"
    ]


def test_enum_keeps_booleans_and_numbers_apart() -> None:
    declared = _declare(n={"type": "integer", "enum": [0, 1]})
    assert _problems(declared, {"n": 1}) == []
    assert _problems(_declare(b={"type": "boolean", "enum": [True]}), {"b": 1}) == [
        "parameter 'b' must be true or false, not the integer 1"
    ]
    assert _problems(declared, {"n": 2}) == [
        "parameter 'n' must be one of the integer 0, the integer 1, not the integer 2"
    ]


def test_array_items_are_checked_each_with_its_index() -> None:
    declared = _declare(hosts={"type": "array", "items": {"type": "string", "pattern": "^web-"}})
    _, problems = validate_parameters(declared, {"hosts": ["web-1", 7, "db-1"]})
    assert [(p.path, p.message) for p in problems] == [
        ("hosts[1]", "parameter 'hosts[1]' must be text, not the integer 7"),
        ("hosts[2]", "parameter 'hosts[2]' must match the pattern '^web-', not the text 'db-1'"),
    ]


def test_a_secret_must_be_a_reference_and_is_never_repeated() -> None:
    declared = _declare(token={"type": "string", "secret": True, "required": True})
    assert _problems(declared, {"token": "env:API_TOKEN"}) == []
    assert _problems(declared, {"token": "file:/run/secrets/token"}) == []
    _, (problem,) = validate_parameters(declared, {"token": "hunter2"})
    assert "hunter2" not in problem.message and "hunter2" not in (problem.hint or "")
    assert problem.message == (
        "parameter 'token' must be a secret reference (env:NAME or file:/path); "
        "the value is not shown"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("env:API_TOKEN", True),
        ("env:_x1", True),
        ("file:/run/secrets/t", True),
        ("file:relative/path", True),
        ("env:", False),
        ("env:1ABC", False),
        ("env:A B", False),
        ("file:", False),
        ("hunter2", False),
        (None, False),
        (42, False),
    ],
)
def test_secret_references(value: object, expected: bool) -> None:
    assert is_secret_reference(value) is expected


def test_approval_responses_are_checked_like_parameters() -> None:
    fields = {"ticket": FieldSpec(type="string", required=True, pattern="^CHG-")}
    _, (problem,) = validate_parameters(fields, {"ticket": "INC-1"}, kind="response field")
    assert problem.message == (
        "response field 'ticket' must match the pattern '^CHG-', not the text 'INC-1'"
    )
