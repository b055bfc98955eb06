"""Run configuration: YAML parsed once into frozen dataclasses, validated with messages that
name the field and what is allowed. ``--set a.b=value`` overrides use the same dotted keys."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from curation.align import METHODS, PROMPT_MODES, AlignParams
from pipeline.retry import RetryPolicy

def _default_config_path() -> str | None:
    """``configs/default.yaml`` of a source checkout, else the copy ``setup.py`` installs under
    ``<prefix>/share/nccurate/configs``; None when neither exists (the dataclass defaults, which
    a test keeps equal to the YAML, are used then)."""
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(here, "configs", "default.yaml"),
                      os.path.join(sys.prefix, "share", "nccurate", "configs", "default.yaml")):
        if os.path.isfile(candidate):
            return candidate
    return None


DEFAULT_CONFIG = _default_config_path()
LAYOUTS = ("grouped", "shuffled")
DECODE_BACKENDS = ("decord", "pyav")
CLIP_FORMATS = ("mp4", "jpg", "npy")
PRECISIONS = ("fp32", "fp16", "bf16")


class ConfigError(ValueError):
    """A one-line, user-facing configuration error."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "ViT-B-32"
    pretrained: str | None = "openai"
    device: str = "cpu"
    precision: str = "fp32"
    frame_batch_size: int = 64
    text_batch_size: int = 256


@dataclass(frozen=True)
class DecodeConfig:
    backend: str = "decord"
    sample_fps: float = 1.0


@dataclass(frozen=True)
class ClipsConfig:
    format: str = "mp4"
    size: int = 128
    fps: float = 8.0


@dataclass(frozen=True)
class FeaturesConfig:
    dim: int | None = None


@dataclass(frozen=True)
class OutputConfig:
    layout: str = "grouped"
    samples_per_shard: int = 1000
    index_files: int = 4


@dataclass(frozen=True)
class Config:
    max_failure_ratio: float = 0.1
    decode_timeout_s: float = 600.0
    seed: int = 0
    checkpoints: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    align: AlignParams = field(default_factory=AlignParams)
    output: OutputConfig = field(default_factory=OutputConfig)
    io: RetryPolicy = field(default_factory=RetryPolicy)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """First 16 hex digits of sha256 over the canonical JSON of the whole config."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: (dotted key) -> (predicate, description of what is allowed)
_CHECKS = {
    "max_failure_ratio": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "decode_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "io.attempts": (lambda v: v >= 1, "an integer >= 1 (1: no retry)"),
    "io.backoff_s": (lambda v: v >= 0, "a number >= 0 (seconds)"),
    "features.dim": (lambda v: v is None or v > 0, "null or a positive integer"),
    "align.method": (lambda v: v in METHODS, f"one of {list(METHODS)}"),
    "align.prompt_mode": (lambda v: v in PROMPT_MODES, f"one of {list(PROMPT_MODES)}"),
    "align.prompt_quantile": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "align.eps": (lambda v: v > 0, "a positive number"),
    "align.n_iter": (lambda v: v >= 1, "an integer >= 1"),
    "align.ncl_temperature": (lambda v: v > 0, "a positive number"),
    "align.smooth_s": (lambda v: v >= 0, "a number >= 0 (seconds)"),
    "align.bucket_span_s": (lambda v: v > 0, "a positive number of seconds"),
    "align.window_s": (lambda v: v is None or v > 0, "null or a positive number of seconds"),
    "align.prior_sigma_s": (lambda v: v is None or v > 0, "null or a positive number of seconds"),
    "align.prior_weight": (lambda v: v >= 0, "a number >= 0"),
    "align.min_span_s": (lambda v: v > 0, "a positive number of seconds"),
    "align.min_alignability": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "align.s2dtw_gamma": (lambda v: v > 0, "a positive number"),
    "output.layout": (lambda v: v in LAYOUTS, f"one of {list(LAYOUTS)}"),
    "model.device": (lambda v: v == "cpu" or v == "cuda" or v.startswith("cuda:"), "cpu, cuda or cuda:N"),
    "model.precision": (lambda v: v in PRECISIONS, f"one of {list(PRECISIONS)}"),
    "model.frame_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "model.text_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "decode.backend": (lambda v: v in DECODE_BACKENDS, f"one of {list(DECODE_BACKENDS)}"),
    "decode.sample_fps": (lambda v: v > 0, "a positive number (frames per second)"),
    "clips.format": (lambda v: v in CLIP_FORMATS, f"one of {list(CLIP_FORMATS)}"),
    "clips.size": (lambda v: v >= 16, "an integer >= 16 (pixels, shorter side)"),
    "clips.fps": (lambda v: v > 0, "a positive number (frames per second)"),
    "output.samples_per_shard": (lambda v: v >= 1, "an integer >= 1"),
    "output.index_files": (lambda v: v >= 1, "an integer >= 1"),
}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _known_keys(cls=Config, prefix: str = "") -> dict[str, Any]:
    """dotted key -> annotated type, for every leaf of the dataclass tree."""
    out = {}
    for name, typ in get_type_hints(cls).items():
        if dataclasses.is_dataclass(typ):
            out.update(_known_keys(typ, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = typ
    return out


_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_TYPE_NAMES = {"float": "a number", "int": "an integer", "bool": "a boolean (true/false)", "str": "a string"}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against the annotated type (``float``, ``int``, ``bool``, ``str``, each
    optionally ``| None``); ints are accepted where floats are expected."""
    text = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    optional = "None" in str(typ)
    base = next((name for name in _TYPE_NAMES if name in str(text)), "str")
    allowed = _TYPE_NAMES[base] + (" or null" if optional else "")
    if value is None and optional:
        return None
    if isinstance(value, str) and base in ("float", "int") and _NUMBER_RE.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "float" and is_number:
        return float(value)
    if (base == "int" and is_number and float(value).is_integer()) :
        return int(value)
    if (base == "bool" and isinstance(value, bool)) or (base == "str" and isinstance(value, str)):
        return value
    raise ConfigError(f"config {key}: {value!r} is not allowed; expected {allowed}")


def parse_override(text: str) -> tuple[str, Any]:
    """``'align.eps=0.05'`` -> ``('align.eps', 0.05)``; the value is read as a YAML scalar."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set align.eps=0.05")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None


def build_config(values: dict[str, Any]) -> Config:
    """Validate a flat ``{dotted key: value}`` mapping and build the frozen :class:`Config`."""
    known = _known_keys()
    for key in values:
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"config: unknown key {key!r}{hint}")
    clean = {k: _coerce(k, v, known[k]) for k, v in values.items()}
    for key, value in clean.items():
        check = _CHECKS.get(key)
        if check and not check[0](value):
            raise ConfigError(f"config {key}: {value!r} is not allowed; expected {check[1]}")
    sections: dict[str, dict] = {}
    top = {}
    for key, value in clean.items():
        if "." in key:
            section, leaf = key.split(".", 1)
            sections.setdefault(section, {})[leaf] = value
        else:
            top[key] = value
    hints = get_type_hints(Config)
    return Config(**top, **{name: hints[name](**fields) for name, fields in sections.items()})


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML ``path`` (default ``configs/default.yaml``), apply ``--set`` overrides, validate."""
    import yaml

    path = path or DEFAULT_CONFIG
    if path is None:
        return build_config({key: value for text in overrides for key, value in [parse_override(text)]})
    try:
        with open(path, encoding="utf-8") as handle:
            tree = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys")
    values = _flatten(tree)
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    return build_config(values)
