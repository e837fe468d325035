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
from types import FrameType
from typing import Any

import msgspec

from . import checkpoint as ck
from . import listener, typed_values
from .commit import Changes, Committer
from .config import Config, ConfigError, Overrides, load_config
from .discovery import watch_roots
from .entry import stop_requested
from .events import TOO_LONG
from .exported import ExportRider, load_offsets
from .exported import archive as archive_offsets
from .httpserver import HttpServer
from .listener import Health
from .lock import LockHeld, LockUnsafe, StateLock
from .logs import configure as configure_logging
from .metrics import Metrics, Stats
from .notify import Notifier, format_status
from .patterns import Extractor, PatternCounter
from .reader import TailedFile
from .series_policy import SeriesSlots
from .sources import SourceSet
from .wakeup import Wakeup
from .watcher import Watcher
from .webconfig import WebConfigError

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
        self.metrics = Metrics(cfg.patterns.max_patterns, cfg.patterns.key_fields, cfg.metrics.pattern_series)
        # Which patterns get their own series: committed state (series_policy.py)
        self.slots = SeriesSlots(cfg.metrics.pattern_series, cfg.metrics.pattern_series_min_events)
        self.http: HttpServer | None = None
        self.watcher: Watcher | None = None
        self._watched: list[tuple[str, bool]] = []
        self.writer: ck.JournalWriter | None = None
        self.committer: Committer | None = None
        self._compactor: threading.Thread | None = None
        self._rotating = False
        # Counted for the stats pass, which skips its work when none of these moved.
        self._reads = 0
        self._scans = 0
        # Durations of the checkpoints written by this process (the latest ones), for the summary
        # logged at stop: benchmarks read it, the histogram metric cannot give exact quantiles.
        self._ckpt_durations: collections.deque[float] = collections.deque(maxlen=100_000)
        self._last_error_log = 0.0
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
        if stop_requested():  # SIGTERM while the modules were still loading (entry.py)
            self._stop = True

    def _on_result(self, r: ck.WriteResult) -> None:
        self._results.put(r)
        self.wake.set()

    def run(self) -> int:
        self._install_signals()
        try:
            os.makedirs(self.state_dir, mode=ck.DIR_MODE, exist_ok=True)
            ck.secure_state_dir(self.state_dir)
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
        if not self.once:
            try:
                self.http = listener.serve(
                    self.cfg,
                    self.metrics,
                    self.health,
                    lambda e: self.log.error("web_config", error=e),
                )
            except WebConfigError as e:
                self.log.error("metrics_web_config_invalid", error=str(e), key="metrics.web_config")
                return EXIT_USAGE
            except OSError as e:
                self.log.error(
                    "metrics_listen_failed",
                    listen=self.cfg.metrics.listen,
                    error=e.strerror or str(e),
                    hint="set metrics.listen or --metrics-listen",
                )
                return EXIT_FAILURE
            if self.http is not None:
                self.log.info("metrics_listening", url=self.http.url() + "/metrics")
        self.notifier.extend_timeout(90)
        try:
            self._recover()
        except ck.CheckpointUnreadable as e:
            self.log.error("recovery_failed", state_dir=self.state_dir, path=e.path, error=str(e))
            return EXIT_FAILURE
        except OSError as e:
            self.log.error("recovery_failed", state_dir=self.state_dir, error=e.strerror or str(e))
            return EXIT_FAILURE
        self._to_read: set[TailedFile] = set(self.sources.scan(time.monotonic()))
        if not self.once:
            self._start_watcher()
        self.health.ready = True
        self.notifier.ready(self._status_line())
        self.log.info(
            "ready",
            files=len(self.sources.files),
            patterns=self.counter.live_count,
            events_total=self.counter.events_total,
            # whether the hot path's cache key runs in C (telemetryd._stage0 built) or in Python
            pattern_keys_in_c=typed_values.ACCELERATED,
        )
        try:
            code = self._loop()
        except BaseException as e:
            # Counts and offsets may disagree after an error in the middle of a block: commit nothing
            # more. The last durable record stands; the next start reads on from its offsets.
            self.log.exception(
                "crashed", error=repr(e), note="no final checkpoint; a restart resumes from the last durable"
            )
            self._shutdown(commit=False)
            if not isinstance(e, Exception):
                raise
            return EXIT_FAILURE
        return code or self._shutdown(commit=True)

    def _start_watcher(self) -> None:
        """(Re)start the watcher on the glob roots that exist now; stops the one running, if any."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        existing = self._existing_roots()
        self._watched = existing
        if self.cfg.sources.watch == "poll" or not existing:
            return
        self.watcher = Watcher(existing, self.wake, self.log)
        self.log.info("watching", roots=[r for r, _ in existing])

    def _existing_roots(self) -> list[tuple[str, bool]]:
        return [(r, rec) for r, rec in watch_roots(self.cfg.sources.paths) if os.path.isdir(r)]

    def _watch_new_roots(self) -> None:
        """A glob directory created (or removed) since the watcher started: watch what exists now, so its
        files are followed by notices, not only by rescans."""
        if self.once or self.cfg.sources.watch == "poll":
            return
        if self._existing_roots() != self._watched:
            self._start_watcher()

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
        changes = Changes()
        self.sources = SourceSet(self.cfg.sources, self.log, changes)
        state = rec.state
        self.sources.load(state.files.values(), state.truncated, state.outside)
        generation, good_size = rec.journal_gen, rec.journal_good_size
        old = state.settings
        if old is not None and old.digest != settings.digest:
            self._archive(state, old, settings)
            # The exported counters continue from offsets made durable before the reset is.
            mark = f"{old.digest}:{state.seq}:{state.totals.events}"
            totals = (state.totals.events, state.totals.overflow)
            archive_offsets(self.state_dir, state.patterns.values(), totals, mark, old.key_fields)
            state.patterns = {}
            state.totals = ck.Totals(0, 0, state.totals.bytes_read, dict(state.totals.skipped))
            generation += 1
            state.settings = settings
            ck.write_snapshot(self.state_dir, state.to_snapshot(generation))
            good_size = None
            rec.needs_compaction = False
            self.metrics.settings_changes.inc()
        self.counter.restore(state.patterns, state.totals.events, state.totals.overflow, state.totals.skipped)
        # The since-start counters (events read, bytes read) count from the restored totals.
        self._base_events = self.counter.events_total
        self._base_bytes_read = state.totals.bytes_read
        # The exported counters start from the recovered (durable) state, before any scrape sees them
        c = self.counter
        self.slots.recovered(c.table)
        self.metrics.exported.recovered(
            load_offsets(self.state_dir),
            c.events_total,
            c.overflow_count,
            c.skipped,
            len(c.table),
            self.slots.held,
            self.slots.recent,
        )
        self._status_mark = (time.monotonic(), self.counter.events_total)
        self.writer = ck.JournalWriter(self.state_dir, generation, good_size, settings, self._on_result)
        self.committer = Committer(self.writer, self.counter, state.seq, state.totals.bytes_read, changes)
        # Series grants and the exported counters ride with every record
        self.committer.riders.append(ExportRider(self.metrics.exported, self.slots, self.counter))
        self.recovered = state
        if state.time:
            self.metrics.ckpt_last.set(state.time)
        if rec.needs_compaction and generation > 0:
            self._compactor = ck.start_compaction(self.state_dir, generation, self._on_result)

    def _archive(self, state: ck.State, old: ck.Settings, new: ck.Settings) -> None:
        """Pattern settings changed: the old counts cannot be continued, so keep them in a file."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        from .report import patterns_document

        doc = patterns_document(state, old.key_fields)
        path = ck.write_file_durably(
            self.state_dir, f"archive-{stamp}-{old.digest}.json", json.dumps(doc, indent=1).encode()
        )
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
                if changed:
                    # Each notice is checked against the identity behind its path at once: a rotation is
                    # followed within the latency of a notice, not at the next rescan.
                    self._to_read.update(self.sources.on_notice(changed, now))
            if now >= next_poll:
                # Polling every poll_seconds: every file and path when inotify is unavailable, else only the
                # files no notice brings (rotated away, held while a copy decision is timed).
                if self.watcher is None or self.watcher.failed:
                    # No notices: a directory whose entries changed is scanned now (new files, renames);
                    # otherwise one stat per known path checks the identity behind it.
                    if self.sources.dirs_changed():
                        self._to_read.update(self.sources.scan(now))
                        self._scans += 1
                    else:
                        self._to_read.update(self.sources.check_paths(now))
                self._to_read.update(self.sources.waiting())
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
                self._watch_new_roots()
                next_scan = now + cfg.sources.rescan_seconds
            self._to_read.update(self.sources.take_ready())
            counted_before = self.counter.events_total
            if self._to_read:
                self._reads += 1
            more = self._read(self._to_read) if self._to_read else set()
            if self.counter.events_total > counted_before:
                self.metrics.ingest_delay.observe(time.monotonic() - woke)
                self.metrics.observe_counts(*self._totals())
            self._to_read = more
            self._maybe_cut()
            if now >= next_stats:
                # Nothing read, written or scanned since the last pass: the figures are the same, and
                # computing them walks every file.
                com = self._com
                mark = (self._reads, com.seq, com.durable_events, self._scans, len(self.sources.files))
                if mark != stats_mark:
                    self._publish_stats()
                    stats_mark = mark
                next_stats = now + STATS_EVERY
            self.notifier.maybe_status(self._status_line)
            if more or self._stop:
                continue
            # A cut is only due when something changed; otherwise an idle daemon would spin here.
            com = self._com
            if not com.dirty():
                cut_at = next_scan
            elif com.changes.urgent and not com.in_flight:
                cut_at = now
            else:
                cut_at = com.last_cut + cfg.checkpoint.every_seconds
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
            self._maybe_cut()
        return EXIT_OK

    @property
    def _com(self) -> Committer:
        assert self.committer is not None
        return self.committer

    def _read(self, files: set[TailedFile]) -> set[TailedFile]:
        """Read complete lines from each file, a bounded amount per file. Returns files with more to read.

        Per block: read (moves nothing), count, then advance the file: a checkpoint cut between two
        blocks sees offsets and counts of the same instant, and an error before the advance leaves the
        block to be read again."""
        more: set[TailedFile] = set()
        max_line = self.cfg.sources.max_line_bytes
        every = self.cfg.checkpoint.every_events
        counter, sources, com = self.counter, self.sources, self._com
        changes = com.changes
        wall = time.time()
        now = time.monotonic()
        turn_ends = now + TURN_SECONDS
        pending = list(files)
        for i, t in enumerate(pending):
            if time.monotonic() > turn_ends:
                more.update(pending[i:])
                break
            try:
                if not sources.prepare(t, now):
                    continue
                for _ in range(BLOCKS_PER_TURN):
                    self.notifier.tick()
                    b = t.read_block(max_line)
                    if b is None:
                        break
                    if b.too_long:
                        counter.skip(TOO_LONG, b.too_long)
                    if b.end:
                        counter.process_block(b.data, wall, b.end)
                    t.advance(b)
                    changes.file(t)
                    com.bytes_read += b.consumed
                    # Freed only after the next block is allocated: a freed 1 MiB block at the top of the
                    # heap is given back to the kernel by glibc and the next read faults its pages in
                    # again (35k page faults and ~0.3 s per 2M events, measured).
                    self._last_block = b.data
                    t.last_active = now
                    if counter.events_total - com.events_at_cut >= every:
                        self._handle_results()
                        self._maybe_cut()
                else:
                    more.add(t)
            except OSError as e:
                sources.read_failed(t, e)
        return more

    # --- checkpoints -------------------------------------------------------------------------------

    def _maybe_cut(self) -> None:
        c = self.cfg.checkpoint
        if self._com.due(c.every_events, c.every_seconds, time.monotonic()):
            self._com.cut()

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
        done = self._com.finished(r, self.sources.files)
        self.metrics.checkpoint_written(r.ok, r.duration, r.nbytes, time.time())
        if done.ok:
            self._ckpt_durations.append(r.duration)
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
        now = time.monotonic()
        if now - self._last_error_log > 60:
            self._last_error_log = now
            self.log.error(
                "checkpoint_write_failed",
                seq=r.seq,
                error=r.error,
                lag_events=done.lag_events,
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
        events, bytes_read, lag_events = self._totals()
        st = Stats(
            events=events,
            bytes_read=bytes_read,
            rotations=dict(s.rotations),
            source_errors=dict(s.errors),
            patterns=c.live_count,
            files=len(s.files),
            read_lag_bytes=read_lag,
            checkpoint_lag_bytes=ckpt_lag,
            checkpoint_lag_events=lag_events,
            file_lags=[(p, n) for n, p in lags],
            truncate_loss_windows=s.loss_windows,
        )
        self.metrics.observe(st)

    def _totals(self) -> tuple[int, int, int]:
        """Events and bytes read since this process started, and the events counted but not yet durable:
        what Metrics.observe_counts takes (the committed counters are exported.py's)."""
        c = self.counter
        return (
            c.events_total - self._base_events,
            self._com.bytes_read - self._base_bytes_read,
            c.events_total - self._com.durable_events,
        )

    def _status_line(self) -> str:
        now = time.monotonic()
        c = self.counter
        prev_t, prev_n = self._status_mark
        rate = (c.events_total - prev_n) / (now - prev_t) if now > prev_t else 0.0
        self._status_mark = (now, c.events_total)
        ckpt_lag = self._lags()[1]
        lag = c.events_total - self._com.durable_events
        return format_status(len(self.sources.files), rate, lag, ckpt_lag)

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
        if new.checkpoint.state_dir != self.cfg.checkpoint.state_dir or new.metrics != self.cfg.metrics:
            # The listener (address, TLS, socket) and the per-pattern series are set up once, at start.
            self.log.warning(
                "reload_restart_needed", note="state_dir and the [metrics] keys change at the next restart"
            )
            new = msgspec.structs.replace(
                new,
                checkpoint=msgspec.structs.replace(new.checkpoint, state_dir=self.cfg.checkpoint.state_dir),
                metrics=self.cfg.metrics,
            )
        self.cfg = new
        configure_logging(new.log.format, new.log.level)
        # Every part that holds a copy of a setting takes the new value here.
        self.sources.configure(new.sources)
        self.counter.max_line_bytes = new.sources.max_line_bytes
        if not self.once:
            self._start_watcher()
        self._to_read.update(self.sources.scan(time.monotonic()))
        self.log.info("reloaded", paths=new.sources.paths)
        self.notifier.ready(self._status_line())

    def _shutdown(self, commit: bool) -> int:
        """Stop. With commit, everything counted goes into a final record; without (after an unexpected
        error), only the record already in flight is waited for: it was cut between blocks."""
        self.notifier.stopping()
        self.notifier.extend_timeout(30)
        if self.watcher is not None:
            self.watcher.stop()
        code = EXIT_OK
        com = self.committer
        if self.writer is not None and com is not None:
            while com.in_flight:
                self._handle_results(block=True)
            if commit:
                if com.dirty() and com.cut():
                    while com.in_flight:
                        self._handle_results(block=True)
                if com.durable_events != self.counter.events_total or com.dirty():
                    self.log.error(
                        "final_checkpoint_failed", lag_events=self.counter.events_total - com.durable_events
                    )
                    code = EXIT_FAILURE
            if self._compactor is not None:
                self._compactor.join()
                self._handle_results()
            self.writer.close()
        if not commit:
            self.sources.close_all()
            if self.http is not None:
                self.http.close()
            return EXIT_FAILURE
        self._publish_stats()
        self.sources.close_all()
        if self.http is not None:
            self.http.close()
        d = sorted(self._ckpt_durations)
        self.log.info(
            "stopped",
            events_total=self.counter.events_total,
            checkpoint_seq=self._com.seq,
            checkpoints_written=len(d),
            checkpoint_p50_ms=round(d[len(d) // 2] * 1000, 3) if d else None,
            checkpoint_p99_ms=round(d[min(len(d) - 1, len(d) * 99 // 100)] * 1000, 3) if d else None,
            checkpoint_max_ms=round(d[-1] * 1000, 3) if d else None,
        )
        return code
