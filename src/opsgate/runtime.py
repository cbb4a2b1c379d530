"""Wiring: from settings to a running store, catalog, action registry, worker and service.

The CLI and the server build the same runtime, so both front ends behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsgate.actions.registry import ActionRegistry
from opsgate.catalog import Catalog, load_catalog
from opsgate.config import Settings
from opsgate.service import Principal, Service
from opsgate.stores import SQLStore
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

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """Load the documents (any error stops here, listed), then open and migrate the store."""
        catalog = load_catalog(settings.blueprints, settings.policies)
        registry = ActionRegistry.load()
        store = SQLStore.open(settings.database_url)
        store.migrate()
        worker = Worker(store, registry)
        service = Service(store, catalog, wake=worker.wake)
        return cls(settings, store, catalog, registry, worker, service)

    @property
    def principal(self) -> Principal:
        """The local caller (CLI, stdio): ``OPSGATE_PRINCIPAL`` with roles from the roles file."""
        name = self.settings.principal
        return Principal(name, self.catalog.roles.roles_of(name))

    def close(self) -> None:
        self.store.close()
