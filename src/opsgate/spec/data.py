"""Data documents: YAML or JSON files beside a blueprint that its templates read as ``data``.

A blueprint names them under ``data:`` (``{bios_templates: data/bios_templates.yaml}``, paths
relative to the blueprint's file). They are loaded with the blueprint, so the execution's
snapshot holds their content: a later edit of the file never changes a running execution, and
the snapshot's digest covers them.
"""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from pathlib import PurePosixPath
from typing import Any

from opsgate.spec.checks import read_text
from opsgate.spec.issues import Issue
from opsgate.spec.source import Document, YAMLSyntaxError, parse_yaml
from opsgate.spec.structure import describe

#: Folders of a blueprints directory named so hold data documents, not blueprints.
DATA_FOLDER = "data"
SUFFIXES = (".yaml", ".yml", ".json")
HINT = "write data: {name: data/file.yaml}, a path relative to this blueprint's file"


def load_data(document: Document) -> tuple[dict[str, Any], list[Issue]]:
    """The content of every data document the blueprint in ``document`` names, by name."""
    declared = document.data.get("data") if isinstance(document.data, dict) else None
    if declared is None:
        return {}, []
    if not isinstance(declared, dict):
        return {}, [
            document.issue(("data",), f"data must be a mapping, not {describe(declared)}", HINT)
        ]
    loaded: dict[str, Any] = {}
    issues: list[Issue] = []
    for name, written in declared.items():
        content, found = _load(document, str(name), written)
        issues += found
        if not found:
            loaded[str(name)] = content
    return loaded, issues


def _load(document: Document, name: str, written: object) -> tuple[Any, list[Issue]]:
    where = ("data", name)
    if not isinstance(written, str):
        return None, [document.issue(where, f"must be a file path, not {describe(written)}", HINT)]
    relative = PurePosixPath(written)
    if relative.is_absolute() or ".." in relative.parts:
        message = f"{written!r} must stay inside the blueprint's folder"
        return None, [document.issue(where, message, "use a relative path without '..'")]
    if relative.suffix not in SUFFIXES:
        message = f"{written!r} is not a YAML or JSON file"
        return None, [document.issue(where, message, "name a .yaml, .yml or .json file")]
    path = FilePath(document.file).parent / relative
    if not path.is_file():
        return None, [document.issue(where, f"{path} does not exist", HINT)]
    text, issues = read_text(path)
    if text is None:
        return None, issues
    try:
        content = parse_yaml(text, str(path)).data
    except YAMLSyntaxError as exc:
        return None, [exc.issue]
    try:
        return json.loads(json.dumps(content, allow_nan=False)), []
    except (TypeError, ValueError) as exc:
        message = f"{path} holds a value that is not JSON data: {exc}"
        hint = "data holds mappings, lists, text, finite numbers, booleans and null"
        return None, [document.issue(where, message, hint)]
