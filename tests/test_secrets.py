"""Secret references, back-ends, tokens of secret parameters, and redaction."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from opsgate.actions import Action, ActionArguments, StepContext, run_action
from opsgate.actions.control import LogAction
from opsgate.errors import StepError
from opsgate.secrets import Redactor, Secrets, reveal, secret_token, secret_tokens
from tests.actions.contexts import Recorder
from tests.engine.rehearsal import load_spec

pytestmark = pytest.mark.anyio


def test_env_and_file_references_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS_TEST", "from-env")
    (tmp_path / "token").write_text("from-file\n")
    secrets = Secrets()
    assert secrets.resolve("env:SECRETS_TEST") == "from-env"
    assert secrets.resolve(f"file:{tmp_path / 'token'}") == "from-file"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("env:SECRETS_TEST_UNSET", "environment variable 'SECRETS_TEST_UNSET' is not set"),
        ("file:/no/such/secret", "file '/no/such/secret' cannot be read (No such file"),
        (
            "vault:kv/x",
            "'vault:kv/x' is not a secret reference; use one of the schemes env:, file:",
        ),
    ],
)
def test_an_unresolvable_reference_is_a_permanent_error_naming_it(
    reference: str, message: str
) -> None:
    with pytest.raises(StepError, match=re.escape(message)) as raised:
        Secrets().resolve(reference)
    assert raised.value.error_type == "SecretUnavailable" and not raised.value.retryable


def test_other_back_ends_plug_in_by_scheme() -> None:
    class Vault:
        def read(self, name: str) -> str:
            return f"vaulted:{name}"

    assert Secrets({"vault": Vault()}).resolve("vault:kv/db") == "vaulted:kv/db"


def test_the_redactor_masks_every_value_longest_first_in_nested_data() -> None:
    redactor = Redactor()
    for value in ("abc", "abcdef", ""):
        redactor.add(value)
    data = {"k abcdef": ["x abc y", ("abcdefg",)], "n": 3}
    assert redactor.value(data) == {"k ***": ["x *** y", ["***g"]], "n": 3}


def test_reveal_replaces_tokens_and_records_the_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS_TEST", "v4lue")
    redactor = Redactor()
    args = {"headers": {"Authorization": f"Bearer {secret_token('env:SECRETS_TEST')}"}, "n": 1}
    assert reveal(args, Secrets(), redactor) == {
        "headers": {"Authorization": "Bearer v4lue"},
        "n": 1,
    }
    assert redactor.text("got v4lue") == "got ***"


def test_secret_parameters_reach_templates_as_tokens_only() -> None:
    spec = load_spec(
        {
            "name": "s",
            "version": "1",
            "parameters": {"token": {"type": "string", "secret": True}, "n": {"type": "string"}},
            "steps": [{"id": "a", "action": "log", "with": {"message": "{{ params.n }}"}}],
        }
    )
    tokens = secret_tokens(spec, {"token": "env:T", "n": "env:T"})
    assert tokens == {"token": "<<secret:env:T>>", "n": "env:T"}


class Leaky(Action[ActionArguments]):
    """Puts a resolved secret everywhere an action could."""

    name = "leaky"
    arguments = ActionArguments
    changes_things = False
    description = "leaks"

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def run(self, args: ActionArguments, ctx: StepContext) -> dict[str, Any]:
        value = ctx.secret("env:SECRETS_TEST")
        await ctx.report(f"using {value}")
        if self.fail:
            raise RuntimeError(f"broke with {value}")
        return {"echo": value, "nested": [{"v": value}]}


async def test_the_action_boundary_masks_outputs_errors_and_sub_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRETS_TEST", "pa55word")
    recorder = Recorder()
    outputs = await run_action(Leaky(False), {}, recorder.context())
    assert outputs == {"echo": "***", "nested": [{"v": "***"}]}
    with pytest.raises(StepError) as raised:
        await run_action(Leaky(True), {}, recorder.context())
    assert str(raised.value) == "RuntimeError: broke with ***"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert recorder.sub_tasks == ["using ***", "using ***"]


async def test_actions_that_do_not_use_secrets_see_only_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRETS_TEST", "pa55word")
    outputs = await run_action(
        LogAction(), {"message": f"t={secret_token('env:SECRETS_TEST')}"}, Recorder().context()
    )
    assert outputs["message"] == "t=<<secret:env:SECRETS_TEST>>"
