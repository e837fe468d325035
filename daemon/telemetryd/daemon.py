"""The daemon: recovery, then one loop that reads files, counts, and cuts checkpoints.

Everything that changes counted state runs on the main thread, in order: read a block of complete
lines, count it, advance that file's offset. A checkpoint is cut between blocks, so the offsets and
counts it holds always describe the same instant. Other threads only signal (watcher), write bytes
they are handed (checkpoint writer), or serve numbers they are handed (metrics).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import json
import os
import queue
import resource
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import msgspec

from . import checkpoint as ck
from .config import Config, ConfigError, Overrides, load_config, parse_listen
from .events import TOO_LONG
from .lock import LockHeld, LockUnsafe, StateLock
from .logs import configure as configure_logging
from .metrics import Health, HttpServer, Metrics, Stats, make_app
from .notify import Notifier, format_status
from .patterns import Extractor, PatternCounter
from .reader import TailedFile
from .sources import SourceSet, watch_roots
from .wakeup import Wakeup
from .watcher import Watcher

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
# Blocks read from one file before the loop moves on, so one busy file cannot starve the rest or delay
# checkpoints and watchdog pings.
BLOCKS_PER_TURN = 8
# One pass over busy files ends after this long, so signals, checkpoints due by time and watchdog pings
# are never held up by a large backlog spread over many files.
TURN_SECONDS = 0.05
STATS_EVERY = 0.5
# With change notifications working, a full rescan (glob + stat of every file) at least this often.
FULL_SCAN_SECONDS = 60.0


@dataclass
class _Inflight:
    seq: int
    events_total: int
    files: list[tuple[TailedFile, int]]
    dropped: list[ck.FileIdent]
    patterns: list[Any]
    truncated: bool


class Daemon:
    def __init__(
        self,
        cfg: Config,
        log: Any,
        *,
        config_path: str | None = None,
        overrides: Overrides | None = None,
        once: bool = False,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.config_path = config_path
        self.overrides = overrides or Overrides()
        self.once = once
        self.state_dir = cfg.checkpoint.state_dir
        self.wake = Wakeup()
        self._stop = False
        self._reload = False
        self._results: queue.Queue[ck.WriteResult] = queue.Queue()
        self.health = Health()
        self.notifier = Notifier()
        self.metrics = Metrics(cfg.patterns.max_patterns)
        self.http: HttpServer | None = None
        self.watcher: Watcher | None = None
        self.writer: ck.JournalWriter | None = None
        self._compactor: threading.Thread | None = None
        self._rotating = False
        self._inflight: _Inflight | None = None
        self._seq = 0
        # Counted for the stats pass, which skips its work when none of these moved.
        self._reads = 0
        self._scans = 0
        # Durations of the checkpoints written by this process (the latest ones), for the summary
        # logged at stop: benchmarks read it, the histogram metric cannot give exact quantiles.
        self._ckpt_durations: collections.deque[float] = collections.deque(maxlen=100_000)
        self._durable_events = 0
        self._events_at_cut = 0
        self._last_cut = time.monotonic()
        self._last_error_log = 0.0
        self._bytes_read_total = 0
        self._last_block = b""
        self._status_mark = (time.monotonic(), 0)

    # --- set-up --------------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        # Handlers run on the main thread between bytecodes, possibly inside the loop's own wake-up calls:
        # they only set a flag and write a byte to the wake-up pipe, which takes no lock. (A
        # threading.Event here deadlocked: found by tests/test_faults.py and tests/test_systemd_daemon.py.)
        def stop(signum: int, frame: FrameType | None) -> None:
            self._stop = True
            self.wake.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            self._reload = True
            self.wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _on_result(self, r: ck.WriteResult) -> None:
        self._results.put(r)
        self.wake.set()

    def run(self) -> int:
        self._install_signals()
        try:
            os.makedirs(self.state_dir, exist_ok=True)
        except OSError as e:
            self.log.error("state_dir_unusable", state_dir=self.state_dir, error=e.strerror or str(e))
            return EXIT_FAILURE
        lock = StateLock(self.state_dir)
        try:
            lock.acquire()
        except LockHeld as e:
            self.log.error("state_dir_locked", state_dir=self.state_dir, holder_pid=e.holder)
            return EXIT_LOCKED
        except LockUnsafe as e:
            self.log.error("state_dir_lock_unsafe", path=e.path, reason=e.why, error=str(e))
            return EXIT_USAGE
        except OSError as e:
            self.log.error("state_dir_unusable", state_dir=self.state_dir, error=e.strerror or str(e))
            return EXIT_FAILURE
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _raise_fd_limit(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, max(soft, self.cfg.sources.max_open_files + 256))
        if want > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    def _run_locked(self) -> int:
        self._raise_fd_limit()
        listen = parse_listen(self.cfg.metrics.listen)
        if listen is not None and not self.once:
            try:
                self.http = HttpServer(listen[0], listen[1], make_app(self.metrics, self.health))
            except OSError as e:
                self.log.error(
                    "metrics_listen_failed",
                    listen=self.cfg.metrics.listen,
                    error=e.strerror or str(e),
                    hint="set metrics.listen or --metrics-listen",
                )
                return EXIT_FAILURE
            self.log.info("metrics_listening", url=f"http://{self.cfg.metrics.listen}/metrics")
        self.notifier.extend_timeout(90)
        try:
            self._recover()
        except OSError as e:
            self.log.error("recovery_failed", state_dir=self.state_dir, error=e.strerror or str(e))
            return EXIT_FAILURE
        roots = watch_roots(self.cfg.sources.paths)
        self._to_read: set[TailedFile] = set(self.sources.scan(time.monotonic()))
        if not self.once:
            self._start_watcher(roots)
        self.health.ready = True
        self.notifier.ready(self._status_line())
        self.log.info(
            "ready",
            files=len(self.sources.files),
            patterns=len(self.counter.table),
            events_total=self.counter.events_total,
        )
        try:
            code = self._loop()
        finally:
            code2 = self._shutdown()
        return code or code2

    def _start_watcher(self, roots: list[tuple[str, bool]]) -> None:
        mode = self.cfg.sources.watch
        existing = [(r, rec) for r, rec in roots if os.path.isdir(r)]
        if mode == "poll" or not existing:
            self.watcher = None
            return
        self.watcher = Watcher(existing, self.wake, self.log)

    def _recover(self) -> None:
        started = time.monotonic()
        rec = ck.recover(self.state_dir)
        ck.remove_stray_temp_files(self.state_dir)
        self.metrics.recoveries.labels(rec.outcome).inc()
        log = self.log.warning if rec.outcome in ("fallback", "quarantined") else self.log.info
        log(
            "recovered",
            outcome=rec.outcome,
            generation=rec.journal_gen,
            seq=rec.state.seq,
            events_total=rec.state.totals.events,
            files=len(rec.state.files),
            patterns=len(rec.state.patterns),
            notes=rec.notes,
            quarantined=rec.quarantined,
            seconds=round(time.monotonic() - started, 3),
        )
        p = self.cfg.patterns
        masks = [(m.regex, m.replacement) for m in p.masks]
        self.extractor = Extractor(p.key_fields, p.template_field, masks)
        settings = ck.Settings(self.extractor.digest, list(p.key_fields), p.template_field)
        self.counter = PatternCounter(self.extractor, p.max_patterns, self.cfg.sources.max_line_bytes)
        self.sources = SourceSet(self.cfg.sources, self.log)
        state = rec.state
        self.sources.load(state.files.values(), state.truncated)
        for t in self.sources.files.values():
            t.committed = t.offset
        self._seq = state.seq
        generation, good_size = rec.journal_gen, rec.journal_good_size
        old = state.settings
        if old is not None and old.digest != settings.digest:
            self._archive(state, old, settings)
            state.patterns = {}
            state.totals = ck.Totals(0, 0, state.totals.bytes_read, dict(state.totals.skipped))
            generation += 1
            state.settings = settings
            ck.write_snapshot(self.state_dir, state.to_snapshot(generation))
            good_size = None
            rec.needs_compaction = False
            self.metrics.settings_changes.inc()
        self.counter.restore(state.patterns, state.totals.events, state.totals.overflow, state.totals.skipped)
        self._bytes_read_total = state.totals.bytes_read
        # Prometheus counters start at zero in every process; the restored totals are their baseline.
        self._base_events = self.counter.events_total
        self._base_overflow = self.counter.overflow_count
        self._base_skipped = dict(self.counter.skipped)
        self._base_bytes_read = self._bytes_read_total
        # Per-pattern counters start from each pattern's count at process start; kept only when enabled.
        self._pattern_base = (
            {p.id: p.count for p in self.counter.table.values()} if self.cfg.metrics.pattern_series else {}
        )
        self._durable_events = self._events_at_cut = self.counter.events_total
        self._status_mark = (time.monotonic(), self.counter.events_total)
        self.writer = ck.JournalWriter(self.state_dir, generation, good_size, settings, self._on_result)
        if state.time:
            self.metrics.ckpt_last.set(state.time)
        if rec.needs_compaction and generation > 0:
            self._compactor = ck.start_compaction(self.state_dir, generation, self._on_result)

    def _archive(self, state: ck.State, old: ck.Settings, new: ck.Settings) -> None:
        """Pattern settings changed: the old counts cannot be continued, so keep them in a file."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = os.path.join(self.state_dir, f"archive-{stamp}-{old.digest}.json")
        from .report import patterns_document

        doc = patterns_document(state, old.key_fields)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(doc, indent=1).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        ck.fsync_dir(self.state_dir)
        self.log.warning(
            "pattern_settings_changed",
            old_digest=old.digest,
            new_digest=new.digest,
            archived_to=path,
            archived_patterns=len(state.patterns),
            note="offsets kept; counting starts again from zero for the new settings",
        )

    # --- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> int:
        cfg = self.cfg
        next_scan = time.monotonic() + cfg.sources.rescan_seconds
        full_scan_at = time.monotonic() + FULL_SCAN_SECONDS
        next_poll = time.monotonic()
        next_stats = 0.0
        stats_mark: tuple[int, ...] = ()
        if self.once:
            return self._drain_once()
        while not self._stop:
            now = time.monotonic()
            self.health.last_loop = now
            self.notifier.tick()
            if self._reload:
                self._reload = False
                self._do_reload()
                cfg = self.cfg
            self._handle_results()
            woke = now
            if self.watcher is not None:
                changed = self.watcher.drain()
                unknown = False
                for path in changed:
                    t = self.sources.by_path.get(path)
                    if t is not None:
                        self._to_read.add(t)
                    elif self.sources.could_match(path):
                        unknown = True
                if unknown:
                    next_scan = now
                    full_scan_at = now
            if now >= next_poll:
                # Polling every poll_seconds: every file when inotify is unavailable, else only files whose
                # path is gone (rotated away), which no directory watch reports on.
                polling = self.watcher is None or self.watcher.failed
                if polling:
                    self._to_read.update(self.sources.files.values())
                else:
                    self._to_read.update(t for t in self.sources.gone if t.gone_since is not None)
                next_poll = now + cfg.sources.poll_seconds
            if now >= next_scan:
                # While notifications work, a directory that did not change holds the same files, so
                # the glob and the stat of every file (most of an idle daemon's cost with 10,000
                # files) are only redone every FULL_SCAN_SECONDS, in case a notification was missed.
                watching = self.watcher is not None and not self.watcher.failed
                if not (watching and now < full_scan_at and self.sources.unchanged_since_scan()):
                    self._to_read.update(self.sources.scan(now))
                    full_scan_at = now + FULL_SCAN_SECONDS
                    self._scans += 1
                for t in self.sources.release_finished(now):
                    self._to_read.discard(t)
                self.sources.close_idle()
                next_scan = now + cfg.sources.rescan_seconds
            counted_before = self.counter.events_total
            if self._to_read:
                self._reads += 1
            more = self._read(self._to_read) if self._to_read else set()
            if self.counter.events_total > counted_before:
                self.metrics.ingest_delay.observe(time.monotonic() - woke)
                self.metrics.observe_counts(*self._totals())
            self._to_read = more
            self._maybe_cut(time_due=time.monotonic() - self._last_cut >= cfg.checkpoint.every_seconds)
            if now >= next_stats:
                # Nothing read, written or scanned since the last pass: the figures are the same, and
                # computing them walks every file.
                mark = (self._reads, self._seq, self._durable_events, self._scans, len(self.sources.files))
                if mark != stats_mark:
                    self._publish_stats()
                    stats_mark = mark
                next_stats = now + STATS_EVERY
            self.notifier.maybe_status(self._status_line)
            if more or self._stop:
                continue
            # A cut is only due when something changed; otherwise an idle daemon would spin here.
            cut_at = self._last_cut + cfg.checkpoint.every_seconds if self._dirty() else next_scan
            deadline = min(next_scan, cut_at, next_poll, next_stats)
            wd = self.notifier.next_deadline()
            if wd is not None:
                deadline = min(deadline, wd)
            timeout = max(0.0, deadline - time.monotonic())
            if timeout > 0:
                self.wake.wait(timeout)
            self.wake.clear()
        return EXIT_OK

    def _drain_once(self) -> int:
        """--once: read what the files hold now, then stop (the final checkpoint follows)."""
        files = set(self.sources.files.values())
        while files and not self._stop:
            files = self._read(files)
            self._handle_results()
            self._maybe_cut(time_due=time.monotonic() - self._last_cut >= self.cfg.checkpoint.every_seconds)
        return EXIT_OK

    def _read(self, files: set[TailedFile]) -> set[TailedFile]:
        """Read complete lines from each file, a bounded amount per file. Returns files with more to read."""
        more: set[TailedFile] = set()
        max_line = self.cfg.sources.max_line_bytes
        every = self.cfg.checkpoint.every_events
        counter, sources = self.counter, self.sources
        wall = time.time()
        now = time.monotonic()
        turn_ends = now + TURN_SECONDS
        pending = list(files)
        for i, t in enumerate(pending):
            if time.monotonic() > turn_ends:
                more.update(pending[i:])
                break
            if t.ident not in sources.files or not sources.ensure_open(t):
                continue
            try:
                why = t.check_truncated()
                if why:
                    sources._reset(t, why)
                for _ in range(BLOCKS_PER_TURN):
                    self.notifier.tick()
                    b = t.read_block(max_line)
                    if not b.consumed:
                        break
                    if b.too_long:
                        counter.skip(TOO_LONG, b.too_long)
                    if b.end:
                        counter.process_block(b.data, wall, b.end)
                    # Freed only after the next block is allocated: a freed 1 MiB block at the top of the
                    # heap is given back to the kernel by glibc and the next read faults its pages in
                    # again (35k page faults and ~0.3 s per 2M events, measured).
                    self._last_block = b.data
                    self._bytes_read_total += b.consumed
                    sources.dirty.add(t)
                    t.last_active = now
                    if counter.events_total - self._events_at_cut >= every:
                        self._handle_results()
                        self._maybe_cut(time_due=False)
                else:
                    more.add(t)
            except OSError as e:
                sources._error(t.path, "read_failed", e.strerror or str(e))
                sources.close_file(t)
        return more

    # --- checkpoints -------------------------------------------------------------------------------

    def _dirty(self) -> bool:
        s = self.sources
        return bool(self.counter.dirty or s.dirty or s.dropped or s.truncated_dirty)

    def _maybe_cut(self, time_due: bool) -> None:
        count_due = self.counter.events_total - self._events_at_cut >= self.cfg.checkpoint.every_events
        if (count_due or time_due) and self._dirty():
            self._cut()

    def _cut(self) -> bool:
        """Hand the writer one record of everything changed since the last one. While a record is still
        being written, changes keep accumulating and go out together in the next (group commit)."""
        if self._inflight is not None or self.writer is None:
            return False
        started = time.monotonic()
        self._seq += 1
        files = list(self.sources.dirty)
        dropped = list(self.sources.dropped)
        pats = list(self.counter.dirty)
        c = self.counter
        entries = [t.entry() for t in files]
        truncated = self.sources.truncated_entries() if self.sources.truncated_dirty else None
        delta = ck.Delta(
            self._seq,
            time.time(),
            ck.Totals(c.events_total, c.overflow_count, self._bytes_read_total, dict(c.skipped)),
            entries,
            dropped,
            pats,
            truncated,
        )
        payload = ck.encode_delta(delta)
        self._inflight = _Inflight(
            self._seq,
            c.events_total,
            [(t, e.offset) for t, e in zip(files, entries, strict=True)],
            dropped,
            pats,
            truncated is not None,
        )
        self.sources.dirty = set()
        self.sources.dropped = set()
        self.sources.truncated_dirty = False
        self.counter.dirty = set()
        self._events_at_cut = c.events_total
        self._last_cut = started
        self.writer.append(payload, self._seq, c.events_total, started)
        return True

    def _handle_results(self, block: bool = False) -> None:
        while True:
            try:
                r = self._results.get(block=block, timeout=30 if block else None)
            except queue.Empty:
                return
            block = False
            if r.kind == "append":
                self._append_done(r)
            elif r.kind == "rotate":
                self._rotating = False
                if r.ok:
                    self.log.info("journal_rotated", generation=r.generation)
                    self._compactor = ck.start_compaction(self.state_dir, r.generation, self._on_result)
                else:
                    self.log.error("journal_rotate_failed", generation=r.generation, error=r.error)
            else:
                self.metrics.compactions.labels("ok" if r.ok else "error").inc()
                self._compactor = None
                if r.ok:
                    self.log.info(
                        "checkpoint_compacted",
                        generation=r.generation,
                        bytes=r.nbytes,
                        seconds=round(r.duration, 3),
                    )
                else:
                    self.log.error("checkpoint_compaction_failed", generation=r.generation, error=r.error)

    def _append_done(self, r: ck.WriteResult) -> None:
        inf = self._inflight
        self._inflight = None
        assert inf is not None and inf.seq == r.seq
        self.metrics.checkpoint_written(r.ok, r.duration, r.nbytes, time.time())
        if r.ok:
            self._ckpt_durations.append(r.duration)
            self._durable_events = r.events_total
            for t, off in inf.files:
                t.committed = off
            if self._last_error_log:
                self.log.info("checkpoint_recovered", seq=r.seq)
                self._last_error_log = 0.0
            assert self.writer is not None
            if (
                self.writer.journal_bytes > self.cfg.checkpoint.compact_bytes
                and not self._rotating
                and self._compactor is None
            ):
                self._rotating = True
                self.writer.rotate(self.writer.generation + 1)
            return
        # Not durable: everything in the record goes into the next one (values are absolute).
        live = self.sources.files
        self.sources.dirty.update(t for t, _ in inf.files if live.get(t.ident) is t)
        self.sources.dropped.update(i for i in inf.dropped if i not in live)
        self.counter.dirty.update(inf.patterns)
        self.sources.truncated_dirty |= inf.truncated
        now = time.monotonic()
        if now - self._last_error_log > 60:
            self._last_error_log = now
            self.log.error(
                "checkpoint_write_failed",
                seq=r.seq,
                error=r.error,
                lag_events=self.counter.events_total - self._durable_events,
                note="reading goes on; the next checkpoint retries with everything since",
            )

    # --- reporting ---------------------------------------------------------------------------------

    def _lags(self) -> tuple[int, int, list[tuple[int, str]]]:
        """(read lag, checkpoint lag, per-file read lag) in bytes, from sizes seen at the last read."""
        read_lag = ckpt_lag = 0
        per_file: list[tuple[int, str]] = []
        for t in self.sources.files.values():
            size = t.size if t.size is not None else t.offset
            lag = max(0, size - t.offset)
            read_lag += lag
            ckpt_lag += max(0, size - t.committed)
            per_file.append((lag, t.path))
        return read_lag, ckpt_lag, per_file

    def _publish_stats(self) -> None:
        c, s = self.counter, self.sources
        read_lag, ckpt_lag, per_file = self._lags()
        # Files at zero lag are exported too (bounded by top_files): an empty panel reads as "broken".
        lags = heapq.nlargest(self.cfg.metrics.top_files, per_file)
        k = self.cfg.metrics.pattern_series
        top = (
            [(p.id, p.template or "", p.count - self._pattern_base.get(p.id, 0)) for p in c.top(k)]
            if k
            else []
        )
        events, overflow, bytes_read, lag_events = self._totals()
        st = Stats(
            events=events,
            overflow=overflow,
            bytes_read=bytes_read,
            skipped={r: n - self._base_skipped.get(r, 0) for r, n in c.skipped.items()},
            rotations=dict(s.rotations),
            source_errors=dict(s.errors),
            patterns=len(c.table),
            files=len(s.files),
            read_lag_bytes=read_lag,
            checkpoint_lag_bytes=ckpt_lag,
            checkpoint_lag_events=lag_events,
            file_lags=[(p, n) for n, p in lags],
            top_patterns=top,
        )
        self.metrics.observe(st)

    def _totals(self) -> tuple[int, int, int, int]:
        """Events, overflow events and bytes read since this process started, and the events counted but
        not yet durable: what Metrics.observe_counts takes."""
        c = self.counter
        return (
            c.events_total - self._base_events,
            c.overflow_count - self._base_overflow,
            self._bytes_read_total - self._base_bytes_read,
            c.events_total - self._durable_events,
        )

    def _status_line(self) -> str:
        now = time.monotonic()
        c = self.counter
        prev_t, prev_n = self._status_mark
        rate = (c.events_total - prev_n) / (now - prev_t) if now > prev_t else 0.0
        self._status_mark = (now, c.events_total)
        ckpt_lag = self._lags()[1]
        return format_status(len(self.sources.files), rate, c.events_total - self._durable_events, ckpt_lag)

    # --- reload and shutdown -------------------------------------------------------------------------

    def _do_reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, self.overrides)
        except ConfigError as e:
            self.log.error("reload_rejected", error=str(e), note="keeping the running config")
            self.notifier.ready(self._status_line())
            return
        if msgspec.structs.asdict(new.patterns) != msgspec.structs.asdict(self.cfg.patterns):
            self.log.warning(
                "reload_patterns_deferred",
                note="pattern settings change counts; they take effect at the next restart",
            )
            new = msgspec.structs.replace(new, patterns=self.cfg.patterns)
        if (
            new.checkpoint.state_dir != self.cfg.checkpoint.state_dir
            or new.metrics.listen != self.cfg.metrics.listen
        ):
            self.log.warning(
                "reload_restart_needed", note="state_dir and metrics.listen change at the next restart"
            )
            new = msgspec.structs.replace(
                new,
                checkpoint=msgspec.structs.replace(new.checkpoint, state_dir=self.cfg.checkpoint.state_dir),
                metrics=msgspec.structs.replace(new.metrics, listen=self.cfg.metrics.listen),
            )
        self.cfg = new
        configure_logging(new.log.format, new.log.level)
        self.sources.configure(new.sources)
        if self.watcher is not None:
            self.watcher.stop()
        self._start_watcher(watch_roots(new.sources.paths))
        self._to_read.update(self.sources.scan(time.monotonic()))
        self.log.info("reloaded", paths=new.sources.paths)
        self.notifier.ready(self._status_line())

    def _shutdown(self) -> int:
        self.notifier.stopping()
        self.notifier.extend_timeout(30)
        if self.watcher is not None:
            self.watcher.stop()
        code = EXIT_OK
        if self.writer is not None:
            # Wait for the record in flight, then commit everything after it.
            while self._inflight is not None:
                self._handle_results(block=True)
            if self._dirty() and self._cut():
                while self._inflight is not None:
                    self._handle_results(block=True)
            if self._durable_events != self.counter.events_total or self._dirty():
                self.log.error(
                    "final_checkpoint_failed", lag_events=self.counter.events_total - self._durable_events
                )
                code = EXIT_FAILURE
            if self._compactor is not None:
                self._compactor.join()
                self._handle_results()
            self.writer.close()
        self._publish_stats()
        self.sources.close_all()
        if self.http is not None:
            self.http.close()
        d = sorted(self._ckpt_durations)
        self.log.info(
            "stopped",
            events_total=self.counter.events_total,
            checkpoint_seq=self._seq,
            checkpoints_written=len(d),
            checkpoint_p50_ms=round(d[len(d) // 2] * 1000, 3) if d else None,
            checkpoint_p99_ms=round(d[min(len(d) - 1, len(d) * 99 // 100)] * 1000, 3) if d else None,
            checkpoint_max_ms=round(d[-1] * 1000, 3) if d else None,
        )
        return code
