"""The real SSH server the ``ssh`` tests talk to: the lab's sandbox server (opsgate.lab.ssh)."""

from opsgate.lab.ssh import SandboxSSHServer as PeerSSHServer
from opsgate.lab.ssh import serve_ssh

__all__ = ["PeerSSHServer", "serve_ssh"]
