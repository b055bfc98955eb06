"""Run configuration: YAML parsed once into frozen dataclasses, validated with messages that
name the field and what is allowed. ``--set a.b=value`` overrides use the same dotted keys.

Two sections say how and where a run executes, not what it writes, and are left out of
:meth:`Config.hash`: ``beam`` (Beam pipeline options, :func:`beam_args`) and ``resources``
(resource hints for the encoder steps, :func:`encoder_resource_hints`)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from curation.align import METHODS, PROMPT_MODES, AlignParams
from pipeline.inputs.retry import RetryPolicy
from pipeline.errors import ConfigError  # noqa: F401 (re-exported)

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
#: Sections that choose the runner and its machines; they do not change outputs, so the config
#: hash (recorded in every sample, and what a rerun must match to resume) leaves them out.
RUNTIME_SECTIONS = ("beam", "resources")


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
    backend: str = "pyav"
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
class ResourcesConfig:
    """Beam resource hints for the decode + encoder steps (null = no hint), and the threads each
    worker process gives the decoder and torch (0 = the library's choice, one per core)."""

    encoder_accelerator: str | None = None
    encoder_min_ram: str | None = None
    decode_threads: int = 0
    torch_threads: int = 0


class BeamOptions(Mapping):
    """The ``beam:`` section: Beam pipeline option name -> value (str, int, float, bool, or a
    tuple of scalars for repeatable options). Read-only and hashable like the frozen config
    that holds it; validated by :func:`build_config`."""

    def __init__(self, items: Mapping[str, Any] | None = None):
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return f"BeamOptions({self._items!r})"


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
    beam: BeamOptions = field(default_factory=BeamOptions)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

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
    "resources.encoder_accelerator": (lambda v: v is None or _is_accelerator_hint(v),
                                      "null or a Beam accelerator hint such as "
                                      "'type:nvidia-tesla-t4;count:1;install-nvidia-driver'"),
    "resources.decode_threads": (lambda v: v >= 0, "an integer >= 0 (0: one per core)"),
    "resources.torch_threads": (lambda v: v >= 0, "an integer >= 0 (0: torch's default, one per core)"),
    "resources.encoder_min_ram": (lambda v: v is None or _is_resource_hint("min_ram", v),
                                  "null or a memory size such as 16GB (a Beam min_ram hint)"),
}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"align": {"eps": 0.1}}`` -> ``{"align.eps": 0.1}``; a Beam option's value stays whole
    (``beam.environment_config`` may be a mapping, passed to Beam as JSON)."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if value is None and not prefix and key in _sections():
            continue  # a section whose keys are all commented out
        if isinstance(value, dict) and prefix != "beam.":
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


@functools.lru_cache(maxsize=1)
def _sections() -> dict[str, list[str]]:
    """section -> its keys, for the sections of :class:`Config` (``beam``: Beam's options, not listed)."""
    sections: dict[str, list[str]] = {"beam": []}
    for key in _known_keys():
        if "." in key:
            section, leaf = key.split(".", 1)
            sections.setdefault(section, []).append(leaf)
    return sections


