"""The memory of a child process tree, sampled from ``/proc`` (Linux): the RSS of a process and
every descendant (e.g. ``nccurate run``, its Beam workers and the decode child), each one's
kernel high-water mark (``VmHWM``), and a runner that samples a command while it runs.

Summing RSS counts pages shared between processes (libraries) once per process: the tree
figure is conservative."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE")


def read_proc_table(proc: str = "/proc") -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, rss_bytes)}`` of every process, from ``/proc/<pid>/stat`` (processes that
    exit while being read are skipped)."""
    table = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # the command name may hold spaces and ')'
        table[int(name)] = (int(fields[1]), int(fields[21]) * _PAGE)
    return table


def tree_pids(table: dict[int, tuple[int, int]], root: int) -> list[int]:
    """``root`` and all its descendants in ``table`` (``{pid: (ppid, ...)}``), root first."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root] if root in table else []
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_rss(root: int) -> dict[int, int]:
    """``{pid: rss_bytes}`` of ``root`` and every descendant, now."""
    table = read_proc_table()
    return {pid: table[pid][1] for pid in tree_pids(table, root)}


def _hwm_bytes(pid: int) -> int | None:
    """The process's peak RSS so far (``VmHWM``), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _label(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
    except OSError:
        return f"pid {pid}"
    if len(argv) >= 3 and argv[1] == "-m":  # python -m pipeline.cli run / python -m pipeline.media.isolated
        sub = argv[3:4] if len(argv) > 3 and not argv[3].startswith(("-", "/")) else []
        return " ".join([os.path.basename(argv[0])] + argv[1:3] + sub)
    return " ".join([os.path.basename(argv[0])] + argv[1:2]) if argv else f"pid {pid}"


@dataclass
class TreeRssSampler:
    """Samples the RSS of ``root``'s process tree every ``interval_s`` in a thread.

    ``peak_tree_bytes``: max over samples of the tree's summed RSS; ``peak_process_bytes``: the
    largest RSS of one process seen in a sample; ``peak_hwm_bytes``: the largest ``VmHWM`` (the
    kernel's own peak, spikes between samples included) of any process of the tree;
    ``processes``: label, sampled peak and last high-water mark per pid; ``timeline``:
    ``(t_s, tree_bytes, n_processes)`` per sample."""

    root: int
    interval_s: float = 0.2
    peak_tree_bytes: int = 0
    peak_tree_at_s: float = 0.0
    peak_process_bytes: int = 0
    peak_hwm_bytes: int = 0
    samples: int = 0
    processes: dict = field(default_factory=dict)
    timeline: list = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.perf_counter()

    def sample(self) -> int:
        """Take one sample now; returns the tree's summed RSS in bytes."""
        rss = tree_rss(self.root)
        total = sum(rss.values())
        t_s = time.perf_counter() - self._t0
        for pid, value in rss.items():
            info = self.processes.setdefault(pid, {"label": _label(pid), "peak_rss_bytes": 0, "hwm_bytes": 0})
            info["peak_rss_bytes"] = max(info["peak_rss_bytes"], value)
            hwm = _hwm_bytes(pid)
            if hwm is not None:
                info["hwm_bytes"] = max(info["hwm_bytes"], hwm)
                self.peak_hwm_bytes = max(self.peak_hwm_bytes, hwm)
            self.peak_process_bytes = max(self.peak_process_bytes, value)
        if total > self.peak_tree_bytes:
            self.peak_tree_bytes, self.peak_tree_at_s = total, t_s
        self.samples += 1
        self.timeline.append((round(t_s, 2), total, len(rss)))
        return total

    def _loop(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> "TreeRssSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], log_path: str, interval_s: float = 0.2, env: dict | None = None):
    """Run ``cmd`` (stdout and stderr to ``log_path``) while sampling its process tree.
    Returns ``(returncode, wall_s, sampler)``."""
    with open(log_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = TreeRssSampler(proc.pid, interval_s).start()
        try:
            returncode = proc.wait()
        finally:
            sampler.stop()
        return returncode, time.perf_counter() - t0, sampler
