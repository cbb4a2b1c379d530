"""Checks of approval gates: that someone, and enough distinct principals, could decide each."""

from __future__ import annotations

from typing import Any

from opsgate.spec.declarations import check_declaration
from opsgate.spec.facts import BlueprintFacts, as_mapping, texts
from opsgate.spec.issues import Issue, Path
from opsgate.spec.model import FieldSpec
from opsgate.spec.source import path_part
from opsgate.spec.structure import did_you_mean


def check_gates(facts: BlueprintFacts) -> list[Issue]:
    """The gate of every step: its approvers, quorum, escalation and response form."""
    issues: list[Issue] = []
    for path, step in facts.steps:
        gate = step.get("approval")
        if isinstance(gate, dict):
            issues += _gate(facts, (*path, "approval"), gate)
    return issues


def _gate(facts: BlueprintFacts, path: Path, gate: dict[Any, Any]) -> list[Issue]:
    quorum = gate.get("quorum", 1)
    quorum = quorum if isinstance(quorum, int) and not isinstance(quorum, bool) else 1
    issues = []
    if isinstance(gate.get("approvers"), dict):
        issues += _approvers(facts, path, "approvers", gate["approvers"], quorum)
    escalates = gate.get("on_timeout") == "escalate"
    if escalates and gate.get("escalate_to") is None:
        issues.append(
            facts.issue(
                (*path, "on_timeout"),
                "on_timeout: escalate needs escalate_to",
                "add escalate_to: {roles: [...]}, or use on_timeout: reject",
            )
        )
    if escalates and isinstance(gate.get("escalate_to"), dict):
        issues += _approvers(facts, path, "escalate_to", gate["escalate_to"], quorum)
    if not escalates:
        issues += [
            facts.issue(
                (*path, key),
                f"'{key}' has no effect unless on_timeout is escalate",
                "set on_timeout: escalate, or remove it",
                warning=True,
            )
            for key in ("escalate_to", "escalation_timeout")
            if gate.get(key) is not None
        ]
    for name, raw in as_mapping(gate.get("response")).items():
        issues += check_declaration(facts, (*path, "response", path_part(name)), raw, FieldSpec)
    return issues


def _approvers(
    facts: BlueprintFacts, gate: Path, key: str, approvers: dict[Any, Any], quorum: int
) -> list[Issue]:
    """Whether anyone, and enough distinct principals, could decide a gate."""
    path = (*gate, key)
    roles, principals = texts(approvers.get("roles")), set(texts(approvers.get("principals")))
    if not roles and not principals:
        return [
            facts.issue(
                path,
                f"'{key}' names no roles and no principals: nobody could decide this gate",
                "add roles: [ops-manager] or principals: [alice]",
            )
        ]
    if not roles and quorum > len(principals):
        return [_quorum_issue(facts, gate, quorum, principals)]
    if facts.roles is None:
        return []
    return _role_issues(facts, gate, path, roles, principals, quorum)


def _role_issues(
    facts: BlueprintFacts,
    gate: Path,
    path: Path,
    roles: list[str],
    principals: set[str],
    quorum: int,
) -> list[Issue]:
    book = facts.roles
    assert book is not None
    holders = {role: book.holders(role) for role in roles}
    if any(found is None for found in holders.values()):
        return []  # a default role: every principal may decide
    eligible = principals.union(*(found for found in holders.values() if found))
    unheld = [role for role, found in holders.items() if not found]
    known = sorted(book.known_roles)
    if not eligible:
        return [
            facts.issue(
                path,
                f"nobody could decide this gate: no principal holds role(s) {', '.join(unheld)}",
                did_you_mean(unheld[0], known) or f"roles that principals hold: {', '.join(known)}",
            )
        ]
    issues = [
        facts.issue(
            (*path, "roles", roles.index(role)),
            f"no principal holds role {role!r}, so it adds no approvers",
            did_you_mean(role, known) or "grant the role in the roles file, or remove it",
            warning=True,
        )
        for role in unheld
    ]
    if quorum > len(eligible):
        issues.append(_quorum_issue(facts, gate, quorum, eligible))
    return issues


def _quorum_issue(facts: BlueprintFacts, gate: Path, quorum: int, eligible: set[str]) -> Issue:
    return facts.issue(
        (*gate, "quorum"),
        f"quorum {quorum} needs {quorum} distinct approvers, but only {len(eligible)} may decide "
        f"({', '.join(sorted(eligible))})",
        "lower the quorum, or name more approvers",
    )