def _nearest_key(key: str, known: list[str]) -> str | None:
    """The valid key a misspelt ``key`` most likely meant: its section (``algin`` -> ``align``)
    and then its leaf (``epss`` -> ``eps``) are matched separately, then the whole key."""
    sections = _sections()
    section, _, leaf = key.partition(".")
    if leaf:
        near_section = section if section in sections else next(
            iter(difflib.get_close_matches(section, list(sections), n=1, cutoff=0.6)), None)
        if near_section == "beam":
            return f"beam.{leaf}" if leaf in _beam_flag_actions([leaf]) else None
        if near_section is not None:
            leaves = sections[near_section]
            near_leaf = leaf if leaf in leaves else next(iter(difflib.get_close_matches(leaf, leaves, n=1)), None)
            if near_leaf is not None:
                return f"{near_section}.{near_leaf}"
    return next(iter(difflib.get_close_matches(key, known, n=1)), None)


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
    raise ConfigError(f"config {key}: {value!r} is not allowed; expected {allowed}", key)


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
    values, beam = _split_beam(values)
    known = _known_keys()
    for key, value in values.items():
        if key in _sections():
            raise ConfigError(f"config {key}: {value!r} is not allowed; {key} is a section: set its keys "
                              f"(e.g. {key}.{_sections()[key][0]})", key)
        if key not in known:
            near = _nearest_key(key, list(known))
            hint = f"; did you mean {near!r}?" if near else ""
            raise ConfigError(f"config: unknown key {key!r}{hint}", key)
    clean = {k: _coerce(k, v, known[k]) for k, v in values.items()}
    for key, value in clean.items():
        check = _CHECKS.get(key)
        if check and not check[0](value):
            raise ConfigError(f"config {key}: {value!r} is not allowed; expected {check[1]}", key)
    sections: dict[str, dict] = {}
    top = {}
    for key, value in clean.items():
        if "." in key:
            section, leaf = key.split(".", 1)
            sections.setdefault(section, {})[leaf] = value
        else:
            top[key] = value
    if sections.get("align", {}).get("window_s", 0) is None and sections["align"].get("method", AlignParams.method) == "posterior":
        raise ConfigError("config align.window_s: null is not allowed with align.method 'posterior' (its evidence grid "
                          "and offset prior span ±window_s); give seconds, e.g. 60", "align.window_s")
    hints = get_type_hints(Config)
    return Config(**top, beam=_check_beam(beam), **{name: hints[name](**fields) for name, fields in sections.items()})


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML ``path`` (default ``configs/default.yaml``), apply ``--set`` overrides, validate.
    An error about a key says where it was set: ``(in config file PATH)`` or ``(from --set ...)``."""
    import yaml

    path = path or DEFAULT_CONFIG
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                tree = yaml.safe_load(handle) or {}
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                              f"{exc.start}); expected a YAML file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of keys")
        values = _flatten(tree)
    origins = dict.fromkeys(values, f"in config file {path}")
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
        origins[key] = f"from --set {text}"
    try:
        return build_config(values)
    except ConfigError as exc:
        origin = origins.get(exc.key) or origins.get(str(exc.key).split(".")[0])  # a whole section from --set
        if origin is None:
            raise
        raise ConfigError(f"{exc} ({origin})", exc.key) from None


# ----------------------------------------------------------------------------- runtime sections
# Beam is imported only when these sections are set, so `nccurate --help` and the validation
# of a config without them stay fast.

#: Modules whose PipelineOptions subclasses are not imported with apache_beam itself; imported
#: only when an option name is not found among the options already known.
_OPTIONAL_OPTION_MODULES = ("apache_beam.runners.dask.dask_runner",)


def _split_beam(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the flat ``values`` into the other keys and the ``beam.<option>`` ones (a whole
    ``beam`` mapping, as ``--set 'beam={runner: DirectRunner}'`` gives, is spread out)."""
    rest, beam = {}, {}
    for key, value in values.items():
        if key == "beam":
            if not isinstance(value, dict):
                raise ConfigError(f"config beam: {value!r} is not allowed; expected a mapping of Beam "
                                  "pipeline option names to values, e.g. {runner: DataflowRunner}", key)
            beam.update(value)
        elif key.startswith("beam."):
            beam[key[len("beam."):]] = value
        else:
            rest[key] = value
    return rest, beam


def _option_classes() -> tuple[type, ...]:
    """Every PipelineOptions subclass imported so far (subclasses of subclasses included)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    found, todo = [], [PipelineOptions]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return tuple(found)


@functools.lru_cache(maxsize=4)
def _beam_parser(classes: tuple[type, ...]):
    """The argparse parser PipelineOptions builds from ``classes`` (as ``get_all_options``
    does), except that a parse error raises ValueError instead of exiting the process."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    class RaisingParser(_BeamArgumentParser):
        def error(self, message):
            raise ValueError(message)

    parser = RaisingParser(allow_abbrev=False, add_help=False)
    for cls in classes:
        if "_add_argparse_args" in cls.__dict__:
            try:
                cls._add_argparse_args(parser)
            except argparse.ArgumentError:
                pass  # a second copy of an options class (e.g. re-imported) re-adds its flags
    return parser


