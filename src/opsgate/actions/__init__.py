"""Actions: the code behind each step type (shell, ssh, http, ipmi, health_check, wait, ...).

:mod:`~opsgate.actions.base` holds the interface (:class:`Action`, :class:`StepContext`) and the
boundary the worker calls (:func:`run_action`); :mod:`~opsgate.actions.registry` knows every
step type, built-in or plugin. Every built-in runs except ``workflow``, which is validated
only; :mod:`~opsgate.actions.reference` documents them all (``docs/actions.md``).
"""

from __future__ import annotations

from opsgate.actions.base import (
    Action,
    ActionArguments,
    StepContext,
    classify_error,
    parse_arguments,
    run_action,
)
from opsgate.actions.registry import ActionInfo, ActionRegistry, builtin_actions

__all__ = [
    "Action",
    "ActionArguments",
    "ActionInfo",
    "ActionRegistry",
    "StepContext",
    "builtin_actions",
    "classify_error",
    "parse_arguments",
    "run_action",
]
