"""Beam pipeline options for nccurate: the config's ``beam`` section checked against the options
the installed Beam knows, rendered as Beam's own flags, the runner named by a run, the run's
own Beam flags checked, and the resource hints of the encoder steps.

Why a check at all: Beam drops a flag it does not know with a warning, so a misspelt option
would silently do nothing. Beam is imported only when these functions run, so ``nccurate --help``
and a config without a ``beam`` section stay fast.

Private Beam API, all of it in this module and exercised by ``tests/pipeline/test_beam_options.py``
for the versions in :data:`VERIFIED_BEAM_VERSIONS`:

* ``apache_beam.options.pipeline_options._BeamArgumentParser`` and each options class's
  ``_add_argparse_args``: the parser PipelineOptions builds, so values parse as Beam parses them;
* ``argparse.ArgumentParser._actions`` and ``argparse._StoreAction``: which flags are on/off
  switches, single values or repeatable;
* ``PipelineOptions._flags``: the flags ``PipelineOptions.from_dictionary`` renders.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import Config

#: Beam releases (major.minor) whose private API (module docstring) this module was checked against.
VERIFIED_BEAM_VERSIONS = ("2.77",)

#: Modules whose PipelineOptions subclasses are not imported with apache_beam itself; imported
#: only when an option name is not found among the options already known.
OPTIONAL_OPTION_MODULES = ("apache_beam.runners.dask.dask_runner",)

#: Runners that Beam knows by their full class path only; nccurate takes their short name too.
EXTRA_RUNNERS = ("apache_beam.runners.dask.dask_runner.DaskRunner",)


# ----------------------------------------------------------------------------- Beam's option parser


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
def _parser_of(classes: tuple[type, ...]) -> argparse.ArgumentParser:
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


def beam_parser() -> argparse.ArgumentParser:
    """Beam's parser of every option imported so far (see :func:`known_flags`)."""
    return _parser_of(_option_classes())


def known_flags(names=()) -> dict[str, argparse.Action]:
    """Beam option name (a flag without its ``--``) -> its argparse action; the optional options
    modules are imported first when one of ``names`` is not known yet."""
    def flags():
        return {flag[2:]: action for action in beam_parser()._actions for flag in action.option_strings
                if flag.startswith("--")}

    found = flags()
    if set(names) - set(found):
        for module in OPTIONAL_OPTION_MODULES:
            try:
                importlib.import_module(module)
            except Exception:  # an optional runner whose dependencies are not installed
                continue
        found = flags()
    return found


# ----------------------------------------------------------------------------- the config's beam section


def render_flags(options: Mapping[str, Any]) -> list[str]:
    """Beam option name -> value as command-line flags, in the order given, as
    ``PipelineOptions.from_dictionary`` renders them: a list (or tuple) repeats the flag,
    ``true`` is the bare flag, ``false`` its ``--no_`` form where Beam has one (else nothing),
    null nothing."""
    from apache_beam.options.pipeline_options import PipelineOptions

    plain = {name: list(value) if isinstance(value, tuple) else value
             for name, value in options.items() if value is not None}
    return list(PipelineOptions.from_dictionary(plain)._flags)


