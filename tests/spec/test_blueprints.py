"""The blueprint loader: fixtures with their exact issues, valid files, the seed format, the API."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from opsgate.actions import builtin_actions
from opsgate.errors import InvalidBlueprintError
from opsgate.spec.blueprints import (
    load_blueprint,
    load_blueprint_or_raise,
    load_blueprints,
    load_blueprints_or_raise,
    parse_blueprint,
    parse_blueprint_or_raise,
    parse_blueprints,
)
from opsgate.spec.issues import Issue, has_errors
from opsgate.spec.roles import RoleBook, load_roles
from tests.spec.expectations import actual_issues, expected_issues

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "blueprints"
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
VALID = sorted((FIXTURES / "valid").glob("*.yaml"))
BUNDLED = sorted((ROOT / "blueprints").glob("*.yaml"))
ACTIONS = builtin_actions()
#: The roles the fixtures are written against (the same as policies/roles.yaml ships).
ROLES = RoleBook(
    {
        "alice": frozenset({"operator"}),
        "bob": frozenset({"operator", "ops-manager"}),
        "carol": frozenset({"ops-manager", "security"}),
    },
    frozenset({"viewer"}),
)


def _parse(text: str, file: str = "test.yaml") -> tuple[list[object], list[Issue]]:
    specs, issues = parse_blueprints(text, file, ACTIONS, ROLES)
    return list(specs), issues


def _messages(text: str) -> list[str]:
    return [issue.message for issue in _parse(text)[1]]


def test_there_are_enough_invalid_fixtures() -> None:
    assert len(INVALID) >= 25


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_fixture_reports_exactly_its_expected_issues(path: Path) -> None:
    _, issues = load_blueprints(path, ACTIONS, ROLES)
    renamed = [issue for issue in issues if issue.file == str(path)]
    assert renamed == issues, "every issue names the file it is in"
    assert actual_issues(issues) == expected_issues(path)


@pytest.mark.parametrize("path", VALID, ids=[path.stem for path in VALID])
def test_valid_fixture_loads_without_issues(path: Path) -> None:
    specs, issues = load_blueprints(path, ACTIONS, ROLES)
    assert issues == []
    assert specs


@pytest.mark.parametrize("path", BUNDLED, ids=[path.stem for path in BUNDLED])
def test_bundled_blueprint_validates_against_the_default_roles_file(path: Path) -> None:
    roles, role_issues = load_roles(ROOT / "policies" / "roles.yaml")
    assert roles is not None, role_issues
    spec, issues = load_blueprint(path, ACTIONS, roles)
    assert issues == []
    assert spec is not None and spec.name == path.stem


def test_the_bundled_reference_blueprint_is_the_reference_fixture() -> None:
    bundled = (ROOT / "blueprints" / "restart_service.yaml").read_text(encoding="utf-8")
    assert bundled == (FIXTURES / "valid" / "restart_service.yaml").read_text(encoding="utf-8")


def test_reference_blueprint_becomes_a_typed_spec() -> None:
    spec = load_blueprint_or_raise(FIXTURES / "valid" / "restart_service.yaml", ACTIONS, ROLES)
    check, restart, verify = spec.steps
    assert (spec.name, spec.version, spec.risk) == ("restart_service", "1.3.0", "high")
    assert spec.parameters["api_token"].secret and spec.parameters["api_token"].required
    assert spec.parameters["batch_size"].default == 2 and spec.parameters["batch_size"].max == 10
    assert spec.targets == "{{ params.hosts }}"
    assert spec.concurrency is not None and spec.concurrency.on_conflict == "queue"
    assert check.retry.max_attempts == 3 and check.retry.max_interval == timedelta(seconds=30)
    assert check.timeout == timedelta(seconds=30) and check.idempotent
    assert restart.depends_on == ("check",) and restart.max_parallel == "{{ params.batch_size }}"
    assert restart.approval is not None and restart.approval.timeout == timedelta(hours=4)
    assert restart.approval.approvers.roles == ("ops-manager",)
    assert restart.rollback is not None and restart.rollback.action == "ssh"
    assert restart.rollback.retry.max_attempts == 3
    assert verify.when == "params.service != 'none'" and verify.retry.max_attempts == 1
    assert spec.rollback_plan.on_failure[0].id == "note" and spec.rollback_on_failure


def test_a_spec_is_immutable() -> None:
    spec = load_blueprint_or_raise(FIXTURES / "valid" / "restart_service.yaml")
    with pytest.raises(ValidationError):
        spec.steps[0].timeout = None  # type: ignore[misc]


SEED = """\
workflows:
  restart_api:
    name: "Restart the API"
    version: "1"
    parameters:
      retries: {type: "int", default: 2, validation: {min: 1, max: 5}}
      mode: {type: "string", choices: ["soft", "hard"], default: "soft"}
      verify: {type: "boolean", default: true}
    approvals:
      - {step: "restart", required_approvers: ["ops-manager", "security"], timeout_hours: 2}
    steps:
      - id: "restart"
        type: "shell"
        timeout_minutes: 3
        parameters: {argv: ["systemctl", "restart", "api"]}
        retry_policy: {max_attempts: 2, initial_delay_seconds: 5, backoff_factor: 3}
        rollback_action: {action_id: "x", name: "Start", type: "shell",
                          parameters: {argv: ["systemctl", "start", "api"]}}
      - id: "check"
        type: "log"
        dependencies: ["restart"]
        conditions: ["verify", "params.mode == 'hard'"]
        parameters: {message: "restarted"}
    rollback_plan:
      enabled: false
      actions:
        - {id: "note", type: "log", timeout_minutes: 1, parameters: {message: "undone"}}
    estimated_duration_minutes: 5
