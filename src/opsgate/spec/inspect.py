"""Semantic checks of a blueprint: every problem at once, read from the raw document.

StackStorm orquesta's ``inspect()`` is the model. Structural validation
(:mod:`opsgate.spec.structure`) says whether each field has the right shape; these checks say
whether the blueprint makes sense as a whole: dependencies and cycles, actions and their
arguments, step options and risk here; templates and the names they read in
:mod:`~opsgate.spec.references`; parameter declarations in :mod:`~opsgate.spec.declarations`;
gates and who could decide them in :mod:`~opsgate.spec.gates`. They read the raw data
defensively (:mod:`~opsgate.spec.facts`), so a document with a type error still gets its cycle,
template and gate checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from opsgate.expressions import is_template
from opsgate.spec.declarations import check_parameters
from opsgate.spec.durations import parse_duration
from opsgate.spec.facts import (
    ActionSignature,
    BlueprintFacts,
    action_sites,
    as_list,
    as_mapping,
    entries,
    step_id_of,
    texts,
)
from opsgate.spec.gates import check_gates
from opsgate.spec.issues import Issue, Path, format_path
from opsgate.spec.references import check_templates
from opsgate.spec.roles import RoleBook
from opsgate.spec.source import Document
from opsgate.spec.structure import did_you_mean, validate_model

#: How many dependency cycles are reported at most, and how much search they may cost.
MAX_CYCLES = 10
_CYCLE_SEARCH_BUDGET = 20_000


def inspect_blueprint(
    document: Document,
    actions: Mapping[str, ActionSignature] | None = None,
    roles: RoleBook | None = None,
) -> list[Issue]:
    """Every semantic issue of the blueprint in ``document``.

    Checks that need ``actions`` (known step types, their arguments, side effects) or ``roles``
    (whether someone can approve each gate) are skipped when they are not given.
    """
    if not isinstance(document.data, dict):
        return []
    facts = BlueprintFacts.read(document, actions, roles)
    issues: list[Issue] = []
    checks = (check_parameters, _graph, _actions, check_templates, _options, check_gates, _risk)
    for check in checks:
        issues += check(facts)
    return issues


def _graph(facts: BlueprintFacts) -> list[Issue]:
    return _duplicate_ids(facts) + _unknown_dependencies(facts) + _cycles(facts)


def _duplicate_ids(facts: BlueprintFacts) -> list[Issue]:
    issues = []
    for path, step in facts.steps:
        step_id = step_id_of(step)
        if step_id in facts.ids and facts.ids[step_id] != path:
            first = format_path(facts.ids[step_id])
            issues.append(
                facts.issue(
                    (*path, "id"),
                    f"duplicate step id {step_id!r}: {first} already uses it",
                    "give every step its own id",
                )
            )
    return issues


def _unknown_dependencies(facts: BlueprintFacts) -> list[Issue]:
    issues = []
    for path, step in facts.steps:
        who = f"step {step['id']!r}" if isinstance(step.get("id"), str) else "this step"
        seen: set[str] = set()
        for index, dependency in enumerate(as_list(step.get("depends_on"))):
            where = (*path, "depends_on", index)
            if not isinstance(dependency, str):
                continue
            if dependency not in facts.ids:
                hint = did_you_mean(dependency, facts.ids) or (
                    "steps: " + ", ".join(facts.ids) if facts.ids else None
                )
                issues.append(
                    facts.issue(where, f"{who} depends on unknown step {dependency!r}", hint)
                )
            elif dependency in seen:
                message = f"{dependency!r} is listed twice in depends_on"
                issues.append(facts.issue(where, message, "remove the repeat", warning=True))
            seen.add(dependency)
    return issues


def _cycles(facts: BlueprintFacts) -> list[Issue]:
    """Each elementary dependency cycle once, found from its first step in file order."""
    order = list(facts.ids)
    rank = {step_id: number for number, step_id in enumerate(order)}
    edges = {step_id: [d for d, _ in facts.dependencies[step_id]] for step_id in order}
    budget = itertools.count()
    issues: list[Issue] = []
    for start in order:
        for cycle in _cycles_from(start, edges, rank, budget):
            first_edge = dict(facts.dependencies[start])[cycle[1]]
            issues.append(
                facts.issue(
                    first_edge,
                    f"dependency cycle: {' → '.join(cycle)} (each step depends on the next, "
                    "so none of them can start)",
                    "remove one of these depends_on entries",
                )
            )
            if len(issues) >= MAX_CYCLES:
                return issues
    return issues


def _cycles_from(
    start: str, edges: Mapping[str, list[str]], rank: Mapping[str, int], budget: Iterator[int]
) -> Iterator[list[str]]:
    """Simple cycles through ``start`` whose other steps all come later in file order."""
    path = [start]
    stack = [iter(edges[start])]
    while stack:
        following = next(stack[-1], None)
        if following is None or next(budget) > _CYCLE_SEARCH_BUDGET:
            stack.pop()
            path.pop()
        elif following == start:
            yield [*path, start]
        elif rank[following] > rank[start] and following not in path:
            path.append(following)
            stack.append(iter(edges[following]))


def _actions(facts: BlueprintFacts) -> list[Issue]:
    if facts.actions is None:
        return []
    issues: list[Issue] = []
    for path, site, for_each in action_sites(facts):
        name = site.get("action")
        if not isinstance(name, str):
            continue
        info = facts.actions.get(name)
        if info is None:
            known = ", ".join(sorted(facts.actions))
            hint = did_you_mean(name, facts.actions) or f"known actions: {known}"
            issues.append(facts.issue((*path, "action"), f"unknown action {name!r}", hint))
            continue
        issues += _arguments(facts, path, site, info)
        if info.needs_target and for_each != "targets":
            issues.append(_needs_target(facts, path, name, for_each))
    return issues


def _arguments(
    facts: BlueprintFacts, path: Path, site: dict[Any, Any], info: ActionSignature
) -> list[Issue]:
    arguments = site.get("with", {})
    if not isinstance(arguments, dict):
        return []  # structural validation reports it
    _, issues = validate_model(
        info.arguments, arguments, facts.document, (*path, "with"), skip=is_template
    )
    return issues


def _needs_target(facts: BlueprintFacts, path: Path, name: str, for_each: str | None) -> Issue:
    if for_each is None:
        return facts.issue(
            (*path, "action"),
            f"action {name!r} runs on a target, but rollback_plan actions run once, without one",
            "undo per-target work in the step's own rollback: instead",
        )
    return facts.issue(
        (*path, "action"),
        f"action {name!r} runs on a target, but the step does not fan out over targets",
        "add for_each: targets (and declare the blueprint's targets)",
    )


def _options(facts: BlueprintFacts) -> list[Issue]:
    issues: list[Issue] = []
    for path, step in facts.steps:
        if step.get("for_each") is None:
            issues += [
                facts.issue(
                    (*path, key),
                    f"'{key}' has no effect without for_each",
                    "remove it, or fan the step out with for_each",
                    warning=True,
                )
                for key in ("max_parallel", "max_failed_percentage")
                if step.get(key) is not None
            ]
    for path, site, _ in action_sites(facts):
        if isinstance(site.get("retry"), dict):
            issues += _retry(facts, (*path, "retry"), site["retry"])
    issues += _plan_ids(facts)
    return issues


def _retry(facts: BlueprintFacts, path: Path, retry: dict[Any, Any]) -> list[Issue]:
    issues = []
    first, longest = _duration(retry.get("initial_interval")), _duration(retry.get("max_interval"))
    if first is not None and longest is not None and longest < first:
        issues.append(
            facts.issue(
                (*path, "max_interval"),
                "'max_interval' is shorter than 'initial_interval'",
                "max_interval caps the wait between attempts; make it at least initial_interval",
            )
        )
    both = sorted(set(texts(retry.get("retry_on"))) & set(texts(retry.get("non_retryable"))))
    if both:
        issues.append(
            facts.issue(
                (*path, "non_retryable"),
                f"{', '.join(both)} listed in both retry_on and non_retryable; never retried",
                "keep each error type in one list",
                warning=True,
            )
        )
    return issues


def _duration(value: Any) -> timedelta | None:
    try:
        return parse_duration(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        return None


def _plan_ids(facts: BlueprintFacts) -> list[Issue]:
    plan = as_mapping(facts.data.get("rollback_plan"))
    seen: dict[str, Path] = {}
    issues = []
    for phase in ("on_failure", "finally"):
        for path, entry in entries(plan.get(phase), ("rollback_plan", phase)):
            entry_id = entry.get("id")
            if not isinstance(entry_id, str):
                continue
            if entry_id in seen:
                first = format_path(seen[entry_id])
                issues.append(
                    facts.issue(
                        (*path, "id"),
                        f"duplicate rollback action id {entry_id!r}: {first} already uses it",
                        "give every rollback_plan action its own id",
                    )
                )
            seen.setdefault(entry_id, path)
    return issues


def _risk(facts: BlueprintFacts) -> list[Issue]:
    """A high-risk blueprint that changes things should be able to undo them."""
    risk = facts.data.get("risk")
    if risk not in ("high", "critical") or facts.actions is None:
        return []
    actions = facts.actions
    changing = [
        step_id_of(step) or format_path(path)
        for path, step in facts.steps
        if isinstance(step.get("action"), str)
        and step["action"] in actions
        and actions[step["action"]].changes_things
    ]
    if not changing:
        return []
    if facts.data.get("rollback_on_failure") is False:
        return [
            facts.issue(
                ("rollback_on_failure",),
                f"a {risk}-risk blueprint whose steps change things ({', '.join(changing)}) "
                "has rollback disabled",
                "set rollback_on_failure: true, or lower the risk if nothing needs undoing",
                warning=True,
            )
        ]
    plan = as_mapping(facts.data.get("rollback_plan"))
    undoes = any(isinstance(step.get("rollback"), dict) for _, step in facts.steps)
    if undoes or as_list(plan.get("on_failure")):
        return []
    return [
        facts.issue(
            ("risk",),
            f"a {risk}-risk blueprint whose steps change things ({', '.join(changing)}) "
            "has no rollback",
            "add rollback: {action: ..., with: ...} to those steps, or a rollback_plan",
            warning=True,
        )
    ]
