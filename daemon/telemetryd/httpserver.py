"""The HTTP transport: TCP or a unix socket, plain or TLS, one thread per connection.

Everything a client can make slow happens in that connection's own thread, with a timeout: reading the
request, and for TLS the handshake too (the listening thread only calls accept()), so a client that
connects and says nothing, stops half-way through a handshake or sends garbage holds one thread for a
few seconds and never the main loop, the watchdog or other clients.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from .webconfig import WebConfig, WebConfigError, load, peer_san_allowed

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]

# A slow or silent client must not hold a thread for long: every read and write of a connection,
# the TLS handshake included, gives up after this many seconds of silence.
CLIENT_TIMEOUT = 5.0
# What Go's net/http answers when plain HTTP reaches a TLS port; exporters' users know it.
PLAIN_HTTP_TO_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)
TLS_HANDSHAKE = 0x16


class WebConfigSource:
    """The web config, re-read when the file or a certificate it names changes (certificate renewal
    needs no restart, as with exporter-toolkit). A change that does not load keeps the previous config
    and is reported through `on_error`."""

    def __init__(self, path: str, on_error: Callable[[str], None]) -> None:
        self.path = path
        self._on_error = on_error
        self._lock = threading.Lock()
        self._cfg = load(path)
        self._stamp = _stamps(self._cfg.files)

    def current(self) -> WebConfig:
        stamp = _stamps(self._cfg.files)
        if stamp == self._stamp:
            return self._cfg
        with self._lock:
            if _stamps(self._cfg.files) != self._stamp:
                self._stamp = _stamps(self._cfg.files)
                try:
                    self._cfg = load(self.path)
                    self._stamp = _stamps(self._cfg.files)
                except WebConfigError as e:
                    self._on_error(str(e))
            return self._cfg


def _stamps(files: tuple[str, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    out: list[tuple[int, int, int] | None] = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class _ServerHandler(ServerHandler):
    # No "Server: WSGIServer/0.2 CPython/3.11.x": a public listener need not tell its versions.
    server_software = "telemetryd"


class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT
    server_version, sys_version = "telemetryd", ""

    def handle(self) -> None:
        # WSGIRequestHandler.handle, with the ServerHandler above.
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _ServerHandler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]
            self.get_stderr(),
            self.get_environ(),
            multithread=False,
        )
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return str(self.client_address[0]) if self.client_address else "unix"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    web: WebConfigSource | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that resets or times out is not the daemon's error

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread (ThreadingMixIn.process_request_thread).
        web = self.web.current() if self.web is not None else None
        if web is None or web.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CLIENT_TIMEOUT)
        try:
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if not first:
            return
        if first[0] != TLS_HANDSHAKE:
            if first.isalpha():  # looks like an HTTP method
                with contextlib.suppress(OSError):
                    request.sendall(PLAIN_HTTP_TO_TLS)
            return
        try:
            conn = web.tls.wrap_socket(request, server_side=True)
        except (OSError, ValueError):  # ssl.SSLError is an OSError; the socket may close mid-handshake
            return
        try:
            if peer_san_allowed(conn.getpeercert(), web.client_allowed_sans):
                self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _UnixServer(_Server):
    address_family = socket.AF_UNIX
    socket_mode = 0o660
    socket_gid = -1

    def server_bind(self) -> None:
        bind_unix(self.socket, str(self.server_address), self.socket_mode, self.socket_gid)
        self.server_name, self.server_port = "localhost", 0
        self.setup_environ()

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


def bind_unix(sock: socket.socket, path: str, mode: int, gid: int) -> None:
    """Bind `sock` at `path` with `mode` and `gid` already set when the path appears.

    The socket is bound under a temporary name, given its mode and group, then renamed into place, so
    no client ever sees it with the umask's mode. A socket left by a process that died (kill -9) is
    replaced; a live one, or anything that is not a socket, is an error rather than something removed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: nobody listens; the rename below replaces it
        except OSError as e:
            raise OSError(
                e.errno, f"{path}: cannot tell whether another process listens: {e.strerror}"
            ) from e
        else:
            raise OSError(errno.EADDRINUSE, f"{path}: another process is listening on it")
        finally:
            probe.close()
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock.bind(tmp)
    try:
        os.chmod(tmp, mode)
        if gid != -1:
            try:
                os.chown(tmp, -1, gid)
            except OSError as e:
                # EINVAL under the unit's PrivateUsers=yes: other groups do not exist in its namespace.
                raise OSError(
                    e.errno,
                    f"cannot give {path} to group {gid} ({e.strerror}): the daemon must be in that group "
                    "(SupplementaryGroups=) and, under systemd, run with PrivateUsers=no",
                ) from e
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def group_id(group: str) -> int:
    """A group name or number -> gid; '' -> -1 (leave the group as it is)."""
    if not group:
        return -1
    if group.isdigit():
        return int(group)
    return grp.getgrnam(group).gr_gid


class HttpServer:
    """Serves `app` on `address` ((host, port), or a unix socket path) in background threads."""

    def __init__(
        self,
        address: tuple[str, int] | str,
        app: App,
        web: WebConfigSource | None = None,
        socket_mode: int = 0o660,
        socket_gid: int = -1,
    ) -> None:
        server_class: type[_Server]
        if isinstance(address, str):
            server_class = type(
                "_BoundUnixServer", (_UnixServer,), {"socket_mode": socket_mode, "socket_gid": socket_gid}
            )
        else:
            server_class = _Server6 if ":" in address[0] else _Server
        self._server = server_class(address, _Handler)  # type: ignore[arg-type]
        self._server.web = web
        self._server.set_app(app)
        self.unix_path = address if isinstance(address, str) else None
        # Only our own socket is removed at close, never one another process has bound there since.
        self._unix_ino = os.stat(address).st_ino if isinstance(address, str) else None
        self.port = 0 if isinstance(address, str) else self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def url(self) -> str:
        web = self._server.web
        scheme = "https" if web is not None and web.current().tls is not None else "http"
        if self.unix_path is not None:
            return f"{scheme}+unix://{self.unix_path}"
        host = str(self._server.server_address[0])
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.unix_path is not None:
            with contextlib.suppress(OSError):
                if os.lstat(self.unix_path).st_ino == self._unix_ino:
                    os.unlink(self.unix_path)
