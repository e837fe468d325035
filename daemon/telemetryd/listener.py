"""The HTTP listener: /metrics, /healthz, /readyz. Serves what it is handed; never steers the daemon."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    # A slow or silent client must not hold a thread forever.
    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Health:
    started: float = field(default_factory=time.monotonic)
    last_loop: float = field(default_factory=time.monotonic)
    ready: bool = False
    stale_after: float = 30.0

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < self.stale_after


Environ = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(
    registry: CollectorRegistry, health: Health
) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    metrics_app = make_wsgi_app(registry)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            ok = health.alive()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"main loop stalled\n"]
        if path == "/readyz":
            ok = health.ready and health.alive()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if ok else b"not ready\n"]
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz, /readyz\n"]

    return app


class HttpServer:
    def __init__(
        self, host: str, port: int, app: Callable[[Environ, StartResponse], Iterable[bytes]]
    ) -> None:
        if ":" in host:
            _Server.address_family = socket.AF_INET6
        self._server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
