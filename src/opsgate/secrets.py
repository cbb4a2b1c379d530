"""Secret references, their resolution inside actions, and the redaction of resolved values.

Secrets never travel as values: blueprints, parameters and the inventory hold *references*
(``env:NAME``, ``file:/path``) that an action resolves at run time through :class:`Secrets`.
Each resolution is recorded in the attempt's :class:`Redactor`, which replaces every resolved
value with ``***`` in captured output, outputs, errors and reported sub-tasks.

A secret *parameter* reaches templates as a token (``<<secret:env:API_TOKEN>>``, see
:func:`secret_token`), so ``"Bearer {{ params.api_token }}"`` renders to a token that only
the action boundary replaces with the value (:func:`reveal`): the rendered arguments the engine
sees never contain the secret.

Back-ends are pluggable: a :class:`SecretBackend` reads a name in its own scheme; register
more with ``Secrets({"vault": VaultBackend(), ...})``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator

from opsgate.errors import StepError
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.parameters import SECRET_HINT, is_secret_reference
from opsgate.spec.structure import invalid

#: What replaces a secret's value wherever opsgate shows text.
MASK = "***"

_TOKEN = re.compile(r"<<secret:(?P<reference>[a-z]+:[^<>]+?)>>")
_REFERENCE = re.compile(r"^(?P<scheme>[a-z]+):(?P<name>.+)$", re.DOTALL)


def _reference(value: object) -> object:
    if is_secret_reference(value):
        return value
    raise invalid("must be a secret reference (env:NAME or file:/path)", SECRET_HINT)


#: A field that holds a secret reference, never a secret: validated as ``env:``/``file:``.
SecretReference = Annotated[str, BeforeValidator(_reference)]


class SecretBackend(Protocol):
    """Reads secrets of one scheme (``env``, ``file``, ...) by name."""

    def read(self, name: str) -> str:
        """The secret called ``name``; raise :class:`LookupError` (message: what to fix)."""
        ...


class EnvironmentBackend:
    """``env:NAME``: an environment variable of the opsgate process."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def read(self, name: str) -> str:
        value = self._environ.get(name)
        if value is None:
            raise LookupError(
                f"environment variable {name!r} is not set in the opsgate process; "
                "export it before starting opsgate"
            )
        return value


class FileBackend:
    """``file:PATH``: the content of a file, without its final newline. A relative path is
    read from ``base`` (the inventory resolves its own relative paths against its folder)."""

    def __init__(self, base: Path | None = None) -> None:
        self._base = base

    def read(self, name: str) -> str:
        path = Path(name).expanduser()
        if not path.is_absolute() and self._base is not None:
            path = self._base / path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LookupError(f"file {str(path)!r} cannot be read ({reason})") from None
        return text.removesuffix("\n")


class Secrets:
    """Resolves references through the back-end of their scheme."""

    def __init__(self, backends: Mapping[str, SecretBackend] | None = None) -> None:
        self.backends: dict[str, SecretBackend] = {
            "env": EnvironmentBackend(),
            "file": FileBackend(),
            **(backends or {}),
        }

    def resolve(self, reference: str) -> str:
        """The value ``reference`` points at; a non-retryable ``SecretUnavailable`` step error
        that names the reference (never a value) when it cannot be read."""
        match = _REFERENCE.match(reference)
        backend = self.backends.get(match["scheme"]) if match else None
        if match is None or backend is None:
            schemes = ", ".join(f"{scheme}:" for scheme in sorted(self.backends))
            raise StepError(
                f"{reference!r} is not a secret reference; use one of the schemes {schemes} "
                "(e.g. env:API_TOKEN or file:/run/secrets/token)",
                retryable=False,
                error_type="SecretUnavailable",
            )
        try:
            return backend.read(match["name"])
        except LookupError as exc:
            raise StepError(
                f"secret {reference!r} is unavailable: {exc}",
                retryable=False,
                error_type="SecretUnavailable",
            ) from None


class Redactor:
    """The secret values resolved during one attempt, and their removal from text."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        """Redact ``value`` from now on (empty values mean nothing and are ignored)."""
        if value:
            self._values.add(value)

    def text(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***`` (longest first, so a
        secret containing another is masked whole)."""
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def value(self, value: Any) -> Any:
        """``value`` with every string inside lists and mappings (keys too) redacted."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.value(key): self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value


def secret_token(reference: str) -> str:
    """How a secret parameter's reference appears in rendered templates."""
    return f"<<secret:{reference}>>"


def has_token(text: str) -> bool:
    """Whether ``text`` carries a secret parameter's token."""
    return _TOKEN.search(text) is not None


def as_references(value: Any) -> Any:
    """``value`` with each secret token turned back into its reference, never the secret:
    how a secret parameter is handed on to a child execution, which takes references."""
    if isinstance(value, str):
        whole = _TOKEN.fullmatch(value)
        if whole is not None:
            return whole["reference"]
        if has_token(value):
            raise StepError(
                "a secret parameter can be handed to a child workflow only whole, as "
                '"{{ params.NAME }}", not inside other text',
                retryable=False,
            )
        return value
    if isinstance(value, Mapping):
        return {key: as_references(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_references(item) for item in value]
    return value


def reveal(value: Any, secrets: Secrets, redactor: Redactor) -> Any:
    """``value`` with each secret token replaced by the secret it refers to (recorded in
    ``redactor``): done once, at the action boundary, on rendered arguments."""
    if isinstance(value, str):

        def resolved(match: re.Match[str]) -> str:
            secret = secrets.resolve(match["reference"])
            redactor.add(secret)
            return secret

        return _TOKEN.sub(resolved, value)
    if isinstance(value, Mapping):
        return {key: reveal(item, secrets, redactor) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [reveal(item, secrets, redactor) for item in value]
    return value


def secret_tokens(spec: WorkflowSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as templates see them during a run: each secret parameter's reference
    replaced by its token (an unset optional secret stays ``None``)."""
    return {
        name: (
            secret_token(value)
            if isinstance(value, str) and name in spec.parameters and spec.parameters[name].secret
            else value
        )
        for name, value in params.items()
    }
