"""The roles file and the RoleBook that policies and gates read."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.spec.issues import Issue, Severity
from opsgate.spec.roles import RoleBook, load_roles, parse_roles

REPO = Path(__file__).resolve().parents[2]
REFERENCE = """\
principals:
  alice: {roles: [operator]}
  bob: {roles: [operator, ops-manager]}
default_roles: [viewer]
"""


def test_the_reference_roles_file_loads() -> None:
    book, issues = parse_roles(REFERENCE, "roles.yaml")
    assert issues == []
    assert book == RoleBook(
        {"alice": frozenset({"operator"}), "bob": frozenset({"operator", "ops-manager"})},
        frozenset({"viewer"}),
    )


def test_the_bundled_roles_file_keeps_the_roles_blueprints_gate_on() -> None:
    book, issues = load_roles(REPO / "policies" / "roles.yaml")
    assert issues == []
    assert book is not None
    assert book.holders("ops-manager") == frozenset({"bob", "carol"})
    assert book.holders("security") == frozenset({"carol"})
    assert book.holders("operator") == frozenset({"alice", "bob"})
    assert book.default_roles == {"viewer"}


def test_every_principal_holds_the_default_roles() -> None:
    book, _ = parse_roles(REFERENCE, "roles.yaml")
    assert book is not None
    assert book.roles_of("bob") == {"operator", "ops-manager", "viewer"}
    assert book.roles_of("somebody-else") == {"viewer"}
    assert book.holders("viewer") is None  # everybody
    assert book.holders("ops-manager") == frozenset({"bob"})
    assert book.holders("auditor") == frozenset()
    assert book.known_roles == {"operator", "ops-manager", "viewer"}


def test_a_principal_may_hold_only_the_default_roles() -> None:
    book, issues = parse_roles("principals:\n  ci-bot@example.com: {roles: []}\n", "roles.yaml")
    assert issues == []
    assert book is not None and book.roles_of("ci-bot@example.com") == frozenset()


def test_both_keys_are_optional() -> None:
    assert parse_roles("default_roles: [viewer]\n", "r.yaml") == (
        RoleBook({}, frozenset({"viewer"})),
        [],
    )
    assert parse_roles("principals: {}\n", "r.yaml") == (RoleBook(), [])


def test_an_empty_roles_file_is_an_empty_rolebook_and_a_warning() -> None:
    book, issues = parse_roles("# nobody yet\n", "roles.yaml")
    assert book == RoleBook()
    assert [(i.severity, i.message) for i in issues] == [
        (Severity.WARNING, "empty roles file: no principal holds a role")
    ]


def test_a_missing_roles_file_is_an_empty_rolebook_and_a_warning(tmp_path: Path) -> None:
    missing = tmp_path / "roles.yaml"
    book, issues = load_roles(missing)
    assert book == RoleBook()
    [warning] = issues
    assert (warning.severity, warning.file, warning.line) == (Severity.WARNING, str(missing), 1)
    assert warning.message == f"roles file {missing} not found: no principal holds a role"
    assert warning.hint is not None and "default_roles" in warning.hint


def test_an_invalid_roles_file_gives_no_rolebook() -> None:
    book, issues = parse_roles("principals:\n  alice: {roles: [operator], team: ops}\n", "r.yaml")
    assert book is None
    assert [(i.line, i.column, i.path, i.message) for i in issues] == [
        (2, 30, "principals.alice.team", "unknown field 'team'")
    ]


def test_an_unreadable_roles_file_is_an_error(tmp_path: Path) -> None:
    book, issues = load_roles(tmp_path)  # a directory
    assert book is None
    assert [(i.severity, i.file) for i in issues] == [(Severity.ERROR, str(tmp_path))]
    assert issues[0].message.startswith(f"{tmp_path} cannot be read")


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_only_ever_gives_issues(text: str) -> None:
    book, issues = parse_roles(text, "roles.yaml")
    assert book is None or isinstance(book, RoleBook)
    assert all(isinstance(issue, Issue) for issue in issues)
    assert book is not None or any(issue.is_error for issue in issues)


@settings(max_examples=200, deadline=None)
@given(
    principals=st.dictionaries(
        st.text(max_size=6),
        st.none()
        | st.dictionaries(
            st.sampled_from(["roles", "role"]),
            st.lists(st.text(max_size=6) | st.integers(), max_size=3),
        ),
        max_size=4,
    ),
    default_roles=st.none() | st.lists(st.text(max_size=6), max_size=3) | st.text(max_size=6),
)
def test_arbitrary_roles_data_only_ever_gives_issues(
    principals: dict[str, object], default_roles: object
) -> None:
    text = json.dumps({"principals": principals, "default_roles": default_roles})  # JSON is YAML
    book, issues = parse_roles(text, "roles.yaml")
    assert all(isinstance(issue, Issue) for issue in issues)
    assert (book is None) == any(issue.is_error for issue in issues)
