"""The action reference: docs/actions.md is generated from the argument models and current."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from opsgate.actions import builtin_actions
from opsgate.actions.reference import render_reference
from opsgate.cli import app

DOCS = Path(__file__).parents[2] / "docs" / "actions.md"


def test_docs_actions_md_is_generated_from_the_current_models() -> None:
    assert DOCS.read_text() == render_reference(builtin_actions()), (
        "docs/actions.md is stale: run `opsgate actions --markdown > docs/actions.md`"
    )


def test_the_reference_documents_every_argument_of_every_action() -> None:
    text = render_reference(builtin_actions())
    for name, info in builtin_actions().items():
        assert f"## `{name}`" in text
        for key, field in info.arguments.model_fields.items():
            assert f"| `{field.alias or key}` |" in text, (name, key)
            assert field.description, f"{name}.{key} has no description"


def test_opsgate_actions_lists_each_action_with_its_arguments() -> None:
    result = CliRunner().invoke(app, ["actions"])
    assert result.exit_code == 0, result.output
    assert "http [changes]: send one HTTP request and check the response" in result.output
    assert "  with: method, url*, params" in result.output
    markdown = CliRunner().invoke(app, ["actions", "--markdown"])
    assert markdown.output.startswith("# Actions\n")
