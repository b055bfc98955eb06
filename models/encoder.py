"""The open_clip dual encoder of video mode: frames -> (N, D) and caption texts -> (m, D),
both float32 and L2-normalised, so a caption/frame similarity is a plain dot product.

* :class:`EncoderSpec` is a small frozen, picklable description (model name, weights, device,
  precision, seed). Nothing heavy happens when it is built, so Beam can pickle it inside a
  ``ModelHandler`` and the model is loaded on the worker (``load_encoder`` in ``load_model``).
* torch and open_clip are imported inside the functions that need them: importing this module
  costs nothing and never imports ``apache_beam`` (DESIGN §2, §8).
* Weights: ``pretrained=None`` is a random init seeded by ``spec.seed`` (identical in every
  process: used by the tests and by benchmarks); an open_clip tag such as ``'openai'`` is
  downloaded by open_clip into its cache on the user's machine; any other value is a local
  checkpoint file (a ``state_dict``, ``{'state_dict': ...}`` or ``.safetensors``), loaded with
  ``torch.load(..., weights_only=True)`` (passed explicitly to open_clip, which also defaults to it).
* Precision: on CUDA the weights stay fp32 and ``fp16``/``bf16`` run the forward passes under
  ``torch.autocast``. On CPU, ``bf16`` casts the weights and the input to bfloat16 (not autocast,
  which re-casts the weights at every matmul and gained little) where the CPU has native bf16
  units (:func:`cpu_has_bf16`: ``avx512_bf16`` or ``amx_bf16``); the features go back to fp32
  before normalising. Elsewhere bf16 would be emulated and slower, so it runs fp32 with a one-line
  warning, as ``fp16`` on CPU does.
* Backend (``model.backend``): ``torch`` runs the open_clip model itself; ``onnxruntime`` (fp32,
  ``int8``) and ``openvino`` (fp32, bf16) run both towers exported from it on the CPU
  (:mod:`models.backends`: exported once per model + weights digest into a cache folder, and
  checked against the torch model at every load). Preprocessing and tokenising are the same.
* ``torch.set_num_threads`` is never changed: the runner / user owns the thread budget. Results
  do not depend on it: importing this module sets ``MKL_CBWR=AUTO,STRICT`` (unless the user set
  it), MKL's strict conditional numerical reproducibility, under which its GEMMs give the same bits
  on any thread count (without it a 6-caption text batch differed by 2e-7 between 1 and 2 threads,
  and the realigned scores after it). MKL reads it when first called, so this must be imported
  before the process's first torch matmul, as every nccurate entry point does.
* One encoder per spec per process: :func:`shared_encoder` (and :class:`LazyEncoder`, which
  defers it to first use) serve the Beam handlers, the report and the benchmarks alike.
  :func:`encoder_spec_of` reads a spec off a config's model section.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from models import backends as _backends

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)

#: MKL's strict CNR mode (see the module docstring); read by MKL at its first call.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

#: Directory of the project's own open_clip model configs (``nccurate-tiny.json``, ...).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+)$")

_registered = False
_register_lock = threading.Lock()


@dataclass(frozen=True)
class EncoderSpec:
    """What to load; cheap to build and to pickle (no torch here).

    ``name``: an open_clip model name (``open_clip.list_models()``, e.g. ``ViT-B-32``, or one of
    ours in ``models/configs``, e.g. ``nccurate-tiny``); ``pretrained``: an open_clip tag
    (``open_clip.list_pretrained_tags_by_model(name)``), a local checkpoint path, or None for a
    random init with ``torch.manual_seed(seed)``; ``device``: ``cpu``, ``cuda`` or ``cuda:N``;
    ``precision``: ``fp32``, ``fp16`` or ``bf16`` (autocast on CUDA; on CPU bf16 weights and
    input where the CPU has bf16 units, else fp32), or ``int8``; ``backend``: ``torch``,
    ``onnxruntime`` or ``openvino`` (which precisions each runs: :data:`models.backends.BACKEND_PRECISIONS`).
    """

    name: str = "nccurate-tiny"
    pretrained: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0
    backend: str = "torch"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"encoder name must be a non-empty string, got {self.name!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"encoder precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ValueError(f"encoder device {self.device!r} is not one of cpu, cuda, cuda:N")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained):
            raise ValueError(f"encoder pretrained must be a tag, a file path or None, got {self.pretrained!r}")
        _backends.check_backend(self.backend, self.precision, self.device)


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16`` in the
    ``flags`` of ``cpuinfo``); False where that file does not exist (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            flags = {f for line in handle if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def register_project_configs() -> None:
    """Make ``models/configs/*.json`` known to open_clip (idempotent, thread-safe)."""
    global _registered
    with _register_lock:
        if _registered:
            return
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def _config_name(name: str) -> str:
    """open_clip's own lookup key for a schema-less name ('ViT-B/32' -> 'ViT-B-32')."""
    return name.replace("/", "-")


def _has_schema(name: str) -> bool:
    return name.startswith(("hf-hub:", "local-dir:"))


def _model_config(name: str) -> dict:
    """The architecture config of ``name``; ValueError listing some known names if unknown."""
    import open_clip

    register_project_configs()
    cfg = open_clip.get_model_config(name if _has_schema(name) else _config_name(name))
    if cfg is None:
        known = open_clip.list_models()
        ours = [n for n in known if n.startswith("nccurate")]
        sample = ours + [n for n in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50") if n in known]
        raise ValueError(f"unknown open_clip model name {name!r}; available include {', '.join(sample)} "
                         f"({len(known)} in open_clip.list_models())")
    return cfg


def _square_side(size, name: str) -> int:
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"model {name!r} expects non-square images {tuple(size)}; only square inputs are supported")
        size = size[0]
    return int(size)


def input_size_of(spec: EncoderSpec) -> int:
    """The square image side ``spec``'s model expects, from its config alone (no weights are
    loaded: the decoder calls this in ``setup`` to decode at the right size)."""
    return _square_side(_model_config(spec.name)["vision_cfg"]["image_size"], spec.name)


def _check_pretrained(spec: EncoderSpec) -> str | None:
    """``spec.pretrained`` as open_clip should get it: a known tag, an existing file, or None."""
    import open_clip

    if spec.pretrained is None or _has_schema(spec.name):
        return None if _has_schema(spec.name) else spec.pretrained
    if open_clip.get_pretrained_cfg(_config_name(spec.name), spec.pretrained):
        return spec.pretrained
    if "://" in spec.pretrained and not spec.pretrained.startswith("file://"):
        return local_weights(spec.pretrained)
    path = os.path.expanduser(spec.pretrained.removeprefix("file://"))
    if os.path.isfile(path):
        return path
    tags = open_clip.list_pretrained_tags_by_model(_config_name(spec.name))
    known = f"; known tags for {spec.name}: {', '.join(tags)}" if tags else f"; {spec.name} has no open_clip tags"
    raise ValueError(f"pretrained {spec.pretrained!r} is neither an existing checkpoint file nor an open_clip tag{known}")


def local_weights(uri: str) -> str:
    """A local copy of the checkpoint at ``uri`` (``gs://``, ``s3://``, any fsspec protocol), kept
    in ``$NCCURATE_CACHE`` (default ``~/.cache/nccurate``)/weights under a name made from the URI,
    and copied again when its size differs from the store's. Written to a temporary name and
    renamed, so concurrent workers never read a partial file. ValueError naming the URI when it
    cannot be read."""
    import hashlib

    import fsspec

    folder = os.path.join(os.environ.get("NCCURATE_CACHE", os.path.expanduser("~/.cache/nccurate")), "weights")
    target = os.path.join(folder, hashlib.sha256(uri.encode()).hexdigest()[:16] + "-" + uri.rsplit("/", 1)[-1])
    try:
        fs, inner = fsspec.core.url_to_fs(uri)
        size = int(fs.size(inner))
        if not (os.path.isfile(target) and os.path.getsize(target) == size):
            os.makedirs(folder, exist_ok=True)
            tmp = f"{target}.tmp-{os.getpid()}"
            fs.get_file(inner, tmp)
            os.replace(tmp, target)
    except Exception as exc:  # a missing object, no credentials, no filesystem for the protocol
        raise ValueError(f"pretrained {uri!r}: cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    return target


def check_spec(spec: EncoderSpec) -> None:
    """Fail fast, without loading weights: ValueError for an unknown model name, a
    ``pretrained`` that is neither a known tag nor an existing file (both named), or a backend whose
    packages are not installed."""
    _model_config(spec.name)
    _check_pretrained(spec)
    _backends.require_packages(spec.backend)


def encoder_spec_of(model_config) -> EncoderSpec:
    """The :class:`EncoderSpec` of a run's model section (``pipeline.config.ModelConfig`` or any
    object with ``name``, ``pretrained``, ``device``, ``precision`` and ``backend``); the seed stays 0."""
    return EncoderSpec(name=model_config.name, pretrained=model_config.pretrained, device=model_config.device,
                       precision=model_config.precision, backend=model_config.backend)


class ClipEncoder:
    """Holds model + tokenizer + preprocess config. Built by :func:`load_encoder`.

    ``input_size``: the square image side the model expects; ``embed_dim``: D of both towers.
    """

    def __init__(self, spec: EncoderSpec, model, tokenizer, device: "torch.device",
                 autocast_dtype: "torch.dtype | None", input_size: int, embed_dim: int, mean, std,
                 input_dtype: "torch.dtype | None" = None):
        import torch

        self.spec = spec
        self.input_dtype = torch.float32 if input_dtype is None else input_dtype  # the weights' dtype
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.input_size = int(input_size)
        self.embed_dim = int(embed_dim)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return (f"ClipEncoder({self.spec.name!r}, pretrained={self.spec.pretrained!r}, device={str(self.device)!r}, "
                f"input_size={self.input_size}, embed_dim={self.embed_dim})")

    def _autocast(self):
        import contextlib

        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def pixels(self, chunk: np.ndarray) -> "torch.Tensor":
        """(n, H, W, 3) uint8 -> (n, 3, S, S) normalised with the model's mean/std (computed in
        float32, then cast to the weights' dtype)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)  # uint8 over the bus
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic",
                              align_corners=False, antialias=True).clamp_(0.0, 1.0)
        return ((x - self._mean) / self._std).to(self.input_dtype)

    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """frames: (N, S, S, 3) uint8 RGB, already resized/cropped to ``input_size`` by the
        decoder (other sizes are resized here, bicubic with antialias, no crop) -> (N, D)
        float32, L2-normalised rows. Encoded in chunks of ``batch_size`` under
        ``torch.inference_mode`` (+ autocast for fp16/bf16 on CUDA; bf16 weights on a CPU with bf16 units)."""
        import torch
        import torch.nn.functional as F

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(frames), self.embed_dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            for lo in range(0, len(frames), batch_size):
                feats = self.model.encode_image(self.pixels(frames[lo:lo + batch_size]))
                out[lo:lo + batch_size] = F.normalize(feats.float(), dim=-1).cpu().numpy()
        return out

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """m caption texts -> (m, D) float32, L2-normalised rows, tokenised with
        ``open_clip.get_tokenizer(name)`` (truncated to the model's context length)."""
        import torch
        import torch.nn.functional as F

        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, not one string")
        texts = list(texts)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts must all be str, got {bad[0]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(texts), self.embed_dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            for lo in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[lo:lo + batch_size]).to(self.device)
                feats = self.model.encode_text(tokens)
                out[lo:lo + batch_size] = F.normalize(feats.float(), dim=-1).cpu().numpy()
        return out


def load_encoder(spec: EncoderSpec) -> ClipEncoder:
    """Build the model of ``spec`` (weights from a tag, a local file, or a seeded random init),
    in eval mode on ``spec.device``, with its tokenizer and preprocessing constants.

    Raises ValueError for an unknown model name (listing some available ones), a
    ``pretrained`` that is neither a known tag nor an existing file (naming it), a checkpoint
    that does not fit the architecture, or a CUDA device that is not available.
    """
    import open_clip
    import torch

    cfg = _model_config(spec.name)
    pretrained = _check_pretrained(spec)
    device = torch.device(spec.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"encoder device {spec.device!r} requested but torch.cuda.is_available() is False")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"encoder device {spec.device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    autocast_dtype, weights_dtype = None, None
    exported_precision = spec.precision
    if spec.backend != "torch":
        _backends.require_packages(spec.backend)  # before the model is built
        if spec.precision == "bf16" and not cpu_has_bf16():
            log.warning("encoder precision bf16 ignored on %s (this CPU has no bf16 units): running fp32", spec.backend)
            exported_precision = "fp32"
    elif spec.precision != "fp32":
        if device.type == "cuda":
            autocast_dtype = torch.float16 if spec.precision == "fp16" else torch.bfloat16
        elif spec.precision == "bf16" and cpu_has_bf16():
            weights_dtype = torch.bfloat16
        else:
            why = "this CPU has no bf16 units" if spec.precision == "bf16" else "fp16 is not fast on CPU"
            log.warning("encoder precision %s ignored on %s (%s): running fp32", spec.precision, spec.device, why)

    name = spec.name if _has_schema(spec.name) else _config_name(spec.name)
    # Seed a forked RNG: random-init weights are identical in every process, and the caller's
    # global RNG state is left as it was. (open_clip builds on CPU, then moves to the device.)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            model = open_clip.create_model(
                name, pretrained=pretrained, precision="fp32", device=device,
                pretrained_image=False, pretrained_text=False,  # never fetch tower weights behind our back
                weights_only=True)
        except RuntimeError as exc:
            if pretrained is not None and os.path.isfile(pretrained):
                raise ValueError(f"checkpoint {pretrained!r} does not fit model {spec.name!r}: {exc}") from exc
            raise
    model.eval()
    if weights_dtype is not None:
        model.to(weights_dtype)
    tokenizer = open_clip.get_tokenizer(name)

    pp = open_clip.get_model_preprocess_cfg(model)
    input_size = _square_side(pp.get("size", cfg["vision_cfg"]["image_size"]), spec.name)
    mean = tuple(float(v) for v in pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in pp.get("std", open_clip.OPENAI_DATASET_STD))
    embed_dim = cfg.get("embed_dim")
    encoder = ClipEncoder(spec, model, tokenizer, device, autocast_dtype, input_size, embed_dim or 0, mean, std,
                          weights_dtype)
    if not embed_dim:  # configs from hf-hub/local-dir may nest it differently: measure it
        with torch.inference_mode():
            encoder.embed_dim = int(model.encode_text(tokenizer([""]).to(device)).shape[-1])
    if spec.backend != "torch":
        # the torch model is only the source of the export and the reference of its load-time
        # check: dropped before the sessions open, so the two are never in memory together
        reference = _backends.export_with_reference(model, spec.name, input_size, tokenizer, exported_precision,
                                                    encoder.pixels)
        encoder.model = model = None
        encoder.model = _backends.checked_towers(reference, spec.backend, exported_precision, torch.get_num_threads())
    return encoder


#: One :class:`ClipEncoder` per spec per process. The frame and the text handler are two
#: ``RunInference`` transforms, each loading its own model; both use the same open_clip model,
#: and two copies of a CLIP-size one would double a worker's memory (``nccurate bench memory``).
_ENCODERS: dict[EncoderSpec, ClipEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def shared_encoder(spec: EncoderSpec) -> ClipEncoder:
    """The process's encoder of ``spec``, built on first use (thread-safe). Read-only use only:
    callers in other threads run forward passes on the same module."""
    with _ENCODERS_LOCK:
        if spec not in _ENCODERS:
            _ENCODERS[spec] = load_encoder(spec)
        return _ENCODERS[spec]


class LazyEncoder:
    """An encoder of ``spec`` built (or reused, :func:`shared_encoder`) on first use
    (thread-safe): what the Beam handlers' ``load_model`` returns.

    Every run's graph holds the video-mode branch, since the mode is chosen per manifest row;
    a run of feature-mode rows only (or of videos that all bring ``caption_features``) thus
    never loads weights it does not use. The spec is checked at launch (:func:`check_spec`), so
    a bad model name or checkpoint path still fails the run before any work starts.
    """

    def __init__(self, spec: EncoderSpec):
        self.spec = spec
        self._encoder: ClipEncoder | None = None
        self._lock = threading.Lock()

    def get(self) -> ClipEncoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = shared_encoder(self.spec)
            return self._encoder

    def encode_frames(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        return self.get().encode_frames(frames, batch_size)

    def encode_texts(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return self.get().encode_texts(texts, batch_size)
