"""Fine-tune an open_clip dual encoder on nccurate's shards: the "consume output shards in
training" step of DESIGN §1.

* Data: the shards' clips, captions and confidence weights, read into memory with
  :func:`models.data.load_curated` (``n_frames`` frames per clip at the model's input size).
  Memory is ``N x n_frames x S x S x 3`` bytes: 49 KB a sample for the demo model, so this
  trainer is for small and medium fine-tunes. For a corpus that does not fit, use the streaming
  loader :func:`models.data.make_loader` in your own loop with the losses of
  :mod:`models.losses` (README "Training on the shards").
* Split: a video goes to the held-out split when a seeded hash of its ``video_id`` falls under
  ``heldout_fraction`` (never a sample-level split: clips of one video look alike).
* Model: ``load_encoder(EncoderSpec(model, pretrained, device, seed=seed))``: a tag, a local
  checkpoint or a seeded random init; trained in place, all parameters, with AdamW, linear
  warm-up then cosine decay, and open_clip's learnable logit scale (clamped at 100).
* A clip's embedding is the L2-normalised mean of its frames' image embeddings.
* Losses (``loss``): ``cali_nce`` (weighted symmetric InfoNCE), ``norton_clip`` (InfoNCE with
  Norton's OT soft targets), ``video_paragraph`` (``cali_nce`` over the pairs of a batch of
  whole videos plus Norton's video–paragraph OT loss with the prompt bucket; needs several
  samples per video, as the ``grouped`` layout keeps them). ``weights='ones'`` ignores the
  shards' weights (the ablation of ``nccurate bench train``).
* Outputs in ``out_dir``: ``model.pt`` (a plain ``state_dict``: ``open_clip.create_model(name,
  pretrained='model.pt')`` and ``--set model.pretrained=`` load it), ``checkpoint-NNNNNN.pt`` every
  ``checkpoint_every`` steps, ``metrics.json`` (config, losses, held-out retrieval).
* Deterministic given ``seed`` and the torch thread count.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

LOSSES = ("cali_nce", "norton_clip", "video_paragraph")
WEIGHTS = ("json", "ones")


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of :func:`train` (steps and sizes are counts, ``lr`` per step). Each value is
    checked against :data:`_CHECKS` on construction."""

    model: str = "nccurate-tiny"
    pretrained: str | None = None
    device: str = "cpu"
    steps: int = 300
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    loss: str = "cali_nce"
    weights: str = "json"
    n_frames: int = 4
    heldout_fraction: float = 0.1
    videos_per_batch: int = 8
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 50

    def __post_init__(self):
        for key, (allowed, expected) in _CHECKS.items():
            if not allowed(getattr(self, key)):
                raise TrainConfigError(f"train config {key}: {getattr(self, key)!r} is not allowed; expected {expected}",
                                       key)


