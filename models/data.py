"""Reading curated shards (DESIGN §5) back for training: frames, caption tokens and the
per-sample weight, as tensors for a torch ``DataLoader`` or as numpy arrays in memory.

A shard sample holds one media member, ``mp4`` (an H.264 clip of the realigned span) or
``f0000.jpg``, ``f0001.jpg``, ... (its frames as JPEGs); ``txt`` (the caption) and ``json``
(spans, scores and ``weight`` in [0, 1]). Samples holding only ``npy`` features have no frames
and are refused with a ``ValueError``. ``grouped`` and ``shuffled`` shard layouts differ only in
order; the loader reads either.

* :func:`clip_frames` decodes one sample's media to ``(n_frames, size, size, 3)`` uint8: frame
  ``i`` is clip frame ``floor((i + 0.5) * L / n_frames)`` of the clip's ``L`` frames (the centre
  of ``n_frames`` equal segments, :func:`curation.frames.uniform_indices`; frames repeat when
  ``L < n_frames``), resized (bilinear) so its shorter side is ``size`` and centre-cropped
  (:func:`curation.frames.resize_dims`, :func:`~curation.frames.center_crop`: the decoder's rule).
* :func:`curated_dataset` is a ``webdataset`` pipeline yielding ``(frames, tokens, weight)``:
  ``(n_frames, 3, size, size)`` float32 normalised with ``mean``/``std``, ``(context_length,)``
  int64 and a float32 scalar. Shards are split by node (``torch.distributed`` rank) and by
  ``DataLoader`` worker. Order is deterministic given ``seed`` and the epoch (and the number of
  workers): with ``shuffle_buffer > 0`` the shard list is permuted (the same permutation on every
  rank and worker) and samples pass through a buffer shuffle. Call :func:`set_epoch` before each
  epoch for a new order (without it, each fresh iteration in the same process advances the epoch,
  but workers that a ``DataLoader`` re-creates start again from the main process's value).
* :func:`make_loader` wraps it in a ``torch.utils.data.DataLoader`` (default collate):
  ``(B, n_frames, 3, size, size)``, ``(B, context_length)``, ``(B,)``.
* :func:`load_curated` reads everything into numpy arrays, in shard read order, for small
  in-memory experiments.
* :func:`collate_samples` batches samples as other readers give them (webdataset with or
  without ``.decode()``, wids, raw dicts) for a ``DataLoader``'s ``collate_fn``: it pads the
  variable-length ``npy`` features and keeps clips, captions and json as lists.

torch, webdataset, PyAV and Pillow are imported inside the functions that use them.

README snippet (training with open_clip)::

    import open_clip, torch, torch.nn.functional as F
    from models.data import make_loader, set_epoch
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")
    tokenizer, cfg = open_clip.get_tokenizer("ViT-B-32"), model.visual.preprocess_cfg
    loader = make_loader("OUT/shards/shard-{000000..000009}.tar", batch_size=64, num_workers=4, tokenizer=tokenizer,
                         n_frames=4, size=cfg["size"][0], mean=cfg["mean"], std=cfg["std"], shuffle_buffer=1000, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for epoch in range(10):
        set_epoch(loader.dataset, epoch)
        for frames, tokens, weight in loader:  # (B, 4, 3, 224, 224) float32, (B, 77) int64, (B,) float32
            img = F.normalize(model.encode_image(frames.flatten(0, 1)).unflatten(0, frames.shape[:2]).mean(1), dim=-1)
            logits = model.logit_scale.exp() * img @ model.encode_text(tokens, normalize=True).T
            labels = torch.arange(len(logits))
            ce = F.cross_entropy(logits, labels, reduction="none") + F.cross_entropy(logits.T, labels, reduction="none")
            loss = (weight * ce).sum() / (2 * weight.sum().clamp_min(1e-6))  # weight 0 = ignored caption
            optimizer.zero_grad(); loss.backward(); optimizer.step()
"""

from __future__ import annotations

import io
import json
import random
import re
import threading
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from curation.frames import center_crop, resize_dims, uniform_indices

#: OpenAI CLIP normalisation (open_clip.OPENAI_DATASET_MEAN / _STD), the default mean/std.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_MODES = ("json", "ones")
_JPG_RE = re.compile(r"^f(\d+)\.jpg$")
_local = threading.local()
_INHERITED: list = []  # reformatters inherited through fork, kept alive on purpose


# ------------------------------------------------------------------------------------ frames


