"""Storage: the SQL store on SQLite or PostgreSQL, its tables and its migrations.

``SQLStore`` is the one interface the rest of opsgate uses; it returns the records of
:mod:`opsgate.models`. ``upgrade_database`` migrates a database (``opsgate db upgrade``).
"""

from opsgate.models import ExecutionChanges, StepRunChanges
from opsgate.stores.database import create_engine_for
from opsgate.stores.migrate import upgrade_database
from opsgate.stores.sql import CLAIMABLE, ScheduleChanges, SQLStore

__all__ = [
    "CLAIMABLE",
    "ExecutionChanges",
    "SQLStore",
    "ScheduleChanges",
    "StepRunChanges",
    "create_engine_for",
    "upgrade_database",
]
