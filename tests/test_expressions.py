"""The one sandboxed expression language: native values, strict names, no escape hatches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from opsgate.expressions import (
    ExpressionError,
    check_expression,
    check_template,
    evaluate,
    is_template,
    references,
    render,
    render_value,
)

CONTEXT = {"params": {"n": 3, "name": "web", "hosts": ["a", "b"]}, "steps": {}}


def test_a_lone_expression_renders_to_its_native_value() -> None:
    assert render("{{ params.n }}", CONTEXT) == 3
    assert render("{{ params.hosts }}", CONTEXT) == ["a", "b"]
    assert render("n={{ params.n }}", CONTEXT) == "n=3"


def test_render_value_renders_nested_templates_and_leaves_other_values() -> None:
    value = {"argv": ["echo", "{{ params.name }}"], "count": 2, "text": "plain"}
    assert render_value(value, CONTEXT) == {"argv": ["echo", "web"], "count": 2, "text": "plain"}


def test_an_undefined_name_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(ExpressionError, match=r"params\.missing"):
        render("x{{ params.missing }}", CONTEXT)
    with pytest.raises(ExpressionError):
        evaluate("params.missing", CONTEXT)


@pytest.mark.parametrize(
    "expression",
    ["().__class__.__bases__", "params.__class__", "params.hosts.append('c')"],
)
def test_the_sandbox_refuses_unsafe_attributes_and_mutation(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, CONTEXT)
    assert CONTEXT["params"]["hosts"] == ["a", "b"]


@pytest.mark.parametrize("key", ["items", "keys", "values", "get", "copy", "update", "pop"])
def test_a_key_named_like_a_dict_method_reads_the_data(key: str) -> None:
    """A Kubernetes list's ``items``, an API's ``values``: ``outputs.items`` is the output."""
    context = {"outputs": {key: [1, 2]}, "params": {"env": "prod"}}
    assert render("{{ outputs." + key + " }}", context) == [1, 2]
    assert render("{{ outputs." + key + " | length }}", context) == 2
    assert render("n={% for x in outputs." + key + " %}{{ x }}{% endfor %}", context) == "n=12"
    assert evaluate("params.get('env') == 'prod'", context) is True  # no such key: the method
    assert evaluate("params.get('missing', 'x')", context) == "x"


def test_conditions_evaluate_to_python_values() -> None:
    assert evaluate("params.n > 2 and params.name == 'web'", CONTEXT) is True
    assert evaluate("params.name in ['db']", CONTEXT) is False


def test_in_window_is_available_to_conditions() -> None:
    monday_noon = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
    context = {"now": monday_noon}
    assert evaluate("in_window(now, 'Mon-Fri 08:00-18:00', 'Europe/Berlin')", context) is True
    assert evaluate("in_window(now, 'Sat|Sun 00:00-24:00', 'Europe/Berlin')", context) is False


def test_syntax_errors_are_reported_not_raised() -> None:
    assert check_template("{{ a }") is not None
    assert check_template("{{ a }}") is None
    assert check_expression("a ==") is not None
    assert check_expression("   ") == "empty expression"


def test_is_template_recognises_expressions_and_statements() -> None:
    assert is_template("{{ x }}") and is_template("{% if x %}y{% endif %}")
    assert not is_template("plain") and not is_template(3)


def test_references_lists_free_attribute_chains_only() -> None:
    found = references("{% for h in params.hosts %}{{ h.name }}{% endfor %}{{ steps.a.outputs.x }}")
    assert found == {("params", "hosts"), ("steps", "a", "outputs", "x")}
    assert references("steps['b'].outputs.y", expression=True) == {("steps", "b", "outputs", "y")}
    assert references("{{ broken", expression=False) == set()
