"""Concrete values checked against declarations: parameters given to a run, approval responses,
and the declarations' own defaults.

Parameters are data, never code: a value is accepted only if it has the declared type and meets
every constraint. A secret parameter's value must be a reference (``env:NAME``, ``file:/path``)
that only the action resolves, and no message ever repeats a secret's value.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from opsgate.spec.issues import Path, format_path
from opsgate.spec.model import FieldSpec, ParameterSpec, ValueSchema
from opsgate.spec.structure import describe, did_you_mean

#: A secret reference: an environment variable or a file, resolved only inside the action.
SECRET_REFERENCE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:\S.*)$")
SECRET_HINT = "give a reference such as env:API_TOKEN or file:/run/secrets/token, never the secret"

#: Where in a value a problem is (``(2,)`` = its third item) and what is wrong, as a phrase that
#: follows the value's name: ``"must be an integer, not the text 'x'"``.
ValueProblem = tuple[Path, str]


@dataclass(frozen=True, slots=True)
class ParameterProblem:
    """One problem with the values given for a run; ``path`` is like ``hosts[2]``."""

    path: str
    message: str
    hint: str | None = None


def is_secret_reference(value: object) -> bool:
    """Whether ``value`` is an ``env:NAME`` or ``file:/path`` reference."""
    return isinstance(value, str) and SECRET_REFERENCE.match(value) is not None


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An integer or a finite float, never a boolean (YAML's and JSON's idea of a number)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_integer(value)


_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "string": (lambda value: isinstance(value, str), "text"),
    "integer": (_is_integer, "an integer"),
    "number": (is_number, "a number"),
    "boolean": (lambda value: isinstance(value, bool), "true or false"),
    "array": (lambda value: isinstance(value, list | tuple), "a list"),
    "object": (lambda value: isinstance(value, dict), "a mapping"),
}


def value_problems(schema: ValueSchema, value: Any, *, secret: bool = False) -> list[ValueProblem]:
    """Every way ``value`` breaks ``schema``; a secret is only checked for being a reference."""
    if secret:
        if is_secret_reference(value):
            return []
        return [((), "must be a secret reference (env:NAME or file:/path); the value is not shown")]
    accepts, expected = _TYPES[schema.type]
    if not accepts(value):
        return [((), f"must be {expected}, not {describe(value)}")]
    problems: list[ValueProblem] = [((), phrase) for phrase in _constraint_problems(schema, value)]
    if schema.items is not None and isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problems += [
                ((index, *sub), phrase) for sub, phrase in value_problems(schema.items, item)
            ]
    return problems


def _constraint_problems(schema: ValueSchema, value: Any) -> list[str]:
    problems = []
    if schema.min is not None and is_number(value) and value < schema.min:
        problems.append(f"must be at least {schema.min}, not {describe(value)}")
    if schema.max is not None and is_number(value) and value > schema.max:
        problems.append(f"must be at most {schema.max}, not {describe(value)}")
    if isinstance(value, str | list | tuple):
        unit = "character(s)" if isinstance(value, str) else "item(s)"
        if schema.min_length is not None and len(value) < schema.min_length:
            problems.append(f"must have at least {schema.min_length} {unit}, not {len(value)}")
        if schema.max_length is not None and len(value) > schema.max_length:
            problems.append(f"must have at most {schema.max_length} {unit}, not {len(value)}")
    if (
        schema.pattern is not None
        and isinstance(value, str)
        and not _matches(schema.pattern, value)
    ):
        problems.append(f"must match the pattern {schema.pattern!r}, not {describe(value)}")
    if schema.enum is not None and not any(_same(value, option) for option in schema.enum):
        options = ", ".join(_show(option) for option in schema.enum)
        problems.append(f"must be one of {options}, not {describe(value)}")
    return problems


def _matches(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except (re.error, OverflowError, RecursionError):
        return True  # an invalid pattern is reported where it is declared


def _same(value: object, option: object) -> bool:
    """Equality that keeps ``true`` and ``1`` apart, as YAML and JSON do."""
    return isinstance(value, bool) == isinstance(option, bool) and value == option


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else describe(value)


def validate_parameters(
    declared: Mapping[str, FieldSpec], given: Mapping[str, Any], *, kind: str = "parameter"
) -> tuple[dict[str, Any], list[ParameterProblem]]:
    """Check ``given`` values against ``declared`` fields; return every value and every problem.

    The result holds a value for each declared name: the given one, else a copy of the default,
    else ``None`` for an optional field. ``null`` counts as not given. ``kind`` names the fields
    in messages ("parameter", "response field").
    """
    problems = [_unknown(name, declared, kind) for name in given if name not in declared]
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        value = given.get(name)
        if value is None and spec.default is None and spec.required:
            problems.append(_missing(name, spec, kind))
        elif value is None:
            values[name] = copy.deepcopy(spec.default)
        else:
            secret = isinstance(spec, ParameterSpec) and spec.secret
            hint = SECRET_HINT if secret else spec.description
            problems += [
                ParameterProblem(
                    format_path((name, *sub)),
                    f"{kind} {format_path((name, *sub))!r} {phrase}",
                    hint,
                )
                for sub, phrase in value_problems(spec, value, secret=secret)
            ]
            values[name] = value
    return values, problems


def _unknown(name: object, declared: Mapping[str, FieldSpec], kind: str) -> ParameterProblem:
    known = ", ".join(sorted(declared)) or "none"
    hint = did_you_mean(name, declared) or f"this blueprint's {kind}s: {known}"
    return ParameterProblem(str(name), f"unknown {kind} {str(name)!r}", hint)


def _missing(name: str, spec: FieldSpec, kind: str) -> ParameterProblem:
    hint = f"give {_TYPES[spec.type][1]}" + (f": {spec.description}" if spec.description else "")
    return ParameterProblem(name, f"missing required {kind} {name!r}", hint)