class TrainConfigError(ValueError):
    """A bad :class:`TrainConfig` key or value; ``key``: the field it is about, if any."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


_AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
_AT_LEAST_0 = (lambda v: v >= 0, "an integer >= 0 (0: never)")
#: field -> (predicate, what is allowed); fields not listed take any value of their type.
_CHECKS = {
    "steps": _AT_LEAST_1, "batch_size": _AT_LEAST_1, "n_frames": _AT_LEAST_1, "videos_per_batch": _AT_LEAST_1,
    "checkpoint_every": _AT_LEAST_0, "log_every": _AT_LEAST_0,
    "lr": (lambda v: v > 0, "a number > 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "warmup_frac": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "heldout_fraction": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "loss": (lambda v: v in LOSSES, f"one of {', '.join(LOSSES)}"),
    "weights": (lambda v: v in WEIGHTS, f"one of {', '.join(WEIGHTS)}"),
}
_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string"}


def _typed(key: str, value, annotation: str):
    """``value`` as the field's type (``int``, ``float``, ``str``, optionally ``| None``); an int
    is accepted for a float, a whole float for an int, and a number written as text (YAML 1.1
    reads ``1e-3`` as a string) for either."""
    base = annotation.split("|")[0].strip()
    if value is None and "None" in annotation:
        return None
    if isinstance(value, str) and base in ("int", "float") and _NUMBER_RE.fullmatch(value.strip()):
        value = float(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "float" and number:
        return float(value)
    if base == "int" and number and float(value).is_integer():
        return int(value)
    if base == "str" and isinstance(value, str):
        return value
    expected = _TYPE_NAMES[base] + (" or null" if "None" in annotation else "")
    raise TrainConfigError(f"train config {key}: {value!r} is not allowed; expected {expected}", key)


def train_config_of(values: dict) -> TrainConfig:
    """A :class:`TrainConfig` from ``{field: value}``: unknown keys (with the nearest field),
    types and ranges are checked."""
    import difflib

    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise TrainConfigError(f"train config: unknown key {key!r}{hint}", key)
    return TrainConfig(**{key: _typed(key, value, fields[key]) for key, value in values.items()})


def load_train_config(path: str | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """:class:`TrainConfig` from the YAML mapping in ``path`` (default: none, the defaults),
    then ``key=value`` overrides (values read as YAML scalars, as ``nccurate run --set`` reads
    them). A :class:`TrainConfigError` names the key and where it was set: ``(in config file
    PATH)`` or ``(from --set ...)``."""
    import yaml

    values: dict = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                tree = yaml.safe_load(handle) or {}
        except OSError as exc:
            raise TrainConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise TrainConfigError(f"config file {path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(tree, dict):
            raise TrainConfigError(f"config file {path}: top level must be a mapping of TrainConfig keys")
        values = dict(tree)
    origins = dict.fromkeys(values, f"in config file {path}")
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep:
            raise TrainConfigError(f"--set {text!r}: expected key=value, e.g. --set steps=300")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"--set {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None
        origins[key.strip()] = f"from --set {text}"
    try:
        return train_config_of(values)
    except TrainConfigError as exc:
        if exc.key not in origins:
            raise
        raise TrainConfigError(f"{exc} ({origins[exc.key]})", exc.key) from None


@dataclass
class Pairs:
    """Clip/caption pairs in memory. frames: (N, K, S, S, 3) uint8; texts: N captions;
    weights: (N,) float32 in [0, 1]; video_ids: N ids; labels: (N,) int or None (for
    retrieval that counts any clip of the same label as a hit, e.g. a synthetic concept)."""

    frames: np.ndarray
    texts: list[str]
    weights: np.ndarray
    video_ids: list[str]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: Sequence[int]) -> "Pairs":
        idx = np.asarray(idx, dtype=np.int64)
        return Pairs(self.frames[idx], [self.texts[i] for i in idx], self.weights[idx],
                     [self.video_ids[i] for i in idx], None if self.labels is None else self.labels[idx])


@dataclass
class TrainResult:
    """What :func:`train` measured: the loss curve and held-out retrieval (percent)."""

    steps: int
    losses: list[float] = field(default_factory=list)
    heldout: dict = field(default_factory=dict)
    wall_s: float = 0.0


def heldout_video(video_id: str, fraction: float, seed: int) -> bool:
    """Whether ``video_id`` is held out: a seeded hash of it, as a number in [0, 1), < fraction."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def split_pairs(pairs: Pairs, fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """(train, held-out) by video (:func:`heldout_video`). With ``fraction > 0`` and at least two
    videos, at least one video is held out and one kept for training."""
    videos = sorted(set(pairs.video_ids))
    held = {v for v in videos if heldout_video(v, fraction, seed)}
    if fraction > 0 and len(videos) >= 2:
        if not held:
            held = {min(videos, key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).digest())}
        if held == set(videos):
            held.discard(sorted(held)[0])
    is_held = np.array([v in held for v in pairs.video_ids], dtype=bool)
    return pairs.take(np.flatnonzero(~is_held)), pairs.take(np.flatnonzero(is_held))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to 0 (step is 0-based)."""
    warmup = max(1, int(cfg.steps * cfg.warmup_frac))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def embed_clips(encoder, frames: np.ndarray):
    """(B, K, S, S, 3) uint8 -> (B, D) L2-normalised clip embeddings (mean of the K frames),
    with gradients."""
    import torch.nn.functional as F

    b, k = frames.shape[:2]
    feats = encoder.model.encode_image(encoder.pixels(frames.reshape(b * k, *frames.shape[2:])))
    return F.normalize(F.normalize(feats, dim=-1).view(b, k, -1).mean(dim=1), dim=-1)


def embed_texts(encoder, texts: Sequence[str]):
    """N captions -> (N, D) L2-normalised text embeddings, with gradients."""
    import torch.nn.functional as F

    return F.normalize(encoder.model.encode_text(encoder.tokenizer(list(texts)).to(encoder.device)), dim=-1)


