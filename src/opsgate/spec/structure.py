"""Structural validation: a pydantic model applied to located YAML data, errors as located issues.

Pydantic reports where an error is as a ``loc`` that may contain union and validator tags which
are not keys of the document. Each location is walked against the data, so every issue points at
a real key or item (or, for a missing field, at the mapping that lacks it), and alternatives of
one union at one place collapse into one issue. Messages name the field, what it must be and
what it is, for a reader who has to fix the file.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from opsgate.spec.issues import Issue, Path
from opsgate.spec.source import Document, path_part

ModelT = TypeVar("ModelT", bound=BaseModel)

#: Error type of the failures raised by opsgate's own validators (see :func:`invalid`).
CUSTOM_ERROR = "opsgate"

_EXPECTED = {
    "string_type": "text",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "none_required": "null",
    "timedelta_type": "a duration",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def invalid(message: str, hint: str | None = None) -> PydanticCustomError:
    """A validation failure whose message reads after the field's name ("'x' <message>")."""
    return PydanticCustomError(CUSTOM_ERROR, "{message}", {"message": message, "hint": hint})


def describe(value: object) -> str:
    """A short description of a YAML value for messages: its kind and a clipped rendering."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}" if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return f"the number {value}" if math.isfinite(value) else f"the value {value}"
    if isinstance(value, str):
        return f"the text {clip(value)!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, for quoting values in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(name: object, known: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the closest known name, or ``None``."""
    if not isinstance(name, str) or not name:
        return None
    candidates = sorted(known)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close and len(name) >= 3:
        close = [option for option in candidates if option.startswith(name)][:1]
    return f"did you mean {close[0]!r}?" if close else None


def validate_model(
    model: type[ModelT],
    data: Any,
    document: Document,
    base: Path = (),
    *,
    skip: Callable[[Any], bool] | None = None,
) -> tuple[ModelT | None, list[Issue]]:
    """Validate ``data`` (found at ``base`` in ``document``) with ``model``.

    ``skip`` drops errors about values it accepts, e.g. template strings that are resolved
    only at run time.
    """
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, error_issues(model, exc.errors(include_url=False), data, document, base, skip)


def error_issues(
    model: type[BaseModel],
    errors: Sequence[ErrorDetails],
    data: Any,
    document: Document,
    base: Path,
    skip: Callable[[Any], bool] | None = None,
) -> list[Issue]:
    """Located issues for pydantic ``errors``: one per place in the document."""
    groups: dict[Path, list[ErrorDetails]] = {}
    for error in errors:
        if _counts_only_valid_items(error):
            continue
        path, node, present = _resolve(data, error)
        if skip is not None and present and skip(node):
            continue
        groups.setdefault(path, []).append(error)
    return [_issue(model, path, group, document, base) for path, group in groups.items()]


def _counts_only_valid_items(error: ErrorDetails) -> bool:
    """Pydantic checks a list's length after dropping invalid items: not the author's error."""
    minimum = error.get("ctx", {}).get("min_length", 0)
    return error["type"] == "too_short" and len(error["input"]) >= minimum


def _resolve(data: Any, error: ErrorDetails) -> tuple[Path, Any, bool]:
    """The document path an error is about, the value there, and whether that value exists."""
    node, loc = data, error["loc"]
    path: list[int | str] = []
    for index, part in enumerate(loc):
        if part == "[key]":
            return tuple(path), path[-1] if path else None, True
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(path_part(part))
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif index == len(loc) - 1 and error["type"] == "missing":
            return (*path, part), None, False
    return tuple(path), node, True


def _issue(
    model: type[BaseModel], path: Path, errors: list[ErrorDetails], document: Document, base: Path
) -> Issue:
    subject = _subject(document.origin((*base, *path)), errors[0])
    if len({error["type"] for error in errors}) > 1:
        expected = sorted({_EXPECTED.get(error["type"], "something else") for error in errors})
        message = f"{subject} must be {' or '.join(expected)}, not {describe(errors[0]['input'])}"
        return document.issue((*base, *path), message)
    message, hint = _explain(model, errors[0], subject)
    return document.issue((*base, *path), message, hint)


