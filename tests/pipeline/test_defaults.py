"""configs/default.yaml and the field defaults must say the same thing: without ``--config`` a
run uses the field defaults, and default.yaml is where each of them is documented."""

import dataclasses
import os

import yaml

from pipeline.config import Config, load_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "configs", "default.yaml")


def test_default_yaml_equals_field_defaults():
    assert dataclasses.asdict(load_config(DEFAULT_CONFIG)) == dataclasses.asdict(Config())
    assert load_config(DEFAULT_CONFIG) == load_config(None) == Config()


def test_every_yaml_key_is_commented():
    """Each leaf key in default.yaml has a comment line somewhere above it in its block."""
    with open(DEFAULT_CONFIG, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    tree = yaml.safe_load("\n".join(lines))
    assert isinstance(tree, dict)
    seen_comment = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            seen_comment = True
        elif stripped.endswith(":"):
            continue  # a section header
        elif stripped:
            assert seen_comment, f"uncommented key: {line}"
            # a comment covers the keys directly under it until a blank line
        if not stripped:
            seen_comment = False