"""

NATIVE = """\
name: restart_api
title: Restart the API
version: "1"
parameters:
  retries: {type: integer, default: 2, min: 1, max: 5}
  mode: {type: string, enum: [soft, hard], default: soft}
  verify: {type: boolean, default: true}
steps:
  - id: restart
    action: shell
    timeout: 3m
    with: {argv: [systemctl, restart, api]}
    retry: {max_attempts: 2, initial_interval: 5s, backoff_coefficient: 3}
    rollback: {name: Start, action: shell, with: {argv: [systemctl, start, api]}}
    approval:
      approvers: {roles: [ops-manager, security]}
      quorum: 2
      timeout: 2h
  - id: check
    action: log
    depends_on: [restart]
    when: "(params.verify) and (params.mode == 'hard')"
    with: {message: restarted}
rollback_plan:
  on_failure:
    - {id: note, action: log, timeout: 1m, with: {message: undone}}
rollback_on_failure: false
estimated_duration: 5m
"""


def test_seed_workflow_normalises_to_the_same_spec_as_its_native_spelling() -> None:
    seeded, seed_issues = parse_blueprint(SEED, "seed.yaml", ACTIONS, ROLES)
    native, native_issues = parse_blueprint(NATIVE, "native.yaml", ACTIONS, ROLES)
    assert seed_issues == [] and native_issues == []
    assert seeded == native


def test_seed_issues_point_at_what_the_seed_file_says() -> None:
    text = SEED.replace('dependencies: ["restart"]', 'dependencies: ["restrat"]')
    _, issues = parse_blueprint(text, "seed.yaml", ACTIONS, ROLES)
    (issue,) = issues
    assert issue.path == "workflows.restart_api.steps[1].dependencies[0]"
    assert (issue.line, issue.column) == (21, 24)
    assert issue.hint == "did you mean 'restart'?"


def test_a_file_with_several_seed_workflows_gives_them_all() -> None:
    specs, issues = parse_blueprints(
        (FIXTURES / "valid" / "seed_workflows.yaml").read_text(encoding="utf-8"), "seed.yaml"
    )
    assert issues == []
    assert [spec.name for spec in specs] == ["fleet_backup_orchestration", "restart_api"]


def test_parse_blueprint_wants_exactly_one_blueprint() -> None:
    text = (FIXTURES / "valid" / "seed_workflows.yaml").read_text(encoding="utf-8")
    spec, issues = parse_blueprint(text, "seed.yaml")
    assert spec is None
    assert [issue.message for issue in issues] == [
        "the file holds 2 blueprints (fleet_backup_orchestration, restart_api); one was expected"
    ]
    with pytest.raises(InvalidBlueprintError):
        load_blueprint_or_raise(FIXTURES / "valid" / "seed_workflows.yaml")
    assert len(load_blueprints_or_raise(FIXTURES / "valid" / "seed_workflows.yaml")) == 2


def test_a_broken_seed_workflow_does_not_hide_the_valid_one() -> None:
    text = SEED + '  broken:\n    name: "Broken"\n    version: "1"\n    steps: []\n'
    specs, issues = parse_blueprints(text, "seed.yaml")
    assert [spec.name for spec in specs] == ["restart_api"]
    assert [issue.path for issue in issues] == ["workflows.broken.steps"]


def test_a_cycle_is_named_once_in_dependency_order() -> None:
    text = """\
name: loop
version: "1"
steps:
  - {id: a, action: log, depends_on: [b], with: {message: a}}
  - {id: b, action: log, depends_on: [c], with: {message: b}}
  - {id: c, action: log, depends_on: [a], with: {message: c}}
