"""pipeline.beam_options: the private Beam API it leans on, pinned to the Beam versions it was
checked against; the flags it renders; the checks of option names, values, runners and the
run's own flags; the resource hints."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from pipeline import beam_options
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError

# ----------------------------------------------------------------------------- private Beam API


def test_installed_beam_is_a_verified_version():
    """A new Beam release may move the private names below: rerun this file against it, then
    add its major.minor to VERIFIED_BEAM_VERSIONS."""
    import apache_beam

    major_minor = ".".join(apache_beam.__version__.split(".")[:2])
    assert major_minor in beam_options.VERIFIED_BEAM_VERSIONS, (
        f"Beam {apache_beam.__version__} is not among {beam_options.VERIFIED_BEAM_VERSIONS}: check the "
        "private API listed in pipeline/beam_options.py against it")


def test_private_parser_api_gives_beams_flags_and_their_kinds():
    from apache_beam.options.pipeline_options import (
        PipelineOptions,
        StandardOptions,
        _BeamArgumentParser,
    )

    assert issubclass(_BeamArgumentParser, argparse.ArgumentParser)
    assert "_add_argparse_args" in StandardOptions.__dict__
    flags = beam_options.known_flags()
    assert isinstance(flags["runner"], argparse._StoreAction)
    assert flags["streaming"].nargs == 0  # an on/off flag
    assert not isinstance(flags["experiments"], argparse._StoreAction)  # repeatable
    # every option PipelineOptions itself knows is known here too
    assert set(PipelineOptions([]).get_all_options()) <= {action.dest for action in flags.values()}


def test_private_flags_of_from_dictionary_are_what_it_parses():
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        PipelineOptions,
        StandardOptions,
    )

    options = PipelineOptions.from_dictionary({"experiments": ["a", "b"], "streaming": True, "runner": "X"})
    assert options._flags == ["--experiments=a", "--experiments=b", "--streaming", "--runner=X"]
    assert options.view_as(DebugOptions).experiments == ["a", "b"]
    assert options.view_as(StandardOptions).runner == "X"


# ----------------------------------------------------------------------------- rendering


def test_render_flags_in_order_lists_repeat_booleans_bare_or_negated_null_dropped():
    rendered = beam_options.render_flags({
        "experiments": ("use_runner_v2", "x"), "streaming": True, "profile_cpu": False, "use_public_ips": False,
        "max_num_workers": 4, "job_name": None, "environment_config": '{"command": "boot"}'})
    assert rendered == ["--experiments=use_runner_v2", "--experiments=x", "--streaming", "--no_use_public_ips",
                        "--max_num_workers=4", '--environment_config={"command": "boot"}']


def test_rendered_flags_parse_back_to_the_values():
    from apache_beam.options import pipeline_options as po

    config = load_config(None, ["beam.max_num_workers=3", "beam.experiments=[a, b]", "beam.save_main_session=false",
                                "beam.environment_config={command: /boot}"])
    options = po.PipelineOptions(beam_options.beam_args(config))
    assert options.view_as(po.WorkerOptions).max_num_workers == 3
    assert options.view_as(po.DebugOptions).experiments == ["a", "b"]
    assert options.view_as(po.SetupOptions).save_main_session is False
    assert options.view_as(po.PortableOptions).environment_config == '{"command": "/boot"}'


# ----------------------------------------------------------------------------- the beam section


def test_check_options_keeps_order_tuples_lists_and_jsons_mappings():
    clean = beam_options.check_options({"runner": "DirectRunner", "experiments": ["a"], "environment_config": {"k": 1}})
    assert list(clean) == ["runner", "experiments", "environment_config"]
    assert clean == {"runner": "DirectRunner", "experiments": ("a",), "environment_config": '{"k": 1}'}
    assert beam_options.check_options(clean) == clean  # validated again unchanged (dataclasses.replace)


@pytest.mark.parametrize("options, needle", [
    ({"direct_num_worker": 2}, "did you mean 'beam.direct_num_workers'"),
    ({"streaming": "yes"}, "true or false"),
    ({"runner": ["A"]}, "a single value"),
    ({"max_num_workers": "many"}, "invalid int value"),
])
def test_check_options_rejects_with_the_key(options, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        beam_options.check_options(options)
    assert info.value.key == f"beam.{next(iter(options))}"


def test_a_config_built_in_code_has_its_beam_options_checked():
    from pydantic import ValidationError

    assert dataclasses.replace(Config(), beam={"runner": "DirectRunner"}).beam == {"runner": "DirectRunner"}
    with pytest.raises(ValidationError, match="machine_type"):
        dataclasses.replace(Config(), beam={"machine_typ": "n1"})


# ----------------------------------------------------------------------------- runners and run flags


@pytest.mark.parametrize("name, path", [
    ("DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner"),
    ("direct", "apache_beam.runners.direct.direct_runner.DirectRunner"),
    ("DaskRunner", beam_options.EXTRA_RUNNERS[0]),
])
def test_runner_path_resolves_as_beam_does(name, path):
    assert beam_options.runner_path(name) == path


def test_runner_path_errors_name_the_source_and_the_nearest():
    with pytest.raises(ConfigError, match=r"config beam.runner 'DirecRunner': not a Beam runner \(did you mean 'DirectRunner'"):
        beam_options.runner_path("DirecRunner", "config beam.runner")
    with pytest.raises(ConfigError, match="not a Beam PipelineRunner class"):
        beam_options.runner_path("argparse.ArgumentParser")


def test_check_beam_flags_parses_and_rejects_unknown_flags():
    assert beam_options.check_beam_flags(["--direct_num_workers=2"]).direct_num_workers == 2
    with pytest.raises(ConfigError, match="did you mean --direct_num_workers"):
        beam_options.check_beam_flags(["--direct_num_worker=2"])
    with pytest.raises(ConfigError, match="'stray'"):
        beam_options.check_beam_flags(["stray"])


# ----------------------------------------------------------------------------- resource hints


@pytest.mark.parametrize("hint, ok", [
    ("type:nvidia-tesla-t4;count:1;install-nvidia-driver", True),
    ("type:nvidia-l4", True),
    ("count:1", False),
    ("type:nvidia-tesla-t4;count:0", False),
    ("type:nvidia-tesla-t4;;count:1", False),
    ("type:nvidia-tesla-t4;count:x", False),
])
def test_accelerator_hints(hint, ok):
    assert beam_options.is_accelerator_hint(hint) is ok


def test_encoder_resource_hints_leave_out_the_unset():
    config = load_config(None, ["resources.encoder_min_ram=16GB"])
    assert beam_options.encoder_resource_hints(config) == {"min_ram": "16GB"}
    assert beam_options.is_resource_hint("min_ram", "16GB") and not beam_options.is_resource_hint("min_ram", "lots")
