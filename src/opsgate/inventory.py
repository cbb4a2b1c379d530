"""The inventory: the targets steps run against (``OPSGATE_INVENTORY``), and target selectors.

A YAML file maps target names to their address, SSH and BMC connection data (credentials as
secret references only), labels and groups; it is validated like a blueprint, every issue
located by file:line. Relative ``file:`` references are read from the inventory's folder.

Selectors pick targets: a name, ``group:web``, ``label:env=prod``, ``*`` (every target), a
list of them or one comma-separated text, and ``!term`` to exclude what a term selects. Without
positive terms, exclusions apply to every target. A term that selects nothing is an error (a
misspelt group must not silently shrink a rollout); :meth:`Inventory.explain` says why each
target is in or out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from opsgate.errors import ConfigurationError, InvalidSpecError, NotFoundError
from opsgate.expressions import render_value
from opsgate.secrets import SecretReference
from opsgate.spec.issues import Issue, Severity, has_errors
from opsgate.spec.model import Integer, Label, Text, WorkflowSpec
from opsgate.spec.source import YAMLSyntaxError, parse_yaml
from opsgate.spec.structure import describe, invalid, validate_model

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAME_HINT = "use up to 100 letters, digits, '_', '.' and '-', starting with a letter or digit"


def _name(value: str) -> str:
    if _NAME.match(value) is None:
        raise invalid(f"must be a name, not {describe(value)}", NAME_HINT)
    return value


Name = Annotated[str, AfterValidator(_name)]
Port = Annotated[Integer, Field(ge=1, le=65535)]


class InventoryModel(BaseModel):
    """Base of the inventory models: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SSHConnection(InventoryModel):
    """How to reach a target over SSH."""

    host: Label | None = Field(default=None, description="defaults to the target's address")
    port: Port = Field(default=22, description="the SSH port")
    user: Label = Field(description="the login user")
    key: SecretReference | None = Field(default=None, description="private key (a reference)")
    passphrase: SecretReference | None = Field(default=None, description="key passphrase")
    password: SecretReference | None = Field(default=None, description="password (a reference)")
    known_hosts: Label | None = Field(
        default=None,
        description="known_hosts file (a path or file: reference); default ~/.ssh/known_hosts",
    )
    host_key_policy: Literal["strict", "accept_new"] = Field(
        default="strict",
        description="strict: the host key must be in known_hosts; accept_new: trust a host "
        "seen for the first time and record its key (a changed key is still refused)",
    )
    connect_timeout: Port = Field(default=10, description="seconds to wait for a connection")


class BMCConnection(InventoryModel):
    """How to reach a target's BMC over IPMI (RMCP+)."""

    address: Label | None = Field(default=None, description="defaults to the target's address")
    port: Port = Field(default=623, description="the IPMI LAN port (UDP)")
    user: Text = Field(default="", description="the BMC user")
    password: SecretReference = Field(description="the BMC password (a reference)")


class Target(InventoryModel):
    """One host of the inventory."""

    address: Label = Field(description="host name or IP address")
    groups: tuple[Name, ...] = Field(default=(), description="groups it belongs to")
    labels: dict[Name, Text] = Field(default_factory=dict, description="key: value labels")
    ssh: SSHConnection | None = Field(default=None, description="SSH connection data")
    bmc: BMCConnection | None = Field(default=None, description="BMC connection data")


class InventoryFile(InventoryModel):
    """The inventory document."""

    targets: dict[Name, Target] = Field(description="target name → target")


@dataclass(frozen=True, slots=True)
class TargetChoice:
    """Whether one inventory target is selected, and why."""

    name: str
    selected: bool
    reasons: tuple[str, ...]


