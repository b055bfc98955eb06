"""``nccurate bench throughput --mode encoder``: the CPU image encoder's images/s for each
``model.backend`` × ``model.precision`` this machine runs, as a ratio to torch fp32 measured
interleaved in one run, and how far each setting's embeddings are from torch fp32's (printed
numbers, never assertions).

The model is built at random init (the same compute as its weights; nothing is downloaded). Per
round every setting encodes the same batch of frames once, one after the other, so load that
comes and goes hits them alike; the reported rate is the median over rounds and the ratio is the
median of the per-round ratios. Measured with one thread and with every core (the exported
backends take their thread count when loaded, so each thread count loads its own set).
Closeness: the least cosine between a setting's and torch fp32's embedding of the same frame
(:func:`models.backends.probe_frames`) and of the same caption text (``PROBE_TEXTS``).
"""

from __future__ import annotations

import os
import time

import numpy as np

#: (backend, precision) settings timed, in table order; the first is the baseline.
SETTINGS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
            ("openvino", "fp32"), ("openvino", "bf16"))


def runnable_settings(has_bf16: bool, missing) -> tuple[list[tuple[str, str]], list[str]]:
    """(settings to time, one line per setting left out and why): bf16 needs the CPU's bf16
    units; an exported backend needs its packages (``missing(backend)`` lists those absent)."""
    timed, skipped = [], []
    for backend, precision in SETTINGS:
        absent = missing(backend) if backend != "torch" else []
        if precision == "bf16" and not has_bf16:
            skipped.append(f"{backend} bf16: this CPU has no bf16 units (it would run fp32)")
        elif absent:
            skipped.append(f"{backend} {precision}: {', '.join(absent)} not installed")
        else:
            timed.append((backend, precision))
    return timed, skipped


def _images_per_s(encoder, frames: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    encoder.encode_frames(frames, batch)
    return len(frames) / (time.perf_counter() - start)


def time_settings(encoders: dict, frames: np.ndarray, batch: int, rounds: int) -> dict:
    """{setting: (median images/s, median per-round ratio to the first setting)}, the settings
    interleaved in each of ``rounds`` rounds after one warm-up batch each."""
    for enc in encoders.values():
        enc.encode_frames(frames[:2], 2)
    rates: dict = {s: [] for s in encoders}
    for _ in range(rounds):
        for s, enc in encoders.items():
            rates[s].append(_images_per_s(enc, frames, batch))
    base = np.array(rates[next(iter(encoders))])
    return {s: (float(np.median(r)), float(np.median(np.array(r) / base))) for s, r in rates.items()}


def least_cosines(encoder, reference: tuple[np.ndarray, np.ndarray], frames: np.ndarray, texts) -> tuple[float, float]:
    """(frames, texts): the least cosine between ``encoder``'s embedding of ``frames`` and
    ``texts`` and the ``reference`` embeddings ``(frames, texts)`` of the same inputs."""
    from models.backends import least_cosine

    return least_cosine(encoder.encode_frames(frames), reference[0]), least_cosine(encoder.encode_texts(texts),
                                                                                   reference[1])


def bench_throughput_encoder(model: str = "ViT-B-32", batch: int = 64, rounds: int = 5, seed: int = 0,
                             log=print) -> str:
    """The printed report: images/s and ratio to torch fp32 of every setting this CPU runs, on one
    thread and on every core."""
    import torch

    from models.backends import PROBE_TEXTS, missing_packages, probe_frames
    from models.encoder import EncoderSpec, cpu_has_bf16, input_size_of, load_encoder

    settings, skipped = runnable_settings(cpu_has_bf16(), missing_packages)
    frames = probe_frames(batch, input_size_of(EncoderSpec(name=model)), seed)
    texts = list(PROBE_TEXTS)
    cores = os.cpu_count() or 1
    lines = [f"CPU encoder throughput: {model} image tower (random init), batch {batch}, {rounds} interleaved "
             f"rounds, medians; {cores} cores; bf16 units (avx512_bf16/amx_bf16): {'yes' if cpu_has_bf16() else 'no'}",
             "", "| backend | precision | threads | images/s | vs torch fp32 | least cosine to torch fp32 "
             "(frames / texts) |", "|---|---|---:|---:|---:|---|"]
    before = torch.get_num_threads()
    try:
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            log(f"loading {len(settings)} encoder settings with {threads} thread(s) (exports are cached) ...")
            encoders = {s: load_encoder(EncoderSpec(name=model, pretrained=None, backend=s[0], precision=s[1],
                                                    seed=seed)) for s in settings}
            reference = (encoders[SETTINGS[0]].encode_frames(frames), encoders[SETTINGS[0]].encode_texts(texts))
            closeness = {s: least_cosines(enc, reference, frames, texts) for s, enc in encoders.items()}
            log(f"timing with {threads} thread(s) ...")
            for (backend, precision), (rate, ratio) in time_settings(encoders, frames, batch, rounds).items():
                f, t = closeness[(backend, precision)]
                lines.append(f"| {backend} | {precision} | {threads} | {rate:.1f} | {ratio:.2f} | {f:.5f} / {t:.5f} |")
            del encoders
    finally:
        torch.set_num_threads(before)
    if skipped:
        lines += ["", "not timed: " + "; ".join(skipped)]
    return "\n".join(lines)
