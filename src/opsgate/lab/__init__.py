"""The local lab: real services on 127.0.0.1 standing in for a small fleet (docs/lab.md).

SSH hosts whose commands run in sandbox folders (with stand-in ``ctr`` and ``biosutil``
tools), a MaaS-compatible API, BMC simulators and a health service, started as one background
process by ``opsgate lab up``, with a matching inventory and known_hosts.
"""

from opsgate.lab.control import down, status, up
from opsgate.lab.state import LabHost, LabState

__all__ = ["LabHost", "LabState", "down", "status", "up"]
