"""Command line: run, status, patterns, extract, checkpoint show|verify, check-config."""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import msgspec

from . import __version__
from . import checkpoint as ck
from .config import Config, ConfigError, Overrides, load_config
from .daemon import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Daemon
from .events import DECODE_ERRORS, INVALID_UTF8, TOO_LONG, skip_reason
from .logs import configure, get_logger
from .patterns import Extractor
from .report import iso, patterns_document, status_document


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file (every key optional)")
    common.add_argument("--state-dir", metavar="DIR", help="overrides checkpoint.state_dir")
    p = argparse.ArgumentParser(prog="telemetryd", description=__doc__)
    p.add_argument("--version", action="version", version=f"telemetryd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="the daemon")
    run.add_argument("--path", action="append", default=[], metavar="GLOB", help="add a source glob")
    run.add_argument("--once", action="store_true", help="read what the files hold now, checkpoint, exit")
    run.add_argument("--metrics-listen", metavar="HOST:PORT", help='overrides metrics.listen ("" = off)')

    st = sub.add_parser("status", parents=[common], help="offsets and lag from the last checkpoint")
    st.add_argument("--json", action="store_true")

    pt = sub.add_parser("patterns", parents=[common], help="the pattern table from the last checkpoint")
    pt.add_argument("--top", type=int, metavar="N")
    pt.add_argument("--json", action="store_true")

    ex = sub.add_parser("extract", parents=[common], help="the pattern of each input line; touches no state")
    ex.add_argument("files", nargs="+", metavar="FILE", help="'-' for stdin")
    ex.add_argument("--json", action="store_true")

    cp = sub.add_parser("checkpoint", help="inspect the checkpoint")
    cps = cp.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("show", "dump the checkpoint as JSON"),
        ("verify", "exit non-zero if it is unusable"),
    ):
        a = cps.add_parser(name, parents=[common], help=text)
        a.add_argument("--json", action="store_true")

    sub.add_parser("check-config", parents=[common], help="validate a config file")
    return p


def _load(args: argparse.Namespace, **extra: Any) -> Config:
    return load_config(args.config, Overrides(state_dir=args.state_dir, **extra))


