"""Tests for pipeline.config: the YAML defaults, ``--set`` overrides, validation messages and the
config hash recorded in every sample."""

from __future__ import annotations

import dataclasses
import os
import re
import typing

import pytest
import yaml

from pipeline.config import Config, ConfigError, load_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
DEFAULT_YAML = os.path.join(CONFIGS, "default.yaml")

#: Keys whose value may be null, as documented in configs/default.yaml.
NULLABLE = {"model.pretrained", "features.dim", "align.window_s", "align.prior_sigma_s",
            "resources.encoder_accelerator", "resources.encoder_min_ram", "asr.language"}


def _yaml_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value:  # an empty mapping (beam: {}) is a leaf
            keys |= _yaml_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def _field_keys(cls=Config, prefix: str = "") -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= _field_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def _get(config: Config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _default_tree() -> dict:
    with open(DEFAULT_YAML, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


ALL_KEYS = sorted(_field_keys())


# ----------------------------------------------------------------------------- defaults


def test_default_config_loads_with_the_yaml_values():
    config = load_config(None)
    assert isinstance(config, Config)
    tree = _default_tree()
    for key in _yaml_keys(tree):
        value = tree
        for part in key.split("."):
            value = value[part]
        assert _get(config, key) == (tuple(value) if isinstance(value, list) else value), key  # lists: tuples
    assert config.align.method == "posterior" and config.output.layout == "grouped"


def test_the_old_default_stays_selectable():
    """``configs/norton-v0.yaml``: the realignment default before ``posterior``."""
    from curation.evaluate import NORTON_V0

    path = os.path.join(CONFIGS, "norton-v0.yaml")
    assert load_config(path).align == NORTON_V0


def test_posterior_needs_a_window_and_the_error_names_the_key():
    with pytest.raises(ConfigError, match="align.window_s") as info:
        load_config(None, ["align.window_s=null"])
    assert "posterior" in str(info.value) and "--set align.window_s=null" in str(info.value)
    assert load_config(None, ["align.method=norton", "align.window_s=null"]).align.window_s is None


def test_default_yaml_and_config_fields_have_the_same_keys():
    yaml_keys, field_keys = _yaml_keys(_default_tree()), _field_keys()
    assert yaml_keys - field_keys == set(), "keys in default.yaml that are no Config field"
    assert field_keys - yaml_keys == set(), "Config fields not documented in default.yaml"


def test_yaml_defaults_agree_with_dataclass_defaults():
    assert load_config(None) == Config()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config(None).align.eps = 1.0  # type: ignore[misc]


# ----------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("override, key, expected, typ", [
    ("output.samples_per_shard=50", "output.samples_per_shard", 50, int),
    ("align.eps=0.05", "align.eps", 0.05, float),
    ("max_failure_ratio=1", "max_failure_ratio", 1.0, float),
    ("decode_timeout_s=30", "decode_timeout_s", 30.0, float),
    ("align.n_iter=10.0", "align.n_iter", 10, int),
    ("align.ncl=false", "align.ncl", False, bool),
    ("align.bucket=true", "align.bucket", True, bool),
    ("output.layout=shuffled", "output.layout", "shuffled", str),
    ("model.name=s3d", "model.name", "s3d", str),
    ("model.pretrained=howto100m", "model.pretrained", "howto100m", str),
    ("features.dim=512", "features.dim", 512, int),
    ("align.prior_sigma_s=20", "align.prior_sigma_s", 20.0, float),
    ("seed=3", "seed", 3, int),
    (" align.method = s2dtw", "align.method", "s2dtw", str),
])
def test_set_overrides_are_coerced(override, key, expected, typ):
    config = load_config(None, [override])
    value = _get(config, key)
    assert value == expected and type(value) is typ, (value, type(value))


def test_later_overrides_win_and_others_keep_defaults():
    config = load_config(None, ["align.eps=0.2", "align.eps=0.3"])
    assert config.align.eps == 0.3
    assert config.align.n_iter == load_config(None).align.n_iter


def test_overrides_apply_on_top_of_a_config_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("align:\n  eps: 0.2\noutput:\n  layout: shuffled\n")
    config = load_config(str(path), ["align.eps=0.3"])
    assert config.align.eps == 0.3 and config.output.layout == "shuffled"
    assert config.align.n_iter == Config().align.n_iter  # unspecified keys keep the defaults


