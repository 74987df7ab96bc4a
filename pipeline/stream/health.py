"""``/metrics`` (Prometheus text) and ``/health`` for the worker, on a small HTTP thread.

The standard library server is enough for a scrape every few seconds and
keeps the endpoint alive even when the event loop is busy or stuck, which is
when a health check matters most.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.stream.metrics import Metrics


class HealthServer(ThreadingHTTPServer):
    """Serves the registry and a health verdict until :meth:`stop`."""

    daemon_threads = True

    def __init__(
        self, host: str, port: int, metrics: Metrics, health: Callable[[], dict[str, object]]
    ) -> None:
        self.metrics = metrics
        self.health = health
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:  # noqa: N802  # http.server naming
        if self.path == "/metrics":
            body = self.server.metrics.render().encode()
            self._reply(200, body, "text/plain; version=0.0.4; charset=utf-8")
        elif self.path == "/health":
            state = self.server.health()
            status = 200 if state.get("status") == "ok" else 503
            self._reply(status, json.dumps(state).encode(), "application/json")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # base signature
        return  # scrapes every few seconds would drown the log
