"""The step types opsgate knows: each action's name, argument model, nature and implementation.

The blueprint validator receives a mapping of :class:`ActionInfo` as an argument (``spec/``
stays pure and never imports ``actions/``): :func:`builtin_actions`, or
:meth:`ActionRegistry.infos` to include plugins. The worker asks an :class:`ActionRegistry`
for the implementation of each step's action.

Third-party actions are plugins: a distribution declares entry points in the group
``opsgate.actions``, each loading an :class:`~opsgate.actions.base.Action` subclass that takes
no constructor arguments (name the entry point like the action)::

    [project.entry-points."opsgate.actions"]
    dns_record = "acme_opsgate.dns:DNSRecordAction"

:meth:`ActionRegistry.load` adds them to the built-in actions. A plugin that fails to import,
is not an action, cannot be instantiated or claims a name already taken is logged with the
reason and skipped: it never stops opsgate from starting, and no plugin replaces a built-in.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any

from opsgate.actions.base import Action, ActionArguments
from opsgate.actions.control import AssertAction, LogAction, WaitAction
from opsgate.actions.health import HealthCheckAction
from opsgate.actions.http import HTTPAction
from opsgate.actions.ipmi import IPMIAction
from opsgate.actions.shell import ShellAction
from opsgate.actions.ssh import SSHAction, SSHDownloadAction, SSHUploadAction
from opsgate.actions.workflow import WorkflowAction
from opsgate.errors import NotFoundError, StepError

#: The entry-point group through which distributions provide actions.
ENTRY_POINT_GROUP = "opsgate.actions"

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """What the validator, the planner and the worker need to know about one step type."""

    #: The name used in a step's ``action:``.
    name: str
    #: The model a step's ``with:`` must fit.
    arguments: type[ActionArguments]
    #: Whether it may change something outside opsgate (so it deserves a compensation).
    changes_things: bool
    #: One line for listings and error hints.
    description: str
    #: The code that runs it.
    implementation: Action[Any]
    #: Whether it runs against one inventory target (the step needs ``for_each: targets``).
    needs_target: bool = False

    @classmethod
    def of(cls, action: Action[Any]) -> ActionInfo:
        """The description of an implemented action, read from its attributes."""
        return cls(
            action.name,
            action.arguments,
            action.changes_things,
            action.description,
            implementation=action,
            needs_target=action.needs_target,
        )


def builtin_actions() -> dict[str, ActionInfo]:
    """The step types opsgate ships, by name."""
    actions = [
        ActionInfo.of(ShellAction()),
        ActionInfo.of(SSHAction()),
        ActionInfo.of(SSHUploadAction()),
        ActionInfo.of(SSHDownloadAction()),
        ActionInfo.of(HTTPAction()),
        ActionInfo.of(IPMIAction()),
        ActionInfo.of(HealthCheckAction()),
        ActionInfo.of(WaitAction()),
        ActionInfo.of(AssertAction()),
        ActionInfo.of(LogAction()),
        ActionInfo.of(WorkflowAction()),
    ]
    return {action.name: action for action in actions}


class ActionRegistry:
    """The actions one opsgate process can validate and run, by name; immutable.

    ``ActionRegistry.load()`` in production; tests add scripted actions with
    :meth:`with_actions`.
    """

    def __init__(
        self, infos: Iterable[ActionInfo], *, skipped: Mapping[str, str] | None = None
    ) -> None:
        self._infos = MappingProxyType({info.name: info for info in infos})
        #: Plugins that were not loaded: entry point name → the reason.
        self.skipped: Mapping[str, str] = MappingProxyType(dict(skipped or {}))

    @classmethod
    def builtin(cls) -> ActionRegistry:
        """The built-in actions only."""
        return cls(builtin_actions().values())

    @classmethod
    def load(cls) -> ActionRegistry:
        """The built-in actions and every action plugin installed in the ``opsgate.actions``
        entry-point group; broken plugins are logged and recorded in :attr:`skipped`."""
        infos = builtin_actions()
        origins = dict.fromkeys(infos, "opsgate")
        skipped: dict[str, str] = {}
        found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value))
        for entry_point in found:
            try:
                action = _load_plugin(entry_point)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                taken = origins.get(action.name)
                if taken is None:
                    infos[action.name] = ActionInfo.of(action)
                    origins[action.name] = f"entry point {entry_point.name!r}"
                    continue
                reason = f"its action {action.name!r} is already provided by {taken}"
            skipped[entry_point.name] = reason
            logger.warning(
                "skipped action plugin %r (%s): %s", entry_point.name, entry_point.value, reason
            )
        return cls(infos.values(), skipped=skipped)

    def infos(self) -> Mapping[str, ActionInfo]:
        """Every action by name: what the blueprint validator takes as ``actions``."""
        return self._infos

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def get(self, name: str) -> ActionInfo:
        """The action called ``name``; :class:`~opsgate.errors.NotFoundError` with close
        matches if there is none."""
        try:
            return self._infos[name]
        except KeyError:
            raise NotFoundError("action", name, self._infos) from None

    def implementation(self, name: str) -> Action[Any]:
        """The code that runs ``name``, for the worker.

        Raises a non-retryable :class:`~opsgate.errors.StepError` (``ActionUnavailable``) when
        the action is unknown (its plugin was uninstalled since the blueprint was validated).
        """
        info = self._infos.get(name)
        if info is None:
            missing = NotFoundError("action", name, self._infos)
            raise StepError(
                f"{missing}; install the plugin that provides it, or change the step's action",
                retryable=False,
                error_type="ActionUnavailable",
            )
        return info.implementation

    def with_actions(self, *actions: Action[Any]) -> ActionRegistry:
        """A new registry with ``actions`` added; an action replaces one of the same name."""
        infos = {**self._infos, **{action.name: ActionInfo.of(action) for action in actions}}
        return ActionRegistry(infos.values(), skipped=self.skipped)


def _load_plugin(entry_point: EntryPoint) -> Action[Any]:
    """Import, check and instantiate the action class an entry point names."""
    loaded = entry_point.load()
    if not (isinstance(loaded, type) and issubclass(loaded, Action)):
        raise TypeError(f"{entry_point.value} is not a subclass of opsgate.actions.Action")
    if inspect.isabstract(loaded):
        raise TypeError(f"{entry_point.value} does not implement run()")
    action: Action[Any] = loaded()
    problems = [
        attribute
        for attribute, kind in (("name", str), ("description", str))
        if not isinstance(getattr(action, attribute, None), kind) or not getattr(action, attribute)
    ]
    problems += [
        attribute
        for attribute in ("changes_things", "needs_target")
        if not isinstance(getattr(action, attribute, None), bool)
    ]
    arguments = getattr(action, "arguments", None)
    if not (isinstance(arguments, type) and issubclass(arguments, ActionArguments)):
        problems.append("arguments")
    if problems:
        raise TypeError(
            f"{entry_point.value} lacks valid attributes: {', '.join(problems)} (name and "
            "description: text; changes_things, needs_target: booleans; arguments: a "
            "subclass of opsgate.actions.ActionArguments)"
        )
    return action
