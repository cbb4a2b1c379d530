"""The ``http`` action: one HTTP request, its status checked, values taken from its JSON body."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool, field_validator, model_validator

from opsgate.actions.base import ActionArguments
from opsgate.spec.model import Duration, Label, Text
from opsgate.spec.parameters import SECRET_HINT, is_secret_reference
from opsgate.spec.structure import describe, invalid

_RANGE = re.compile(r"^\s*(\d{3})\s*-\s*(\d{3})\s*$")
_JSON_PATH = re.compile(r"""^\$(\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\]|\['[^']*'\]|\["[^"]*"\])*$""")


def _status(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    match = _RANGE.match(value) if isinstance(value, str) else None
    if match is not None and 100 <= int(match[1]) <= int(match[2]) <= 599:
        return value
    raise invalid(
        f"must be an HTTP status (100-599) or a range such as '200-299', not {describe(value)}"
    )


def _secret_reference(value: object) -> object:
    if is_secret_reference(value):
        return value
    raise invalid("must be a secret reference (env:NAME or file:/path)", SECRET_HINT)


def _json_path(value: object) -> object:
    if isinstance(value, str) and _JSON_PATH.match(value):
        return value
    raise invalid(
        f"must be a JSON path such as '$.data.items[0].id', not {describe(value)}",
        "start at $ and use .name or [index] for each level",
    )


#: An expected HTTP status: a code, or an inclusive range written "200-299".
Status = Annotated[int | str, BeforeValidator(_status)]
#: A secret reference, resolved only inside the action.
SecretReference = Annotated[str, BeforeValidator(_secret_reference)]
#: A JSON path into a response body.
JSONPath = Annotated[str, BeforeValidator(_json_path)]


class HTTPAuth(ActionArguments):
    """Credentials for a request, given as references to secrets."""

    type: Literal["bearer", "basic"] = Field(default="bearer", description="bearer or basic")
    token: SecretReference | None = Field(default=None, description="the bearer token (bearer)")
    username: Label | None = Field(default=None, description="the user name (basic)")
    password: SecretReference | None = Field(default=None, description="the password (basic)")

    @model_validator(mode="after")
    def _complete(self) -> HTTPAuth:
        if self.type == "bearer" and (self.token is None or self.username or self.password):
            raise invalid("of type bearer needs 'token' and nothing else")
        if self.type == "basic" and (self.username is None or self.password is None or self.token):
            raise invalid("of type basic needs 'username' and 'password' and no 'token'")
        return self


class HTTPArguments(ActionArguments):
    """Arguments of ``http``: one request and what its response must look like."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = Field(
        default="GET", description="the request method, upper case"
    )
    url: Label = Field(description="the absolute http:// or https:// URL (a template)")
    params: dict[str, Any] = Field(default_factory=dict, description="query string parameters")
    headers: dict[str, Text] = Field(default_factory=dict, description="request headers")
    json_body: Any = Field(default=None, alias="json", description="a body sent as JSON")
    body: Text | None = Field(default=None, description="a raw text body")
    form: dict[str, Text] | None = Field(default=None, description="a form-encoded body")
    auth: HTTPAuth | None = Field(default=None, description="credentials, as secret references")
    timeout: Duration = Field(default=timedelta(seconds=30), description="limit for the request")
    expect_status: tuple[Status, ...] = Field(
        default=("200-299",),
        min_length=1,
        description="statuses that count as success: codes or ranges such as '200-299'",
    )
    outputs: dict[str, JSONPath] = Field(
        default_factory=dict,
        description="values taken from the JSON response body by JSON path, by name",
    )
    follow_redirects: StrictBool = Field(default=False, description="follow 3xx redirects")
    verify: StrictBool = Field(default=True, description="verify the server's TLS certificate")
    ca: Label | None = Field(
        default=None, description="a CA bundle to verify against (a path or file: reference)"
    )

    @field_validator("url")
    @classmethod
    def _absolute(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise invalid(f"must be an http:// or https:// URL, not {describe(url)}")
        return url

    @model_validator(mode="after")
    def _one_body(self) -> HTTPArguments:
        bodies = {"json": self.json_body, "body": self.body, "form": self.form}
        given = [name for name, value in bodies.items() if value is not None]
        if len(given) > 1:
            raise invalid(f"has several bodies ({', '.join(given)}); give at most one")
        return self