def _key(sample: dict) -> str:
    return str(sample.get("__key__", "<no __key__>"))


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected raw bytes, got {type(value).__name__} (read shards without a decoder)")


def _jpg_members(sample: dict) -> list[str]:
    """The sample's ``fNNNN.jpg`` member names in frame order."""
    found = [(int(m.group(1)), name) for name in sample if (m := _JPG_RE.match(name))]
    return [name for _, name in sorted(found)]


def _reformatter():
    """This thread's PyAV ``VideoReformatter``: reusing one keeps its swscale context (cached
    while the dimensions stay the same); ``frame.reformat`` builds a new one per frame (~2 ms).
    Scaling runs with ``threads=1`` (PyAV's default 0 starts a swscale thread pool, slower for
    small frames). Keyed by process id: a context inherited through ``fork`` (DataLoader workers)
    deadlocked when used or freed with a thread pool, so an inherited one is kept, never touched."""
    import os

    pid, reformatter = getattr(_local, "reformatter", (None, None))
    if pid != os.getpid():
        from av.video.reformatter import VideoReformatter

        if reformatter is not None:
            _INHERITED.append(reformatter)  # freeing it would join threads that do not exist here
        reformatter = VideoReformatter()
        _local.reformatter = (os.getpid(), reformatter)
    return reformatter


