"""The web config file: TLS and basic auth in the format of node_exporter's `--web.config.file`.

The format is the Prometheus exporter-toolkit's (docs/web-configuration.md there), so operators reuse
the files they already have. Where Python's `ssl` cannot do what Go's crypto/tls does (inline server
cert/key, asking for a client certificate without verifying it, cipher and curve lists by Go name), the
key is refused with an error naming it rather than silently ignored: a security setting that is quietly
dropped is worse than one that is refused.

Relative file names are resolved against the web config file's directory, as exporter-toolkit does.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import bcrypt


class WebConfigError(Exception):
    """A web config that cannot be used; the message names the file and the key."""


TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's ClientAuthType names. Asking for a certificate without verifying it (RequestClientCert,
# RequireAnyClientCert) has no equivalent in Python's ssl, and exporter-toolkit's own docs call it
# insecure: it is refused, naming the verified alternatives.
CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# exporter-toolkit's list of settable headers and, where it is an enumeration, their allowed values.
EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
TLS_KEYS = {
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
HTTP_KEYS = {"http2", "headers"}
# $2a$, $2b$, $2x$, $2y$: the variants both Go's and pyca's bcrypt read; cost and 53 chars of salt+hash.
BCRYPT_RE = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
# A bcrypt hash of a random password nobody knows: an unknown user costs the same time as a known one,
# so response times do not tell which user names exist (exporter-toolkit does the same).
_UNKNOWN_USER_HASH = b"$2b$10$Mdx1Ap0gUMJyq7M2ea.l5uD8V7hTWZjUVOsq9DbxjTH2bgDTuoYNe"


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: ssl.SSLContext | None = None
    client_allowed_sans: tuple[str, ...] = ()
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # Files whose change makes a new connection reload the config (certificate renewal).
    files: tuple[str, ...] = ()


def _err(path: str, key: str, msg: str) -> WebConfigError:
    return WebConfigError(f"{path}: key {key}: {msg}")


def _mapping(path: str, key: str, v: Any, allowed: set[str]) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, key, f"expected a mapping, got {type(v).__name__}")
    for k in v:
        if k not in allowed:
            raise _err(path, f"{key}.{k}" if key else str(k), "unknown key")
    return v


def _str(path: str, key: str, v: Any) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _err(path, key, f"expected a string, got {type(v).__name__}")
    return v


def _readable(path: str, key: str, name: str) -> str:
    full = os.path.join(os.path.dirname(path), name)
    try:
        with open(full, "rb") as f:
            f.read(1)
    except OSError as e:
        raise _err(path, key, f"cannot read {full}: {e.strerror}") from None
    return full


def check_hash(user: str, h: str, path: str) -> bytes:
    key = f"basic_auth_users.{user}"
    m = BCRYPT_RE.match(h)
    if not m:
        raise _err(path, key, "not a bcrypt hash (expected $2y$<cost>$..., e.g. from `htpasswd -nBC 10`)")
    if not 4 <= int(m.group(1)) <= 31:
        raise _err(path, key, f"bcrypt cost {m.group(1)} is outside 4..31")
    return h.encode()


def _tls(path: str, t: dict[str, Any]) -> tuple[ssl.SSLContext | None, tuple[str, ...], list[str]]:
    k = "tls_server_config"
    for inline in ("cert", "key"):
        if t.get(inline):
            raise _err(path, f"{k}.{inline}", f"inline PEM is not supported here; use {inline}_file")
    for unsupported in ("cipher_suites", "curve_preferences"):
        if t.get(unsupported):
            raise _err(
                path, f"{k}.{unsupported}", "not supported by telemetryd (OpenSSL's defaults are used)"
            )
    cert = _str(path, f"{k}.cert_file", t.get("cert_file"))
    key = _str(path, f"{k}.key_file", t.get("key_file"))
    ca_file = _str(path, f"{k}.client_ca_file", t.get("client_ca_file"))
    ca_text = _str(path, f"{k}.client_ca", t.get("client_ca"))
    auth = _str(path, f"{k}.client_auth_type", t.get("client_auth_type"))
    if not (cert or key or ca_file or ca_text or auth):
        return None, (), []  # no TLS: plain HTTP, as exporter-toolkit does
    if not cert:
        raise _err(path, f"{k}.cert_file", "missing (TLS needs a certificate and its key)")
    if not key:
        raise _err(path, f"{k}.key_file", "missing (TLS needs a certificate and its key)")
    cert = _readable(path, f"{k}.cert_file", cert)
    key = _readable(path, f"{k}.key_file", key)
    files = [cert, key]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # password=b"": an encrypted key fails here instead of OpenSSL prompting on the daemon's stdin.
        ctx.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as e:
        raise _err(
            path, f"{k}.cert_file/key_file", f"not a PEM certificate and its matching unencrypted key: {e}"
        ) from None
    versions = []
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = _str(path, f"{k}.{name}", t.get(name)) or default
        if v not in TLS_VERSIONS:
            raise _err(path, f"{k}.{name}", f"expected one of {', '.join(TLS_VERSIONS)}, got {v!r}")
        versions.append(TLS_VERSIONS[v])
    if versions[0] > versions[1]:
        raise _err(path, f"{k}.min_version", "is above max_version")
    ctx.minimum_version, ctx.maximum_version = versions
    if t.get("prefer_server_cipher_suites", True):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise _err(
            path,
            f"{k}.client_auth_type",
            f"{auth} (a certificate nobody verifies) is not supported; use RequireAndVerifyClientCert "
            "or VerifyClientCertIfGiven",
        )
    if auth not in CLIENT_AUTH:
        raise _err(path, f"{k}.client_auth_type", f"expected one of {', '.join(filter(None, CLIENT_AUTH))}")
    ctx.verify_mode = CLIENT_AUTH[auth]
    if ca_file or ca_text:
        if ctx.verify_mode == ssl.CERT_NONE:
            raise _err(
                path, f"{k}.client_auth_type", "client CAs are configured without a client auth policy"
            )
        try:
            if ca_file:
                ca_file = _readable(path, f"{k}.client_ca_file", ca_file)
                files.append(ca_file)
                ctx.load_verify_locations(cafile=ca_file)
            else:
                ctx.load_verify_locations(cadata=ca_text)
        except ssl.SSLError as e:
            which = "client_ca_file" if ca_file else "client_ca"
            raise _err(path, f"{k}.{which}", f"no PEM CA certificate: {e}") from None
    elif ctx.verify_mode != ssl.CERT_NONE:
        raise _err(path, f"{k}.client_ca_file", f"{auth} needs the CA that signs client certificates")
    sans = t.get("client_allowed_sans")
    if sans is not None:
        if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
            raise _err(path, f"{k}.client_allowed_sans", "expected a list of strings")
        if ctx.verify_mode != ssl.CERT_REQUIRED:
            raise _err(path, f"{k}.client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert")
    return ctx, tuple(sans or ()), files


def load(path: str) -> WebConfig:
    """Read and check the whole file: every error names the key, nothing is checked later."""
    # Imported here: PyYAML's import is a tenth of the daemon's start-up, and most hosts run without a
    # web config file.
    import yaml

    try:
        with open(path, "rb") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise WebConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise WebConfigError(f"{path}: not valid YAML: {e}") from None
    top = _mapping(path, "", raw, TOP_KEYS)
    if top.get("rate_limit"):
        raise _err(path, "rate_limit", "not supported by telemetryd")
    ctx, sans, files = _tls(path, _mapping(path, "tls_server_config", top.get("tls_server_config"), TLS_KEYS))
    http = _mapping(path, "http_server_config", top.get("http_server_config"), HTTP_KEYS)
    headers: dict[str, str] = {}
    for name, value in _mapping(
        path, "http_server_config.headers", http.get("headers"), set(EXTRA_HEADERS)
    ).items():
        key = f"http_server_config.headers.{name}"
        value = _str(path, key, value)
        allowed = EXTRA_HEADERS[name]
        if allowed and value not in allowed:
            raise _err(path, key, f"expected one of {', '.join(allowed)}, got {value!r}")
        if value:
            headers[name] = value
    users_raw = top.get("basic_auth_users") or {}
    if not isinstance(users_raw, dict):
        raise _err(path, "basic_auth_users", "expected a mapping of user name to bcrypt hash")
    users = {}
    for user, h in users_raw.items():
        if not isinstance(user, str) or ":" in user:
            raise _err(path, f"basic_auth_users.{user}", "a user name is a string without ':'")
        users[user] = check_hash(user, _str(path, f"basic_auth_users.{user}", h), path)
    return WebConfig(path, ctx, sans, users, headers, (path, *files))


def peer_san_allowed(cert: dict[str, Any] | None, allowed: tuple[str, ...]) -> bool:
    """exporter-toolkit's client_allowed_sans: some DNS, email, IP or URI SAN matches exactly."""
    if not allowed:
        return True
    if not cert:
        return False
    return any(value in allowed for _kind, value in cert.get("subjectAltName", ()))