def _checked_value(key: str, value: Any, action: argparse.Action) -> Any:
    """``value`` checked against the kind of flag: on/off flags take true/false, repeatable
    options (``experiments``, ``resource_hints``, ...) a value or a list of values (kept as a
    tuple), the others one value; a mapping becomes its JSON text."""
    is_flag = action.nargs == 0
    repeatable = not is_flag and not isinstance(action, argparse._StoreAction)
    if isinstance(value, dict):
        value = json.dumps(value)
    if isinstance(value, (list, tuple)) and repeatable and all(
            isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value):
        return tuple(value)
    if value is None or (isinstance(value, bool) == is_flag and isinstance(value, (str, int, float))):
        return value
    allowed = ("true or false (an on/off flag)" if is_flag else
               "a value or a list of values" if repeatable else "a single value")
    raise ConfigError(f"config {key}: {value!r} is not allowed; expected {allowed}", key)


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``beam`` section, validated against the options the installed Beam knows: each name
    must be an option, each value must parse as Beam parses its flag. ConfigError naming
    ``beam.<name>`` (with the nearest option for an unknown one) otherwise."""
    if not options:
        return {}
    actions = known_flags(options)
    clean = {}
    for name, value in options.items():
        key = f"beam.{name}"
        if name not in actions:
            near = difflib.get_close_matches(name, list(actions), n=1)
            hint = f"; did you mean 'beam.{near[0]}'?" if near else ""
            raise ConfigError(f"config: unknown key {key!r} (not a Beam pipeline option){hint}", key)
        clean[name] = _checked_value(key, value, actions[name])
        try:
            beam_parser().parse_known_args(render_flags({name: clean[name]}))
        except ValueError as exc:
            raise ConfigError(f"config {key}: {value!r} is not allowed; Beam says: {exc}", key) from None
    return clean


def beam_args(config: Config) -> list[str]:
    """The config's ``beam`` section as Beam command-line flags, in the order written. Give them
    to ``PipelineOptions`` before the command line's own flags, which then win (argparse keeps
    the last value; repeatable options such as ``experiments`` add up)."""
    return render_flags(config.beam)


# ----------------------------------------------------------------------------- runner and run flags


def runner_path(name: str, source: str = "--runner") -> str:
    """The full class path of the ``PipelineRunner`` that the runner option ``name`` names,
    resolved as Beam resolves it (a known runner's name in any case, ``Runner`` optional, or a
    class's full path; :data:`EXTRA_RUNNERS` by their short name too), checked to import.
    ConfigError naming ``source`` and ``name`` when it names none."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import PipelineRunner

    paths = StandardOptions.ALL_KNOWN_RUNNERS + EXTRA_RUNNERS
    known = {path.rsplit(".", 1)[-1].lower(): path for path in paths}
    path = known.get(name.lower(), known.get(name.lower() + "runner", name))
    if "." not in path:
        names = [path.rsplit(".", 1)[-1] for path in paths]
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
    the first flag that is not a Beam option (with the nearest one) or whose value Beam rejects."""
    def parse():
        try:
            return beam_parser().parse_known_args(list(flags))
        except ValueError as exc:
            raise ConfigError(f"Beam option {str(exc).removeprefix('argument ')}") from None

    known, unknown = parse()
    if known.runner:
        runner_path(known.runner)  # a runner's module may define more options
    if unknown:
        known_flags([flag.split("=", 1)[0].lstrip("-") for flag in unknown])  # imports the optional ones
        known, unknown = parse()
    if unknown and unknown[0].startswith("-"):
        name = unknown[0].split("=", 1)[0].lstrip("-")
        near = difflib.get_close_matches(name, list(known_flags()), n=1)
        hint = f"; did you mean --{near[0]}?" if near else ""
        raise ConfigError(f"option {unknown[0]}: neither an nccurate option nor a Beam pipeline option{hint}")
    if unknown:
        raise ConfigError(f"unexpected argument {unknown[0]!r}: options only (see --help)")
    return known


# ----------------------------------------------------------------------------- resource hints


def is_resource_hint(name: str, value: str) -> bool:
    """Whether Beam's own parser (``apache_beam.transforms.resources``) accepts the hint."""
    from apache_beam.transforms.resources import parse_resource_hints

    try:
        parse_resource_hints({name: value})
    except ValueError:
        return False
    return True


def is_accelerator_hint(value: str) -> bool:
    """Beam takes any ASCII string as an accelerator hint; runners read it as
    ``type:<gpu>;count:<n>;<option>;...`` (Dataflow: ``install-nvidia-driver``,
    ``machine_type:<type>``, ``use_nvidia_mps``). Checked offline: ASCII, no empty part, a
    ``type``, and a ``count`` (when given) that is a positive integer."""
    parts = [part.strip() for part in value.split(";")]
    fields = dict(part.split(":", 1) for part in parts if ":" in part)
    count = fields.get("count", "1")
    return (is_resource_hint("accelerator", value) and all(parts) and bool(fields.get("type"))
            and count.isdigit() and int(count) >= 1)


def encoder_resource_hints(config: Config) -> dict[str, str]:
    """Keyword arguments for ``PTransform.with_resource_hints`` on the encoder steps (``{}``
    when ``resources`` sets nothing): ``accelerator`` and ``min_ram``."""
    hints = {"accelerator": config.resources.encoder_accelerator, "min_ram": config.resources.encoder_min_ram}
    return {name: value for name, value in hints.items() if value is not None}
