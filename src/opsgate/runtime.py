"""Wiring: from settings to a running store, catalog, action registry, worker and service.

The CLI and the server build the same runtime, so both front ends behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from opsgate.actions.registry import ActionRegistry
from opsgate.catalog import Catalog, load_catalog
from opsgate.children import ServiceChildren
from opsgate.config import Settings
from opsgate.inventory import load_inventory, names_as_targets
from opsgate.scheduler import Scheduler
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
from opsgate.stores.sql import Clock, utc_now
from opsgate.worker import Worker


@dataclass
class Runtime:
    """Everything one opsgate process runs on."""

    settings: Settings
    store: SQLStore
    catalog: Catalog
    registry: ActionRegistry
    worker: Worker
    service: Service
    #: Fires schedules: ``opsgate serve`` runs ``scheduler.run()`` beside ``worker.run()``.
    scheduler: Scheduler

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock = utc_now) -> Runtime:
        """Load the documents and the inventory (any error stops here, listed), then open and
        migrate the store. ``clock`` is for tests that must run at a chosen time of day."""
        catalog = load_catalog(settings.blueprints, settings.policies)
        registry = ActionRegistry.load()
        inventory = load_inventory(settings.inventory) if settings.inventory else None
        store = SQLStore.open(settings.database_url, clock=clock)
        store.migrate()
        targets = inventory.for_workflow if inventory is not None else names_as_targets
        worker = Worker(store, registry, clock=clock, targets=targets, policies=catalog.policies)
        service = Service(store, catalog, wake=worker.wake, inventory=inventory)
        service.clock = clock
        worker.children = partial(ServiceChildren, service)
        scheduler = Scheduler(store, service)
        service.wake_scheduler = scheduler.wake
        return cls(settings, store, catalog, registry, worker, service, scheduler)

    @property
    def principal(self) -> Principal:
        """The local caller (CLI, stdio): ``OPSGATE_PRINCIPAL`` with roles from the roles file."""
        name = self.settings.principal
        return Principal(name, self.catalog.roles.roles_of(name))

    def close(self) -> None:
        self.store.close()
