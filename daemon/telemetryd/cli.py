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

from . import __version__, listener
from . import checkpoint as ck
from .config import Config, ConfigError, Overrides, load_config
from .daemon import EXIT_FAILURE, EXIT_LOCKED, EXIT_OK, EXIT_USAGE, Daemon
from .extract import extract_rows
from .logs import configure, get_logger
from .patterns import Extractor
from .report import age, checkpoint_document, iso, patterns_document, shorten, status_document, table
from .webconfig import WebConfigError

# Text output only (--json has the whole example). The template, the last column, is never cut.
EXAMPLE_WIDTH = 40


EXIT_CODES = (
    (EXIT_OK, "ok"),
    (EXIT_FAILURE, "runtime failure (unusable checkpoint, unreadable file, ...)"),
    (EXIT_USAGE, "usage or config error"),
    (EXIT_LOCKED, "another telemetryd holds the state dir"),
)
DEFAULTS = Config()
DESCRIPTION = (
    "Tails JSONL telemetry files, counts events per pattern exactly once across crashes, "
    "exports its health to Prometheus."
)


def _epilog() -> str:
    codes = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES)
    return (
        "global options (--config, --state-dir) may come before or after the command.\n"
        "config: none by default (built-in defaults, every key optional); the systemd unit passes\n"
        "  --config /etc/telemetryd/telemetryd.toml.\n"
        f"state dir: checkpoint.state_dir, default {DEFAULTS.checkpoint.state_dir}.\n"
        "exit codes:\n"
        f"{codes}\n"
        "docs: docs/contract.md (CLI, JSON outputs, metrics), docs/configuration.md (config keys)."
    )


def _add_global(p: argparse.ArgumentParser, top: bool) -> None:
    # Given on the top parser and on every subcommand, so `telemetryd --state-dir X status` and
    # `telemetryd status --state-dir X` mean the same. Below the top, SUPPRESS keeps a subcommand's
    # unset option from overwriting a value given before the command name.
    default = None if top else argparse.SUPPRESS
    g = p.add_argument_group("global options")
    g.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="TOML config file; every key optional (default: none, built-in defaults)",
    )
    g.add_argument(
        "--state-dir",
        metavar="DIR",
        default=default,
        help=f"overrides checkpoint.state_dir (default {DEFAULTS.checkpoint.state_dir})",
    )


def _json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"{what} as one JSON document (docs/contract.md)")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="telemetryd", description=DESCRIPTION, epilog=_epilog(), formatter_class=fmt
    )
    p.add_argument("--version", action="version", version=f"telemetryd {__version__}")
    _add_global(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text, formatter_class=fmt)
        _add_global(c, top=False)
        return c

    run = command("run", "the daemon: tail the sources, count patterns, checkpoint, serve metrics")
    run.add_argument(
        "--path", action="append", default=[], metavar="GLOB", help="add a source glob (repeatable)"
    )
    run.add_argument(
        "--once", action="store_true", help="read what the files hold now, write a final checkpoint, exit 0"
    )
    run.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help='overrides metrics.listen ("" turns HTTP off)'
    )

    st = command(
        "status", "checkpoint age, whether a daemon runs, offsets and lag per file (no daemon needed)"
    )
    _json_flag(st, "the status")

    pt = command("patterns", "the pattern table from the last checkpoint, by count")
    pt.add_argument("--top", type=_positive, metavar="N", help="only the N most frequent patterns (N >= 1)")
    _json_flag(pt, "the table")

    ex = command("extract", "the pattern of each input line, or why it would be skipped; touches no state")
    ex.add_argument("files", nargs="+", metavar="FILE", help="JSONL file to read; '-' for stdin")
    _json_flag(ex, "one JSON object per line")
    ex.add_argument(
        "--explain", action="store_true", help="with --json: the rule template and why each piece was masked"
    )

    cp = command("checkpoint", "inspect the last checkpoint")
    cps = cp.add_subparsers(dest="action", required=True, metavar="ACTION", title="actions")
    show = command("show", "print the committed state with named fields (JSON)", cps)
    show.add_argument("--json", action="store_true", help="compact, on one line (default: indented)")
    verify = command("verify", "check that the checkpoint is usable; exit 1 if not", cps)
    _json_flag(verify, "the verdict")

    command("check-config", "validate a config file and print the effective config")
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
    cfg = _load(args)
    rec = _state(cfg)
    doc = status_document(rec.state, cfg.checkpoint.state_dir)
    if args.json:
        _out(doc)
        return EXIT_OK
    when = doc["checkpoint_time"]
    ago = f", {age(doc['checkpoint_age_seconds'])} ago" if when else ""
    print(f"state dir:  {cfg.checkpoint.state_dir}")
    running, pid = doc["daemon"]["running"], doc["daemon"]["pid"]
    if running:
        print(f"daemon:     running (pid {pid})")
    elif running is None:
        print("daemon:     unknown (cannot read /proc/locks)")
    else:
        print("daemon:     not running" + (f" (last pid {pid})" if pid else ""))
    print(f"checkpoint: {when or 'none'}{ago} (generation {doc['generation']}, seq {doc['seq']})")
    print(
        f"events:     {doc['events_total']} counted, {doc['lines_skipped_total']} lines skipped, "
        f"{doc['patterns']} patterns, {doc['overflow_count']} in overflow"
    )
    for reason, n in doc["lines_skipped"].items():
        print(f"  skipped {reason}: {n}")
    print(f"files:      {len(doc['files'])}")
    if doc["files"]:
        rows = [
            [
                str(f["offset"]),
                "gone" if f["size"] is None else str(f["size"]),
                str(f["lag_bytes"]),
                f["path"],
            ]
            for f in doc["files"]
        ]
        for line in table(["OFFSET", "SIZE", "LAG_BYTES", "PATH"], rows, right=(0, 1, 2)):
            print("  " + line)
    return EXIT_OK


