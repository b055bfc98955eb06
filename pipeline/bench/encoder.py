"""``nccurate bench throughput --mode encoder``: the CPU image encoder's images/s at each
``model.precision`` as a ratio to fp32, measured interleaved in one run, and how far each
precision's embeddings are from fp32's (printed numbers, never assertions).

The model is built at random init (the same compute as its weights; nothing is downloaded). Per
round every precision encodes the same batch of frames once, one after the other, so load that
comes and goes hits them alike; the reported rate is the median over rounds and the ratio is the
median of the per-round ratios. Measured with one torch thread and with every core. Closeness:
the minimum cosine between a precision's and fp32's embedding of the same frame (seeded smooth
random images: noise averaged over 8-pixel blocks, so the patches carry structure) and of the
same caption text.
"""

from __future__ import annotations

import os
import time

import numpy as np

#: Caption texts the text tower's closeness is measured on.
TEXTS = ("a person cuts an onion on a wooden board", "pour the water into the pot", "and that's it for today",
         "now we tighten the bolt", "thanks for watching", "the dough should look like this")


def bench_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: seeded noise, constant over 8x8 blocks."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n, -(-size // 8), -(-size // 8), 3), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(8, axis=1).repeat(8, axis=2)[:, :size, :size])


def _images_per_s(encoder, frames: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    encoder.encode_frames(frames, batch)
    return len(frames) / (time.perf_counter() - start)


def time_precisions(encoders: dict, frames: np.ndarray, batch: int, threads: int, rounds: int) -> dict:
    """{precision: (median images/s, median per-round ratio to fp32)} with ``threads`` torch
    threads (restored after), the precisions interleaved in each of ``rounds`` rounds after one
    warm-up batch each."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for enc in encoders.values():
            enc.encode_frames(frames[:2], 2)
        rates: dict[str, list[float]] = {p: [] for p in encoders}
        for _ in range(rounds):
            for p, enc in encoders.items():
                rates[p].append(_images_per_s(enc, frames, batch))
    finally:
        torch.set_num_threads(before)
    return {p: (float(np.median(r)), float(np.median(np.array(r) / np.array(rates["fp32"]))))
            for p, r in rates.items()}


def min_cosines(encoder, reference: tuple[np.ndarray, np.ndarray], frames: np.ndarray) -> tuple[float, float]:
    """(frames, texts): the least cosine between ``encoder``'s embedding of ``frames`` and
    :data:`TEXTS` and the ``reference`` embeddings ``(frames, texts)`` of the same inputs."""
    f = np.sum(encoder.encode_frames(frames) * reference[0], axis=1)
    t = np.sum(encoder.encode_texts(TEXTS) * reference[1], axis=1)
    return float(f.min()), float(t.min())


def bench_throughput_encoder(model: str = "ViT-B-32", batch: int = 64, rounds: int = 5, seed: int = 0,
                             log=print) -> str:
    """The printed report: images/s and ratio to fp32 of each precision this CPU runs natively
    (fp32 always; bf16 where :func:`models.encoder.cpu_has_bf16`), on one thread and on every core."""
    from models.encoder import EncoderSpec, cpu_has_bf16, input_size_of, load_encoder

    precisions = ("fp32", "bf16") if cpu_has_bf16() else ("fp32",)
    encoders = {p: load_encoder(EncoderSpec(name=model, pretrained=None, precision=p, seed=seed)) for p in precisions}
    frames = bench_frames(batch, input_size_of(encoders["fp32"].spec), seed)
    cores = os.cpu_count() or 1
    lines = [f"CPU encoder throughput: {model} image tower (random init), batch {batch}, {rounds} interleaved "
             f"rounds, medians; {cores} cores; bf16 units (avx512_bf16/amx_bf16): {'yes' if cpu_has_bf16() else 'no'}",
             "", "| precision | threads | images/s | vs fp32 | min cosine to fp32 (frames / texts) |",
             "|---|---:|---:|---:|---|"]
    fp32 = (encoders["fp32"].encode_frames(frames), encoders["fp32"].encode_texts(TEXTS))
    closeness = {p: min_cosines(enc, fp32, frames) for p, enc in encoders.items()}
    for threads in sorted({1, cores}):
        log(f"timing {', '.join(precisions)} with {threads} thread(s) ...")
        for p, (rate, ratio) in time_precisions(encoders, frames, batch, threads, rounds).items():
            f, t = closeness[p]
            lines.append(f"| {p} | {threads} | {rate:.1f} | {ratio:.2f} | {f:.5f} / {t:.5f} |")
    if len(precisions) == 1:
        lines.append("\nbf16 not timed: this CPU has no bf16 units, so model.precision: bf16 runs fp32 here")
    return "\n".join(lines)
