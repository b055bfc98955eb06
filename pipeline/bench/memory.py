"""``nccurate bench memory``: peak memory of a whole video-mode run on one long video.

The budget: a 1-hour 720p video goes through video mode (decode, embed, realign, cut clips,
write shards) with the peak RSS of the *whole run* at most 2 GB (2 * 10**9 bytes, the stricter
reading of "GB"). This is a benchmark: it prints numbers and PASS/FAIL as information and never
asserts on time.

What it does, all under ``--workdir``:

1. Writes (or reuses) the long synthetic video, its HowTo100M-style captions (one about every
   6 s) and a manifest (:mod:`pipeline.synth.long_video`).
2. Runs ``python -m pipeline.cli run --manifest ... --output ... --overwrite --config
   WORKDIR/config-<model>-<backend>.yaml`` as a child process: the given config with ``model``
   at random init, ``decode.backend``, a decode timeout of at least the video's length and every
   caption kept (:data:`pipeline.bench.runs.KEEP_ALL`: each caption's clip is cut and sharded).
   Every ``interval_s`` it samples the RSS of the whole process tree (the run and every
   descendant, e.g. the decode child) and each process's own high-water mark
   (:mod:`pipeline.bench.proctree`), so a spike shorter than the sampling interval still shows
   in the largest-process figure.
3. Prints peak tree RSS (sum over the tree at each sample, max over time), the largest single
   process (sampled and high-water mark), wall time, video-seconds per second, the kept
   captions/samples of ``OUT/summary.json`` and PASS/FAIL against the budget, and writes the
   same numbers to ``WORKDIR/memory.json`` (and ``WORKDIR/memory-<model>-<backend>.json``).

The default frame rate is 25 fps (PAL, a common upload rate): lower rates generate faster but
make decoding (every frame of a GOP is decoded to reach a sample) unrealistically cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from pipeline.config import Config
from pipeline.outputs.layout import OutputLayout

#: The memory budget of a whole run: 2 GB.
BUDGET_BYTES = 2 * 10**9


@dataclass
class MemoryResult:
    model: str
    backend: str
    duration_s: float
    width: int
    height: int
    fps: float
    video_bytes: int
    generation_s: float | None
    returncode: int
    wall_s: float
    video_s_per_s: float
    peak_tree_rss_bytes: int
    peak_tree_at_s: float
    peak_process_rss_bytes: int
    peak_process_hwm_bytes: int
    largest_process: str
    samples: int
    interval_s: float
    budget_bytes: int
    passed: bool
    captions_in: int | None = None
    captions_kept: int | None = None
    samples_written: int | None = None
    processes: list = field(default_factory=list)
    command: list = field(default_factory=list)
    timeline: list = field(default_factory=list)


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.0f} MB"


def report(r: MemoryResult) -> str:
    lines = [
        f"nccurate bench memory: {r.duration_s:g} s of {r.width}x{r.height} at {r.fps:g} fps "
        f"({r.video_bytes / 1e6:,.0f} MB, generated in "
        f"{'n/a' if r.generation_s is None else f'{r.generation_s:.0f} s'}); model {r.model} (random init), "
        f"decode backend {r.backend}",
        f"  peak RSS of the process tree: {_mb(r.peak_tree_rss_bytes)} (at {r.peak_tree_at_s:.0f} s; "
        f"{r.samples} samples every {r.interval_s:g} s)",
        f"  largest single process: {_mb(r.peak_process_rss_bytes)} sampled, {_mb(r.peak_process_hwm_bytes)} "
        f"high-water mark ({r.largest_process})",
    ]
    for p in r.processes:
        lines.append(f"    {p['label']}: peak {_mb(p['peak_rss_bytes'])} sampled, {_mb(p['hwm_bytes'])} high-water")
    lines += [
        f"  wall time: {r.wall_s:.0f} s; {r.video_s_per_s:.1f} video-seconds per second (exit status {r.returncode})",
        f"  captions kept: {r.captions_kept} of {r.captions_in}; samples written: {r.samples_written}",
        f"  budget {_mb(r.budget_bytes)}: {'PASS' if r.passed else 'FAIL'} (peak tree RSS "
        f"{r.peak_tree_rss_bytes / r.budget_bytes:.0%} of the budget)",
    ]
    return "\n".join(lines)


def bench_memory(config: Config, workdir: str, duration_s: float = 3600.0, width: int = 1280, height: int = 720,
                 fps: float = 25.0, model: str = "nccurate-tiny", backend: str = "pyav", interval_s: float = 0.2,
                 budget_bytes: int = BUDGET_BYTES, log=print) -> tuple[str, MemoryResult]:
    """Generate (or reuse) the inputs, run the pipeline as a child with ``config`` (``model`` at
    random init, ``backend``, every caption kept) and measure it. Returns the printed report
    and the result (also written to ``workdir/memory.json``)."""
    from pipeline.bench.proctree import run_measured
    from pipeline.bench.runs import KEEP_ALL, run_command, write_run_config
    from pipeline.media.isolated import child_env
    from pipeline.synth.long_video import write_inputs

    workdir = os.path.abspath(workdir)
    inputs = write_inputs(workdir, duration_s, width, height, fps, log)
    label = f"{model}-{backend}".replace("/", "_")
    output = os.path.join(workdir, f"out-{label}")
    timeout_s = max(600.0, float(duration_s))  # decoding runs far faster than real time
    config_path = os.path.join(workdir, f"config-{label}.yaml")
    write_run_config(config, (f"model.name={model}", "model.pretrained=null", f"decode.backend={backend}",
                              f"decode_timeout_s={timeout_s:g}", *KEEP_ALL), config_path)
    cmd = run_command(inputs["manifest"], output, config_path)
    env = child_env()
    log(f"running {' '.join(cmd[1:])} ...")
    log_path = os.path.join(workdir, f"run-{label}.log")
    returncode, wall_s, sampler = run_measured(cmd, log_path, interval_s, env)
    summary = {}
    summary_path = OutputLayout(output).summary
    if returncode == 0 and os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
    else:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            log(f"the run failed (exit status {returncode}); last lines of {log_path}:\n" + "".join(handle.readlines()[-15:]))
    procs = sorted(sampler.processes.values(), key=lambda p: -max(p["hwm_bytes"], p["peak_rss_bytes"]))
    result = MemoryResult(
        model=model, backend=backend, duration_s=duration_s, width=width, height=height, fps=fps,
        video_bytes=inputs["video_bytes"], generation_s=inputs["generation_s"], returncode=returncode,
        wall_s=round(wall_s, 1), video_s_per_s=round(duration_s / wall_s, 2),
        peak_tree_rss_bytes=sampler.peak_tree_bytes, peak_tree_at_s=round(sampler.peak_tree_at_s, 1),
        peak_process_rss_bytes=sampler.peak_process_bytes, peak_process_hwm_bytes=sampler.peak_hwm_bytes,
        largest_process=procs[0]["label"] if procs else "", samples=sampler.samples, interval_s=interval_s,
        budget_bytes=budget_bytes, passed=returncode == 0 and max(sampler.peak_tree_bytes, sampler.peak_hwm_bytes) <= budget_bytes,
        captions_in=summary.get("captions_in"), captions_kept=summary.get("captions_kept"),
        samples_written=summary.get("samples_written"), processes=procs, command=cmd, timeline=sampler.timeline)
    numbers = asdict(result)
    timeline = numbers.pop("timeline")  # (t_s, tree_bytes, n_processes) per sample, on one line
    text = json.dumps(numbers, indent=1)[:-2] + f',\n "timeline": {json.dumps(timeline)}\n}}\n'
    for name in ("memory.json", f"memory-{label}.json"):
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    return report(result), result
