"""``nccurate bench throughput --mode decode``: the PyAV decoder's 1-fps sampling cost against a
plain sequential PyAV pass, on B-frame H.264 at two group lengths, measured interleaved in one
run on one decoder thread, in process (printed numbers, never assertions).

Per video and round, one after the other (load that comes and goes hits them alike):

* **plain PyAV** (the reference, :func:`pipeline.bench.video.plain_sequential_decode`): every
  frame decoded, the first at or after each sample time converted to full-size RGB;
* **sequential pass**: nccurate's fallback, every frame decoded, the nearest picked and cropped;
* **group tails skipped**: the keyframe-aware path without leaving out unreferenced pictures
  (nccurate before they were);
* **default**: the keyframe-aware path as the pipeline runs it (group tails and unreferenced
  pictures left out unless picked);
* **approximate** (``decode.exact: false``): the keyframe-aware path taking the nearest
  referenced frame for each sample, without the loop filter.

Every nccurate variant writes its crops to a sink that hashes them (the same work in each), and
the exact variants' hashes and sample times must agree: the report says whether the picks are
identical, pixel for pixel, to the sequential pass. For the approximate one it gives how far its
samples' PTS are from the exact picks. Rates are medians over rounds; ratios are to the median of
the reference.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from pipeline.media.decode import FrameSink

#: Keyframe intervals (seconds) of the benchmark videos: a long group as many uploads use (x264's
#: default keyint 250 is 10 s at 25 fps) and the 2 s of streaming sites.
GOPS_S = (10.0, 2.0)
#: B-frames between references in the benchmark videos (x264's default).
BFRAMES = 3


class DigestSink(FrameSink):
    """Hashes the frames it receives (sha256 of their bytes in order) and counts them."""

    def __init__(self):
        self.digest, self.count = hashlib.sha256(), 0

    def add(self, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        self.digest.update(frames.tobytes())
        self.count += len(frames)

    def keep_first(self, n: int) -> None:
        if n != self.count:  # a digest cannot be cut back; the benchmark's decodes never give up
            raise RuntimeError(f"DigestSink cannot keep {n} of {self.count} frames")


def decode_variants(size: int) -> dict:
    """``{name: fn(path, sample_fps) -> (hexdigest, pts_s, stats)}`` of the nccurate variants, one
    decoder thread each."""
    from dataclasses import replace

    from pipeline.media import pyav

    def run(path, fps, decode):
        sink, stats = DigestSink(), {}
        pts_s, _ = decode(path, fps, sink, stats)
        return sink.digest.hexdigest(), np.asarray(pts_s), stats

    def indexed(keep_unreferenced: bool, approximate: bool = False):
        def decode(path, fps, sink, stats):
            index = pyav.index_packets(path)
            if index is None:
                raise RuntimeError(f"{path}: the packet index is not available")
            if keep_unreferenced:
                index = replace(index, unreferenced=None)
            return pyav.decode_indexed(path, fps, size, sink, index, stats, threads=1, approximate=approximate)
        return decode

    return {"sequential pass": lambda p, f: run(p, f, lambda p, f, s, _: pyav.decode_sequential(p, f, size, s, 1)),
            "group tails skipped": lambda p, f: run(p, f, indexed(True)),
            "default": lambda p, f: run(p, f, indexed(False)),
            APPROXIMATE: lambda p, f: run(p, f, indexed(False, approximate=True))}


#: The approximate variant's name in the report.
APPROXIMATE = "approximate (decode.exact: false)"


def time_decoders(path: str, sample_fps: float, size: int, rounds: int) -> dict:
    """``{"seconds": {variant: median s}, "identical": bool (the exact variants), "stats":
    default's stats, "samples": n, "pts_error_s": the approximate picks' |PTS - exact PTS|}`` for
    one video, the variants interleaved in each round."""
    from pipeline.bench.video import plain_sequential_decode

    variants = decode_variants(size)
    seconds: dict[str, list[float]] = {"plain PyAV": [], **{name: [] for name in variants}}
    results = {}
    for _ in range(rounds):
        start = time.perf_counter()
        plain_sequential_decode(path, sample_fps, 1)
        seconds["plain PyAV"].append(time.perf_counter() - start)
        for name, fn in variants.items():
            start = time.perf_counter()
            results[name] = fn(path, sample_fps)
            seconds[name].append(time.perf_counter() - start)
    digests = {(r[0], r[1].tobytes()) for name, r in results.items() if name != APPROXIMATE}
    exact_s, approx_s = results["default"][1], results[APPROXIMATE][1]
    return {"seconds": {k: float(np.median(v)) for k, v in seconds.items()}, "identical": len(digests) == 1,
            "stats": results["default"][2], "samples": len(exact_s),
            "pts_error_s": np.abs(approx_s - exact_s) if len(approx_s) == len(exact_s) else None}


def bench_throughput_decode(config, workdir: str, duration_s: float = 600.0, width: int = 640, height: int = 360,
                            fps: float = 25.0, rounds: int = 3, gops_s: tuple[float, ...] = GOPS_S,
                            log=print) -> str:
    """Write (or reuse) one B-frame H.264 video per group length in ``workdir``, time the
    variants on each; the printed report. Crops are at ``model.name``'s input size, samples at
    ``decode.sample_fps``."""
    from models.encoder import encoder_spec_of, input_size_of
    from pipeline.synth.long_video import long_video

    size, sample_fps = input_size_of(encoder_spec_of(config.model)), config.decode.sample_fps
    workdir = os.path.abspath(workdir)
    lines = [f"Decode throughput: {duration_s:g} s of {width}x{height} H.264 at {fps:g} fps, {BFRAMES} B-frames "
             f"(x264 veryfast, crf 23), sampled at {sample_fps:g} fps into {size}x{size} crops; one decoder "
             f"thread, in process, {rounds} interleaved rounds, medians; {os.cpu_count()} cores", "",
             "| keyframe every | variant | seconds | video-s/s | vs plain PyAV | packets decoded |", "|---|---|---:|---:|---:|---:|"]
    notes = []
    for gop_s in gops_s:
        video = long_video(workdir, duration_s, width, height, fps, log, BFRAMES, gop_s)["video"]
        log(f"timing the decoders on {video} ...")
        t = time_decoders(video, sample_fps, size, rounds)
        ref, st = t["seconds"]["plain PyAV"], t["stats"]
        for name, s in t["seconds"].items():
            decoded = f"{st['decoded']} of {st['packets']}" if name == "default" else ""
            lines.append(f"| {gop_s:g} s | {name} | {s:.2f} | {duration_s / s:.1f} | {ref / s:.2f} | {decoded} |")
        err = t["pts_error_s"]
        moved = ("sample count differs from the exact decode" if err is None else
                 f"{np.mean(err > 0):.0%} of samples on another frame, PTS error mean {err.mean() * 1e3:.1f} ms, "
                 f"max {err.max() * 1e3:.1f} ms")
        notes.append(f"keyframe every {gop_s:g} s: {t['samples']} samples, picks identical to the sequential pass "
                     f"pixel for pixel: {'yes' if t['identical'] else 'NO'}; {st['unreferenced']} unreferenced "
                     f"pictures left out; approximate: {moved}")
    return "\n".join(lines + [""] + notes)
