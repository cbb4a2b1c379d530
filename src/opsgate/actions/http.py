"""The ``http`` action: one HTTP request, its status checked, values taken from its JSON body."""

from __future__ import annotations

import email.utils
import re
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import BeforeValidator, Field, StrictBool, field_validator, model_validator

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.errors import StepError
from opsgate.secrets import SecretReference
from opsgate.spec.model import Duration, Label, Text
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


def _json_path(value: object) -> object:
    if isinstance(value, str) and _JSON_PATH.match(value):
        return value
    raise invalid(
        f"must be a JSON path such as '$.data.items[0].id', not {describe(value)}",
        "start at $ and use .name or [index] for each level",
    )


#: An expected HTTP status: a code, or an inclusive range written "200-299".
Status = Annotated[int | str, BeforeValidator(_status)]
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

    @field_validator("outputs")
    @classmethod
    def _own_names(cls, outputs: dict[str, str]) -> dict[str, str]:
        taken = sorted(RESERVED_OUTPUTS & set(outputs))
        if taken:
            raise invalid(
                f"uses names the action sets itself: {', '.join(taken)}",
                "choose other names; status, headers, body and json are always output",
            )
        return outputs

    @model_validator(mode="after")
    def _one_body(self) -> HTTPArguments:
        bodies = {"json": self.json_body, "body": self.body, "form": self.form}
        given = [name for name, value in bodies.items() if value is not None]
        if len(given) > 1:
            raise invalid(f"has several bodies ({', '.join(given)}); give at most one")
        return self


class HTTPAction(Action[HTTPArguments]):
    """Sends one request with httpx and checks the response; TLS is verified unless told
    otherwise. A 429 is retried within the attempt after its ``Retry-After`` (up to
    :data:`MAX_RETRY_AFTER_SECONDS`); the step's timeout bounds the whole attempt."""

    name = "http"
    arguments = HTTPArguments
    changes_things = True
    description = "send one HTTP request and check the response"
    uses_secrets = True

    async def run(self, args: HTTPArguments, ctx: StepContext) -> dict[str, Any]:
        await ctx.report(f"{args.method} {httpx.URL(args.url).copy_with(query=None)}")
        async with httpx.AsyncClient(
            verify=_verification(args),
            follow_redirects=args.follow_redirects,
            timeout=args.timeout.total_seconds(),
            trust_env=False,
        ) as client:
            for _ in range(TOO_MANY_REQUESTS_TRIES):
                response = await _send(client, args, ctx)
                wait = _retry_after(response)
                if wait is None or wait > MAX_RETRY_AFTER_SECONDS:
                    break
                await ctx.report(f"rate limited (429); retrying after {wait:g}s")
                await ctx.sleep(wait)
        return _outputs(args, response, ctx)


#: Requests sent per attempt while the server answers 429 with a short Retry-After.
TOO_MANY_REQUESTS_TRIES = 3
#: The longest Retry-After waited for inside an attempt; longer ones fail the attempt
#: (retryable), leaving the wait to the step's retry policy.
MAX_RETRY_AFTER_SECONDS = 60.0
#: Characters of an unexpected response's body quoted in the step error.
BODY_IN_ERROR = 300
#: Output names that the action itself sets.
RESERVED_OUTPUTS = frozenset({"status", "headers", "body", "body_bytes", "truncated", "json"})


def _verification(args: HTTPArguments) -> ssl.SSLContext | bool:
    if not args.verify:
        return False
    if args.ca is None:
        return True
    path = args.ca.removeprefix("file:")
    return ssl.create_default_context(cafile=str(Path(path).expanduser()))


async def _send(client: httpx.AsyncClient, args: HTTPArguments, ctx: StepContext) -> httpx.Response:
    auth: httpx.Auth | None = None
    headers = dict(args.headers)
    if args.auth is not None and args.auth.type == "basic":
        assert args.auth.username is not None and args.auth.password is not None
        auth = httpx.BasicAuth(args.auth.username, ctx.secret(args.auth.password))
    elif args.auth is not None:
        assert args.auth.token is not None
        headers["Authorization"] = f"Bearer {ctx.secret(args.auth.token)}"
    try:
        return await client.request(
            args.method,
            args.url,
            params=args.params or None,
            headers=headers,
            json=args.json_body,
            content=args.body,
            data=args.form,
            auth=auth,
        )
    except httpx.TimeoutException as exc:
        raise StepError(
            f"{args.method} {args.url} timed out ({type(exc).__name__}) after {args.timeout}",
            retryable=True,
            error_type="Timeout",
        ) from exc
    except httpx.TransportError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise StepError(
                f"the TLS certificate of {args.url} is not trusted ({exc}); give the CA that "
                "signed it as with.ca (a path or file: reference), never verify: false in "
                "production",
                retryable=False,
                error_type="TLSError",
            ) from exc
        raise StepError(
            f"{args.method} {args.url} failed: {type(exc).__name__}: {exc}",
            retryable=True,
            error_type="ConnectionError",
        ) from exc


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 429 asks to wait (a number or an HTTP date), or ``None``."""
    if response.status_code != 429:
        return None
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def expected_status(status: int, expected: tuple[int | str, ...]) -> bool:
    """Whether ``status`` is one of the codes or within one of the ranges of ``expected``."""
    for option in expected:
        if isinstance(option, int):
            if status == option:
                return True
            continue
        low, _, high = option.partition("-")
        if int(low) <= status <= int(high.strip() or low):
            return True
    return False


def _outputs(args: HTTPArguments, response: httpx.Response, ctx: StepContext) -> dict[str, Any]:
    capture = ctx.capture()
    capture.feed(response.content)
    body = capture.result()
    status = response.status_code
    if not expected_status(status, args.expect_status):
        retryable = status >= 500 or status == 429
        shown = ", ".join(str(option) for option in args.expect_status)
        raise StepError(
            f"{args.method} {args.url} answered {status} {response.reason_phrase}, expected "
            f"{shown}; the body starts with: {body.text[:BODY_IN_ERROR]!r}",
            retryable=retryable,
            error_type="HTTPStatus",
        )
    parsed = _json_body(response, body.truncated) if body.text else None
    outputs: dict[str, Any] = {
        "status": status,
        "headers": dict(response.headers),
        "body": body.text,
        "body_bytes": body.size,
        "truncated": body.truncated,
        "json": parsed,
    }
    for name, path in args.outputs.items():
        outputs[name] = json_path(parsed, path)
    return outputs


def _json_body(response: httpx.Response, truncated: bool) -> Any:
    if "json" not in response.headers.get("content-type", "") or truncated:
        return None
    try:
        return response.json()
    except ValueError:
        return None


_PATH_PART = re.compile(r"""\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")


def json_path(document: Any, path: str) -> Any:
    """The value at ``path`` (``$.a.b[0]['c d']``) in a JSON ``document``; a non-retryable
    step error that says where the path stops matching."""
    current = document
    walked = "$"
    for match in _PATH_PART.finditer(path, 1):
        name, index = match[1] or match[3] or match[4], match[2]
        if index is not None and isinstance(current, list) and int(index) < len(current):
            current = current[int(index)]
        elif name is not None and isinstance(current, dict) and name in current:
            current = current[name]
        else:
            raise StepError(
                f"the response has no {path}: {walked} is {describe(current)}"
                + ("" if document is not None else " (the body is not JSON)"),
                retryable=False,
                error_type="MissingOutput",
            )
        walked += match[0]
    return current
