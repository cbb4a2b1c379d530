"""The inventory file, target selectors, and get_workflow_targets' explanations."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from opsgate.catalog import Catalog
from opsgate.config import Settings, load_settings
from opsgate.errors import (
    ConfigurationError,
    InvalidParametersError,
    InvalidSpecError,
    NotFoundError,
)
from opsgate.inventory import Inventory, load_inventory, names_as_targets
from opsgate.runtime import Runtime
from opsgate.service import Service
from opsgate.stores import SQLStore
from tests.engine.rehearsal import load_spec

pytestmark = pytest.mark.anyio

INVENTORY = """\
targets:
  web-1:
    address: 10.0.0.1
    groups: [web]
    labels: {env: prod}
    ssh: {port: 2222, user: deploy, key: "file:keys/deploy", known_hosts: known_hosts}
    bmc: {address: 10.1.0.1, port: 6230, user: admin, password: "env:BMC_PASSWORD"}
  web-2:
    address: 10.0.0.2
    groups: [web]
    labels: {env: staging}
    ssh: {user: deploy, password: "env:SSH_PASSWORD", host_key_policy: accept_new}
  db-1:
    address: 10.0.0.3
    groups: [db]
    labels: {env: prod}
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return load_inventory(path)


def _names(inventory: Inventory, selector: str | list[str]) -> list[str]:
    return [target["name"] for target in inventory.select(selector)]


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("web-2", ["web-2"]),
        ("group:web", ["web-1", "web-2"]),
        ("label:env=prod", ["web-1", "db-1"]),
        ("group:web, !web-1", ["web-2"]),
        (["label:env=prod", "group:web"], ["web-1", "db-1", "web-2"]),
        ("!group:db", ["web-1", "web-2"]),
        ("*", ["web-1", "web-2", "db-1"]),
        ("db-1,web-1", ["db-1", "web-1"]),
    ],
)
def test_selectors_pick_targets_by_name_group_label_with_exclusions(
    inventory: Inventory, selector: str | list[str], names: list[str]
) -> None:
    assert _names(inventory, selector) == names


def test_a_target_is_what_templates_see_with_references_and_absolute_files(
    inventory: Inventory, tmp_path: Path
) -> None:
    [web1] = inventory.select("web-1")
    assert web1["name"] == "web-1" and web1["address"] == "10.0.0.1"
    assert web1["ssh"]["host"] == "10.0.0.1"
    assert web1["ssh"]["key"] == f"file:{tmp_path / 'keys/deploy'}"
    assert web1["ssh"]["known_hosts"] == f"file:{tmp_path / 'known_hosts'}"
    assert web1["bmc"]["password"] == "env:BMC_PASSWORD"
    assert inventory.select("db-1")[0]["ssh"] is None


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("web-3", "target 'web-3' not found; did you mean 'web-2' or 'web-1'"),
        ("group:wbe", "group 'wbe' not found; did you mean 'web'?"),
        ("label:env=prd", "label 'env=prd' not found; did you mean 'env=prod'"),
    ],
)
def test_a_term_that_selects_nothing_is_an_error_with_close_matches(
    inventory: Inventory, selector: str, message: str
) -> None:
    with pytest.raises(NotFoundError, match=message):
        inventory.select(selector)


@pytest.mark.parametrize(("selector", "hint"), [(" , ", "is empty"), ("label:env", "env=VALUE")])
def test_malformed_selectors_say_how_to_write_them(
    inventory: Inventory, selector: str, hint: str
) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        inventory.select(selector)


def test_explain_says_why_each_target_is_in_or_out(inventory: Inventory) -> None:
    choices = {c.name: (c.selected, c.reasons) for c in inventory.explain("group:web, !web-2")}
    assert choices == {
        "web-1": (True, ("in group web",)),
        "web-2": (False, ("in group web", "excluded by !web-2")),
        "db-1": (False, ("matched by none of: group:web, !web-2",)),
    }


