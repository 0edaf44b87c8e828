"""/metrics, /healthz and /readyz on one port, in a daemon thread."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cdc.errors import ConfigError
from cdc.ops.group import GroupMetrics
from cdc.ops.metrics import Metrics

log = logging.getLogger(__name__)

# A scrape takes milliseconds; a client that sends nothing for this long is gone or hostile. Each
# connection holds a thread, so both its idle time and the number of them are bounded.
IDLE_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 16


class _BoundedServer(ThreadingHTTPServer):
    """At most `max_connections` connections are served at once; beyond that a new connection is
    closed at once instead of getting a thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            log.debug("metrics server: %d connections open, refusing %s", self.max_connections, client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class ObservabilityServer:
    def __init__(
        self,
        metrics: Metrics | GroupMetrics,
        host: str,
        port: int,
        max_lag_seconds: float,
        *,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.metrics = metrics
        self.max_lag_seconds = max_lag_seconds
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = idle_timeout  # socketserver applies it to every read and write of the connection

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(outer.metrics.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._reply(200, b'{"status":"ok"}\n', "application/json")
                elif path == "/readyz":
                    ok, reason = outer.metrics.readiness(outer.max_lag_seconds)
                    body = json.dumps({"status": "ready" if ok else "not ready", "reason": reason}).encode()
                    self._reply(200 if ok else 503, body + b"\n", "application/json")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        try:
            self._server = _BoundedServer((host, port), Handler, max_connections)
        except OSError as exc:
            raise ConfigError(
                f"metrics.port: cannot listen on {host}:{port}: {exc.strerror}",
                "choose a free metrics.port (or metrics.host), or set metrics.enabled: false",
            ) from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="wpcdc-http", daemon=True)

    def start(self) -> ObservabilityServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%s (/metrics /healthz /readyz)", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
