"""The listener of a real daemon over TLS, basic auth, mTLS and a unix socket; check-config on web
configs; hostile TLS clients. Certificates are made by the test (tests/tlsutil.py)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import stat
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, free_port, start_writer, wait_for
from tlsutil import CA, Issued, bcrypt_hash

# Raw log text a masked template hides: it must reach HTTP clients only when examples are turned on.
EXAMPLE_SECRET = "4111111111111111"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def request(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def client_ctx(ca: CA, client: Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def https(port: int, ctx: ssl.SSLContext, path: str, headers: dict[str, str] | None = None) -> Any:
    return request(http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10), path, headers)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    d = tmp_path / "pki"
    d.mkdir()
    ca = CA(d, "ca")
    other = CA(d, "other-ca")
    return {
        "dir": d,
        "ca": ca,
        "server": ca.issue("server", server=True),
        "client": ca.issue("scraper", server=False),
        "stranger": other.issue("stranger", server=False),
    }


def start(
    tmp_path: Path, daemons: Callable[..., Any], listen: str, metrics_extra: str = ""
) -> tuple[Any, Path]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    f = src / "a.jsonl"
    f.write_text(
        json.dumps({"event_type": "login", "message": f"user 42 paid with card {EXAMPLE_SECRET}"})
        + "\n"
        + json.dumps({"event_type": "logout", "message": "bye"})
        + "\n"
    )
    cfg = write(
        tmp_path / "telemetryd.toml",
        f'[sources]\npaths = ["{src}/*.jsonl"]\nrescan_seconds = 0.5\n'
        f'[checkpoint]\nstate_dir = "{tmp_path / "state"}"\nevery_seconds = 0.2\n'
        f'[metrics]\nlisten = "{listen}"\npattern_series = 10\n{metrics_extra}\n'
        '[log]\nformat = "json"\n',
    )
    d = daemons("--config", str(cfg))
    d.wait_ready()
    return d, f


def test_tls_and_basic_auth_refuse_what_they_must_and_leak_nothing(
    tmp_path: Path, daemons: Callable[..., Any], pki: dict[str, Any]
) -> None:
    web = write(
        tmp_path / "web.yml",
        # Relative names: resolved against the web config's directory, as exporter-toolkit does.
        "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n  prometheus: '{bcrypt_hash('s3cret')}'\n",
    )
    port = free_port()
    d, _ = start(tmp_path, daemons, f"127.0.0.1:{port}", f'web_config = "{web}"')
    ctx = client_ctx(pki["ca"])
    good = basic("prometheus", "s3cret")

    status, headers, body = https(port, ctx, "/metrics", good)
    assert status == 200 and "telemetryd_events_total" in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Server"] == "telemetryd", "no Python version in the Server header"
    # Every path is behind auth (exporter-toolkit wraps the whole handler), health included.
    for path in ("/metrics", "/patterns", "/healthz", "/readyz", "/nope"):
        for hdrs in (
            {},
            basic("prometheus", "wrong"),
            basic("nobody", "s3cret"),
            {"Authorization": "Basic !!"},
        ):
            status, headers, body = https(port, ctx, path, hdrs)
            assert status == 401, (path, hdrs, status)
            assert headers["WWW-Authenticate"] == "Basic"
            assert body == "Unauthorized\n"

    # Plain HTTP to the TLS port: Go's answer, and nothing else.
    status, _, body = request(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "/metrics", good)
    assert status == 400 and body == "Client sent an HTTP request to an HTTPS server.\n"

    # A client that does not trust the server's CA refuses; one that does gets in.
    with pytest.raises(ssl.SSLCertVerificationError):
        https(port, ssl.create_default_context(), "/metrics", good)
    wait_for(
        lambda: json.loads(https(port, ctx, "/patterns", good)[2])["events_total"] == 2, what="committed"
    )
    # TLS 1.1 is below the default min_version TLS12.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(pki["ca"].path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        https(port, old, "/metrics", good)
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_mtls_refuses_missing_and_foreign_client_certificates(
    tmp_path: Path, daemons: Callable[..., Any], pki: dict[str, Any]
) -> None:
    ca: CA = pki["ca"]
    web = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki['server'].cert}\n  key_file: {pki['server'].key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca.path}\n"
        "  client_allowed_sans: [scraper.clients.test]\n",
    )
    port = free_port()
    d, _ = start(tmp_path, daemons, f"127.0.0.1:{port}", f'web_config = "{web}"')
    status, _, body = https(port, client_ctx(ca, pki["client"]), "/metrics")
    assert status == 200 and "telemetryd_events_total" in body
    # No client certificate; one from another CA; one from the right CA with a SAN not on the list.
    outsider = ca.issue("outsider", server=False)
    for client in (None, pki["stranger"], outsider):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            https(port, client_ctx(ca, client), "/metrics")
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_hostile_tls_clients_do_not_stall_the_daemon(
    tmp_path: Path, daemons: Callable[..., Any], pki: dict[str, Any]
) -> None:
    """The plain-HTTP test of test_http_metrics.py, over TLS: the handshake runs in the connection's
    thread, so silent, half-handshaking and garbage clients hold nothing else up."""
    web = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki['server'].cert}\n  key_file: {pki['server'].key}\n",
    )
    port = free_port()
    d, f = start(tmp_path, daemons, f"127.0.0.1:{port}", f'web_config = "{web}"')
    ctx = client_ctx(pki["ca"])
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    junk = socket.create_connection(("127.0.0.1", port))
    junk.sendall(b"\x16\x03\x01\x00\x20" + b"\x00\xff GARBAGE" * 100)  # a TLS record header, then junk
    garbage = socket.create_connection(("127.0.0.1", port))
    garbage.sendall(b"\x00\xff\x16 not tls at all\r\n" * 50)
    # Half a handshake: a real ClientHello whose record is cut short, then silence.
    half = socket.create_connection(("127.0.0.1", port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    half.sendall(hello[: len(hello) // 2])
    try:
        for _ in range(3):
            t0 = time.monotonic()
            status, _, _ = https(port, ctx, "/healthz")
            assert status == 200
            assert time.monotonic() - t0 < 5, "a hostile client delayed /healthz"
        with f.open("a") as fh:
            fh.write(json.dumps({"event_type": "login", "message": "again"}) + "\n")
        wait_for(
            lambda: json.loads(https(port, ctx, "/patterns")[2])["events_total"] == 3,
            timeout=60,
            what="counting goes on beside hostile TLS clients",
        )
    finally:
        for s in [junk, garbage, half, *silent]:
            s.close()
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_bcrypt_flood_does_not_stall_scrapes_or_the_main_loop(
    tmp_path: Path, daemons: Callable[..., Any]
) -> None:
    """Wrong passwords at a realistic bcrypt cost, from many threads at once: the scraper's cached
    password stays cheap and the daemon keeps counting."""
    web = write(
        tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: '{bcrypt_hash('s3cret', cost=10)}'\n"
    )
    port = free_port()
    d, f = start(tmp_path, daemons, f"127.0.0.1:{port}", f'web_config = "{web}"')
    good = basic("prometheus", "s3cret")

    def get(hdrs: dict[str, str]) -> int:
        return request(http.client.HTTPConnection("127.0.0.1", port, timeout=30), "/metrics", hdrs)[0]

    assert get(good) == 200  # the one bcrypt check the scraper pays; cached from now on
    stop = threading.Event()
    refused: list[int] = []

    def flood(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            refused.append(get(basic("prometheus", f"guess-{n}-{i}")))

    threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    try:
        worst = 0.0
        for i in range(10):
            t0 = time.monotonic()
            assert get(good) == 200
            worst = max(worst, time.monotonic() - t0)
            with f.open("a") as fh:
                fh.write(json.dumps({"event_type": "flood", "message": f"n {i}"}) + "\n")
            time.sleep(0.2)
        wait_for(
            lambda: (
                json.loads(
                    request(http.client.HTTPConnection("127.0.0.1", port, timeout=30), "/patterns", good)[2]
                )["events_total"]
                == 12
            ),
            timeout=60,
            what="counting goes on during the flood",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert refused and set(refused) <= {401, 503}, set(refused)
    assert worst < 5, f"a cached scrape took {worst:.2f}s during the flood"
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_unix_socket_mode_group_and_stale_socket(tmp_path: Path, daemons: Callable[..., Any]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    path = run / "metrics.sock"
    # A socket left by a process that died (kill -9): nobody listens on it.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    # Root may hand the socket to any group; anyone else to a group they are in.
    others = [g for g in os.getgroups() if g != os.getegid()]
    gid = 65534 if os.geteuid() == 0 else (others[0] if others else None)
    group = f'socket_group = "{gid}"\n' if gid is not None else ""
    d, _ = start(tmp_path, daemons, f"unix:{path}", f'socket_mode = "0640"\n{group}')
    st = path.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    if gid is not None:
        assert st.st_gid == gid
    assert not [p for p in run.iterdir() if p != path], "temporary socket left behind"
    status, _, body = request(UnixHTTPConnection(str(path)), "/metrics")
    assert status == 200 and "telemetryd_events_total" in body
    wait_for(lambda: json.loads(request(UnixHTTPConnection(str(path)), "/patterns")[2])["events_total"] == 2)

    # A second daemon on the same socket path is refused, and the first one's socket survives.
    other = tmp_path / "other"
    other.mkdir()
    cfg = write(
        other / "t.toml",
        f'[sources]\npaths = ["{other}/*.jsonl"]\n[checkpoint]\nstate_dir = "{other / "st"}"\n'
        f'[metrics]\nlisten = "unix:{path}"\n[log]\nformat = "json"\n',
    )
    second = daemons("--config", str(cfg))
    assert second.proc.wait(timeout=30) == 1
    assert "another process is listening" in second.log()
    assert request(UnixHTTPConnection(str(path)), "/healthz")[0] == 200
    assert d.stop() == 0
    assert not path.exists(), "socket not removed at a clean stop"

    # Something that is not a socket is never removed.
    path.write_text("precious")
    third = daemons("--config", str(cfg))
    assert third.proc.wait(timeout=30) == 1
    assert "exists and is not a socket" in third.log()
    assert path.read_text() == "precious"


def test_patterns_endpoint_is_the_cli_document_without_examples(
    tmp_path: Path, daemons: Callable[..., Any]
) -> None:
    port = free_port()
    d, _ = start(tmp_path, daemons, f"127.0.0.1:{port}")
    conn = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # noqa: E731
    state = str(tmp_path / "state")
    wait_for(lambda: json.loads(request(conn(), "/patterns")[2])["events_total"] == 2, what="committed")
    status, headers, body = request(conn(), "/patterns")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    cli_doc = json.loads(cli("patterns", "--state-dir", state, "--json").stdout)
    # The CLI, run by someone who can read the state dir, still shows the raw example.
    assert any(EXAMPLE_SECRET in (p["example"] or "") for p in cli_doc["patterns"])
    assert doc == {**cli_doc, "patterns": [{**p, "example": None} for p in cli_doc["patterns"]]}
    assert EXAMPLE_SECRET not in body
    assert EXAMPLE_SECRET not in request(conn(), "/metrics")[2]

    assert [p["id"] for p in json.loads(request(conn(), "/patterns?top=1")[2])["patterns"]] == [
        cli_doc["patterns"][0]["id"]
    ]
    assert json.loads(request(conn(), "/patterns?top=0")[2])["patterns"] == []
    assert json.loads(request(conn(), "/patterns?since=2999-01-01T00:00:00Z")[2])["patterns"] == []
    assert len(json.loads(request(conn(), "/patterns?since=2000-01-01T00:00:00%2B02:00")[2])["patterns"]) == 2
    for query, reason in (
        ("top=-1", "top: expected a non-negative integer"),
        ("top=abc", "top: expected a non-negative integer"),
        ("top=1&top=2", "given more than once"),
        ("since=yesterday", "since: expected an ISO 8601 time"),
        ("since=2026-01-01T00:00:00", "has no UTC offset"),
        ("limit=3", "unknown parameter 'limit'"),
    ):
        status, _, body = request(conn(), f"/patterns?{query}")
        assert status == 400 and reason in body, (query, status, body)
    assert d.stop() == 0


def test_examples_over_http_when_turned_on(tmp_path: Path, daemons: Callable[..., Any]) -> None:
    port = free_port()
    d, _ = start(tmp_path, daemons, f"127.0.0.1:{port}", "expose_examples = true")
    conn = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # noqa: E731
    wait_for(lambda: json.loads(request(conn(), "/patterns")[2])["events_total"] == 2, what="committed")
    doc = json.loads(request(conn(), "/patterns")[2])
    assert doc == json.loads(cli("patterns", "--state-dir", str(tmp_path / "state"), "--json").stdout)
    assert any(EXAMPLE_SECRET in p["example"] for p in doc["patterns"])
    assert d.stop() == 0


@pytest.mark.parametrize(
    ("web", "key", "message"),
    [
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: pki/server.key\n",
            "tls_server_config.cert_file",
            "cannot read",
        ),
        (
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki\n",
            "tls_server_config.key_file",
            "cannot read",
        ),
        (
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: garbage.key\n",
            "tls_server_config.cert_file/key_file",
            "not a PEM certificate and its matching unencrypted key",
        ),
        ("tls_server_config:\n  key_file: pki/server.key\n", "tls_server_config.cert_file", "missing"),
        ("basic_auth_users:\n  alice: plaintext-password\n", "basic_auth_users.alice", "not a bcrypt hash"),
        ("basic_auth_users:\n  alice: '{md5}'\n", "basic_auth_users.alice", "not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
            "  min_version: TLS14\n",
            "tls_server_config.min_version",
            "expected one of",
        ),
        (
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
            "  client_ca_file: pki/ca.crt\n",
            "tls_server_config.client_auth_type",
            "without a client auth policy",
        ),
        (
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
            "  client_auth_type: RequireAnyClientCert\n  client_ca_file: pki/ca.crt\n",
            "tls_server_config.client_auth_type",
            "not supported",
        ),
        (
            "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n  cert_flie: x\n",
            "tls_server_config.cert_flie",
            "unknown key",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers.X-Frame-Options",
            "expected one of deny, sameorigin",
        ),
        ("basic_auth_users: [alice]\n", "basic_auth_users", "expected a mapping"),
    ],
)
def test_check_config_names_the_web_config_key(
    tmp_path: Path, pki: dict[str, Any], web: str, key: str, message: str
) -> None:
    (tmp_path / "garbage.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    w = write(tmp_path / "web.yml", web)
    cfg = write(tmp_path / "t.toml", f'[metrics]\nweb_config = "{w}"\n')
    r = cli("check-config", "--config", str(cfg), check=False)
    assert r.returncode == 2, r
    assert f"key metrics.web_config: {w}: key {key}: " in r.stderr, r.stderr
    assert message in r.stderr, r.stderr
    # The daemon refuses to start on it too (exit 2: systemd does not restart a config error).
    r = cli(
        "run",
        "--config",
        str(cfg),
        "--path",
        str(tmp_path / "*.jsonl"),
        "--state-dir",
        str(tmp_path / "st"),
        check=False,
    )
    assert r.returncode == 2 and key in r.stdout + r.stderr


def test_check_config_accepts_a_good_web_config(tmp_path: Path, pki: dict[str, Any]) -> None:
    w = write(
        tmp_path / "web.yml",
        "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: pki/ca.crt\n"
        "  min_version: TLS13\nhttp_server_config:\n  http2: false\n"
        f"basic_auth_users:\n  prometheus: '{bcrypt_hash('x')}'\n",
    )
    cfg = write(tmp_path / "t.toml", f'[metrics]\nweb_config = "{w}"\nlisten = "unix:/run/t/m.sock"\n')
    r = cli("check-config", "--config", str(cfg))
    assert r.stdout.startswith("ok:")


def test_certificate_renewal_is_picked_up_without_a_restart(
    tmp_path: Path, daemons: Callable[..., Any], pki: dict[str, Any]
) -> None:
    server: Issued = pki["server"]
    web = write(
        tmp_path / "web.yml", f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n"
    )
    port = free_port()
    d, _ = start(tmp_path, daemons, f"127.0.0.1:{port}", f'web_config = "{web}"')
    old_ctx = client_ctx(pki["ca"])
    assert https(port, old_ctx, "/healthz")[0] == 200

    # Renewal by a new CA, written the way certbot-like tools do: new files renamed over the old ones.
    new_ca = CA(pki["dir"], "renewed-ca")
    renewed = new_ca.issue("renewed", server=True)
    for src, dst in ((renewed.key, server.key), (renewed.cert, server.cert)):
        src.rename(dst)
    new_ctx = client_ctx(new_ca)

    def serves_new() -> bool:
        try:
            return https(port, new_ctx, "/healthz")[0] == 200
        except ssl.SSLError:
            return False

    wait_for(serves_new, what="the renewed certificate served")
    with pytest.raises(ssl.SSLCertVerificationError):
        https(port, old_ctx, "/healthz")

    # A broken change is reported and the certificate in force stays.
    server.cert.write_text("not a certificate\n")
    assert https(port, new_ctx, "/healthz")[0] == 200
    wait_for(
        lambda: "web_config" in d.log() and "tls_server_config.cert_file" in d.log(), what="error logged"
    )
    assert https(port, new_ctx, "/healthz")[0] == 200
    assert d.stop() == 0


def test_patterns_endpoint_is_consistent_while_the_daemon_checkpoints_and_compacts(
    tmp_path: Path, daemons: Callable[..., Any]
) -> None:
    """A real writer appends while /patterns is read over and over; small journals make the daemon
    compact and prune under the reader. Every answer is a committed state: 200, never more events
    than were written, never fewer than an earlier answer, pattern counts summing to the total."""
    src = tmp_path / "src"
    src.mkdir()
    port = free_port()
    cfg = write(
        tmp_path / "t.toml",
        f'[sources]\npaths = ["{src}/*.jsonl"]\nrescan_seconds = 0.5\n[patterns]\nkey_fields = ["k"]\n'
        f'[checkpoint]\nstate_dir = "{tmp_path / "st"}"\nevery_events = 50\nevery_seconds = 0.05\n'
        f'compact_bytes = 4096\n[metrics]\nlisten = "127.0.0.1:{port}"\n[log]\nformat = "json"\n',
    )
    d = daemons("--config", str(cfg))
    d.wait_ready()
    total = 4000
    writer = start_writer(src / "w.jsonl", total, rate=1000.0)

    def patterns() -> dict[str, Any]:
        status, _, body = request(http.client.HTTPConnection("127.0.0.1", port, timeout=30), "/patterns")
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    seen = 0
    answers = 0
    while writer.poll() is None or seen < total:
        doc = patterns()
        answers += 1
        n = doc["events_total"]
        assert seen <= n <= total, (seen, n)
        assert sum(p["count"] for p in doc["patterns"]) + doc["overflow_count"] == n
        seen = n
        assert answers < 100_000 and d.proc.poll() is None, d.log()
    assert writer.wait(timeout=60) == 0
    assert answers > 10
    assert (
        json.loads(cli("patterns", "--state-dir", str(tmp_path / "st"), "--json").stdout)["events_total"]
        == total
    )
    assert d.stop() == 0


def test_check_config_names_an_unknown_socket_group(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "t.toml",
        '[metrics]\nlisten = "unix:/run/t/m.sock"\nsocket_group = "no-such-group-here"\n',
    )
    r = cli("check-config", "--config", str(cfg), check=False)
    assert r.returncode == 2
    assert "key metrics.socket_group: no group 'no-such-group-here'" in r.stderr, r.stderr
    bad_mode = write(
        tmp_path / "m.toml", '[metrics]\nlisten = "unix:/run/t/m.sock"\nsocket_mode = "rw-rw----"\n'
    )
    r = cli("check-config", "--config", str(bad_mode), check=False)
    assert r.returncode == 2 and "key metrics.socket_mode" in r.stderr, r.stderr
    relative = write(tmp_path / "r.toml", '[metrics]\nlisten = "unix:m.sock"\n')
    r = cli("check-config", "--config", str(relative), check=False)
    assert r.returncode == 2 and "key metrics.listen: expected unix:/ABSOLUTE/PATH" in r.stderr, r.stderr