def logit_scale_of(encoder):
    """open_clip's learnable temperature, exp'd and clamped at 100 (as CLIP does)."""
    return encoder.model.logit_scale.exp().clamp(max=100.0)


def batch_indices(pairs: Pairs, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """One batch: ``batch_size`` pairs drawn without replacement (with replacement only when
    there are fewer pairs); for ``video_paragraph``, the pairs of ``videos_per_batch`` videos
    (at most ``batch_size`` in all, in caption order within a video)."""
    n = len(pairs)
    if cfg.loss != "video_paragraph":
        return rng.choice(n, size=cfg.batch_size, replace=n < cfg.batch_size)
    videos = sorted(set(pairs.video_ids))
    chosen = rng.choice(len(videos), size=min(cfg.videos_per_batch, len(videos)), replace=False)
    per_video = max(1, cfg.batch_size // len(chosen))
    ids = np.array(pairs.video_ids)
    picks = []
    for v in chosen:
        rows = np.flatnonzero(ids == videos[v])
        picks.append(np.sort(rng.choice(rows, size=min(per_video, len(rows)), replace=False)))
    return np.concatenate(picks)


def batch_loss(encoder, pairs: Pairs, idx: np.ndarray, cfg: TrainConfig):
    """The configured loss on the pairs ``idx`` (a scalar tensor with gradients)."""
    import torch

    from models.losses import (
        norton_clip_loss,
        video_paragraph_ot_loss,
        weighted_info_nce,
    )

    batch = pairs.take(idx)
    clip_emb, text_emb = embed_clips(encoder, batch.frames), embed_texts(encoder, batch.texts)
    scale = logit_scale_of(encoder)
    weights = None if cfg.weights == "ones" else torch.as_tensor(batch.weights, dtype=torch.float32, device=clip_emb.device)
    if cfg.loss == "norton_clip":
        return norton_clip_loss(clip_emb, text_emb, scale, weights=weights)
    loss = weighted_info_nce(clip_emb, text_emb, weights, scale)
    if cfg.loss == "video_paragraph":
        ids = np.array(batch.video_ids)
        groups = [np.flatnonzero(ids == v) for v in dict.fromkeys(batch.video_ids)]
        if len(groups) >= 2:
            # Norton's prompt value: the 0.3 quantile of the batch's paired similarities (no gradient)
            prompt = float(torch.quantile((clip_emb * text_emb).sum(-1).detach().float(), 0.3))
            loss = loss + video_paragraph_ot_loss([clip_emb[g] for g in groups], [text_emb[g] for g in groups], scale,
                                                  prompt_value=prompt)
    return loss


def retrieval_at_k(encoder, pairs: Pairs, ks: Sequence[int] = (1, 5), batch_size: int = 128) -> dict:
    """Text -> clip retrieval over ``pairs`` (every caption queries all clips), in percent:
    ``{'r_at_1': ..., 'r_at_5': ..., 'queries': N}``. A hit is the query's own clip, or with
    ``pairs.labels`` any clip of the query's label."""
    import torch

    if len(pairs) == 0:
        return {**{f"r_at_{k}": float("nan") for k in ks}, "queries": 0}
    was_training = encoder.model.training
    encoder.model.eval()
    with torch.inference_mode():
        clips = torch.cat([embed_clips(encoder, pairs.frames[i:i + batch_size]) for i in range(0, len(pairs), batch_size)])
        texts = torch.cat([embed_texts(encoder, pairs.texts[i:i + batch_size]) for i in range(0, len(pairs), batch_size)])
        sims = (texts @ clips.T).float().cpu().numpy()
    encoder.model.train(was_training)
    # rank by similarity, ties broken by clip index (stable): deterministic
    order = np.argsort(-sims, axis=1, kind="stable")
    target = np.arange(len(pairs)) if pairs.labels is None else pairs.labels
    got = order if pairs.labels is None else pairs.labels[order]
    hits = got == target[:, None]
    return {**{f"r_at_{k}": float(100.0 * hits[:, :k].any(axis=1).mean()) for k in ks}, "queries": len(pairs)}


def _write_plain(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _state_dict_bytes(model) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def train(pairs: Pairs, cfg: TrainConfig, out_dir: str | None = None, heldout: Pairs | None = None,
          log: Callable[[str], None] = print,
          write_file: Callable[[str, bytes], None] = _write_plain) -> tuple[object, TrainResult]:
    """Train on ``pairs`` for ``cfg.steps`` steps; returns ``(encoder, result)``.

    ``heldout``: pairs scored with :func:`retrieval_at_k` at the end (and logged with each
    progress line when small). ``out_dir``: where ``model.pt``, checkpoints and
    ``metrics.json`` go (nothing written when None), each written whole by
    ``write_file(path, bytes)``: ``nccurate train`` passes the pipeline's atomic writer
    (``models`` sits below ``pipeline``, so the writer comes from the caller)."""
    import torch

    from models.encoder import EncoderSpec, load_encoder

    if len(pairs) == 0:
        raise ValueError("no training pairs (are the shards empty, or all held out?)")
    encoder = load_encoder(EncoderSpec(name=cfg.model, pretrained=cfg.pretrained, device=cfg.device, seed=cfg.seed))
    model = encoder.model
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    rng = np.random.default_rng(cfg.seed)
    result, started = TrainResult(steps=cfg.steps), time.monotonic()
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    for step in range(cfg.steps):
        for group in optim.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = batch_loss(encoder, pairs, batch_indices(pairs, cfg, rng), cfg)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        result.losses.append(float(loss.detach()))
        done = step + 1
        if cfg.log_every and (done % cfg.log_every == 0 or done == cfg.steps):
            recent = np.mean(result.losses[-cfg.log_every:])
            rate = done * cfg.batch_size / max(1e-9, time.monotonic() - started)
            log(f"step {done}/{cfg.steps}  loss {recent:.4f}  lr {lr_at(step, cfg):.2e}  {rate:.0f} pairs/s")
        if out_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != cfg.steps:
            write_file(os.path.join(out_dir, f"checkpoint-{done:06d}.pt"), _state_dict_bytes(model))
    model.eval()
    result.wall_s = time.monotonic() - started
    if heldout is not None:
        result.heldout = retrieval_at_k(encoder, heldout)
        log(f"held-out text->clip retrieval: R@1 {result.heldout['r_at_1']:.1f}  R@5 {result.heldout['r_at_5']:.1f}"
            f"  ({result.heldout['queries']} queries)")
    if out_dir:
        write_file(os.path.join(out_dir, "model.pt"), _state_dict_bytes(model))
        metrics = {"config": asdict(cfg), "pairs": len(pairs), "heldout": result.heldout,
                   "final_loss": result.losses[-1], "wall_s": round(result.wall_s, 2)}
        write_file(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1, sort_keys=True).encode("utf-8"))
    return encoder, result


def pairs_from_shards(urls: Sequence[str], n_frames: int, size: int) -> Pairs:
    """Every sample of the shards as in-memory :class:`Pairs` (weights from their json)."""
    from models.data import load_curated

    data = load_curated(list(urls), n_frames=n_frames, size=size, with_meta=True)
    return Pairs(frames=data["frames"], texts=list(data["texts"]), weights=np.asarray(data["weights"], np.float32),
                 video_ids=[m["video_id"] for m in data["meta"]])


def train_on_shards(shards: str, out_dir: str, cfg: TrainConfig, log: Callable[[str], None] = print,
                    write_file: Callable[[str, bytes], None] = _write_plain,
                    match: Callable[[str], list[str]] = lambda pattern: sorted(glob.glob(pattern))) -> TrainResult:
    """``nccurate train``: load the shards that ``match`` finds for the glob ``shards`` (local
    files by default; the CLI passes one that also lists ``gs://``/``s3://`` prefixes), split by
    video, train, score the held-out split; files are written with ``write_file``."""
    from models.encoder import EncoderSpec, input_size_of

    urls = match(shards)
    if not urls:
        raise ValueError(f"--shards {shards}: no file matches")
    size = input_size_of(EncoderSpec(name=cfg.model, pretrained=cfg.pretrained, device=cfg.device))
    pairs = pairs_from_shards(urls, cfg.n_frames, size)
    train_pairs, held = split_pairs(pairs, cfg.heldout_fraction, cfg.seed)
    log(f"{len(pairs)} pairs from {len(urls)} shard(s): {len(train_pairs)} for training, "
        f"{len(held)} held out ({len(set(held.video_ids))} videos)")
    _, result = train(train_pairs, cfg, out_dir, held if len(held) else None, log, write_file)
    return result