def test_exponent_notation_is_a_number():
    assert load_config(None, ["align.eps=1e-3"]).align.eps == pytest.approx(0.001)


@pytest.mark.parametrize("override, key", [
    ("output.samples_per_shard=abc", "output.samples_per_shard"),
    ("output.samples_per_shard=1.5", "output.samples_per_shard"),
    ("output.index_files=true", "output.index_files"),
    ("align.eps=yes", "align.eps"),
    ("align.ncl=1", "align.ncl"),
    ("model.name=[a, b]", "model.name"),
])
def test_wrong_types_name_the_field(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, [override])


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["align.eps"])


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("override, suggestion", [
    ("align.epss=0.1", "align.eps"),
    ("output.layuot=grouped", "output.layout"),
    ("max_failure_ratoi=0.2", "max_failure_ratio"),
])
def test_unknown_key_suggests_the_nearest(override, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert override.split("=")[0] in message
    assert f"'{suggestion}'" in message and "did you mean" in message


def test_unknown_key_in_a_file_is_an_error(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("align:\n  epss: 0.2\n")
    with pytest.raises(ConfigError, match="align.eps"):
        load_config(str(path))


@pytest.mark.parametrize("override, key, allowed", [
    ("output.layout=sideways", "output.layout", ("grouped", "shuffled")),
    ("align.method=magic", "align.method", ("posterior", "norton", "s2dtw", "argmax", "asr")),
    ("align.prompt_mode=always", "align.prompt_mode", ("run", "video", "fixed")),
])
def test_bad_enum_value_names_field_and_allowed_values(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert key in message and override.split("=")[1] in message
    for value in allowed:
        assert value in message, f"{value!r} missing from {message!r}"


@pytest.mark.parametrize("override, key", [
    ("max_failure_ratio=1.5", "max_failure_ratio"),
    ("max_failure_ratio=-0.1", "max_failure_ratio"),
    ("decode_timeout_s=0", "decode_timeout_s"),
    ("align.eps=0", "align.eps"),
    ("align.n_iter=0", "align.n_iter"),
    ("align.min_alignability=2", "align.min_alignability"),
    ("align.window_s=-5", "align.window_s"),
    ("features.dim=0", "features.dim"),
    ("output.samples_per_shard=0", "output.samples_per_shard"),
    ("output.min_shards=0", "output.min_shards"),
    ("output.index_files=0", "output.index_files"),
])
def test_out_of_range_values_name_the_field(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, [override])


@pytest.mark.parametrize("key", sorted(NULLABLE))
def test_null_is_allowed_where_documented(key):
    extra = ["align.method=norton"] if key == "align.window_s" else []  # posterior needs a window
    assert _get(load_config(None, [*extra, f"{key}=null"]), key) is None


@pytest.mark.parametrize("key", sorted(set(ALL_KEYS) - NULLABLE))
def test_null_is_rejected_elsewhere(key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=null"])
    assert key in str(info.value)


def test_unreadable_or_invalid_config_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(str(missing))
    broken = tmp_path / "broken.yaml"
    broken.write_text("align: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(str(broken))):
        load_config(str(broken))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(listing))


def test_config_errors_are_one_line():
    for override in ("align.epss=1", "output.layout=x", "align.eps=null", "seed=abc"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [override])
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- hash


def test_hash_is_stable_and_short_hex():
    h = load_config(None).hash()
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert load_config(None).hash() == h
    assert Config().hash() == h
    # setting a value to what it already is, or spelling it as another number type, changes nothing
    assert load_config(None, ["align.eps=0.1", "decode_timeout_s=600", "seed=0"]).hash() == h


@pytest.mark.parametrize("override", [
    "align.eps=0.11", "seed=1", "output.layout=shuffled", "model.name=s3d", "model.pretrained=x",
    "features.dim=32", "align.window_s=90", "align.ncl=false", "output.samples_per_shard=999",
    "max_failure_ratio=0.2",
])
def test_hash_changes_when_a_value_changes(override):
    assert load_config(None, [override]).hash() != load_config(None).hash()


def test_hashes_of_different_values_are_distinct():
    hashes = {load_config(None, [f"seed={s}"]).hash() for s in range(20)}
    assert len(hashes) == 20


#: Values the config's earlier (hand-validated dataclass) implementation gave, updated when
#: ``output.min_shards`` (issue 16: the shard layout changed with it) ``decode.max_bytes`` (issue 17) and ``decode.deinterlace``
#: (issue 18) and the ``captions`` and ``asr`` sections (issue 19) and ``align.weight``
#: (issue 20) and ``decode.exact`` and ``model.backend`` (issue 21) were added and the ``model.text_batch_size``
#: default went from 256 to 64 (issue 21: memory; the same embeddings). The hash is in
#: every sample's json and in the checkpoints, ``to_dict`` is summary.json's ``config``: any
#: change here changes output bytes and stops old runs from resuming.
OVERRIDES = ["align.eps=0.05", "seed=3", "features.dim=512", "align.window_s=30", "align.prior_sigma_s=5",
             "clips.format=jpg", "io.backoff_s=1", "model.pretrained=null", "resources.torch_threads=2",
             "beam.experiments=[a, b]"]
PINNED = [
    (None, [], "95363e6f65506cea", "71f72405a7df7bbc"),
    ("dataflow.yaml", [], "9f57513e45bc1671", "1e89369e4f26ac70"),
    (None, OVERRIDES, "d7acbd53c71a12aa", "78b91f8a7a4153ed"),
    ("flink.yaml", [], "cf2eedc0fa85bb77", None),
    ("spark.yaml", [], "cf2eedc0fa85bb77", None),
    ("norton-v0.yaml", [], "66c0f2870bd3425b", None),
    (None, ["align.eps=1", "decode.sample_fps=2", "max_failure_ratio=0", "align.window_s=1e2"], "2ff23d23826e5902", None),
]


@pytest.mark.parametrize("name, overrides, config_hash, dict_digest", PINNED)
def test_hash_and_recorded_dict_are_what_they_always_were(name, overrides, config_hash, dict_digest):
    import hashlib
    import json

    config = load_config(os.path.join(CONFIGS, name) if name else None, overrides)
    assert config.hash() == config_hash
    if dict_digest is not None:
        assert hashlib.sha256(json.dumps(config.to_dict()).encode()).hexdigest()[:16] == dict_digest


# ----------------------------------------------------------------------------- summary.json, YAML, origins


def test_from_summary_rebuilds_the_run_config_without_its_runtime_sections():
    import json

    config = load_config(os.path.join(CONFIGS, "dataflow.yaml"), ["align.eps=0.2", "seed=4"])
    rebuilt = Config.from_summary(json.loads(json.dumps(config.to_dict())))
    assert rebuilt.hash() == config.hash() and rebuilt.align == config.align and rebuilt.model == config.model
    assert rebuilt.beam == {} and rebuilt.resources == Config().resources
    tree = config.to_dict()
    tree["align"]["eps"] = -1
    with pytest.raises(ConfigError, match=re.escape("config align.eps: -1 is not allowed")):
        Config.from_summary(tree)


@pytest.mark.parametrize("override, value", [
    ("align.eps=1.5e-3", 0.0015), ("decode_timeout_s=1.0e3", 1000.0), ("align.eps=2E-1", 0.2), ("seed=1e1", 10),
])
def test_exponent_forms_yaml_1_1_reads_as_text_are_numbers(override, value):
    key = override.split("=")[0]
    got = _get(load_config(None, [override]), key)
    assert got == pytest.approx(value) and type(got) is type(value)


def test_errors_say_which_file_or_set_gave_the_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("align:\n  eps: -1\noutput:\n  layout: shuffled\n")
    with pytest.raises(ConfigError, match=re.escape(f"align.eps: -1 is not allowed; expected a positive number "
                                                    f"(in config file {path})")):
        load_config(str(path))
    with pytest.raises(ConfigError, match=re.escape("(from --set align.eps=0)")):
        load_config(str(path), ["align.eps=0"])
    with pytest.raises(ConfigError, match=re.escape("'beam.machine_typ'") + ".*" +
                       re.escape("(from --set beam={runner: DirectRunner, machine_typ: x})")):
        load_config(None, ["beam={runner: DirectRunner, machine_typ: x}"])


def test_a_section_left_empty_in_a_file_keeps_its_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("align:\n  # eps: 0.2\nbeam:\n")
    assert load_config(str(path)) == Config()


def test_the_pure_package_does_not_import_pydantic():
    """AlignParams's bounds are annotated_types metadata, read by pydantic only in pipeline.config."""
    import subprocess
    import sys

    code = "import sys, curation.align; print('pydantic' in sys.modules, 'annotated_types' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=os.path.dirname(CONFIGS), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["False", "True"], done.stdout + done.stderr