def _mp4_frames(data: bytes, key: str, n_frames: int, size: int) -> np.ndarray:
    import av
    from av.video.reformatter import Interpolation

    try:
        with av.open(io.BytesIO(data), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise ValueError(f"sample {key}: mp4 member has no video stream")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # small clips: threads cost more than they save;
            frames = list(container.decode(stream))  # parallelism comes from DataLoader workers
    except av.FFmpegError as exc:
        raise ValueError(f"sample {key}: cannot decode mp4 member: {type(exc).__name__}: {exc}") from None
    if not frames:
        raise ValueError(f"sample {key}: mp4 member holds no frames")
    width, height = resize_dims(frames[0].width, frames[0].height, size)
    picked: dict[int, np.ndarray] = {}
    for j in uniform_indices(len(frames), n_frames).tolist():
        if j not in picked:
            rgb = _reformatter().reformat(frames[j], width=width, height=height, format="rgb24",
                                          interpolation=Interpolation.BILINEAR, threads=1).to_ndarray()
            picked[j] = center_crop(rgb, size)
    return np.stack([picked[j] for j in uniform_indices(len(frames), n_frames).tolist()])


def _jpg_frames(sample: dict, names: list[str], n_frames: int, size: int) -> np.ndarray:
    from PIL import Image

    picked: dict[int, np.ndarray] = {}
    idx = uniform_indices(len(names), n_frames).tolist()
    for j in idx:
        if j not in picked:
            with Image.open(io.BytesIO(_bytes(sample[names[j]]))) as image:
                image = image.convert("RGB")
                image = image.resize(resize_dims(image.width, image.height, size), Image.BILINEAR)
                picked[j] = center_crop(np.asarray(image), size)
    return np.stack([picked[j] for j in idx])


def clip_frames(sample: dict, n_frames: int, size: int) -> np.ndarray:
    """``(n_frames, size, size, 3)`` uint8 RGB frames of a raw shard sample (member -> bytes).

    Media: ``mp4`` (decoded with PyAV) or ``f0000.jpg, f0001.jpg, ...`` (Pillow, frame order).
    Frame ``i`` is clip frame :func:`uniform_indices` ``(L, n_frames)[i]``; each is resized so
    its shorter side is ``size`` (bilinear) and centre-cropped to ``size x size``.
    Raises ``ValueError`` naming the sample's key when it has no frame media or cannot be decoded.
    """
    if n_frames < 1 or size < 1:
        raise ValueError(f"n_frames and size must be >= 1, got n_frames={n_frames}, size={size}")
    key = _key(sample)
    if "mp4" in sample:
        return _mp4_frames(_bytes(sample["mp4"]), key, n_frames, size)
    names = _jpg_members(sample)
    if names:
        return _jpg_frames(sample, names, n_frames, size)
    if "npy" in sample:
        raise ValueError(f"sample {key} holds npy features, not frames (shards written in feature mode)")
    members = sorted(k for k in sample if not k.startswith("__"))
    raise ValueError(f"sample {key} has no media member (mp4 or fNNNN.jpg); members: {members}")


def sample_text(sample: dict) -> str:
    """The caption (``txt`` member, UTF-8)."""
    if "txt" not in sample:
        raise ValueError(f"sample {_key(sample)} has no txt member")
    value = sample["txt"]
    return value if isinstance(value, str) else _bytes(value).decode("utf-8")


def sample_meta(sample: dict) -> dict:
    """The ``json`` member as a dict."""
    if "json" not in sample:
        raise ValueError(f"sample {_key(sample)} has no json member")
    value = sample["json"]
    return value if isinstance(value, dict) else json.loads(_bytes(value).decode("utf-8"))


def sample_weight(sample: dict, weights: str = "json") -> float:
    """``json['weight']`` (``weights='json'``) or 1.0 (``'ones'``, ablations)."""
    if weights == "ones":
        return 1.0
    meta = sample_meta(sample)
    if "weight" not in meta:
        raise ValueError(f"sample {_key(sample)}: json has no 'weight'")
    return float(meta["weight"])


# ------------------------------------------------------------------------------ pipeline stages


def open_shard(url: str):
    """A binary stream of the shard ``url``: a URI of an object store (``gs://``, ``s3://``, any
    fsspec protocol) through fsspec, anything else (a local path, ``pipe:``, ``http://``)
    through webdataset's ``gopen``, whose ``gs://`` handler needs ``gsutil``."""
    import webdataset as wds

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme and scheme not in ("file", "pipe", "http", "https"):
        import fsspec

        return fsspec.open(url, "rb").open()
    return wds.gopen(url, "rb")


def tar_samples(src: Iterable[dict], handler=None) -> Iterator[dict]:
    """webdataset's ``tarfile_to_samples`` with :func:`open_shard` as the opener: shard dicts
    ``{"url": ...}`` in, samples (member -> bytes, ``__key__``, ``__url__``) out."""
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    handler = handler or wds.reraise_exception

    def streams():
        for shard in src:
            try:
                yield {**shard, "stream": open_shard(shard["url"])}
            except Exception as exc:  # noqa: BLE001 - the handler decides (default: raise)
                exc.args = exc.args + (shard["url"],)
                if not handler(exc):
                    return

    return group_by_keys(tar_file_expander(streams(), handler=handler), handler=handler)


def _check_weights(weights: str) -> None:
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got {weights!r}")


class _ShuffleShards:
    """Permute the whole shard list with ``Random(f'{seed}/{epoch}')``: the same permutation on
    every rank and worker (so the node/worker splits after it stay disjoint)."""

    def __init__(self, seed: int):
        self.seed, self.epoch, self._runs = seed, None, 0

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        epoch = self.epoch if self.epoch is not None else self._runs
        self._runs += 1
        shards = list(src)
        random.Random(f"shards/{self.seed}/{epoch}").shuffle(shards)
        yield from shards


class _ShuffleSamples:
    """Buffer shuffle of ``bufsize`` samples, seeded by (seed, epoch, rank, worker)."""

    def __init__(self, bufsize: int, seed: int):
        self.bufsize, self.seed, self.epoch, self._runs = bufsize, seed, None, 0

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        from webdataset.utils import pytorch_worker_info

        epoch = self.epoch if self.epoch is not None else self._runs
        self._runs += 1
        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(f"samples/{self.seed}/{epoch}/{rank}/{worker}")
        buf: list = []
        for sample in src:
            buf.append(sample)
            if len(buf) >= self.bufsize:
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf


class _ToTensors:
    """Raw sample -> ``(frames (n, 3, s, s) float32, tokens (ctx,) int64, weight () float32)``."""

    def __init__(self, tokenizer, n_frames: int, size: int, mean, std, weights: str):
        self.tokenizer, self.n_frames, self.size, self.weights = tokenizer, n_frames, size, weights
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)

    def __call__(self, sample: dict):
        import torch

        rgb = clip_frames(sample, self.n_frames, self.size)  # (n, s, s, 3) uint8
        x = rgb.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
        frames = torch.from_numpy((x - self.mean) / self.std)
        tokens = self.tokenizer([sample_text(sample)])[0].long()
        weight = torch.tensor(sample_weight(sample, self.weights), dtype=torch.float32)
        return frames, tokens, weight


