"""Checks of value declarations: blueprint parameters and the response fields of gates.

A declaration must be able to accept some value: its constraints must fit its type and each
other, its enum values and its default must satisfy it, and a secret must stay a reference.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import ValidationError

from opsgate.spec.facts import BlueprintFacts
from opsgate.spec.issues import Issue, Path, format_path
from opsgate.spec.model import FieldSpec, ParameterSpec, ParameterType, ValueSchema
from opsgate.spec.parameters import SECRET_HINT, is_number, value_problems

_NUMERIC = ("integer", "number")
_APPLIES = {
    "min": _NUMERIC,
    "max": _NUMERIC,
    "min_length": ("string", "array"),
    "max_length": ("string", "array"),
    "pattern": ("string",),
    "items": ("array",),
}
_CONSTRAINTS = ("pattern", "enum", "min_length", "max_length")


def check_parameters(facts: BlueprintFacts) -> list[Issue]:
    """Every parameter declaration of the blueprint."""
    issues: list[Issue] = []
    for name, raw in facts.parameters.items():
        issues += check_declaration(facts, ("parameters", name), raw, ParameterSpec)
    return issues


def check_declaration(
    facts: BlueprintFacts, path: Path, raw: Any, model: type[ValueSchema]
) -> list[Issue]:
    """Checks of one value declaration that pydantic cannot make field by field."""
    if not isinstance(raw, dict):
        return []
    issues = _inapplicable(facts, path, raw) + _inverted(facts, path, raw)
    if isinstance(raw.get("items"), dict):
        issues += check_declaration(facts, (*path, "items"), raw["items"], ValueSchema)
    try:
        spec = model.model_validate(raw)
    except ValidationError:
        return issues  # reported by structural validation; the rest needs a sound declaration
    for index, option in enumerate(spec.enum or ()):
        issues += [
            facts.issue((*path, "enum", index, *sub), f"item {index} of 'enum' {phrase}")
            for sub, phrase in value_problems(spec.model_copy(update={"enum": None}), option)
        ]
    if isinstance(spec, FieldSpec):
        issues += _default(facts, path, spec)
    if isinstance(spec, ParameterSpec) and spec.secret:
        issues += _secret(facts, path, spec)
    return issues


def _inapplicable(facts: BlueprintFacts, path: Path, raw: dict[Any, Any]) -> list[Issue]:
    kind = raw.get("type")
    if kind not in get_args(ParameterType):
        return []
    return [
        facts.issue(
            (*path, key),
            f"'{key}' does not apply to type {kind}",
            f"'{key}' applies to type {' and '.join(types)}; remove it or change the type",
        )
        for key, types in _APPLIES.items()
        if raw.get(key) is not None and kind not in types
    ]


def _inverted(facts: BlueprintFacts, path: Path, raw: dict[Any, Any]) -> list[Issue]:
    issues = []
    for low, high in (("min", "max"), ("min_length", "max_length")):
        small, large = raw.get(low), raw.get(high)
        if is_number(small) and is_number(large) and small > large:
            issues.append(
                facts.issue(
                    (*path, high),
                    f"'{high}' ({large}) is less than '{low}' ({small}): no value can satisfy both",
                    "swap them, or correct one of them",
                )
            )
    return issues


def _default(facts: BlueprintFacts, path: Path, spec: FieldSpec) -> list[Issue]:
    if spec.default is None:
        return []
    secret = isinstance(spec, ParameterSpec) and spec.secret
    hint = SECRET_HINT if secret else "a default must satisfy its own type and constraints"
    issues = [
        facts.issue((*path, "default", *sub), f"'default{format_path(sub)}' {phrase}", hint)
        for sub, phrase in value_problems(spec, spec.default, secret=secret)
    ]
    if spec.required:
        issues.append(
            facts.issue(
                (*path, "required"),
                "'required' has no effect: the declaration has a default",
                "drop required: true, or drop the default so that callers must choose",
                warning=True,
            )
        )
    return issues


def _secret(facts: BlueprintFacts, path: Path, spec: ParameterSpec) -> list[Issue]:
    if spec.type != "string":
        return [
            facts.issue(
                (*path, "type"),
                f"a secret parameter must be of type string, not {spec.type}",
                "its value is a reference (env:NAME or file:/path), resolved inside the action",
            )
        ]
    constrained = [name for name in _CONSTRAINTS if getattr(spec, name) is not None]
    if not constrained:
        return []
    return [
        facts.issue(
            (*path, "secret"),
            f"{', '.join(constrained)} cannot be checked on a secret parameter",
            "its value is a reference (env:NAME or file:/path), resolved only inside the action; "
            "remove the constraints",
            warning=True,
        )
    ]