def _out(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _state(cfg: Config) -> ck.Recovery:
    d = cfg.checkpoint.state_dir
    if not os.path.isdir(d):
        raise FileNotFoundError(f"state dir {d} does not exist (set checkpoint.state_dir or --state-dir)")
    return ck.recover(d, repair=False)


def cmd_run(args: argparse.Namespace) -> int:
    # The watchdog ends a hung daemon with SIGABRT: leave a traceback of every thread in the log.
    faulthandler.enable()
    cfg = _load(args, paths=tuple(args.path), metrics_listen=args.metrics_listen)
    configure(cfg.log.format, cfg.log.level)
    log = get_logger()
    if not cfg.sources.paths:
        log.error("no_sources", hint="set sources.paths in the config or pass --path GLOB")
        return EXIT_USAGE
    log.info(
        "starting",
        version=__version__,
        config=args.config,
        state_dir=cfg.checkpoint.state_dir,
        paths=cfg.sources.paths,
        once=args.once,
    )
    return Daemon(
        cfg,
        log,
        config_path=args.config,
        overrides=Overrides(tuple(args.path), args.state_dir, args.metrics_listen),
        once=args.once,
    ).run()


def cmd_status(args: argparse.Namespace) -> int:
    rec = _state(_load(args))
    doc = status_document(rec.state)
    if args.json:
        _out(doc)
        return EXIT_OK
    print(
        f"checkpoint: {doc['checkpoint_time'] or 'none'} (generation {doc['generation']}, seq {doc['seq']})"
    )
    print(
        f"events:     {doc['events_total']} counted, {doc['lines_skipped_total']} lines skipped, "
        f"{doc['patterns']} patterns, {doc['overflow_count']} in overflow"
    )
    for reason, n in doc["lines_skipped"].items():
        print(f"  skipped {reason}: {n}")
    print(f"files:      {len(doc['files'])}")
    for f in doc["files"]:
        size = "gone" if f["size"] is None else str(f["size"])
        print(f"  {f['path']}  offset={f['offset']} size={size} lag={f['lag_bytes']}")
    return EXIT_OK


def cmd_patterns(args: argparse.Namespace) -> int:
    cfg = _load(args)
    rec = _state(cfg)
    settings = rec.state.settings
    key_fields = settings.key_fields if settings else list(cfg.patterns.key_fields)
    doc = patterns_document(rec.state, key_fields, args.top)
    if args.json:
        _out(doc)
        return EXIT_OK
    print(
        f"{doc['events_total']} events, {len(rec.state.patterns)} patterns, "
        f"{doc['overflow_count']} in overflow (checkpoint {doc['checkpoint_time'] or 'none'})"
    )
    for p in doc["patterns"]:
        key = " ".join(f"{k}={v}" for k, v in p["key"].items())
        print(f"{p['count']:>12}  {p['id']}  {key}  {p['template'] if p['template'] is not None else ''}")
    return EXIT_OK


def _lines(f: BinaryIO) -> Iterator[bytes]:
    for raw in f:
        yield raw[:-1] if raw.endswith(b"\n") else raw


def extract_line(ex: Extractor, line: bytes, max_line_bytes: int) -> dict[str, Any]:
    """What the daemon would do with one line: its pattern, or why it would be skipped."""
    if len(line) > max_line_bytes:
        return {"skipped": TOO_LONG}
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return {"skipped": INVALID_UTF8}
    try:
        ev = ex.schema.decoder.decode(line)
    except DECODE_ERRORS as e:
        return {"skipped": skip_reason(line, e)}
    key, tpl, pid = ex.pattern_of(ev)
    return {"id": pid, "key": dict(zip(ex.key_fields, key, strict=True)), "template": tpl}


def cmd_extract(args: argparse.Namespace) -> int:
    cfg = _load(args)
    p = cfg.patterns
    ex = Extractor(p.key_fields, p.template_field, [(m.regex, m.replacement) for m in p.masks])
    out = sys.stdout
    multi = len(args.files) > 1
    for name in args.files:
        try:
            f: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
        except OSError as e:
            print(f"telemetryd: {name}: {e.strerror}", file=sys.stderr)
            return EXIT_FAILURE
        with f:
            for n, line in enumerate(_lines(f), 1):
                r = extract_line(ex, line, cfg.sources.max_line_bytes)
                row: dict[str, Any] = {"line": n, **({"file": name} if multi else {}), **r}
                if args.json:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                elif "skipped" in r:
                    out.write(f"{n}\tskipped:{r['skipped']}\n")
                else:
                    key = " ".join(f"{k}={v}" for k, v in r["key"].items())
                    out.write(f"{n}\t{r['id']}\t{key}\t{r['template']}\n")
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    cfg = _load(args)
    rec = _state(cfg)
    s = rec.state
    if args.action == "show":
        doc = {
            "outcome": rec.outcome,
            "notes": rec.notes,
            "generation": s.generation,
            "seq": s.seq,
            "checkpoint_time": iso(s.time),
            "settings": msgspec.to_builtins(s.settings),
            "totals": msgspec.to_builtins(s.totals),
            "files": msgspec.to_builtins(list(s.files.values())),
            "patterns": msgspec.to_builtins(list(s.patterns.values())),
            "state_files": list(ck.iter_state_files(cfg.checkpoint.state_dir)),
        }
        _out(doc) if args.json else print(json.dumps(doc, indent=2, ensure_ascii=False))
        return EXIT_OK
    usable = rec.outcome in ("clean", "fallback")
    doc = {
        "ok": usable,
        "outcome": rec.outcome,
        "notes": rec.notes,
        "generation": s.generation,
        "seq": s.seq,
        "checkpoint_time": iso(s.time),
        "events_total": s.totals.events,
        "files": len(s.files),
        "patterns": len(s.patterns),
    }
    if args.json:
        _out(doc)
    else:
        verdict = "ok" if usable else "UNUSABLE"
        print(f"{verdict}: {rec.outcome}, generation {s.generation}, seq {s.seq}, {s.totals.events} events")
        for note in rec.notes:
            print(f"  {note}")
    return EXIT_OK if usable else EXIT_FAILURE


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    print(f"ok: {args.config or '(defaults)'}")
    print(json.dumps(msgspec.to_builtins(cfg), indent=2))
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "patterns": cmd_patterns,
    "extract": cmd_extract,
    "checkpoint": cmd_checkpoint,
    "check-config": cmd_check_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"telemetryd: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as e:
        print(f"telemetryd: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except ck.CheckpointUnreadable as e:  # names the path; no traceback
        print(f"telemetryd: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
