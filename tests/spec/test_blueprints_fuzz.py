"""Whatever the input, the loader answers with its own result: issues, or InvalidBlueprintError.

Three sources of input: arbitrary text, arbitrary YAML documents (random nested data dumped with
ruamel, keys drawn partly from the blueprint vocabulary so that the checks get deep), and random
mutations of the valid blueprints (keys and items deleted, replaced, retyped, added). Each example
goes through one of the two APIs, drawn at random: parsing YAML is most of the cost.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from opsgate.actions import builtin_actions
from opsgate.errors import InvalidBlueprintError
from opsgate.spec.blueprints import parse_blueprint_or_raise, parse_blueprints
from opsgate.spec.issues import Issue, has_errors
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.roles import RoleBook
from opsgate.spec.source import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
#: The smaller valid blueprints (mutating the largest would make each example slow).
SOURCES = [
    *sorted((ROOT / "blueprints").glob("*.yaml")),
    ROOT / "tests" / "fixtures" / "blueprints" / "valid" / "seed_workflows.yaml",
]
BASES = [parse_yaml(path.read_text(encoding="utf-8"), path.name).data for path in SOURCES]
ACTIONS = builtin_actions()
ROLES = RoleBook({"bob": frozenset({"ops-manager"})}, frozenset({"viewer"}))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VOCABULARY = [
    "name", "version", "risk", "parameters", "targets", "steps", "id", "action", "with",
    "depends_on", "when", "for_each", "max_parallel", "max_failed_percentage", "retry",
    "timeout", "approval", "approvers", "roles", "principals", "quorum", "on_timeout",
    "escalate_to", "response", "rollback", "rollback_plan", "on_failure", "finally", "outputs",
    "concurrency", "locks", "type", "default", "secret", "pattern", "enum", "items", "min", "max",
    "min_length", "argv", "command", "url", "expect_status", "operation", "duration", "until",
    "condition", "message", "workflows", "dependencies", "timeout_minutes", "approvals", "step",
    "required_approvers", "requires_approval", "rollback_action", "validation", "choices",
]  # fmt: skip
WORDS = [
    "targets", "ssh", "log", "http", "ipmi", "wait", "assert", "high", "critical", "escalate",
    "string", "integer", "array", "30s", "0s", "5x", "env:TOKEN", "{{ params.x }}",
    "{{ steps.a.outputs.y }}", "{{ item }}", "{{ target.address }}", "{{", "}}", "{% if %}",
    "params.x == 'y'", "steps.b.outputs", "a", "b", "c", "ops-manager", "[", "(", "200-299",
    "$.a", "power_on", "set_boot_device", "(" * 200 + ")" * 200, "{{ " + "(" * 200 + " }}",
]  # fmt: skip

_text = st.text(st.characters(codec="utf-8"), max_size=30)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    _text,
    st.sampled_from(WORDS),
)
_keys = st.one_of(st.sampled_from(VOCABULARY), _text, st.integers(-3, 3), st.booleans())
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=10,
)
_steps = st.lists(st.dictionaries(st.sampled_from(VOCABULARY), _values, max_size=6), max_size=4)
_blueprints = st.fixed_dictionaries(
    {"name": _values, "version": _values, "steps": _steps | _values},
    optional=dict.fromkeys(("parameters", "targets", "rollback_plan", "risk"), _values),
)


def _dump(data: Any) -> str:
    stream = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.dump(data, stream)
    return stream.getvalue()


def _answers_with_its_own_result(text: str, raising: bool) -> None:
    if raising:
        try:
            assert isinstance(
                parse_blueprint_or_raise(text, "fuzz.yaml", ACTIONS, ROLES), WorkflowSpec
            )
        except InvalidBlueprintError as exc:
            assert exc.issues and has_errors(exc.issues)
        return
    specs, issues = parse_blueprints(text, "fuzz.yaml", ACTIONS, ROLES)
    assert all(isinstance(issue, Issue) and issue.line >= 1 for issue in issues)
    assert all(isinstance(spec, WorkflowSpec) for spec in specs)


@FUZZ
@given(st.text(max_size=300), st.booleans())
def test_arbitrary_text(text: str, raising: bool) -> None:
    _answers_with_its_own_result(text, raising)


@FUZZ
@given(_values | _blueprints, st.booleans())
def test_arbitrary_yaml_documents(data: Any, raising: bool) -> None:
    _answers_with_its_own_result(_dump(data), raising)


@FUZZ
@given(_blueprints, st.booleans(), st.booleans())
def test_arbitrary_blueprint_shaped_documents(
    data: dict[str, Any], seeded: bool, raising: bool
) -> None:
    _answers_with_its_own_result(
        _dump({"workflows": {"fuzzed": data}} if seeded else data), raising
    )


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _places(value, (*path, index))
    return found


def _mutate(data: Any, path: tuple[Any, ...], operation: str, junk: Any) -> Any:
    """``data`` with the node at ``path`` deleted, replaced, retyped or given a sibling."""
    if not path:
        return junk
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last, node = path[-1], parent[path[-1]]
    if operation == "delete":
        del parent[last]
    elif operation == "replace":
        parent[last] = junk
    elif operation == "retype":
        parent[last] = [node] if not isinstance(node, list) else {"x": node}
    elif isinstance(parent, dict):
        parent[junk if isinstance(junk, str | int) else "junk"] = node
    else:
        parent.insert(last, junk)
    return data


@FUZZ
@given(st.data())
def test_mutations_of_valid_blueprints(data: st.DataObject) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(_places(document)))
        operation = data.draw(st.sampled_from(["delete", "replace", "retype", "add"]))
        document = _mutate(document, path, operation, data.draw(_scalars | _values))
    _answers_with_its_own_result(_dump(document), data.draw(st.booleans()))
