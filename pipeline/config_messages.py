"""The words of a configuration error: pydantic's ``ValidationError.errors()`` as nccurate's
one-line :class:`ConfigError`, with the dotted key (``align.eps``), the value as written, what
the field allows (read from its declaration: ``one of [...]``, ``a number in [0, 1]``), and for
an unknown key the nearest valid one. :func:`pipeline.config.load_config` adds where the key
was set (a config file or ``--set``)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from typing import Annotated, Any, Literal

import annotated_types
from pydantic.fields import FieldInfo

from pipeline import beam_options
from pipeline.errors import ConfigError


@functools.lru_cache(maxsize=4)
def sections(root: type) -> dict[str, list[str]]:
    """section -> its keys, for the sections of the config class ``root`` (``beam``: Beam's
    options, not listed)."""
    hints = typing.get_type_hints(root)
    found = {f.name: [leaf.name for leaf in dataclasses.fields(hints[f.name])]
             for f in dataclasses.fields(root) if dataclasses.is_dataclass(hints[f.name])}
    return {**found, "beam": []}


def _known_keys(root: type) -> list[str]:
    """Every dotted leaf key of ``root`` (``beam``'s options excluded)."""
    found = sections(root)
    return [f"{name}.{leaf}" if leaf else name for name in (f.name for f in dataclasses.fields(root))
            for leaf in (found.get(name) or [""]) if name != "beam"]


def nearest_key(key: str, root: type) -> str | None:
    """The valid key a misspelt ``key`` most likely meant: its section (``algin`` -> ``align``)
    and then its leaf (``epss`` -> ``eps``) are matched separately, then the whole key."""
    known = sections(root)
    section, _, leaf = key.partition(".")
    if leaf:
        near_section = section if section in known else next(
            iter(difflib.get_close_matches(section, list(known), n=1, cutoff=0.6)), None)
        if near_section == "beam":
            return f"beam.{leaf}" if leaf in beam_options.known_flags([leaf]) else None
        if near_section is not None:
            leaves = known[near_section]
            near_leaf = leaf if leaf in leaves else next(iter(difflib.get_close_matches(leaf, leaves, n=1)), None)
            if near_leaf is not None:
                return f"{near_section}.{near_leaf}"
    return next(iter(difflib.get_close_matches(key, _known_keys(root), n=1)), None)


_TYPE_NAMES = {float: "a number", int: "an integer", bool: "a boolean (true/false)", str: "a string",
               dict: "a mapping"}


def _allowed(annotation: Any, bounded: bool = True) -> str:
    """What a field annotated ``annotation`` takes, in words, from its declaration: ``one of
    [...]``, ``a number in [0, 1]``, ``null or a positive integer``, or its Field description;
    without its bounds unless ``bounded`` (a value of the wrong type is told the type)."""
    base, metadata = annotation, []
    if typing.get_origin(base) is Annotated:
        base, *metadata = typing.get_args(base)
    args = typing.get_args(base)
    nullable = type(None) in args
    if nullable:
        (base,) = [arg for arg in args if arg is not type(None)]
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo) and item.description:
            return item.description
        for bound in (item.metadata if isinstance(item, FieldInfo) else
                      item if isinstance(item, annotated_types.GroupedMetadata) else [item]):
            bounds.update({name: getattr(bound, name) for name in ("gt", "ge", "le") if hasattr(bound, name)})
    if typing.get_origin(base) is Literal:
        text = f"one of {list(typing.get_args(base))}"
    elif not bounded:
        text = _TYPE_NAMES.get(typing.get_origin(base) or base, "a value")
    else:
        text = _TYPE_NAMES.get(typing.get_origin(base) or base, "a value")
        if bounds.get("gt") == 0:
            text = text.replace("a number", "a positive number").replace("an integer", "a positive integer")
        elif {"ge", "le"} <= set(bounds):
            text = f"{text} in [{bounds['ge']:g}, {bounds['le']:g}]"
        elif "ge" in bounds:
            text = f"{text} >= {bounds['ge']:g}"
        elif "gt" in bounds:
            text = f"{text} > {bounds['gt']:g}"
    return f"null or {text}" if nullable else text


def _allowed_at(root: type, loc: tuple[str, ...], kind: str) -> str:
    """:func:`_allowed` for the field at ``loc`` and pydantic error ``kind``; a number whose key
    ends in ``_s`` is seconds."""
    text = _allowed(_annotation(root, loc), bounded=not kind.endswith(("_type", "_parsing")))
    return f"{text} of seconds" if loc[-1].endswith("_s") and text.endswith("number") else text


def _annotation(root: type, loc: tuple) -> Any:
    """The declared type of the field of ``root`` at ``loc`` (``("align", "eps")``)."""
    owner, annotation = root, None
    for part in loc:
        annotation = typing.get_type_hints(owner, include_extras=True)[part]
        owner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    return annotation


def _first_leaf(key: str, value: Any) -> str:
    """``key`` extended to the first leaf under it: an unknown section names a key inside it."""
    while isinstance(value, dict) and value:
        name, value = next(iter(value.items()))
        key = f"{key}.{name}"
    return key


def _lookup(tree: dict, loc: tuple, default: Any) -> Any:
    """The value at ``loc`` in the nested ``tree`` as written (``default`` when it is not there)."""
    for part in loc:
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def config_error(error: dict, tree: dict, root: type) -> ConfigError:
    """One of pydantic's ``ValidationError.errors()`` for config class ``root``, validating the
    nested mapping ``tree``, as nccurate's one-line ConfigError naming the dotted key."""
    loc = tuple(str(part) for part in error["loc"])
    key, value, kind = ".".join(loc), _lookup(tree, loc, error.get("input")), error["type"]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # raised by a field's own check, message and key complete
        return cause
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        key = key if loc[0] == "beam" else _first_leaf(key, value)
        near = nearest_key(key, root)
        return ConfigError(f"config: unknown key {key!r}" + (f"; did you mean {near!r}?" if near else ""), key)
    if kind == "dataclass_type" and loc[0] in sections(root):
        return ConfigError(f"config {key}: {value!r} is not allowed; {key} is a section: set its keys "
                           f"(e.g. {key}.{sections(root)[key][0]})", key)
    named = re.match(rf"({re.escape(key)}\.\w+): (.*)", str(cause)) if cause is not None else None
    if named:  # a section's own check across its keys (AlignParams: posterior needs a window)
        return ConfigError(f"config {named[1]}: {named[2]}", named[1])
    return ConfigError(f"config {key}: {value!r} is not allowed; expected {_allowed_at(root, loc, kind)}", key)
