"""The lab's HTTP service: ``/healthz`` (200 ``{"status": "ok"}``) and ``/version``.

What ``health_check`` and ``http`` steps probe (``http_health_probe`` runs against it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from opsgate import __version__
from opsgate.lab.httpd import QuietHandler


class HealthHandler(QuietHandler):
    """Answers the health and version routes; everything else is 404."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self.answer_json(200, {"status": "ok"})
        elif path == "/version":
            self.answer_json(200, {"version": __version__})
        else:
            self.answer(404, b"This service serves /healthz and /version.")

    do_HEAD = do_GET