class Authenticator:
    """Basic auth against bcrypt hashes, cheap for a scraper that sends the same password every time.

    bcrypt costs tens of milliseconds by design. Successful checks are cached (key: a SHA-256 of user,
    hash and password, so no password is kept in memory); only successes, so a flood of wrong passwords
    cannot evict the scraper's entry. Uncached checks run one at a time, as in exporter-toolkit: a flood
    uses at most one core (bcrypt releases the GIL while it hashes), leaving the rest to the main loop;
    a check that cannot start within `wait` seconds is refused instead of queueing threads without bound.
    """

    CACHE_SIZE = 100

    def __init__(self, wait: float = 2.0) -> None:
        self.wait = wait
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self._cache: OrderedDict[bytes, None] = OrderedDict()

    def check(self, users: dict[str, bytes], user: str, password: str) -> bool | None:
        """True/False; None when too many checks are already waiting (answer 503, not 401)."""
        known = user in users
        hashed = users.get(user, _UNKNOWN_USER_HASH)
        pw = password.encode()
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, pw))).digest()
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        if not self._bcrypt_lock.acquire(timeout=self.wait):
            return None
        try:
            ok = bcrypt.checkpw(pw, hashed) and known
        finally:
            self._bcrypt_lock.release()
        if ok:
            with self._cache_lock:
                self._cache[key] = None
                if len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        return ok
