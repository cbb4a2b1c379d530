"""The raw blueprint as the semantic checks read it, and the facts they share.

The checks read the document's plain data defensively: anything malformed is skipped here
(structural validation reports it), so that one broken field does not hide the other checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from opsgate.spec.issues import Issue, Path, Severity
from opsgate.spec.roles import RoleBook
from opsgate.spec.source import Document, path_part


class ActionSignature(Protocol):
    """What the checks need to know about a step type (``actions.ActionInfo`` has it)."""

    @property
    def arguments(self) -> type[BaseModel]: ...

    @property
    def changes_things(self) -> bool: ...

    @property
    def needs_target(self) -> bool: ...


def as_mapping(value: Any) -> dict[Any, Any]:
    """``value`` if it is a mapping, else an empty one: a malformed part is skipped, not fatal."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def texts(value: Any) -> list[str]:
    """The strings of a list; other items are structural errors reported elsewhere."""
    return [item for item in as_list(value) if isinstance(item, str)]


def entries(value: Any, path: Path) -> Iterator[tuple[Path, dict[Any, Any]]]:
    """The mapping items of a list, with their paths."""
    for index, item in enumerate(as_list(value)):
        if isinstance(item, dict):
            yield (*path, index), item


@dataclass(frozen=True)
class BlueprintFacts:
    """The raw blueprint and the facts the checks share."""

    document: Document
    data: dict[Any, Any]
    actions: Mapping[str, ActionSignature] | None
    roles: RoleBook | None
    #: Every step written as a mapping, with its path.
    steps: list[tuple[Path, dict[Any, Any]]]
    #: Step id → path of the first step with that id.
    ids: dict[str, Path]
    #: Step id → the known steps it depends on, each with where the dependency is written.
    dependencies: dict[str, list[tuple[str, Path]]]
    #: Step id → every step it waits for, directly or through others.
    upstream: dict[str, frozenset[str]]
    parameters: dict[str, Any]
    secrets: frozenset[str]
    #: Ids of the steps with an approval gate.
    gated: frozenset[str]

    @classmethod
    def read(
        cls,
        document: Document,
        actions: Mapping[str, ActionSignature] | None,
        roles: RoleBook | None,
    ) -> BlueprintFacts:
        data = document.data
        steps = list(entries(data.get("steps"), ("steps",)))
        ids: dict[str, Path] = {}
        for path, step in steps:
            if step_id_of(step):
                ids.setdefault(step_id_of(step), path)
        firsts = [(path, step) for path, step in steps if ids.get(step_id_of(step)) == path]
        dependencies = {step["id"]: _known_dependencies(path, step, ids) for path, step in firsts}
        parameters = {
            k: v for k, v in as_mapping(data.get("parameters")).items() if isinstance(k, str)
        }
        return cls(
            document=document,
            data=data,
            actions=actions,
            roles=roles,
            steps=steps,
            ids=ids,
            dependencies=dependencies,
            upstream={step_id: _ancestors(dependencies, step_id) for step_id in ids},
            parameters=parameters,
            secrets=frozenset(
                k for k, v in parameters.items() if as_mapping(v).get("secret") is True
            ),
            gated=frozenset(
                step["id"] for _, step in firsts if isinstance(step.get("approval"), dict)
            ),
        )

    def issue(
        self, path: Path, message: str, hint: str | None = None, warning: bool = False
    ) -> Issue:
        severity = Severity.WARNING if warning else Severity.ERROR
        return self.document.issue(path, message, hint, severity)


def _ancestors(dependencies: Mapping[str, list[tuple[str, Path]]], step_id: str) -> frozenset[str]:
    """Every step ``step_id`` waits for, directly or transitively (cycle-safe)."""
    seen: set[str] = set()
    pending = [dependency for dependency, _ in dependencies.get(step_id, [])]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending += [dependency for dependency, _ in dependencies.get(current, [])]
    return frozenset(seen)


def step_id_of(step: dict[Any, Any]) -> str:
    """A step's id, or ``""`` when it has no usable one."""
    return step["id"] if isinstance(step.get("id"), str) else ""


def _known_dependencies(
    path: Path, step: dict[Any, Any], ids: Mapping[str, Path]
) -> list[tuple[str, Path]]:
    """The step's dependencies that name known steps, once each, with where they are written."""
    found: dict[str, Path] = {}
    for index, dependency in enumerate(as_list(step.get("depends_on"))):
        if isinstance(dependency, str) and dependency in ids:
            found.setdefault(dependency, (*path, "depends_on", index))
    return list(found.items())


def strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """Every string inside nested lists and mappings, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, (*path, path_part(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, (*path, index))


def action_sites(facts: BlueprintFacts) -> Iterator[tuple[Path, dict[Any, Any], str | None]]:
    """Each place an action runs: (path, mapping, the owning step's for_each or None)."""
    for path, step in facts.steps:
        for_each = step.get("for_each")
        fan_out = for_each if isinstance(for_each, str) else ""
        yield path, step, fan_out
        if isinstance(step.get("rollback"), dict):
            yield (*path, "rollback"), step["rollback"], fan_out
    plan = as_mapping(facts.data.get("rollback_plan"))
    for phase in ("on_failure", "finally"):
        for path, entry in entries(plan.get(phase), ("rollback_plan", phase)):
            yield path, entry, None