def _key_text(v: str | None) -> str:
    # A missing field is JSON null; in a table it is '-', never Python's `None`.
    return "-" if v is None else v


def cmd_patterns(args: argparse.Namespace) -> int:
    cfg = _load(args)
    rec = _state(cfg)
    settings = rec.state.settings
    key_fields = settings.key_fields if settings else list(cfg.patterns.key_fields)
    doc = patterns_document(rec.state, key_fields, args.top)
    if args.json:
        _out(doc)
        return EXIT_OK
    shown = len(doc["patterns"])
    # Patterns folded into a general one are not rows of their own (patterns_document).
    live = sum(1 for p in rec.state.patterns.values() if p.absorbed_into is None)
    print(
        f"{doc['events_total']} events, {live} patterns"
        + (f" (top {shown} shown)" if shown < live else "")
        + f", {doc['overflow_count']} in overflow (checkpoint {doc['checkpoint_time'] or 'none'})"
    )
    if not doc["patterns"]:
        return EXIT_OK
    header = ["COUNT", "LAST_SEEN", "ID", *(f.upper() for f in key_fields), "EXAMPLE", "TEMPLATE"]
    rows = [
        [
            str(p["count"]),
            p["last_seen"] or "-",
            p["id"],
            *(_key_text(p["key"].get(f)) for f in key_fields),
            shorten(p["example"], EXAMPLE_WIDTH),
            _key_text(p["template"]),
        ]
        for p in doc["patterns"]
    ]
    print("\n".join(table(header, rows, right=(0,))))
    return EXIT_OK


def _lines(f: BinaryIO) -> Iterator[bytes]:
    for raw in f:
        yield raw[:-1] if raw.endswith(b"\n") else raw


def cmd_extract(args: argparse.Namespace) -> int:
    cfg = _load(args)
    p = cfg.patterns
    ex = Extractor(p.key_fields, p.template_field, [(m.regex, m.replacement) for m in p.masks])
    out = sys.stdout
    multi = len(args.files) > 1
    if not args.json:
        # Tab-separated, so `cut -f` works on it and no cell waits for the widest one.
        header = ["FILE"] if multi else []
        out.write("\t".join([*header, "LINE", "ID", *(k.upper() for k in p.key_fields), "TEMPLATE"]) + "\n")
    # The structural stage decides from the whole input (extract.py): read it all, then answer.
    where: list[tuple[str, int]] = []
    lines: list[bytes] = []
    for name in args.files:
        try:
            f: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
        except OSError as e:
            print(f"telemetryd: {name}: {e.strerror}", file=sys.stderr)
            return EXIT_FAILURE
        with f:
            for n, line in enumerate(_lines(f), 1):
                where.append((name, n))
                lines.append(line)
    rows = extract_rows(ex, lines, cfg.sources.max_line_bytes, explain=args.explain)
    for (name, n), r in zip(where, rows, strict=True):
        row: dict[str, Any] = {"line": n, **({"file": name} if multi else {}), **r}
        if args.json:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            continue
        cells = [name] if multi else []
        if "skipped" in r:
            cells += [str(n), f"skipped:{r['skipped']}"]
        else:
            keys = [_key_text(v) for v in r["key"].values()]
            cells += [str(n), r["id"], *keys, _key_text(r["template"])]
        out.write("\t".join(cells) + "\n")
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    cfg = _load(args)
    rec = _state(cfg)
    s = rec.state
    if args.action == "show":
        doc = checkpoint_document(rec, list(ck.iter_state_files(cfg.checkpoint.state_dir)))
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
    try:
        listener.check(cfg)
    except WebConfigError as e:
        raise ConfigError(f"{args.config}: {e}") from None
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
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. stdout now points at /dev/null, so the flush
        # at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (OSError, ck.CheckpointUnreadable) as e:
        # A state dir or journal that cannot be read (missing, a directory where a file belongs, EACCES):
        # one line naming it, not a traceback.
        print(f"telemetryd: {e}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
