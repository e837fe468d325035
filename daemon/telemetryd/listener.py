"""The metrics listener: /metrics, /healthz, /readyz, /patterns, behind the web config's TLS and basic
auth. Serves what it is handed or what is durable on disk; never steers the daemon.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted

from .config import Config, parse_listen
from .httpserver import App, Environ, HttpServer, StartResponse, WebConfigSource, group_id
from .metrics import Metrics
from .patterns_api import BadQuery, PatternsReader, StateUnavailable, parse_query
from .webconfig import Authenticator, WebConfigError, load

UNIX_PREFIX = "unix:"
TEXT = ("Content-Type", "text/plain; charset=utf-8")


@dataclass
class Health:
    started: float = field(default_factory=time.monotonic)
    last_loop: float = field(default_factory=time.monotonic)
    ready: bool = False
    stale_after: float = 30.0

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < self.stale_after


def _text(start_response: StartResponse, status: str, body: str, *extra: tuple[str, str]) -> list[bytes]:
    start_response(status, [TEXT, *extra])
    return [body.encode()]


EOF = b"# EOF\n"


def metrics_app(metrics: Metrics) -> App:
    """/metrics: the live families rendered at each scrape, the committed counts and per-pattern series
    (exported.py) as rendered once per durable record; what prometheus_client's app does otherwise
    (content type by Accept, gzip, OPTIONS, ?name[]= through the whole registry)."""
    whole = make_wsgi_app(metrics.registry)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        params = parse_qs(environ.get("QUERY_STRING", ""))
        if environ.get("REQUEST_METHOD") != "GET" or "name[]" in params:
            return whole(environ, start_response)  # type: ignore[no-any-return]
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        body = encoder(metrics.live)
        committed = metrics.exported.exposition(encoder, content_type)
        if body.endswith(EOF) and committed.endswith(EOF):  # OpenMetrics: one end marker, at the end
            body = body[: -len(EOF)] + committed
        else:
            body += committed
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return app


def make_app(metrics: Metrics, health: Health, patterns: PatternsReader | None = None) -> App:
    metrics_get = metrics_app(metrics)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _text(
                start_response, "405 Method Not Allowed", "only GET and HEAD\n", ("Allow", "GET, HEAD")
            )
        if path == "/healthz":
            ok = health.alive()
            return _text(
                start_response,
                "200 OK" if ok else "503 Service Unavailable",
                "ok\n" if ok else "main loop stalled\n",
            )
        if path == "/readyz":
            ok = health.ready and health.alive()
            return _text(
                start_response,
                "200 OK" if ok else "503 Service Unavailable",
                "ready\n" if ok else "not ready\n",
            )
        if path in ("/metrics", "/"):
            return metrics_get(environ, start_response)
        if path == "/patterns" and patterns is not None:
            try:
                doc = patterns.document(parse_query(environ.get("QUERY_STRING", "")))
            except BadQuery as e:
                return _text(start_response, "400 Bad Request", f"{e}\n")
            except StateUnavailable as e:
                return _text(start_response, "503 Service Unavailable", f"{e}\n")
            body = json.dumps(doc, ensure_ascii=False).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        return _text(
            start_response, "404 Not Found", "not found: try /metrics, /patterns, /healthz, /readyz\n"
        )

    return app


def _basic_credentials(environ: Environ) -> tuple[str, str] | None:
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def guard(app: App, web: WebConfigSource) -> App:
    """exporter-toolkit's handler: the configured headers on every answer, basic auth on every path."""
    auth = Authenticator()

    def guarded(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        cfg = web.current()
        extra = list(cfg.headers.items())

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        if cfg.users:
            creds = _basic_credentials(environ)
            ok = auth.check(cfg.users, *creds) if creds is not None else False
            if ok is None:
                return _text(
                    start,
                    "503 Service Unavailable",
                    "too many authentication attempts\n",
                    ("Retry-After", "1"),
                )
            if not ok:
                return _text(start, "401 Unauthorized", "Unauthorized\n", ("WWW-Authenticate", "Basic"))
        return app(environ, start)

    return guarded


def listen_address(listen: str) -> tuple[str, int] | str | None:
    """metrics.listen -> (host, port), a unix socket path, or None when the endpoint is off."""
    if listen.startswith(UNIX_PREFIX):
        return listen[len(UNIX_PREFIX) :]
    return parse_listen(listen)


def check(cfg: Config) -> None:
    """What check-config verifies beyond the TOML: the web config with its files, the socket group."""
    m = cfg.metrics
    if m.web_config:
        try:
            load(m.web_config)
        except WebConfigError as e:
            raise WebConfigError(f"key metrics.web_config: {e}") from None
    _socket_gid(m.socket_group)


def _socket_gid(group: str) -> int:
    try:
        return group_id(group)
    except KeyError:
        raise WebConfigError(f"key metrics.socket_group: no group {group!r} on this host") from None


def serve(
    cfg: Config, metrics: Metrics, health: Health, on_error: Callable[[str], None]
) -> HttpServer | None:
    """Start the listener `cfg.metrics` describes, or return None when it is off.

    Raises WebConfigError (a config error) or OSError (the address cannot be bound).
    """
    m = cfg.metrics
    address = listen_address(m.listen)
    if address is None:
        return None
    web = WebConfigSource(m.web_config, on_error) if m.web_config else None
    gid = _socket_gid(m.socket_group)
    reader = PatternsReader(cfg.checkpoint.state_dir, cfg.patterns.key_fields, m.expose_examples)
    app = make_app(metrics, health, reader)
    if web is not None:
        app = guard(app, web)
    return HttpServer(address, app, web, int(m.socket_mode, 8), gid)
