"""Data documents (``data:``): loaded with the blueprint, checked where they are named, read in
templates as ``data.<name>``, kept in the execution's snapshot, and never taken for blueprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.actions import builtin_actions
from opsgate.catalog import discover, load_catalog
from opsgate.config import Settings
from opsgate.runtime import Runtime
from opsgate.spec.blueprints import load_blueprints
from opsgate.spec.issues import Issue

ACTIONS = builtin_actions()

BLUEPRINT = """\
name: tuned
version: "1"
parameters:
  kind: {type: string, default: small}
data:
  sizes: data/sizes.yaml
steps:
  - id: show
    action: log
    with:
      message: "cpus={{ data.sizes[params.kind].cpus }}"
    outputs:
      cpus: "{{ data.sizes[params.kind].cpus }}"
"""
SIZES = "small: {cpus: 2}\nlarge: {cpus: 16}\n"


def write(folder: Path, blueprint: str = BLUEPRINT, sizes: str | None = SIZES) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    if sizes is not None:
        (folder / "data" / "sizes.yaml").write_text(sizes)
    path = folder / "tuned.yaml"
    path.write_text(blueprint)
    return path


def issues_of(path: Path) -> list[Issue]:
    return load_blueprints(path, ACTIONS)[1]


def test_the_data_document_is_loaded_into_the_blueprint(tmp_path: Path) -> None:
    specs, issues = load_blueprints(write(tmp_path), ACTIONS)
    assert issues == []
    assert specs[0].data == {"sizes": {"small": {"cpus": 2}, "large": {"cpus": 16}}}


@pytest.mark.parametrize(
    ("written", "message", "hint"),
    [
        ("data/missing.yaml", "does not exist", "relative to this blueprint's file"),
        ("../sizes.yaml", "must stay inside the blueprint's folder", "without '..'"),
        ("/etc/passwd.yaml", "must stay inside the blueprint's folder", "without '..'"),
        ("data/sizes.txt", "is not a YAML or JSON file", ".yaml, .yml or .json"),
        ("[1, 2]", "must be a file path, not a list", "data: {name: data/file.yaml}"),
    ],
)
def test_a_bad_data_path_is_an_error_at_its_entry(
    tmp_path: Path, written: str, message: str, hint: str
) -> None:
    path = write(tmp_path, BLUEPRINT.replace("data/sizes.yaml", written))
    [issue] = issues_of(path)
    assert (issue.path, issue.line, issue.column) == ("data.sizes", 6, 3)
    assert message in issue.message and hint in (issue.hint or "")


def test_a_syntax_error_in_the_data_file_is_reported_in_that_file(tmp_path: Path) -> None:
    path = write(tmp_path, sizes="small: {cpus: 2\n")
    [issue] = issues_of(path)
    assert issue.file == str(tmp_path / "data" / "sizes.yaml")
    assert issue.line >= 1


def test_data_that_is_not_json_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, sizes="small: {blob: !!binary aGVsbG8=}\n")
    [issue] = issues_of(path)
    assert (
        "is not JSON data" in issue.message
        and issue.hint == "data holds mappings, lists, text, finite numbers, booleans and null"
    )


def test_an_undeclared_data_document_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BLUEPRINT.replace(
            'data.sizes[params.kind].cpus }}"\n    outputs',
            'data.size[params.kind].cpus }}"\n    outputs',
        ),
    )
    [issue] = issues_of(path)
    assert issue.message.startswith("data document 'size' is not declared")
    assert issue.hint == "did you mean 'sizes'?"


def test_data_folders_hold_no_blueprints(tmp_path: Path) -> None:
    write(tmp_path)
    found, issues = discover([tmp_path])
    assert (found, issues) == ([tmp_path / "tuned.yaml"], [])


@pytest.mark.anyio
async def test_an_execution_reads_the_data_it_was_started_with(tmp_path: Path) -> None:
    folder = tmp_path / "blueprints"
    write(folder)
    (tmp_path / "policies").mkdir()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'opsgate.db'}",
        blueprints=folder,
        policies=tmp_path / "policies",
        principal="alice",
    )
    runtime = Runtime.open(settings)
    try:
        started = await runtime.service.execute_workflow(
            runtime.principal, "tuned", {"kind": "large"}
        )
        # The file changes after the start: the execution keeps what its snapshot holds.
        (folder / "data" / "sizes.yaml").write_text("large: {cpus: 1}\n")
        await runtime.worker.run(until_idle=True)
        view = await runtime.service.get_workflow_status(started.execution_id)
        assert view.status == "succeeded"
        [run] = runtime.store.list_step_runs(started.execution_id)
        assert run.outputs == {"cpus": 16}
        assert load_catalog(folder, tmp_path / "policies").blueprints["tuned"].data == {
            "sizes": {"large": {"cpus": 1}}
        }
    finally:
        runtime.close()
