"""The one sandboxed expression language for templates, ``when:`` conditions and policy matches.

Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: templates cannot call
unsafe attributes or mutate values, and a misspelt name is an error instead of an empty string.
A string that is exactly one ``{{ expression }}`` renders to the expression's native value, so
``max_parallel: "{{ params.batch_size }}"`` yields an integer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from opsgate.windows import in_window


class _Environment(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, with data first: ``a.b`` on a mapping that has a key ``b`` is that key.

    Jinja looks up the attribute first, so an output named ``items`` (a Kubernetes list's, say),
    ``keys``, ``values``, ``get``, ``copy`` or ``update`` read as ``outputs.items`` gave the
    dict's method instead of the data. Keys that are not there still reach the methods
    (``params.get('environment')``).
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


ENVIRONMENT = _Environment(undefined=StrictUndefined, autoescape=False)
ENVIRONMENT.globals["in_window"] = in_window

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{-?(?P<body>.*?)-?\}\}\s*$", re.DOTALL)

Reference = tuple[str, ...]


class ExpressionError(Exception):
    """A template or condition failed to parse or to evaluate; the message says which and why."""


def is_template(value: object) -> bool:
    """Whether a string contains template syntax that is resolved later."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_template(text: str) -> str | None:
    """The syntax error in a template, or ``None``."""
    try:
        ENVIRONMENT.parse(text)
    except TemplateSyntaxError as exc:
        return exc.message or str(exc)
    except RecursionError:
        return "it nests too deeply"
    return None


def check_expression(text: str) -> str | None:
    """The syntax error in a bare expression (``when:``, ``match:``), or ``None``."""
    return check_template("{{ " + text + " }}") if text.strip() else "empty expression"


def render(template: str, context: Mapping[str, Any]) -> Any:
    """Render a template string; a lone ``{{ expr }}`` gives the expression's native value."""
    body = _lone_expression(template)
    if body is not None:
        return evaluate(body, context)
    try:
        return ENVIRONMENT.from_string(template).render(context)
    except (
        UndefinedError,
        SecurityError,
        TemplateSyntaxError,
        TypeError,
        ValueError,
        ArithmeticError,
        LookupError,
        AttributeError,
        RecursionError,
    ) as exc:
        raise ExpressionError(f"template {template!r} failed: {exc}") from exc


def _lone_expression(template: str) -> str | None:
    """The expression of a template that is exactly one ``{{ expression }}``, else ``None``.

    Judged on the parsed template, so ``}}`` inside the expression (``{'a': {}}``) is fine.
    """
    match = _SINGLE_EXPRESSION.match(template)
    if match is None:
        return None
    try:
        body = ENVIRONMENT.parse(template).body
    except (TemplateSyntaxError, RecursionError):
        return None
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts = body[0].nodes
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    return match["body"]


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside nested lists and mappings."""
    if isinstance(value, str):
        return render(value, context) if is_template(value) else value
    if isinstance(value, Mapping):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, context) for item in value]
    return value


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare expression such as ``params.env == 'prod' and blueprint.risk == 'high'``."""
    try:
        compiled = ENVIRONMENT.compile_expression(expression, undefined_to_none=False)
        result = compiled(**context)
    except (
        UndefinedError,
        SecurityError,
        TemplateSyntaxError,
        TypeError,
        ValueError,
        ArithmeticError,
        LookupError,
        AttributeError,
        RecursionError,
    ) as exc:
        raise ExpressionError(f"expression {expression.strip()!r} failed: {exc}") from exc
    if isinstance(result, StrictUndefined):
        raise ExpressionError(f"expression {expression.strip()!r} is undefined")
    return result


def references(text: str, *, expression: bool = False) -> set[Reference]:
    """The attribute chains a template reads, e.g. ``{("params", "x"), ("steps", "a", "outputs")}``.

    Only names that are free in the template are reported (loop variables are not), and each
    chain stops at the first dynamic subscript. Returns an empty set for a syntax error.
    """
    source = "{{ " + text + " }}" if expression else text
    try:
        tree = ENVIRONMENT.parse(source)
    except (TemplateSyntaxError, RecursionError):
        return set()
    bound = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    found: set[Reference] = set()
    _collect(tree, bound, found)
    return found


def _collect(node: nodes.Node, bound: set[str], found: set[Reference]) -> None:
    chain = _chain(node)
    if chain is not None:
        if chain[0] not in bound:
            found.add(chain)
        if isinstance(node, nodes.Getitem):
            _collect(node.arg, bound, found)
        return
    for child in node.iter_child_nodes():
        _collect(child, bound, found)


def _chain(node: nodes.Node) -> Reference | None:
    """``a.b['c'].d`` → ``("a", "b", "c", "d")``; ``None`` if the node is not such a chain."""
    parts: list[str] = []
    current = node
    while True:
        if isinstance(current, nodes.Getattr):
            parts.append(current.attr)
            current = current.node
        elif (
            isinstance(current, nodes.Getitem)
            and isinstance(current.arg, nodes.Const)
            and isinstance(current.arg.value, str | int)
        ):
            parts.append(str(current.arg.value))
            current = current.node
        elif isinstance(current, nodes.Getitem):
            parts.clear()  # dynamic subscript: keep only what precedes it
            current = current.node
        elif isinstance(current, nodes.Name) and current.ctx == "load":
            parts.append(current.name)
            return tuple(reversed(parts))
        else:
            return None