def _inventory_issues(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(InvalidSpecError) as raised:
        load_inventory(path)
    return [str(issue) for issue in raised.value.issues]


def test_an_invalid_inventory_lists_every_issue_at_its_line(tmp_path: Path) -> None:
    issues = _inventory_issues(
        tmp_path,
        """\
        targets:
          web-1:
            address: 10.0.0.1
            ssh: {user: deploy, password: hunter2}
          "bad name":
            address: 10.0.0.2
          web-3:
            adress: 10.0.0.3
            bmc: {port: 99999, password: env:X}
        """,
    )
    file = tmp_path / "bad.yaml"
    assert any(
        i.startswith(f"{file}:4:") and "'password' must be a secret reference" in i for i in issues
    ), issues
    assert "hunter2" not in "\n".join(issues)
    assert any(i.startswith(f"{file}:5:") and "must be a name" in i for i in issues), issues
    assert any(
        i.startswith(f"{file}:8:")
        and "unknown field 'adress'" in i
        and "did you mean 'address'" in i
        for i in issues
    ), issues
    assert any(i.startswith(f"{file}:9:") and "'port' must be at most 65535" in i for i in issues)


@pytest.mark.parametrize(
    ("text", "message"),
    [("targets: [a\n", "YAML syntax error"), ("- a\n", "must be a mapping with 'targets'")],
)
def test_unreadable_inventories_are_located_errors(tmp_path: Path, text: str, message: str) -> None:
    assert any(message in issue for issue in _inventory_issues(tmp_path, text))


def test_a_missing_inventory_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="OPSGATE_INVENTORY"):
        load_inventory(tmp_path / "absent.yaml")


BLUEPRINT = {
    "name": "rollout",
    "version": "1",
    "parameters": {"hosts": {"type": "string", "default": "group:web"}},
    "targets": "{{ params.hosts }}",
    "steps": [{"id": "a", "action": "log", "for_each": "targets", "with": {"message": "x"}}],
}


def test_a_workflow_resolves_its_rendered_targets(inventory: Inventory) -> None:
    spec = load_spec(BLUEPRINT)
    assert [t["name"] for t in inventory.for_workflow(spec, {"hosts": "label:env=prod"})] == [
        "web-1",
        "db-1",
    ]
    assert names_as_targets(spec, {"hosts": "a, b"}) == [{"name": "a"}, {"name": "b"}]


def _service(tmp_path: Path, inventory: Inventory | None) -> Service:
    store = SQLStore.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    spec = load_spec(BLUEPRINT)
    return Service(store, Catalog(blueprints={spec.name: spec}), inventory=inventory)


async def test_get_workflow_targets_explains_each_target(
    inventory: Inventory, tmp_path: Path
) -> None:
    view = await _service(tmp_path, inventory).get_workflow_targets(
        "rollout", {"hosts": "group:web,!web-1"}
    )
    assert view.selector == "group:web,!web-1"
    assert view.selected == ["web-2"]
    assert view.inventory == str(tmp_path / "inventory.yaml")
    by_name = {t.name: t for t in view.targets}
    assert by_name["web-1"].reasons == ["in group web", "excluded by !web-1"]
    assert by_name["web-2"].address == "10.0.0.2" and by_name["web-2"].labels == {"env": "staging"}


async def test_get_workflow_targets_without_inventory_takes_names_as_they_are(
    tmp_path: Path,
) -> None:
    view = await _service(tmp_path, None).get_workflow_targets("rollout", {"hosts": "a,b"})
    assert view.selected == ["a", "b"] and view.inventory is None
    assert "no inventory is configured" in view.targets[0].reasons[0]


async def test_get_workflow_targets_checks_parameters_and_names(
    inventory: Inventory, tmp_path: Path
) -> None:
    service = _service(tmp_path, inventory)
    with pytest.raises(InvalidParametersError):
        await service.get_workflow_targets("rollout", {"hosts": 3})
    with pytest.raises(NotFoundError, match="group 'wbe' not found"):
        await service.get_workflow_targets("rollout", {"hosts": "group:wbe"})


def _runtime_settings(tmp_path: Path, inventory: str) -> Settings:
    (tmp_path / "inventory.yaml").write_text(inventory)
    for folder in ("blueprints", "policies"):
        (tmp_path / folder).mkdir()
    return load_settings(
        database_url=f"sqlite:///{tmp_path / 'runtime.db'}",
        blueprints=tmp_path / "blueprints",
        policies=tmp_path / "policies",
        inventory=tmp_path / "inventory.yaml",
    )


def test_the_runtime_loads_opsgate_inventory_for_the_worker_and_the_service(
    tmp_path: Path,
) -> None:
    runtime = Runtime.open(_runtime_settings(tmp_path, INVENTORY))
    try:
        assert runtime.service.inventory is not None
        assert list(runtime.service.inventory.targets) == ["web-1", "web-2", "db-1"]
        spec = load_spec(BLUEPRINT)
        assert [t["name"] for t in runtime.worker.resolve_targets(spec, {"hosts": "db-1"})] == [
            "db-1"
        ]
    finally:
        runtime.close()


def test_the_runtime_refuses_an_invalid_inventory_with_its_issues(tmp_path: Path) -> None:
    settings = _runtime_settings(tmp_path, "targets: {web-1: {adress: x}}\n")
    with pytest.raises(InvalidSpecError, match="unknown field 'adress'"):
        Runtime.open(settings)
