"""The ``opsgate`` command line, run as a real process: exit codes, reports, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stores.test_migrations import HEAD

ROOT = Path(__file__).resolve().parent.parent
BROKEN = """\
name: broken
version: "1"
steps:
  - id: a
    action: lgo
    depends_on: [b]
  - id: b
    action: log
    depends_on: [a]
    with: {mesage: hi}
"""


def opsgate(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "opsgate", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_accepts_the_bundled_blueprints_and_policies() -> None:
    result = opsgate("validate", "blueprints", "policies")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stdout
    for name in ("restart_service.yaml", "roles.yaml", "production.yaml"):
        assert name in result.stdout


def test_validate_without_paths_checks_the_configured_directories(tmp_path: Path) -> None:
    (tmp_path / "bp").mkdir()
    (tmp_path / "bp" / "broken.yaml").write_text(BROKEN)
    result = opsgate(
        "validate", OPSGATE_BLUEPRINTS=str(tmp_path / "bp"), OPSGATE_POLICIES=str(ROOT / "policies")
    )
    assert result.returncode == 1
    assert "broken.yaml" in result.stdout
    assert "roles.yaml" in result.stdout


def test_validate_reports_every_error_with_location_and_hint(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result = opsgate("validate", str(broken))
    assert result.returncode == 1
    assert_no_traceback(result)
    assert f"{broken}:5:5: error: unknown action 'lgo'" in result.stdout
    assert "hint: did you mean 'log'?" in result.stdout
    assert "dependency cycle: a → b → a" in result.stdout
    assert f"{broken}:10:12: error: unknown field 'mesage'" in result.stdout
    assert "4 error(s)" in result.stdout


def test_validate_json_lists_issues_per_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result = opsgate("validate", "--json", str(broken), "blueprints/restart_service.yaml")
    assert result.returncode == 1
    reports = {Path(report["file"]).name: report for report in json.loads(result.stdout)}
    assert reports["restart_service.yaml"]["valid"] is True
    assert reports["broken.yaml"]["valid"] is False
    first = reports["broken.yaml"]["issues"][0]
    assert (first["line"], first["column"], first["path"]) == (5, 5, "steps[0].action")


def test_validate_checks_gates_against_the_roles_file_given(tmp_path: Path) -> None:
    (tmp_path / "roles.yaml").write_text("principals:\n  alice: {roles: [operator]}\n")
    result = opsgate("validate", str(tmp_path / "roles.yaml"), "blueprints/restart_service.yaml")
    assert result.returncode == 1
    assert "ops-manager" in result.stdout


def test_validate_reports_a_missing_path_without_traceback(tmp_path: Path) -> None:
    result = opsgate("validate", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "does not exist" in result.stdout


def test_db_upgrade_creates_the_sqlite_file_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'opsgate.db'}"
    first = opsgate("db", "upgrade", OPSGATE_DATABASE_URL=url)
    second = opsgate("db", "upgrade", OPSGATE_DATABASE_URL=url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == second.stdout.strip() == f"database at revision {HEAD}"
    assert (tmp_path / "data" / "opsgate.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "unsupported database 'foo'"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/x", "connection failed"),
    ],
)
def test_db_upgrade_explains_a_bad_database_url(url: str, message: str) -> None:
    result = opsgate("db", "upgrade", OPSGATE_DATABASE_URL=url)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert message in result.stderr
    assert result.stdout == ""


def test_serve_loads_the_bundled_documents_and_migrates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    result = opsgate("serve", OPSGATE_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    bundled = len(list((ROOT / "blueprints").glob("*.yaml")))
    assert f"{bundled} blueprint(s)" in result.stderr
    assert "blueprint restart_service" in result.stderr
    assert result.stdout == ""


def test_serve_refuses_an_invalid_blueprint_directory(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN)
    result = opsgate(
        "serve", "--blueprints", str(tmp_path), OPSGATE_DATABASE_URL=f"sqlite:///{tmp_path}/s.db"
    )
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "unknown action 'lgo'" in result.stderr


def test_an_unknown_command_is_a_usage_error_without_traceback() -> None:
    result = opsgate("bogus")
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "No such command" in result.stderr


def test_version_matches_the_package() -> None:
    from opsgate import __version__

    result = opsgate("version")
    assert result.stdout.strip() == __version__


HELLO = """\
name: hello
version: "1"
parameters:
  who: {type: string, required: true}
  loud: {type: boolean, default: false}
steps:
  - {id: greet, action: log, with: {message: "hello {{ params.who }}"}}
  - {id: check, action: assert, depends_on: [greet], with: {condition: "params.who != 'nobody'"}}
