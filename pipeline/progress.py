"""Live progress of a run, seen from the driver: videos done / total, rate, ETA, failures.

The driver of a Beam pipeline cannot see its elements, but every finished video leaves its
result checkpoint ``OUT/_work/results/{video_id}.tar`` (``pipeline.outputs.checkpoint``; written when
``checkpoints: true``, the default), on every runner, since ``OUT`` is a filesystem the driver
shares. :class:`ResultPoller` lists that directory from a thread of the driver, reads the
``result.json`` member of each new tar once (its outcome says whether the video failed) and
hands a :class:`Progress` snapshot to a callable, such as :class:`StreamProgress`, which writes
``nccurate run``'s progress lines to stderr. With checkpoints off, the poller only reports the
start and the end.

The line text and the ETA are pure functions (:func:`format_progress`, :func:`rate_per_s`,
:func:`eta_s`, :func:`plain_line_due`)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.storage import files

#: Snapshot states: the run is going; it finished (counts from ``summary.json``); it stopped
#: early (an error: the last counts seen).
RUNNING, DONE, STOPPED = "running", "done", "stopped"


@dataclass(frozen=True)
class Progress:
    """One snapshot: ``done`` videos of ``total`` manifest rows, ``failed`` of them failed,
    ``resumed`` of them restored from an earlier attempt's checkpoints, ``elapsed_s`` seconds
    since this attempt started. ``live``: counts are seen as the run goes (checkpoints on)."""

    done: int
    total: int
    failed: int
    elapsed_s: float
    resumed: int = 0
    state: str = RUNNING
    live: bool = True

    def line(self) -> str:
        return format_progress(self.done, self.total, self.failed, self.elapsed_s, self.resumed, self.state, self.live)


def rate_per_s(done: int, elapsed_s: float, resumed: int = 0) -> float | None:
    """Videos per second of this attempt: ``(done - resumed) / elapsed_s`` (restored videos
    took no time); None before the first video of this attempt is done."""
    if elapsed_s <= 0 or done <= resumed:
        return None
    return (done - resumed) / elapsed_s


def eta_s(done: int, total: int, elapsed_s: float, resumed: int = 0) -> float | None:
    """Seconds left at the current rate: ``(total - done) / rate``; None while the rate is unknown."""
    rate = rate_per_s(done, elapsed_s, resumed)
    return None if rate is None else max(total - done, 0) / rate


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h03m``; ``?`` for None."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_progress(done: int, total: int, failed: int, elapsed_s: float, resumed: int = 0,
                    state: str = RUNNING, live: bool = True) -> str:
    """The progress line, e.g. ``progress: 120/500 videos (24%), 3 failed, 12.3 videos/s,
    ETA 31s, 40 resumed``. A finished run says ``done in`` its elapsed time instead of the
    ETA, a stopped one ``stopped after`` it; a run without live counts (checkpoints off)
    starts with a line that says so."""
    if not live and state == RUNNING:
        return f"progress: {total} videos to curate (no live progress: it needs checkpoints: true)"
    percent = 100 * done // total if total else 100
    rate = rate_per_s(done, elapsed_s, resumed)
    parts = [f"progress: {done}/{total} videos ({percent}%)", f"{failed} failed",
             "? videos/s" if rate is None else f"{rate:.1f} videos/s"]
    if state == RUNNING:
        parts.append(f"ETA {format_duration(eta_s(done, total, elapsed_s, resumed))}")
    else:
        parts.append(f"{'done in' if state == DONE else 'stopped after'} {format_duration(elapsed_s)}")
    if resumed:
        parts.append(f"{resumed} resumed")
    return ", ".join(parts)


def plain_line_due(now_s: float, last_s: float, done: int, last_done: int, total: int,
                   interval_s: float = 10.0, step: float = 0.05, heartbeat_s: float = 300.0) -> bool:
    """Whether a plain (not a terminal) log gets a new line: at least ``interval_s`` since the
    last one, and either ``step`` of the total done since it (at least one video) or
    ``heartbeat_s`` without a line. So a log holds at most about ``1/step`` lines of progress
    plus one per ``heartbeat_s``, and never one more often than every ``interval_s``."""
    if now_s - last_s < interval_s:
        return False
    return done - last_done >= max(1.0, step * total) or now_s - last_s >= heartbeat_s


class StreamProgress:
    """Renders :class:`Progress` snapshots on ``stream`` (default: ``sys.stderr`` at each
    call). On a terminal: one line rewritten in place (``\\r``) at most every ``tty_every_s``,
    ended with a newline at the end. Elsewhere (CI logs, pipes): plain lines, never ``\\r``:
    the first snapshot, then as :func:`plain_line_due` says, then the last one."""

    def __init__(self, stream=None, tty: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 tty_every_s: float = 0.25, interval_s: float = 10.0, step: float = 0.05, heartbeat_s: float = 300.0):
        self.stream, self.tty, self.clock = stream, tty, clock
        self.tty_every_s, self.interval_s, self.step, self.heartbeat_s = tty_every_s, interval_s, step, heartbeat_s
        self._last_s: float | None = None
        self._last_done = 0
        self._width = 0

    def _due(self, snapshot: Progress, now: float, tty: bool) -> bool:
        if snapshot.state != RUNNING or self._last_s is None:
            return True
        if tty:
            return now - self._last_s >= self.tty_every_s
        return plain_line_due(now, self._last_s, snapshot.done, self._last_done, snapshot.total,
                              self.interval_s, self.step, self.heartbeat_s)

    def __call__(self, snapshot: Progress) -> None:
        stream = self.stream or sys.stderr
        tty = self.tty if self.tty is not None else bool(getattr(stream, "isatty", lambda: False)())
        now, final = self.clock(), snapshot.state != RUNNING
        if not self._due(snapshot, now, tty):
            return
        line = snapshot.line()
        if tty:
            stream.write("\r" + line.ljust(self._width) + ("\n" if final else ""))
            self._width = 0 if final else len(line)
        else:
            stream.write(line + "\n")
        stream.flush()
        self._last_s, self._last_done = now, snapshot.done


def _result_failed(path: str) -> bool | None:
    """Whether the result checkpoint at ``path`` is a failed video (its outcome counts
    ``videos_failed``); None when it cannot be read."""
    from pipeline.outputs.checkpoint import result_outcome

    outcome = result_outcome(path)
    return None if outcome is None else not outcome.ok


class ResultPoller:
    """Counts the result checkpoints in ``results_dir`` (None: checkpoints are off) and gives
    ``progress`` a :class:`Progress` at :meth:`start`, after each poll and at :meth:`stop`.

    A poll lists the directory (a video is done once its tar is there; results present at the
    start were restored by a resume), then reads new tars' outcomes for ``read_budget_s`` at
    most, so the failure count of a large resume catches up over a few polls. Polls come every
    ``poll_s``, and at least ten listing times apart, so a huge directory costs a tenth of a
    core at most."""

    def __init__(self, results_dir: str | None, total: int, progress: Callable[[Progress], None],
                 poll_s: float = 0.5, read_budget_s: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.results_dir, self.total, self.progress, self.clock = results_dir, total, progress, clock
        self.poll_s, self.read_budget_s = poll_s, read_budget_s
        self._seen: set[str] = set()
        self._unread: list[str] = []
        self._failed = 0
        self._resumed = 0
        self._list_s = 0.0
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self, state: str = RUNNING) -> Progress:
        return Progress(len(self._seen), self.total, self._failed, self.clock() - self._started, self._resumed,
                        state, live=self.results_dir is not None)

    def _list(self) -> None:
        """Add the tars not seen before (a checkpoint being written has a temporary name)."""
        began = time.monotonic()
        try:  # a local folder or a store's prefix; [] when not there yet (a fresh run) or removed
            names = [name for name in files.listdir(self.results_dir) if name.endswith(".tar")]
        except OSError:
            names = []
        new = [name for name in names if name not in self._seen]
        self._seen.update(new)
        self._unread.extend(new)
        self._list_s = time.monotonic() - began

    def poll(self) -> Progress:
        """List ``results_dir`` once, read unread outcomes for ``read_budget_s`` (at least one);
        the snapshot after it."""
        if self.results_dir is not None:
            self._list()
            deadline = time.monotonic() + self.read_budget_s
            while self._unread:  # at least one a poll
                self._failed += bool(_result_failed(files.join(self.results_dir, self._unread.pop())))
                if time.monotonic() >= deadline:
                    break
        return self.snapshot()

    def start(self) -> None:
        """Count what an earlier attempt finished, report, and poll in a daemon thread."""
        self._started = self.clock()
        if self.results_dir is not None:
            self._list()
            self._resumed = len(self._seen)
            self._thread = threading.Thread(target=self._loop, name="nccurate-progress", daemon=True)
        self.progress(self.snapshot())
        if self._thread is not None:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(max(self.poll_s, 10 * self._list_s)):
            try:
                self.progress(self.poll())
            except (OSError, ValueError):  # a closed or broken stderr ends the progress, not the run
                return

    def stop(self, summary: dict | None = None) -> None:
        """End the thread (nothing is reported after this returns but the end) and report the
        end: the counts of ``summary`` (``summary.json``'s content) when the run finished, else
        the last ones seen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if summary is None:
            self.poll()
            self.progress(self.snapshot(STOPPED))
            return
        self.progress(Progress(summary["videos_in"], summary["videos_in"], summary["videos_failed"],
                               self.clock() - self._started, summary["resumed"]["videos"], DONE,
                               live=self.results_dir is not None))
