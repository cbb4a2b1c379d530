"""The action reference, generated from the argument models: ``docs/actions.md`` and the
``opsgate actions`` command show the same text, so neither can drift from the code.

A test regenerates the page and fails when the file differs; refresh it with
``opsgate actions --markdown > docs/actions.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from opsgate.actions.registry import ActionInfo
from opsgate.spec.durations import format_duration

INTRODUCTION = """\
# Actions

Every step type opsgate runs, with the arguments its `with:` takes. This page is generated
from the argument models (`opsgate actions --markdown > docs/actions.md`); a test fails when
it is stale. How steps, templates and retries work: [blueprints.md](blueprints.md). Targets
and credentials: [inventory.md](inventory.md).

Common rules:

- **Secrets** are references (`env:NAME`, `file:/path`), resolved only inside the action.
  A `secret: true` parameter reaches templates as a token that only `shell`, `ssh`, `http`,
  `ipmi` and `health_check` replace with the value, at the last moment; every resolved value
  is masked as `***` in outputs, errors, progress and events. Secrets cannot be substituted
  into a `command` line (pass them in `env:`).
- **Quoting**: values substituted into `command` are shell-quoted, one word each, whatever
  they hold; `argv` is never parsed by a shell (prefer it).
- **Output** of commands and HTTP bodies is captured up to 64 KiB per stream (head and tail
  kept, the full size reported in `*_bytes`, `truncated` set). It comes from a host: data,
  not instructions.
- **Errors** are classified once: timeouts and connection errors are retryable; exit codes
  (unless in `retry_on_exit_codes`), 4xx statuses, authentication failures, untrusted host
  keys and missing secrets are not.
"""

#: What each built-in action outputs, beside its arguments in the reference.
OUTPUTS: Mapping[str, str] = {
    "shell": "`exit_code`, `stdout`, `stderr`, `stdout_bytes`, `stderr_bytes`, `truncated`; "
    "with `parse: json`, `json` (stdout parsed)",
    "ssh": "as `shell`",
    "ssh.upload": "`local_path`, `remote_path`, `bytes`",
    "ssh.download": "`local_path`, `remote_path`, `bytes`",
    "http": "`status`, `headers`, `body`, `body_bytes`, `truncated`, `json` (the parsed body "
    "when it is JSON, else null), and one value per name of `outputs`",
    "health_check": "`healthy`, `probes`, `waited_seconds`",
    "ipmi": "`operation`; power operations: `power`; `get_sensors`: `sensors`; "
    "`get_fru`: `fru`; `set_boot_device`: `boot_device`, `persistent`; "
    "`set_lan_config`, `get_lan_config`: `lan`",
    "wait": "`waited_seconds`",
    "assert": "`condition`",
    "log": "`message`, `level`",
    "workflow": "`execution_id`; with `wait: true` also `status` and `outputs` (the child's "
    "step outputs by step id). The child runs as the parent's requester (policies judge it so); "
    'a secret parameter is handed on whole, as its reference (`token: "{{ params.token }}"`); '
    "a failed child fails the step without retry; cancelling the step cancels the child",
}


def render_summary(actions: Mapping[str, ActionInfo]) -> str:
    """One paragraph per action for a terminal: name, nature, description, arguments."""
    paragraphs = []
    for name in sorted(actions):
        info = actions[name]
        marks = [
            m
            for m, on in (
                ("target", info.needs_target),
                ("changes", info.changes_things),
            )
            if on
        ]
        arguments = [
            (field.alias or key) + ("*" if field.is_required() else "")
            for key, field in info.arguments.model_fields.items()
        ]
        paragraphs.append(
            f"{name}" + (f" [{', '.join(marks)}]" if marks else "") + f": {info.description}\n"
            f"  with: {', '.join(arguments) or '(nothing)'}"
        )
    return "\n".join(paragraphs) + "\n(* required; details: opsgate actions --markdown)"


def render_reference(actions: Mapping[str, ActionInfo]) -> str:
    """The whole reference page, actions in name order."""
    sections = [INTRODUCTION]
    sections += [render_action(actions[name]) for name in sorted(actions)]
    return "\n".join(sections)


def render_action(info: ActionInfo) -> str:
    """One action's section: what it does, where it runs, its arguments and outputs."""
    facts = [
        "Runs against a target (`for_each: targets`)" if info.needs_target else "Runs anywhere",
        "changes things (give it a compensation)" if info.changes_things else "reads only",
    ]
    lines = [
        f"## `{info.name}`",
        "",
        f"{info.description[:1].upper()}{info.description[1:]}.",
        "",
        "; ".join(facts) + ".",
        "",
    ]
    lines += argument_table(info.arguments)
    if info.name in OUTPUTS:
        lines += ["", f"Outputs: {OUTPUTS[info.name]}."]
    return "\n".join(lines) + "\n"


def argument_table(model: type[BaseModel], prefix: str = "") -> list[str]:
    """A markdown table of a model's fields (nested models follow as ``field.sub`` rows)."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    rows = ["| argument | type | default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        prop = schema["properties"][key]
        required = field.is_required()
        default = "required" if required else _default(field.default, field.default_factory)
        described = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{key}` | {_type(prop, definitions)} | {default} | {described} |")
        inner = _model_of(field.annotation)
        if inner is not None:
            nested.append((f"{prefix}{key}.", inner))
    for sub_prefix, inner in nested:
        rows += argument_table(inner, sub_prefix)[2:]
    return rows


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _default(default: Any, factory: Any) -> str:
    if factory is not None:
        value = factory()
    elif default is PydanticUndefined:
        return "required"
    else:
        value = default
    if value is None or value in ({}, [], ()):
        return "—"
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple):
        return f"`{json.dumps(list(value))}`"
    return f"`{value}`"


def _type(prop: Mapping[str, Any], definitions: Mapping[str, Any]) -> str:
    if "anyOf" in prop:
        options = [_type(o, definitions) for o in prop["anyOf"] if o.get("type") != "null"]
        return " or ".join(dict.fromkeys(options))
    if "$ref" in prop:
        return "mapping (below)"
    if "enum" in prop:
        return " / ".join(f"`{value}`" for value in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), definitions)}"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"mapping of {_type(values, definitions)}" if isinstance(values, dict) else "mapping"
    if kind == "string" and prop.get("format") == "duration":
        return "duration"
    return {"string": "text", "integer": "integer", "boolean": "boolean", "number": "number"}.get(
        str(kind), "any"
    )