"""


def run_environment(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bp").mkdir(exist_ok=True)
    (tmp_path / "bp" / "hello.yaml").write_text(HELLO)
    return {
        "OPSGATE_BLUEPRINTS": str(tmp_path / "bp"),
        "OPSGATE_POLICIES": str(ROOT / "policies"),
        "OPSGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "OPSGATE_PRINCIPAL": "alice",
    }


def test_run_executes_a_blueprint_and_events_show_its_log(tmp_path: Path) -> None:
    env = run_environment(tmp_path)
    result = opsgate("run", "hello", "-p", "who=world", "--json", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    view = json.loads(result.stdout)
    assert (view["status"], view["steps_completed"], view["requested_by"]) == (
        "succeeded",
        2,
        "alice",
    )
    events = json.loads(opsgate("events", view["execution_id"], "--json", **env).stdout)
    greeted = next(e for e in events["events"] if e["type"] == "step.succeeded")
    assert greeted["data"]["outputs"]["message"] == "hello world"
    listed = opsgate("executions", "--workflow", "hello", **env)
    assert view["execution_id"] in listed.stdout


def test_run_exits_1_when_the_execution_fails(tmp_path: Path) -> None:
    result = opsgate("run", "hello", "-p", "who=nobody", **run_environment(tmp_path))
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "failed" in result.stdout
    assert "assertion failed" in result.stdout


def test_run_reports_bad_parameters_without_traceback(tmp_path: Path) -> None:
    result = opsgate("run", "hello", "-p", "loud=maybe", "-p", "nope", **run_environment(tmp_path))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "key=value" in result.stderr
    result = opsgate("run", "hello", "-p", "loud=maybe", **run_environment(tmp_path))
    assert result.returncode == 2
    assert "who" in result.stderr and "loud" in result.stderr


def test_status_and_control_commands_name_the_current_state(tmp_path: Path) -> None:
    env = run_environment(tmp_path)
    view = json.loads(opsgate("run", "hello", "-p", "who=world", "--json", **env).stdout)
    status = opsgate("status", view["execution_id"], **env)
    assert status.returncode == 0
    assert "succeeded" in status.stdout and "greet" in status.stdout
    for command in (["pause"], ["resume"], ["cancel"], ["retry-step"]):
        args = [*command, view["execution_id"]] + (["greet"] if command == ["retry-step"] else [])
        result = opsgate(*args, **env)
        assert result.returncode == 2, (command, result.stderr)
        assert_no_traceback(result)
        assert "succeeded" in result.stderr, (command, result.stderr)
    unknown = opsgate("status", "exe_nope", **env)
    assert unknown.returncode == 2
    assert "not found" in unknown.stderr


GATED = """\
name: gated
version: "1"
steps:
  - id: change
    action: log
    approval: {approvers: {roles: [ops-manager]}}
    with: {message: changed}
"""


def test_a_gate_is_decided_from_the_terminal_by_another_principal(tmp_path: Path) -> None:
    env = run_environment(tmp_path)
    (tmp_path / "bp" / "gated.yaml").write_text(GATED)
    plan = opsgate("plan", "gated", "--json", **env)
    assert plan.returncode == 0, plan.stderr
    digest = json.loads(plan.stdout)["plan_digest"]
    started = opsgate("run", "gated", "--plan-digest", digest, "--json", **env)
    assert started.returncode == 3, started.stdout + started.stderr
    assert "opsgate approvals" in started.stderr
    execution_id = json.loads(started.stdout)["execution_id"]

    assert json.loads(opsgate("approvals", "--json", **env).stdout)["approvals"] == []
    as_bob = {**env, "OPSGATE_PRINCIPAL": "bob"}
    [approval] = json.loads(opsgate("approvals", "--json", **as_bob).stdout)["approvals"]
    refused = opsgate("approve", approval["approval_id"], **env)
    assert refused.returncode == 2
    assert_no_traceback(refused)
    assert "alice may not decide" in refused.stderr and "ops-manager" in refused.stderr
    granted = opsgate("approve", approval["approval_id"], "--comment", "go", **as_bob)
    assert granted.returncode == 0, granted.stderr
    assert "granted, 1/1 approvals" in granted.stdout

    assert opsgate("worker", "--until-idle", **env).returncode == 0
    status = json.loads(opsgate("status", execution_id, "--json", **env).stdout)
    assert status["status"] == "succeeded"
    events = json.loads(opsgate("events", execution_id, "--json", **env).stdout)["events"]
    decision = next(e for e in events if e["type"] == "approval.decision_recorded")
    assert (decision["actor"], decision["data"]["channel"]) == ("bob", "cli")


def test_reject_needs_a_comment_and_a_stale_plan_is_refused(tmp_path: Path) -> None:
    env = run_environment(tmp_path)
    (tmp_path / "bp" / "gated.yaml").write_text(GATED)
    stale = opsgate("run", "gated", "--plan-digest", "plan-0", **env)
    assert stale.returncode == 2
    assert "call plan_workflow again" in stale.stderr
    missing = opsgate("reject", "apr_x", **env)
    assert missing.returncode == 2 and "--comment" in missing.stderr