def _beam_flags() -> dict[str, argparse.Action]:
    """Beam option name (a flag without its ``--``) -> its argparse action."""
    parser = _beam_parser(_option_classes())
    return {flag[2:]: action for action in parser._actions for flag in action.option_strings
            if flag.startswith("--")}


def _beam_flag_actions(names) -> dict[str, argparse.Action]:
    """:func:`_beam_flags`, importing the optional options modules first when one of ``names``
    is not known yet."""
    import importlib

    flags = _beam_flags()
    if set(names) - set(flags):
        for module in _OPTIONAL_OPTION_MODULES:
            try:
                importlib.import_module(module)
            except Exception:  # an optional runner whose dependencies are not installed
                continue
        flags = _beam_flags()
    return flags


def _option_flags(name: str, value: Any) -> list[str]:
    """Command-line flags for one Beam option: a list repeats the flag, ``true`` is the bare
    flag, ``false`` its ``--no_`` form where Beam has one (else nothing), null nothing."""
    if value is None:
        return []
    if isinstance(value, bool):
        if value:
            return [f"--{name}"]
        negated = f"no_{name}"
        return [f"--{negated}"] if negated in _beam_flags() else []
    return [f"--{name}={item}" for item in (value if isinstance(value, tuple) else (value,))]


def _beam_value(key: str, value: Any, action: argparse.Action) -> Any:
    """``value`` in the form :func:`_option_flags` renders, checked against the kind of flag:
    on/off flags take true/false, repeatable options (``experiments``, ``resource_hints``,
    ...) a value or a list of values, the others one value; a mapping becomes its JSON."""
    is_flag = action.nargs == 0
    repeatable = not is_flag and not isinstance(action, argparse._StoreAction)
    if isinstance(value, dict):
        value = json.dumps(value)
    if isinstance(value, list) and repeatable and all(
            isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value):
        return tuple(value)
    if value is None or (isinstance(value, bool) == is_flag and isinstance(value, (str, int, float))):
        return value
    allowed = ("true or false (an on/off flag)" if is_flag else
               "a value or a list of values" if repeatable else "a single value")
    raise ConfigError(f"config {key}: {value!r} is not allowed; expected {allowed}", key)


def _check_beam(options: dict[str, Any]) -> BeamOptions:
    """Validate the ``beam`` section against the options the installed Beam knows: each name
    must be an option, each value must parse as Beam parses its flag."""
    if not options:
        return BeamOptions()
    actions = _beam_flag_actions(options)
    parser = _beam_parser(_option_classes())
    clean = {}
    for name, value in options.items():
        key = f"beam.{name}"
        if name not in actions:
            near = difflib.get_close_matches(name, list(actions), n=1)
            hint = f"; did you mean 'beam.{near[0]}'?" if near else ""
            raise ConfigError(f"config: unknown key {key!r} (not a Beam pipeline option){hint}", key)
        clean[name] = _beam_value(key, value, actions[name])
        try:
            parser.parse_known_args(_option_flags(name, clean[name]))
        except ValueError as exc:
            raise ConfigError(f"config {key}: {value!r} is not allowed; Beam says: {exc}", key) from None
    return BeamOptions(clean)


def beam_args(config: Config) -> list[str]:
    """The ``beam`` section as Beam command-line flags, in the order written. Give them to
    ``PipelineOptions`` before the command line's own flags, which then win (argparse keeps
    the last value; repeatable options such as ``experiments`` add up)."""
    return [flag for name, value in config.beam.items() for flag in _option_flags(name, value)]


#: Runners that Beam knows by their full class path only; nccurate takes their short name too.
EXTRA_RUNNERS = ("apache_beam.runners.dask.dask_runner.DaskRunner",)