def curated_dataset(urls: str | Sequence[str], *, tokenizer, n_frames: int = 4, size: int = 64,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    weights: str = "json", shuffle_buffer: int = 0, seed: int = 0,
                    resampled: bool = False, handler=None):
    """A ``webdataset.DataPipeline`` over shard ``urls`` (a list, or a string with ``{a..b}``
    braces) yielding ``(frames, tokens, weight)``.

    ``frames``: ``(n_frames, 3, size, size)`` float32, ``(rgb / 255 - mean) / std`` per channel
    (default mean/std: OpenAI CLIP's); ``tokens``: ``tokenizer([txt])[0]``, int64
    ``(context_length,)``; ``weight``: float32 scalar, ``json['weight']`` or 1 with
    ``weights='ones'``. ``shuffle_buffer > 0`` permutes the shards and buffer-shuffles samples,
    seeded by ``seed`` and the epoch (:func:`set_epoch`); 0 reads in shard order. ``resampled``
    draws shards with replacement forever (deterministic given seed, rank and worker; bound an
    epoch with ``.with_epoch(n)``). ``handler``: webdataset exception handler (default: raise;
    ``webdataset.warn_and_continue`` skips bad samples).
    """
    import webdataset as wds

    _check_weights(weights)
    if n_frames < 1 or size < 1:
        raise ValueError(f"n_frames and size must be >= 1, got n_frames={n_frames}, size={size}")
    handler = handler or wds.reraise_exception
    urls = urls if isinstance(urls, str) else list(urls)
    stages: list = []
    if resampled:
        stages.append(wds.ResampledShards(urls, seed=seed, deterministic=True, empty_check=False))
    else:
        stages.append(wds.SimpleShardList(urls))
        if shuffle_buffer > 0:
            stages.append(_ShuffleShards(seed))
        stages += [wds.split_by_node, wds.split_by_worker]
    stages.append(wds.filters.pipelinefilter(tar_samples)(handler=handler))
    if shuffle_buffer > 0:
        stages.append(_ShuffleSamples(shuffle_buffer, seed))
    to_tensors = _ToTensors(tokenizer, n_frames, size, OPENAI_MEAN if mean is None else mean,
                            OPENAI_STD if std is None else std, weights)
    stages.append(wds.map(to_tensors, handler=handler))
    return wds.DataPipeline(*stages)


#: The name the brief gives the dataset; a function returning a ``webdataset.DataPipeline``.
CuratedShards = curated_dataset


def set_epoch(dataset, epoch: int) -> None:
    """Fix the epoch of a :func:`curated_dataset`'s shuffles (and of resampling), so each epoch
    has its own deterministic order also when ``DataLoader`` workers are re-created."""
    import webdataset as wds

    for stage in getattr(dataset, "pipeline", []):
        if isinstance(stage, (_ShuffleShards, _ShuffleSamples)):
            stage.epoch = int(epoch)
        elif isinstance(stage, wds.ResampledShards):
            stage.epoch = int(epoch) - 1  # it increments before drawing


def make_loader(urls: str | Sequence[str], batch_size: int, num_workers: int = 0, *,
                drop_last: bool = False, pin_memory: bool = False, **kw):
    """``torch.utils.data.DataLoader`` over :func:`curated_dataset` ``(urls, **kw)`` with the
    default collate: batches ``(B, n_frames, 3, size, size)``, ``(B, ctx)``, ``(B,)``."""
    from torch.utils.data import DataLoader

    return DataLoader(curated_dataset(urls, **kw), batch_size=batch_size, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=pin_memory)


# ------------------------------------------------------------------------------------ collate


def _plain(value: Any) -> Any:
    """A member's value as bytes when a reader handed it over as a stream or buffer."""
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if hasattr(value, "getvalue"):  # io.BytesIO (wids)
        return value.getvalue()
    return value


def _as_text(value: Any) -> str:
    value = _plain(value)
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _as_meta(value: Any) -> dict:
    value = _plain(value)
    return value if isinstance(value, dict) else json.loads(value)


def _as_features(value: Any) -> np.ndarray:
    """``(k, D)`` float32 span features from npy bytes or an array."""
    value = _plain(value)
    arr = np.load(io.BytesIO(value), allow_pickle=False) if isinstance(value, bytes) else np.asarray(value)
    return np.asarray(arr, dtype=np.float32).reshape(arr.shape[0] if arr.ndim else 1, -1)


