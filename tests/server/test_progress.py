"""Progress values of execute_workflow's wait: always growing, the total only when settled."""

from opsgate.server.tools.executions import _progress_value


def test_progress_grows_and_reaches_the_total_only_when_the_execution_settled() -> None:
    assert _progress_value(-1.0, 0, 2, settled=False) == 0
    assert _progress_value(0.0, 0, 2, settled=False) == 0.5  # same step, new sub-task
    assert _progress_value(0.5, 1, 2, settled=False) == 1
    assert _progress_value(1.0, 2, 2, settled=False) == 1.5  # all steps done, still running
    assert _progress_value(1.5, 2, 2, settled=True) == 2
    assert _progress_value(2.0, 2, 2, settled=True) is None  # nothing can grow: not sent
    assert _progress_value(0.0, 0, 3, settled=True) == 0.5  # failed at the first step