class Inventory:
    """Targets by name, in file order; selects them and explains selections."""

    def __init__(self, targets: Mapping[str, Target], source: str = "inventory") -> None:
        self.targets = dict(targets)
        self.source = source

    def variables(self, name: str) -> dict[str, Any]:
        """What templates see as ``target`` (references, never secrets): the target's fields
        plus its ``name``, connection hosts defaulting to its address."""
        target = self.targets[name]
        data: dict[str, Any] = {"name": name, **target.model_dump(mode="json")}
        for section, key in (("ssh", "host"), ("bmc", "address")):
            if data[section] is not None and data[section][key] is None:
                data[section][key] = target.address
        return data

    def select(self, selector: str | Sequence[str]) -> list[dict[str, Any]]:
        """The targets ``selector`` picks, as template variables, in the order selected."""
        return [self.variables(c.name) for c in self._choose(selector) if c.selected]

    def explain(self, selector: str | Sequence[str]) -> list[TargetChoice]:
        """Every inventory target: selected or not, and why."""
        chosen = {choice.name: choice for choice in self._choose(selector)}
        return [chosen[name] for name in self.targets]

    def for_workflow(self, spec: WorkflowSpec, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The targets of an execution: the blueprint's ``targets`` rendered and selected
        (the worker's target resolver)."""
        selector = workflow_selector(spec, params)
        return [] if selector is None else self.select(selector)

    def _choose(self, selector: str | Sequence[str]) -> list[TargetChoice]:
        terms = selector_terms(selector)
        if not terms:
            raise ConfigurationError(
                "the target selector is empty; give a name, group:NAME, label:KEY=VALUE or *"
            )
        included: dict[str, list[str]] = {}
        excluded: dict[str, list[str]] = {}
        for term in terms:
            negated = term.startswith("!")
            bare = term[1:].strip() if negated else term
            for name, reason in self._matches(bare):
                book = excluded if negated else included
                book.setdefault(name, []).append(f"excluded by !{bare}" if negated else reason)
        if all(term.startswith("!") for term in terms):
            included = {
                name: ["every target (the selector has only exclusions)"] for name in self.targets
            }
        order = [*included, *(name for name in self.targets if name not in included)]
        shown = ", ".join(terms)
        return [
            TargetChoice(
                name,
                name in included and name not in excluded,
                tuple(
                    included.get(name, [f"matched by none of: {shown}"]) + excluded.get(name, [])
                ),
            )
            for name in order
        ]

    def _matches(self, term: str) -> list[tuple[str, str]]:
        """The targets one positive term selects, with the reason; an error if none."""
        if term == "*":
            return [(name, "every target (*)") for name in self.targets]
        kind, _, value = term.partition(":")
        if kind == "group" and value:
            found = [(n, f"in group {value}") for n, t in self.targets.items() if value in t.groups]
            if not found:
                known = {group for t in self.targets.values() for group in t.groups}
                raise NotFoundError("group", value, known)
            return found
        if kind == "label" and value:
            key, equals, wanted = value.partition("=")
            if not equals:
                raise ConfigurationError(
                    f"selector term {term!r} needs a value: write label:{key}=VALUE"
                )
            found = [
                (n, f"has label {key}={wanted}")
                for n, t in self.targets.items()
                if t.labels.get(key) == wanted
            ]
            if not found:
                known = {f"{k}={v}" for t in self.targets.values() for k, v in t.labels.items()}
                raise NotFoundError("label", f"{key}={wanted}", known)
            return found
        if term not in self.targets:
            raise NotFoundError("target", term, self.targets)
        return [(term, f"named {term}")]


def selector_terms(selector: str | Sequence[str]) -> list[str]:
    """The terms of a selector: list items, or comma-separated parts of a text."""
    parts = selector.split(",") if isinstance(selector, str) else list(selector)
    return [str(part).strip() for part in parts if str(part).strip()]


def workflow_selector(spec: WorkflowSpec, params: Mapping[str, Any]) -> str | list[str] | None:
    """A blueprint's ``targets`` rendered with the run's parameters; ``None`` if it has none."""
    if spec.targets is None:
        return None
    rendered = render_value(spec.targets, {"params": dict(params), "data": spec.data})
    if isinstance(rendered, str):
        return rendered
    if isinstance(rendered, list | tuple):
        return [str(item) for item in rendered]
    raise ConfigurationError(
        f"the targets of {spec.name!r} rendered to {describe(rendered)}; they must give a "
        "selector text or a list of selector terms"
    )


def names_as_targets(spec: WorkflowSpec, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Targets without an inventory: the rendered selector's terms taken as bare names."""
    selector = workflow_selector(spec, params)
    return [] if selector is None else [{"name": term} for term in selector_terms(selector)]


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory file; :class:`InvalidSpecError` lists every issue."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"cannot read the inventory {str(path)!r} (OPSGATE_INVENTORY): {exc}"
        ) from exc
    subject = f"inventory {path}"
    try:
        document = parse_yaml(text, str(path))
    except YAMLSyntaxError as exc:
        raise InvalidSpecError(subject, [exc.issue]) from None
    if not isinstance(document.data, dict):
        issue = Issue(
            Severity.ERROR, "the inventory must be a mapping with 'targets'", str(path), 1, 1
        )
        raise InvalidSpecError(subject, [issue])
    parsed, issues = validate_model(InventoryFile, document.data, document)
    if parsed is None or has_errors(issues):
        raise InvalidSpecError(subject, issues)
    base = path.parent.resolve()
    targets = {name: _anchored(target, base) for name, target in parsed.targets.items()}
    return Inventory(targets, source=str(path))


def _anchored(target: Target, base: Path) -> Target:
    """``target`` with its relative ``file:`` references made absolute from ``base``."""

    def fix(connection: InventoryModel | None, fields: tuple[str, ...]) -> Any:
        if connection is None:
            return None
        update = {}
        for field in fields:
            value = getattr(connection, field)
            if not isinstance(value, str):
                continue
            plain = value.removeprefix("file:")
            if (value.startswith("file:") or field == "known_hosts") and not (
                Path(plain).expanduser().is_absolute()
            ):
                update[field] = f"file:{base / plain}"
        return connection.model_copy(update=update)

    return target.model_copy(
        update={
            "ssh": fix(target.ssh, ("key", "passphrase", "password", "known_hosts")),
            "bmc": fix(target.bmc, ("password",)),
        }
    )