def pad_features(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(B, K, D)`` float32 zero-padded stack of ``(k_b, D)`` arrays (``K = max k_b``) and the
    ``(B, K)`` bool mask of real rows. All arrays must share ``D``.

    >>> x, mask = pad_features([np.ones((1, 2)), np.ones((3, 2))])
    >>> x.shape, mask.sum(1).tolist()
    ((2, 3, 2), [1, 3])
    """
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise ValueError(f"npy features of different widths in one batch: {sorted(widths)}")
    k_max = max((a.shape[0] for a in arrays), default=0)
    out = np.zeros((len(arrays), k_max, widths.pop() if widths else 0), np.float32)
    mask = np.zeros((len(arrays), k_max), bool)
    for b, a in enumerate(arrays):
        out[b, :len(a)], mask[b, :len(a)] = a, True
    return out, mask


def collate_samples(samples: Sequence[dict]) -> dict:
    """A batch of shard samples for ``DataLoader(collate_fn=collate_samples)``.

    Takes samples as webdataset (raw bytes or after ``.decode()``), wids (member names with a
    leading dot, values as streams) or :func:`iter_samples` give them, and returns::

        "__key__": list[str]           "txt": list[str]          "json": list[dict]
        "weight": (B,) float32 tensor, json["weight"]
        "mp4": list[bytes]             (video mode: the clips, still encoded; clip_frames decodes them)
        "jpg": list[list[bytes]]       (jpg clips: each sample's f0000.jpg, f0001.jpg, ... in order)
        "npy": (B, K, D) float32 tensor zero-padded over the span's k frames, "npy_mask": (B, K) bool

    Media keys appear only when the samples hold them; other members are passed on as lists.
    The default collate cannot batch these samples: the span features and the json's
    ``score_frame_pts_s`` have a length per sample.
    """
    import torch

    if not samples:
        raise ValueError("collate_samples: empty batch")
    rows = [{name.lstrip("."): _plain(value) for name, value in sample.items()} for sample in samples]
    batch: dict[str, Any] = {"__key__": [str(r.get("__key__", "")) for r in rows]}
    if all("txt" in r for r in rows):
        batch["txt"] = [_as_text(r["txt"]) for r in rows]
    if all("json" in r for r in rows):
        batch["json"] = [_as_meta(r["json"]) for r in rows]
        batch["weight"] = torch.tensor([float(m["weight"]) for m in batch["json"]], dtype=torch.float32)
    if all("npy" in r for r in rows):
        feats, mask = pad_features([_as_features(r["npy"]) for r in rows])
        batch["npy"], batch["npy_mask"] = torch.from_numpy(feats), torch.from_numpy(mask)
    if all("mp4" in r for r in rows):
        batch["mp4"] = [r["mp4"] for r in rows]
    if all(_jpg_members(r) for r in rows):
        batch["jpg"] = [[r[name] for name in _jpg_members(r)] for r in rows]
    done = set(batch) | {"npy", "mp4"}
    for name in sorted({n for r in rows for n in r} - done):
        if not _JPG_RE.match(name):
            batch[name] = [r.get(name) for r in rows]
    return batch


# ---------------------------------------------------------------------------------- in memory


def iter_samples(urls: str | Sequence[str]) -> Iterator[dict]:
    """Raw samples (member -> bytes) of ``urls`` in shard read order, in this process."""
    import webdataset as wds

    urls = urls if isinstance(urls, str) else list(urls)
    return iter(wds.DataPipeline(wds.SimpleShardList(urls), wds.filters.pipelinefilter(tar_samples)()))


def load_curated(urls: str | Sequence[str], *, n_frames: int, size: int, with_meta: bool = True) -> dict:
    """Every sample of ``urls`` in memory, in shard read order:

    ``frames`` uint8 ``(N, n_frames, size, size, 3)`` (:func:`clip_frames`), ``texts`` list[str],
    ``weights`` float32 ``(N,)`` (``json['weight']``), ``keys`` list[str] and, with
    ``with_meta``, ``meta`` list[dict] (the json members).
    """
    frames, texts, weights, keys, meta = [], [], [], [], []
    for sample in iter_samples(urls):
        frames.append(clip_frames(sample, n_frames, size))
        texts.append(sample_text(sample))
        info = sample_meta(sample)
        if "weight" not in info:
            raise ValueError(f"sample {_key(sample)}: json has no 'weight'")
        weights.append(float(info["weight"]))
        keys.append(_key(sample))
        if with_meta:
            meta.append(info)
    out = {
        "frames": np.stack(frames) if frames else np.zeros((0, n_frames, size, size, 3), np.uint8),
        "texts": texts,
        "weights": np.asarray(weights, np.float32).reshape(-1),
        "keys": keys,
    }
    if with_meta:
        out["meta"] = meta
    return out
