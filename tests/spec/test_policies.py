"""Policy files: the bundled set, the reference formats, every invalid fixture, the loader."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from opsgate.errors import InvalidPolicyError
from opsgate.spec.issues import Issue, Severity
from opsgate.spec.model import ApprovalSpec, ApproversSpec
from opsgate.spec.policies import (
    Defaults,
    Effect,
    PolicySet,
    Rule,
    load_policies,
    load_policies_or_raise,
    parse_policy_file,
)
from opsgate.spec.roles import RoleBook, load_roles
from tests.spec.expectations import Expected, expected_issues

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "policies"
INVALID = FIXTURES / "invalid"
BOOK = RoleBook({"bob": frozenset({"ops-manager"}), "carol": frozenset({"security"})})


def _invalid_fixtures() -> list[Path]:
    """Single policy files, roles files (``roles/``) and policy directories (the others)."""
    files = [path for path in INVALID.glob("*.yaml") if path.name != "roles.yaml"]
    roles = list((INVALID / "roles").glob("*.yaml"))
    directories = [path for path in INVALID.iterdir() if path.is_dir() and path.name != "roles"]
    return sorted(path.relative_to(INVALID) for path in [*files, *roles, *directories])


def _issues_of(fixture: Path) -> list[Issue]:
    if (INVALID / fixture).is_dir():
        return load_policies(fixture)[1]
    if fixture.parent.name == "roles":
        return load_roles(fixture)[1]
    return load_policies([fixture])[1]  # checked against invalid/roles.yaml beside it


def _expected_of(fixture: Path) -> list[tuple[str, Expected]]:
    if not (INVALID / fixture).is_dir():
        return [(str(fixture), expected) for expected in expected_issues(INVALID / fixture)]
    return sorted(
        (str(path.relative_to(INVALID)), expected)
        for path in (INVALID / fixture).iterdir()
        if "# expect:" in path.read_text(encoding="utf-8")
        for expected in expected_issues(path)
    )


@pytest.mark.parametrize("fixture", _invalid_fixtures(), ids=str)
def test_invalid_fixture_reports_exactly_its_expected_issues(
    fixture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(INVALID)  # issues name files as written: "split/a.yaml"
    actual = sorted(
        (issue.file, (str(issue.severity), issue.line, issue.column, issue.path, issue.message))
        for issue in _issues_of(fixture)
    )
    assert actual == _expected_of(fixture)


def test_there_are_enough_invalid_fixtures_and_most_report_several_errors() -> None:
    counts = [len(_expected_of(fixture)) for fixture in _invalid_fixtures()]
    assert len(counts) >= 10
    assert sum(count >= 3 for count in counts) >= 8


def test_the_bundled_policies_load_without_any_issue() -> None:
    policy_set, issues = load_policies(REPO / "policies")
    assert issues == []
    assert [rule.id for rule in policy_set.rules] == [
        "destructive-needs-operator",
        "limit-fan-out",
        "limit-provisioning-fan-out",
        "prod-needs-manager",
        "critical-in-maintenance-window",
    ]
    assert policy_set.defaults == Defaults(effect=Effect.ALLOW)
    assert policy_set.roles.roles_of("carol") == {"ops-manager", "security", "viewer"}
    assert policy_set.roles.holders("ops-manager") == frozenset({"bob", "carol"})


def test_the_reference_examples_of_the_design_load() -> None:
    policy_set, issues = load_policies(FIXTURES / "valid" / "reference")
    assert issues == []
    manager, critical = policy_set.rules
    assert manager.effect is Effect.REQUIRE_APPROVAL
    assert manager.approvers == ApproversSpec(roles=("ops-manager",))
    assert critical.effect is Effect.DENY and critical.match is not None
    assert policy_set.roles.roles_of("alice") == {"operator", "viewer"}


def test_every_field_loads_into_the_rule_model() -> None:
    policy_set, issues = load_policies(FIXTURES / "valid" / "complete")
    assert issues == []
    assert policy_set.defaults.effect is Effect.DENY
    rules = {rule.id: rule for rule in policy_set.rules}
    assert list(rules) == [
        "allow-maintenance",  # allow-list.yml sorts before gates.yaml
        "prod-two-managers",
        "reboots-need-security",
        "small-batches",
        "freeze",
    ]
    managers = rules["prod-two-managers"]
    assert (managers.quorum, managers.timeout, managers.escalation_timeout) == (
        2,
        timedelta(hours=4),
        timedelta(minutes=30),
    )
    assert managers.escalate_to == ApproversSpec(roles=("security",))
    limits = rules["small-batches"].limits
    assert limits is not None
    assert (limits.max_targets, limits.max_parallel, limits.max_concurrent) == (100, 5, 2)
    assert rules["freeze"].remedy == "Wait until January, or ask for an exception."


def test_a_policy_gate_is_the_gate_a_blueprint_would_write() -> None:
    policy_set, _ = load_policies(FIXTURES / "valid" / "complete")
    rules = {rule.id: rule for rule in policy_set.rules}
    assert rules["prod-two-managers"].gate == ApprovalSpec(
        approvers=ApproversSpec(roles=("ops-manager",), principals=("dave",)),
        quorum=2,
        timeout=timedelta(hours=4),
        on_timeout="escalate",
        escalate_to=ApproversSpec(roles=("security",)),
        escalation_timeout=timedelta(minutes=30),
    )
    # Options a rule does not set take the blueprint gate's defaults.
    assert rules["reboots-need-security"].gate == ApprovalSpec(
        approvers=ApproversSpec(principals=("carol",)), allow_self_approval=True
    )
    assert rules["small-batches"].gate is None


def test_rules_that_read_step_are_evaluated_per_step() -> None:
    def rule(match: str | None) -> Rule:
        return Rule(id="r", match=match, effect=Effect.ALLOW)

    assert rule("step.action == 'ipmi'").reads_step
    assert rule("params.x and step['id'] == 'restart'").reads_step
    assert not rule("params.step == 1").reads_step
    assert not rule(None).reads_step


def test_duplicate_ids_across_two_files_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - {id: same, effect: allow}\n")
    (tmp_path / "b.yaml").write_text(
        "# b\nrules:\n  - id: other\n    effect: allow\n  - id: same\n    effect: allow\n"
    )
    (tmp_path / "roles.yaml").write_text("principals: {}\n")
    _, issues = load_policies(tmp_path)
    [duplicate] = issues
    assert (duplicate.file, duplicate.line, duplicate.column) == (str(tmp_path / "b.yaml"), 5, 5)
    assert (
        duplicate.message == f"duplicate rule id 'same': first defined at {tmp_path / 'a.yaml'}:2:6"
    )
    assert duplicate.is_error


def test_a_missing_roles_file_is_an_empty_rolebook_and_a_warning(tmp_path: Path) -> None:
    (tmp_path / "gate.yaml").write_text(
        "rules:\n  - id: gate\n    effect: require_approval\n"
        "    approvers: {roles: [ops-manager]}\n    reason: Needs an approval.\n"
    )
    policy_set, issues = load_policies(tmp_path)
    assert policy_set.roles == RoleBook()
    assert [(i.severity, i.file, i.message) for i in issues] == [
        (
            Severity.WARNING,
            str(tmp_path / "roles.yaml"),
            f"roles file {tmp_path / 'roles.yaml'} not found: no principal holds a role",
        ),
        (
            Severity.ERROR,
            str(tmp_path / "gate.yaml"),
            "nobody could approve: no principal holds role 'ops-manager'",
        ),
    ]


def test_roles_given_by_the_caller_replace_the_roles_file(tmp_path: Path) -> None:
    (tmp_path / "gate.yaml").write_text(
        "rules:\n  - id: gate\n    effect: require_approval\n"
        "    approvers: {roles: [security]}\n    reason: Needs an approval.\n"
    )
    (tmp_path / "roles.yaml").write_text("principals: [broken]\n")
    policy_set, issues = load_policies(tmp_path, roles=BOOK)
    assert issues == []
    assert policy_set.roles is BOOK


def test_sources_may_be_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("rules: [{id: b, effect: allow}]\n")
    (tmp_path / "a.yml").write_text("rules: [{id: a, effect: allow}]\n")
    (tmp_path / ".hidden.yaml").write_text("not: [a policy\n")
    (tmp_path / "notes.txt").write_text("not a policy")
    (tmp_path / "roles.yml").write_text("principals: {alice: {roles: [operator]}}\n")
    policy_set, issues = load_policies([tmp_path, tmp_path / "b.yaml"])
    assert issues == []
    assert [rule.id for rule in policy_set.rules] == ["a", "b"]  # each file once, in name order
    assert policy_set.roles.roles_of("alice") == {"operator"}
    # A single file finds the roles file beside it.
    policy_set, issues = load_policies(str(tmp_path / "b.yaml"))
    assert issues == [] and policy_set.roles.roles_of("alice") == {"operator"}


def test_a_missing_policy_path_is_an_error_and_an_empty_directory_a_warning(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere"
    _, issues = load_policies(missing)
    assert [(i.severity, i.message) for i in issues] == [
        (Severity.ERROR, f"policy path {missing} not found")
    ]
    (tmp_path / "roles.yaml").write_text("principals: {}\n")
    policy_set, issues = load_policies(tmp_path)
    assert policy_set == PolicySet(roles=RoleBook())
    assert [(i.severity, i.message) for i in issues] == [
        (Severity.WARNING, "no policy files: the default effect (allow) applies to every execution")
    ]


def test_two_roles_files_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "roles.yaml").write_text("principals: {}\n")
    (tmp_path / "roles.yml").write_text("principals: {}\n")
    (tmp_path / "p.yaml").write_text("rules: [{id: a, effect: allow}]\n")
    _, issues = load_policies(tmp_path)
    assert [(i.file, i.message) for i in issues] == [
        (
            str(tmp_path / "roles.yml"),
            f"more than one roles file: {tmp_path / 'roles.yaml'} and {tmp_path / 'roles.yml'}",
        )
    ]


def test_unreadable_policy_files_are_located_errors(tmp_path: Path) -> None:
    (tmp_path / "roles.yaml").write_text("principals: {}\n")
    (tmp_path / "latin1.yaml").write_bytes(b"rules: []  # caf\xe9\n")
    _, issues = load_policies(tmp_path)
    assert [(i.file, i.message) for i in issues] == [
        (str(tmp_path / "latin1.yaml"), f"{tmp_path / 'latin1.yaml'} is not UTF-8 text")
    ]


def test_load_policies_or_raise_raises_with_every_error(tmp_path: Path) -> None:
    (tmp_path / "roles.yaml").write_text("principals: {}\n")
    (tmp_path / "p.yaml").write_text(
        "rules:\n  - {id: a, effect: deny}\n  - {id: b, effect: nope}\n"
    )
    with pytest.raises(InvalidPolicyError) as caught:
        load_policies_or_raise(tmp_path)
    assert caught.value.subject == f"the policy set in {tmp_path}"
    assert [issue.path for issue in caught.value.issues] == ["rules[0].reason", "rules[1].effect"]
    assert "is invalid (2 error(s))" in str(caught.value)


def test_load_policies_or_raise_returns_the_set_and_logs_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "p.yaml").write_text("rules: [{id: a, effect: allow}]\n")
    with caplog.at_level(logging.WARNING, logger="opsgate.spec.policies"):
        policy_set = load_policies_or_raise(iter([tmp_path]))
    assert [rule.id for rule in policy_set.rules] == ["a"]
    assert caplog.messages == [
        f"{tmp_path / 'roles.yaml'}:1:1: warning: roles file {tmp_path / 'roles.yaml'} not found: "
        "no principal holds a role — hint: create it: write principals: "
        "{alice: {roles: [operator]}} and default_roles: [viewer]"
    ]


def test_parse_policy_file_alone_skips_the_roles_checks() -> None:
    text = "rules:\n  - {id: a, effect: require_approval, approvers: {roles: [x]}, reason: R}\n"
    policy_file, issues = parse_policy_file(text, "p.yaml")
    assert issues == []
    assert [rule.id for rule in policy_file.rules] == ["a"]
    _, issues = parse_policy_file(text, "p.yaml", BOOK)
    assert [issue.message for issue in issues] == [
        "nobody could approve: no principal holds role 'x'"
    ]


def test_role_literals_are_checked_only_against_a_roles_file() -> None:
    text = "rules: [{id: a, match: \"'oprator' in principal.roles\", effect: allow}]\n"
    assert parse_policy_file(text, "p.yaml")[1] == []
    [warning] = parse_policy_file(text, "p.yaml", BOOK)[1]
    assert (warning.severity, warning.message) == (
        Severity.WARNING,
        "'oprator' is not a known role",
    )


def test_absurdly_nested_matches_are_refused_not_crashed_on() -> None:
    match = "(" * 200 + "params.x" + ")" * 200
    text = f"rules: [{{id: a, match: '{match}', effect: allow}}]\n"
    [issue] = parse_policy_file(text, "p.yaml")[1]
    assert issue.message == "match expression nests too deeply"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty policy file: it defines no rules"),
        ("# only a comment\n", "empty policy file: it defines no rules"),
        ("{}\n", "empty policy file: it defines no rules"),
        ("rules: []\n", "the file defines no rules"),
    ],
)
def test_files_without_rules_are_warnings(text: str, message: str) -> None:
    policy_file, issues = parse_policy_file(text, "p.yaml")
    assert policy_file.rules == ()
    assert [(i.severity, i.message) for i in issues] == [(Severity.WARNING, message)]


def test_a_file_with_only_defaults_is_fine() -> None:
    policy_file, issues = parse_policy_file("defaults: {effect: deny, reason: No.}\n", "d.yaml")
    assert issues == []
    assert policy_file.defaults == Defaults(effect=Effect.DENY, reason="No.")


def test_effects_are_listed_strongest_first() -> None:
    assert list(Effect) == [Effect.DENY, Effect.REQUIRE_APPROVAL, Effect.LIMIT, Effect.ALLOW]


# --- arbitrary input never escapes as an exception --------------------------------------------

KEYS = st.sampled_from(
    [
        "rules",
        "defaults",
        "id",
        "match",
        "effect",
        "reason",
        "approvers",
        "roles",
        "principals",
        "quorum",
        "timeout",
        "on_timeout",
        "escalate_to",
        "escalation_timeout",
        "limits",
        "max_targets",
        "allow_self_approval",
        "default_roles",
        "remedy",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        [
            "deny",
            "require_approval",
            "limit",
            "allow",
            "4h",
            "0s",
            "escalate",
            "in_window(now, 'Mon 08:00-09:00', 'UTC')",
            "params.x ==",
            "{{ x }}",
            "step.action",
            "ops-manager",
            "",
            " ",
        ]
    )
    | st.text(max_size=30)
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def _dump(data: object) -> str:
    stream = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, stream)
    return stream.getvalue()


def _check_result(issues: list[Issue]) -> None:
    assert all(isinstance(issue, Issue) and issue.line >= 1 for issue in issues)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=DOCUMENTS)
def test_arbitrary_yaml_data_only_ever_gives_issues(data: object) -> None:
    text = _dump({"rules": data} if isinstance(data, list) else data)
    policy_file, issues = parse_policy_file(text, "fuzz.yaml", BOOK)
    _check_result(issues)
    assert all(isinstance(rule, Rule) for rule in policy_file.rules)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_only_ever_gives_issues(text: str) -> None:
    _, issues = parse_policy_file(text, "fuzz.yaml", BOOK)
    _check_result(issues)


@settings(max_examples=200, deadline=None)
@given(match=st.text(max_size=80))
def test_arbitrary_match_expressions_only_ever_give_issues(match: str) -> None:
    text = _dump({"rules": [{"id": "r", "match": match, "effect": "allow"}]})
    _, issues = parse_policy_file(text, "fuzz.yaml", BOOK)
    _check_result(issues)
