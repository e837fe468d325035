"""Configuration: TOML decoded by msgspec into typed structs; every key optional."""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec


class ConfigError(Exception):
    """A config that cannot be used; the message names the file and the key."""


class MaskRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    regex: str
    replacement: str = "<*>"


class SourcesConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    paths: list[str] = msgspec.field(default_factory=list)
    exclude: list[str] = msgspec.field(default_factory=list)
    start_at: Literal["beginning", "end"] = "beginning"
    rescan_seconds: float = 5.0
    max_line_bytes: int = 1048576
    # "auto" uses inotify through watchfiles and falls back to polling when it cannot start.
    watch: Literal["auto", "inotify", "poll"] = "auto"
    poll_seconds: float = 0.25
    max_open_files: int = 512
    # How long a file that left the globs (rotated away) or was deleted is kept open for late writes.
    rotate_wait_seconds: float = 5.0


class PatternsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    key_fields: list[str] = msgspec.field(default_factory=lambda: ["event_type"])
    template_field: str = "message"
    max_patterns: int = 100000
    masks: list[MaskRule] = msgspec.field(default_factory=list)


class CheckpointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    state_dir: str = "/var/lib/telemetryd"
    every_events: int = 1000
    every_seconds: float = 1.0
    # The journal of deltas is folded into a new snapshot once it grows past this size.
    compact_bytes: int = 64 * 1024 * 1024


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: str = "127.0.0.1:9464"
    top_files: int = 10
    # Patterns with their own telemetryd_pattern_events_total series (the rest: pattern_id="other"), and
    # the direct count a pattern needs to get one (exported.py, series_policy.py).
    pattern_series: int = 100
    pattern_series_min_events: int = 1
    # TLS and basic auth: a file in the format of node_exporter's --web.config.file (docs/operations.md).
    web_config: str = ""
    # For listen = "unix:PATH": the socket's mode (octal) and group (name or number; "" = the daemon's).
    socket_mode: str = "0660"
    socket_group: str = ""
    # Raw example lines are log text: over HTTP they are null unless turned on (the CLI shows them).
    expose_examples: bool = False


class LogConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    format: Literal["auto", "json", "console", "journal"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sources: SourcesConfig = msgspec.field(default_factory=SourcesConfig)
    patterns: PatternsConfig = msgspec.field(default_factory=PatternsConfig)
    checkpoint: CheckpointConfig = msgspec.field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)


# Upper bounds that keep a value usable: a line buffer the reader can allocate, a timer the OS can
# represent. Beyond them the daemon would die later (MemoryError, OverflowError) instead of now.
MAX_LINE_BYTES_LIMIT = 1 << 28
MAX_SECONDS = 86400.0

_PATH_RE = re.compile(r" - at `\$\.?([^`]*)`")


def _field_type(path: str) -> Any:
    """The annotated type of a dotted key such as `sources.start_at` or `patterns.masks[0].regex`."""
    t: Any = Config
    for part in path.split("."):
        name = re.sub(r"\[\d+\]$", "", part)
        if not (isinstance(t, type) and issubclass(t, msgspec.Struct)):
            return None
        t = typing.get_type_hints(t).get(name)
        for _ in re.findall(r"\[\d+\]", part):
            args = typing.get_args(t)
            t = args[0] if args else None
    return t


def _humanize(err: str) -> str:
    # msgspec says "... - at `$.checkpoint.every_events`"; users know keys as checkpoint.every_events.
    m = _PATH_RE.search(err)
    if not m:
        return err
    key = m.group(1) or "(top level)"
    msg = err[: m.start()]
    t = _field_type(key)
    if typing.get_origin(t) is Literal:
        allowed = " | ".join(f'"{v}"' for v in typing.get_args(t))
        msg = f"{msg}; allowed values: {allowed}"
    return f"key {key}: {msg}"


