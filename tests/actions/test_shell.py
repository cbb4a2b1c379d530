"""The ``shell`` action against real processes: output, exit codes, env, cwd, JSON, quoting,
timeouts and cancellation that kill the whole process group."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from opsgate.actions import run_action
from opsgate.actions.base import render_arguments
from opsgate.actions.shell import ShellAction
from opsgate.errors import StepError
from opsgate.expressions import ExpressionError
from opsgate.secrets import secret_token
from tests.actions.contexts import Recorder
from tests.actions.polling import alive, eventually, read_pid

pytestmark = pytest.mark.anyio

SHELL = ShellAction()
NASTY = ["; rm -rf /", "$(id)", "`id`", 'it\'s "quoted"', "two\nlines", "a b  c", "*", ""]


async def test_argv_runs_without_a_shell_and_captures_both_streams() -> None:
    recorder = Recorder()
    outputs = await run_action(
        SHELL,
        {"argv": [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]},
        recorder.context(),
    )
    assert outputs == {
        "exit_code": 0,
        "stdout": "out\n",
        "stderr": "err\n",
        "stdout_bytes": 4,
        "stderr_bytes": 4,
        "truncated": False,
    }
    assert recorder.sub_tasks == [f"running {sys.executable}"]


async def test_env_and_cwd_reach_the_command_and_opsgate_secrets_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSGATE_LEAK", "should-not-pass")
    outputs = await run_action(
        SHELL,
        {
            "command": 'echo "$GREETING $OPSGATE_LEAK" && pwd',
            "env": {"GREETING": "hi"},
            "cwd": str(tmp_path),
        },
        Recorder().context(),
    )
    assert outputs["stdout"] == f"hi \n{tmp_path}\n"


async def test_a_missing_cwd_is_a_permanent_error() -> None:
    with pytest.raises(StepError) as raised:
        await run_action(SHELL, {"argv": ["true"], "cwd": "/no/such/dir"}, Recorder().context())
    assert raised.value.error_type == "FileNotFoundError"
    assert not raised.value.retryable


@pytest.mark.parametrize(("code", "retryable"), [(3, False), (75, True)])
async def test_a_non_zero_exit_fails_retryable_only_when_listed(code: int, retryable: bool) -> None:
    with pytest.raises(StepError) as raised:
        await run_action(
            SHELL,
            {"command": f"echo broken >&2; exit {code}", "retry_on_exit_codes": [75]},
            Recorder().context(),
        )
    assert raised.value.error_type == "ExitCode"
    assert raised.value.retryable is retryable
    assert f"exited with code {code}; its output ends with: broken" in str(raised.value)


async def test_parse_json_puts_the_parsed_stdout_in_the_outputs() -> None:
    outputs = await run_action(
        SHELL,
        {"argv": ["echo", '{"free_gb": 12, "ok": true}'], "parse": "json"},
        Recorder().context(),
    )
    assert outputs["json"] == {"free_gb": 12, "ok": True}


async def test_parse_json_of_text_is_a_permanent_error() -> None:
    with pytest.raises(StepError, match="stdout is not JSON") as raised:
        await run_action(SHELL, {"argv": ["echo", "nope"], "parse": "json"}, Recorder().context())
    assert not raised.value.retryable


async def test_large_output_keeps_head_and_tail_and_reports_the_size() -> None:
    script = "import sys; sys.stdout.write('H' * 1000 + 'm' * 100000 + 'T' * 1000)"
    outputs = await run_action(
        SHELL, {"argv": [sys.executable, "-c", script]}, Recorder().context(output_limit=2000)
    )
    assert outputs["stdout_bytes"] == 102000
    assert outputs["truncated"] is True
    head, marker, tail = outputs["stdout"].split("\n")
    assert head == "H" * 1000 and tail == "T" * 1000
    assert marker == "[... 100000 bytes omitted of 102000 ...]"


@pytest.mark.parametrize("value", NASTY)
async def test_templated_values_in_a_command_stay_one_literal_word(value: str) -> None:
    rendered = render_arguments(
        SHELL, {"command": "printf '%s|' {{ params.x }} {{ params.x }}"}, {"params": {"x": value}}
    )
    outputs = await run_action(SHELL, rendered, Recorder().context())
    assert outputs["stdout"] == f"{value}|{value}|"


async def test_a_secret_parameter_in_a_command_line_is_refused() -> None:
    with pytest.raises(ExpressionError, match="pass it through env"):
        render_arguments(
            SHELL, {"command": "curl -u {{ params.t }}"}, {"params": {"t": secret_token("env:T")}}
        )


async def test_a_secret_through_env_is_revealed_and_masked_in_outputs_and_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELL_TEST_TOKEN", "s3cr3t-value")
    args = {
        "command": 'echo "token=$TOKEN"',
        "env": {"TOKEN": secret_token("env:SHELL_TEST_TOKEN")},
    }
    outputs = await run_action(SHELL, args, Recorder().context())
    assert outputs["stdout"] == "token=***\n"
    failing = {**args, "command": 'echo "bad $TOKEN" >&2; exit 1'}
    with pytest.raises(StepError) as raised:
        await run_action(SHELL, failing, Recorder().context())
    assert "s3cr3t" not in str(raised.value) and "bad ***" in str(raised.value)


async def test_an_unset_secret_fails_naming_the_reference() -> None:
    with pytest.raises(StepError) as raised:
        await run_action(
            SHELL,
            {"argv": ["true"], "env": {"T": secret_token("env:OPSGATE_UNSET_X")}},
            Recorder().context(),
        )
    assert raised.value.error_type == "SecretUnavailable"
    assert "'OPSGATE_UNSET_X' is not set" in str(raised.value)


async def _pid_in(pid_file: Path) -> int:
    await eventually(lambda: read_pid(str(pid_file)) is not None)
    pid = read_pid(str(pid_file))
    assert pid is not None
    return pid


async def test_the_timeout_kills_the_process_group_and_is_retryable(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"sleep 300 & echo $! > {pid_file}; wait"
    with pytest.raises(StepError) as raised:
        await run_action(SHELL, {"command": command, "timeout": "300ms"}, Recorder().context())
    assert raised.value.error_type == "Timeout" and raised.value.retryable
    assert "did not finish within 300ms" in str(raised.value)
    pid = await _pid_in(pid_file)
    await eventually(lambda: not alive(pid))


async def test_cancellation_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"sleep 300 & echo $! > {pid_file}; wait"
    async with anyio.create_task_group() as group:
        group.start_soon(run_action, SHELL, {"command": command}, Recorder().context())
        pid = await _pid_in(pid_file)
        assert alive(pid)
        group.cancel_scope.cancel()
    await eventually(lambda: not alive(pid))


async def test_env_names_that_are_not_variable_names_are_refused() -> None:
    with pytest.raises(StepError, match="not environment variable names: 'A;B'") as raised:
        await run_action(SHELL, {"argv": ["true"], "env": {"A;B": "x"}}, Recorder().context())
    assert raised.value.error_type == "InvalidArguments"