def _subject(path: Path, error: ErrorDetails) -> str:
    if error["loc"] and error["loc"][-1] == "[key]":
        return "this key"
    if not path:
        return "the document"
    last = path[-1]
    if isinstance(last, int):
        owner = next((p for p in reversed(path) if isinstance(p, str)), None)
        return f"item {last} of {owner!r}" if owner else f"item {last}"
    return repr(last)


def _explain(model: type[BaseModel], error: ErrorDetails, subject: str) -> tuple[str, str | None]:
    kind, ctx, value = error["type"], error.get("ctx", {}), error["input"]
    if kind == CUSTOM_ERROR:
        return f"{subject} {ctx['message']}", ctx.get("hint")
    if kind == "missing":
        return _missing(model, error)
    if kind == "extra_forbidden":
        return _extra(model, error)
    if kind == "literal_error":
        hint = did_you_mean(value, _literal_values(ctx.get("expected", "")))
        return f"{subject} must be one of {ctx.get('expected')}, not {describe(value)}", hint
    if kind in _EXPECTED:
        hint = "quote it to make it text" if kind == "string_type" and _is_scalar(value) else None
        if kind in ("list_type", "tuple_type") and isinstance(value, str):
            hint = "write a list: [a, b] or one '- item' per line"
        return f"{subject} must be {_EXPECTED[kind]}, not {describe(value)}", hint
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{subject} must be {words} {ctx.get(key)}, not {describe(value)}", None
    if kind == "too_short":
        return f"{subject} needs at least {ctx.get('min_length')} item(s)", None
    if kind == "too_long":
        return f"{subject} may have at most {ctx.get('max_length')} item(s)", None
    if kind == "string_pattern_mismatch":
        return f"{subject} must match {ctx.get('pattern')!r}, not {describe(value)}", None
    if kind == "string_too_short":
        return f"{subject} must not be empty", None
    if kind == "string_too_long":
        return f"{subject} may have at most {ctx.get('max_length')} characters", None
    if kind == "finite_number":
        return f"{subject} must be a finite number, not {describe(value)}", None
    if kind in ("value_error", "assertion_error"):
        return f"{subject} is invalid: {ctx.get('error')}", None
    return f"{subject} is invalid: {error['msg']}", None


def _is_scalar(value: object) -> bool:
    return isinstance(value, int | float | bool)


def _literal_values(expected: str) -> list[str]:
    return [part.strip(" '\"") for part in expected.replace(" or ", ", ").split(",")]


def _missing(model: type[BaseModel], error: ErrorDetails) -> tuple[str, str | None]:
    name = str(error["loc"][-1])
    owner = _model_at(model, error["loc"][:-1])
    field = _field(owner, name) if owner is not None else None
    hint = f"add {name!r}: {field.description}" if field and field.description else None
    return f"missing required field {name!r}", hint


def _extra(model: type[BaseModel], error: ErrorDetails) -> tuple[str, str | None]:
    name = error["loc"][-1]
    owner = _model_at(model, error["loc"][:-1])
    if owner is None:
        return f"unknown field {str(name)!r}", None
    allowed = sorted(field.alias or key for key, field in owner.model_fields.items())
    hint = did_you_mean(name, allowed) or "allowed fields here: " + ", ".join(allowed)
    return f"unknown field {str(name)!r}", hint


def _field(model: type[BaseModel], name: str) -> Any:
    return next(
        (field for key, field in model.model_fields.items() if (field.alias or key) == name), None
    )


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` (tags included), if any."""
    current: Any = model
    for part in loc:
        current = _strip(current)
        if _is_union(current):
            current = next(
                (m for m in get_args(current) if getattr(m, "__name__", None) == part), None
            )
        elif _is_model(current):
            field = _field(current, str(part))
            current = field.annotation if field is not None else None
        elif get_origin(current) in (dict, list, tuple):
            args = get_args(current)
            current = args[-1] if get_origin(current) is dict else args[0]
        else:
            return None
    current = _strip(current)
    return current if _is_model(current) else None


def _strip(annotation: Any) -> Any:
    """Strip ``Annotated`` wrappers and an optional ``None`` from an annotation."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif _is_union(annotation) and type(None) in get_args(annotation):
            members = [m for m in get_args(annotation) if m is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