def iter_keys(t: type[msgspec.Struct] = Config, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every config key as (dotted name, annotated type), leaves only; tables are walked into."""
    for name, ft in typing.get_type_hints(t).items():
        key = f"{prefix}{name}"
        if isinstance(ft, type) and issubclass(ft, msgspec.Struct):
            yield from iter_keys(ft, key + ".")
        else:
            yield key, ft


def _values(obj: msgspec.Struct, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name in obj.__struct_fields__:
        v = getattr(obj, name)
        key = f"{prefix}{name}"
        if isinstance(v, msgspec.Struct):
            yield from _values(v, key + ".")
        else:
            yield key, v


@dataclass(frozen=True)
class Overrides:
    paths: tuple[str, ...] = ()
    state_dir: str | None = None
    metrics_listen: str | None = None


def parse_config(data: bytes, origin: str = "<config>") -> Config:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{origin}: line {line}: not UTF-8 (byte {data[e.start]:#04x} at offset {e.start})"
        ) from None
    try:
        cfg = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{origin}: {_humanize(str(e))}") from None
    except msgspec.DecodeError as e:
        raise ConfigError(f"{origin}: not valid TOML: {e}") from None
    validate(cfg, origin)
    return cfg


def load_config(path: str | None, overrides: Overrides | None = None) -> Config:
    if path is None:
        cfg = Config()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
        cfg = parse_config(data, path)
    if overrides is not None:
        cfg = apply_overrides(cfg, overrides)
    return cfg


def apply_overrides(cfg: Config, o: Overrides) -> Config:
    sources, checkpoint, metrics = cfg.sources, cfg.checkpoint, cfg.metrics
    if o.paths:
        sources = msgspec.structs.replace(sources, paths=[*sources.paths, *o.paths])
    if o.state_dir is not None:
        checkpoint = msgspec.structs.replace(checkpoint, state_dir=o.state_dir)
    if o.metrics_listen is not None:
        metrics = msgspec.structs.replace(metrics, listen=o.metrics_listen)
    cfg = msgspec.structs.replace(cfg, sources=sources, checkpoint=checkpoint, metrics=metrics)
    validate(cfg, "command line")
    return cfg


def parse_listen(value: str) -> tuple[str, int] | None:
    """'host:port' -> (host, port); '' -> None (endpoint off)."""
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def validate(cfg: Config, origin: str) -> None:
    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{origin}: key {key}: {msg}")

    # Every float key at once, so a key added later cannot forget it: nan compares false with every
    # bound below and would slip through them, inf would make a timer that never fires.
    for key, v in _values(cfg):
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(key, f"must be a finite number, got {v}")
        if key.endswith("_seconds") and v > MAX_SECONDS:
            raise bad(key, f"must be <= {MAX_SECONDS:g} (one day)")
    s, p, c = cfg.sources, cfg.patterns, cfg.checkpoint
    if s.rescan_seconds <= 0:
        raise bad("sources.rescan_seconds", "must be > 0")
    if s.poll_seconds <= 0:
        raise bad("sources.poll_seconds", "must be > 0")
    if not 16 <= s.max_line_bytes <= MAX_LINE_BYTES_LIMIT:
        # The reader asks for max_line_bytes + 1 bytes at once to find a line's end.
        raise bad("sources.max_line_bytes", f"must be between 16 and {MAX_LINE_BYTES_LIMIT} (256 MiB)")
    if s.max_open_files < 8:
        raise bad("sources.max_open_files", "must be >= 8")
    if s.rotate_wait_seconds < 0:
        raise bad("sources.rotate_wait_seconds", "must be >= 0")
    for i, g in enumerate(s.paths):
        if not g:
            raise bad(f"sources.paths[{i}]", "empty glob")
    if p.max_patterns < 1:
        raise bad("patterns.max_patterns", "must be >= 1")
    if len(set(p.key_fields)) != len(p.key_fields):
        raise bad("patterns.key_fields", "duplicate field")
    for i, f in enumerate(p.key_fields):
        if not f or any(part == "" for part in f.split(".")):
            raise bad(f"patterns.key_fields[{i}]", f"not a dotted field path: {f!r}")
    if p.template_field and any(part == "" for part in p.template_field.split(".")):
        raise bad("patterns.template_field", f"not a dotted field path: {p.template_field!r}")
    for i, m in enumerate(p.masks):
        try:
            re.compile(m.regex)
        except re.error as e:
            raise bad(f"patterns.masks[{i}].regex", f"invalid regular expression: {e}") from None
    if c.every_events < 1:
        raise bad("checkpoint.every_events", "must be >= 1")
    if c.every_seconds <= 0:
        raise bad("checkpoint.every_seconds", "must be > 0")
    if c.compact_bytes < 4096:
        raise bad("checkpoint.compact_bytes", "must be >= 4096")
    if not c.state_dir:
        raise bad("checkpoint.state_dir", "must not be empty")
    if cfg.metrics.listen.startswith("unix:"):
        if not cfg.metrics.listen[5:].startswith("/"):
            raise bad("metrics.listen", "expected unix:/ABSOLUTE/PATH")
    else:
        try:
            parse_listen(cfg.metrics.listen)
        except ValueError as e:
            raise bad("metrics.listen", str(e)) from None
    mode = cfg.metrics.socket_mode
    if not re.fullmatch(r"0?[0-7]{3}", mode):
        raise bad("metrics.socket_mode", f"expected an octal mode such as 0660, got {mode!r}")
    if cfg.metrics.top_files < 0 or cfg.metrics.top_files > 1000:
        raise bad("metrics.top_files", "must be between 0 and 1000")
    if cfg.metrics.pattern_series < 0 or cfg.metrics.pattern_series > 1000:
        raise bad("metrics.pattern_series", "must be between 0 and 1000")
    if cfg.metrics.pattern_series_min_events < 1:
        raise bad("metrics.pattern_series_min_events", "must be >= 1")
