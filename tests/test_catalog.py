"""Loading blueprints, policies and roles together, as `opsgate validate` and the server do."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.catalog import DocumentKind, classify, load_catalog, validate_paths
from opsgate.errors import InvalidBlueprintError, InvalidPolicyError

ROOT = Path(__file__).resolve().parent.parent
LOG_BLUEPRINT = """\
name: {name}
version: "1"
steps:
  - {{id: hello, action: log, with: {{message: hi}}}}
"""


def test_files_are_classified_by_their_top_level_keys(tmp_path: Path) -> None:
    cases = {
        "roles.yaml": "principals: {}\n",
        "people.yaml": "default_roles: [viewer]\n",
        "rules.yaml": "rules: []\n",
        "defaults.yml": "defaults: {effect: allow}\n",
        "flow.yaml": LOG_BLUEPRINT.format(name="flow"),
        "broken.yaml": "[not: closed\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    kinds = {name: classify(tmp_path / name) for name in cases}
    assert kinds == {
        "roles.yaml": DocumentKind.ROLES,
        "people.yaml": DocumentKind.ROLES,
        "rules.yaml": DocumentKind.POLICY,
        "defaults.yml": DocumentKind.POLICY,
        "flow.yaml": DocumentKind.BLUEPRINT,
        "broken.yaml": DocumentKind.BLUEPRINT,
    }


def test_a_blueprint_name_defined_twice_is_an_error_at_the_second_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(LOG_BLUEPRINT.format(name="same"))
    (tmp_path / "b.yaml").write_text(LOG_BLUEPRINT.format(name="same"))
    reports = {Path(r.file).name: r for r in validate_paths([tmp_path])}
    assert not reports["a.yaml"].has_errors
    [issue] = reports["b.yaml"].issues
    assert issue.message == f"blueprint 'same' is also defined in {tmp_path / 'a.yaml'}"


def test_hidden_directories_are_not_searched(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("[broken\n")
    (tmp_path / "ok.yaml").write_text(LOG_BLUEPRINT.format(name="ok"))
    assert [Path(r.file).name for r in validate_paths([tmp_path])] == ["ok.yaml"]


def test_the_configured_roles_file_is_used_when_none_is_given(tmp_path: Path) -> None:
    roles = tmp_path / "roles.yaml"
    roles.write_text("principals:\n  alice: {roles: [operator]}\n")
    blueprint = ROOT / "blueprints" / "restart_service.yaml"
    without = validate_paths([blueprint])
    with_roles = validate_paths([blueprint], roles_file=roles)
    assert not without[0].has_errors
    assert with_roles[0].has_errors
    assert any("ops-manager" in issue.message for issue in with_roles[0].issues)


def test_the_bundled_catalog_loads() -> None:
    catalog = load_catalog(ROOT / "blueprints", ROOT / "policies")
    assert {"restart_service", "disk_usage_report", "http_health_probe"} <= set(catalog.blueprints)
    assert catalog.roles.roles_of("bob") >= {"operator", "ops-manager"}
    assert catalog.policies.rules


def test_an_invalid_blueprint_stops_the_catalog_with_every_issue(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nversion: '1'\nsteps:\n  - {id: x, action: nope}\n")
    with pytest.raises(InvalidBlueprintError) as raised:
        load_catalog(tmp_path, ROOT / "policies")
    assert [issue.message for issue in raised.value.issues if issue.is_error] == [
        "unknown action 'nope'"
    ]


def test_an_invalid_policy_stops_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("rules:\n  - {id: r, effect: deny}\n")
    with pytest.raises(InvalidPolicyError, match="reason"):
        load_catalog(ROOT / "blueprints", tmp_path)