"""
    (issue,) = _parse(text)[1]
    assert issue.message == (
        "dependency cycle: a → b → c → a (each step depends on the next, so none of them can start)"
    )
    assert (issue.path, issue.line, issue.column) == ("steps[0].depends_on[0]", 4, 39)


def test_cycle_reports_stop_at_their_limit() -> None:
    steps = "\n".join(
        f"  - {{id: s{i}, action: log, depends_on: [{', '.join(f's{j}' for j in range(12))}],"
        f" with: {{message: m}}}}"
        for i in range(12)
    )
    issues = _parse(f"name: dense\nversion: '1'\nsteps:\n{steps}\n")[1]
    assert len([i for i in issues if i.message.startswith("dependency cycle")]) == 10


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("2m", timedelta(minutes=2)),
        ("4h", timedelta(hours=4)),
        ("1d", timedelta(days=1)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_durations_are_parsed_to_timedeltas(written: str, expected: timedelta) -> None:
    spec, issues = parse_blueprint(
        f"name: d\nversion: '1'\ntimeout: {written}\nsteps: [{{id: a, action: log}}]\n", "d.yaml"
    )
    assert issues == [] and spec is not None
    assert spec.timeout == expected


@pytest.mark.parametrize(
    "written", ["30", "'30'", "1w", "0s", "-5s", "5 min", "9" * 30 + "d", "[1]"]
)
def test_invalid_durations_are_issues_not_exceptions(written: str) -> None:
    spec, issues = parse_blueprint(
        f"name: d\nversion: '1'\ntimeout: {written}\nsteps: [{{id: a, action: log}}]\n", "d.yaml"
    )
    assert spec is None
    (issue,) = issues
    assert issue.path == "timeout"
    assert issue.hint == "write a number and a unit: 500ms, 30s, 2m, 4h or 1d" or "list" in (
        issue.message
    )


def test_the_raising_variant_carries_every_issue() -> None:
    text = "name: x\nversion: 1\nsteps: [{id: a, action: log, depends_on: [b]}]\n"
    with pytest.raises(InvalidBlueprintError) as raised:
        parse_blueprint_or_raise(text, "x.yaml", ACTIONS, ROLES)
    assert len(raised.value.issues) == 3  # version type, unknown dependency, missing message
    assert "x.yaml is invalid (3 error(s))" in str(raised.value)


def test_the_raising_variant_returns_a_valid_blueprint() -> None:
    spec = parse_blueprint_or_raise(
        "name: x\nversion: '1'\nsteps: [{id: a, action: log, with: {message: hi}}]\n", "x.yaml"
    )
    assert spec.steps[0].with_ == {"message": "hi"}


def test_warnings_do_not_stop_a_blueprint_from_loading() -> None:
    spec, issues = load_blueprint(
        FIXTURES / "invalid" / "high_risk_without_rollback.yaml", ACTIONS, ROLES
    )
    assert spec is not None and issues and not has_errors(issues)


def test_an_unreadable_file_is_an_issue(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    spec, issues = load_blueprint(missing)
    assert spec is None
    assert issues[0].file == str(missing) and "cannot be read" in issues[0].message
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    assert "not UTF-8" in load_blueprints(tmp_path / "latin1.yaml")[1][0].message


def test_without_a_registry_actions_are_not_checked() -> None:
    text = "name: x\nversion: '1'\nsteps: [{id: a, action: teleport, with: {to: mars}}]\n"
    assert parse_blueprint(text, "x.yaml")[1] == []
    assert _messages(text) == ["unknown action 'teleport'"]


def test_without_roles_gates_are_not_checked_against_roles() -> None:
    text = """\
name: x
version: "1"
steps:
  - id: a
    action: log
    with: {message: hi}
    approval: {approvers: {roles: [nobody-has-this]}, quorum: 2}
"""
    assert parse_blueprint(text, "x.yaml", ACTIONS)[1] == []
    assert _messages(text) == [
        "nobody could decide this gate: no principal holds role(s) nobody-has-this"
    ]


def test_a_template_argument_is_left_to_run_time_but_a_literal_one_is_checked() -> None:
    template = "name: x\nversion: '1'\nparameters: {n: {type: integer, default: 1}}\nsteps:\n"
    step = "  - {{id: a, action: health_check, with: {{kind: tcp, host: h, port: {}}}}}\n"
    assert _messages(template + step.format('"{{ params.n }}"')) == []
    assert _messages(template + step.format("99999")) == [
        "'port' must be at most 65535, not the integer 99999"
    ]


def test_skipped_steps_count_as_completed_so_dependents_may_read_them() -> None:
    text = """\
name: x
version: "1"
parameters: {go: {type: boolean, default: false}}
steps:
  - {id: maybe, action: log, when: params.go, with: {message: m}, outputs: {n: "{{ 1 }}"}}
  - {id: after, action: log, depends_on: [maybe], with: {message: "{{ steps.maybe.status }}"}}
"""
    assert _messages(text) == []


def test_a_misspelt_execution_field_is_an_error_with_the_right_name() -> None:
    text = """
name: who
version: "1"
steps:
  - id: say
    action: log
    with: {message: "run by {{ execution.requester }} as {{ execution.requested_by }}"}
"""
    [issue] = _parse(text)[1]
    assert issue.message.startswith("execution has no field 'requester'")
    assert issue.hint == "did you mean 'requested_by'?"


def test_steps_may_read_every_target_but_the_blueprint_level_may_not() -> None:
    text = """
name: spread
version: "1"
targets: "{{ targets | length }}"
steps:
  - id: say
    action: log
    with: {message: "{{ targets | map(attribute='name') | join(',') }}"}
"""
    [issue] = _parse(text)[1]
    assert issue.path == "targets"
    assert "'targets' is not available in" in issue.message