def runner_path(name: str, source: str = "--runner") -> str:
    """The full class path of the ``PipelineRunner`` that the runner option ``name`` names,
    resolved as Beam resolves it (a known runner's name in any case, ``Runner`` optional, or a
    class's full path; :data:`EXTRA_RUNNERS` by their short name too), checked to import.
    ConfigError naming ``source`` and ``name`` when it names none."""
    import importlib

    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import PipelineRunner

    known = {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS + EXTRA_RUNNERS}
    path = known.get(name.lower(), known.get(name.lower() + "runner", name))
    if "." not in path:
        names = [path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS + EXTRA_RUNNERS]
        near = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{source} {name!r}: not a Beam runner{hint}; expected one of {', '.join(names)} "
                          "or the full name of a PipelineRunner class")
    module, _, attribute = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{source} {name!r}: runner class {path} cannot be imported "
                          f"({' '.join(str(exc).split())})") from None
    if not (isinstance(cls, type) and issubclass(cls, PipelineRunner)):
        raise ConfigError(f"{source} {name!r}: {path} is not a Beam PipelineRunner class")
    return path


def check_beam_flags(flags: list[str] | tuple[str, ...]) -> argparse.Namespace:
    """Command-line Beam flags (``nccurate run``'s options that are not its own), parsed as Beam
    parses them: their values (``runner`` included, :func:`runner_path`). ConfigError naming
    the first flag that is not a Beam option (with the nearest one) or whose value Beam rejects;
    Beam itself would drop an unknown flag with a warning, so a typo would go unnoticed."""
    def parse():
        try:
            return _beam_parser(_option_classes()).parse_known_args(list(flags))
        except ValueError as exc:
            raise ConfigError(f"Beam option {str(exc).removeprefix('argument ')}") from None

    known, unknown = parse()
    if known.runner:
        runner_path(known.runner)  # a runner's module may define more options
    if unknown:
        _beam_flag_actions([flag.split("=", 1)[0].lstrip("-") for flag in unknown])  # imports the optional ones
        known, unknown = parse()
    if unknown and unknown[0].startswith("-"):
        name = unknown[0].split("=", 1)[0].lstrip("-")
        near = difflib.get_close_matches(name, list(_beam_flags()), n=1)
        hint = f"; did you mean --{near[0]}?" if near else ""
        raise ConfigError(f"option {unknown[0]}: neither an nccurate option nor a Beam pipeline option{hint}")
    if unknown:
        raise ConfigError(f"unexpected argument {unknown[0]!r}: options only (see --help)")
    return known


def _is_resource_hint(name: str, value: str) -> bool:
    """Whether Beam's own parser (``apache_beam.transforms.resources``) accepts the hint."""
    from apache_beam.transforms.resources import parse_resource_hints

    try:
        parse_resource_hints({name: value})
    except ValueError:
        return False
    return True


def _is_accelerator_hint(value: str) -> bool:
    """Beam takes any ASCII string as an accelerator hint; runners read it as
    ``type:<gpu>;count:<n>;<option>;...`` (Dataflow: ``install-nvidia-driver``,
    ``machine_type:<type>``, ``use_nvidia_mps``). Checked offline: ASCII, no empty part, a
    ``type``, and a ``count`` (when given) that is a positive integer."""
    parts = [part.strip() for part in value.split(";")]
    fields = dict(part.split(":", 1) for part in parts if ":" in part)
    count = fields.get("count", "1")
    return (_is_resource_hint("accelerator", value) and all(parts) and bool(fields.get("type"))
            and count.isdigit() and int(count) >= 1)


def encoder_resource_hints(config: Config) -> dict[str, str]:
    """Keyword arguments for ``PTransform.with_resource_hints`` on the encoder steps (``{}``
    when ``resources`` sets nothing): ``accelerator`` and ``min_ram``."""
    hints = {"accelerator": config.resources.encoder_accelerator, "min_ram": config.resources.encoder_min_ram}
    return {name: value for name, value in hints.items() if value is not None}
