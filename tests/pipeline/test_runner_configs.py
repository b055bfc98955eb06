"""configs/dataflow.yaml, spark.yaml and flink.yaml, and the runtime sections (``beam``,
``resources``) they fill in, checked offline: no Dataflow, Spark or Flink is reachable here.

What is checked: every option parses with the installed Beam into the option views its runner
reads; Beam's own option validator finds nothing wrong; the whole graph builds and pickles
under each config; the runtime sections stay out of the config hash; ``nccurate run`` hands
the config's options to Beam before the command line's; the sdist that ``setup_file`` ships
to workers installs its configs. What is not: anything a cluster does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

from pipeline.beam_options import beam_args, encoder_resource_hints
from pipeline.config import Config, ConfigError, load_config
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNERS = ("dataflow", "spark", "flink")
#: Video mode without downloading weights: our tiny model, random init.
TINY_MODEL = ["model.name=nccurate-tiny", "model.pretrained=null"]


def config_path(name: str) -> str:
    return os.path.join(REPO, "configs", f"{name}.yaml")


def yaml_tree(name: str) -> dict:
    with open(config_path(name), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def options_of(config: Config, *command_line: str):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(beam_args(config) + list(command_line))


def views(name: str) -> dict[str, tuple[type, str]]:
    """YAML ``beam`` key -> (the option view its runner reads it from, the attribute)."""
    from apache_beam.options import pipeline_options as po

    portable = {"runner": (po.StandardOptions, "runner"), "job_endpoint": (po.PortableOptions, "job_endpoint"),
                "environment_type": (po.PortableOptions, "environment_type"),
                "environment_config": (po.PortableOptions, "environment_config"),
                "sdk_worker_parallelism": (po.PortableOptions, "sdk_worker_parallelism")}
    return {
        "dataflow": {"runner": (po.StandardOptions, "runner"), "project": (po.GoogleCloudOptions, "project"),
                     "region": (po.GoogleCloudOptions, "region"),
                     "temp_location": (po.GoogleCloudOptions, "temp_location"),
                     "setup_file": (po.SetupOptions, "setup_file"),
                     "sdk_container_image": (po.WorkerOptions, "sdk_container_image"),
                     "machine_type": (po.WorkerOptions, "machine_type"),
                     "max_num_workers": (po.WorkerOptions, "max_num_workers"),
                     "experiments": (po.DebugOptions, "experiments")},
        "spark": portable,
        "flink": {**portable, "parallelism": (po.FlinkRunnerOptions, "parallelism")},
    }[name]


# ----------------------------------------------------------------------------- the three configs


@pytest.mark.parametrize("name", RUNNERS)
def test_runner_config_reaches_the_option_views_its_runner_reads(name):
    tree, config = yaml_tree(name), load_config(config_path(name))
    assert set(tree["beam"]) == set(views(name)), "every beam key of the YAML is checked below"
    options = options_of(config)
    for key, (view, attribute) in views(name).items():
        got = getattr(options.view_as(view), attribute)
        # Beam keeps untyped options (sdk_worker_parallelism) as the flag's text
        assert got == tree["beam"][key] or str(got) == str(tree["beam"][key]), (key, got)
    assert dict(config.beam) == {k: tuple(v) if isinstance(v, list) else v for k, v in tree["beam"].items()}


def test_dataflow_config_passes_beams_dataflow_checks():
    """Beam's checks of a Dataflow submission that need no network: project id and job name
    formats, a gs:// temp_location, the container image and worker options."""
    from apache_beam.options import pipeline_options as po
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    config = load_config(config_path("dataflow"))
    options = options_of(config)
    validator = PipelineOptionsValidator(options, DataflowRunner())
    assert validator.is_service_runner()
    cloud, worker = options.view_as(po.GoogleCloudOptions), options.view_as(po.WorkerOptions)
    assert validator.validate_cloud_options(cloud) == []
    assert validator.validate_gcs_path(cloud, "temp_location") == []
    assert validator.validate_sdk_container_image_options(worker) == []
    assert validator.validate_num_workers(worker) == []
    assert validator.validate_worker_region_zone(worker) == []
    assert config.model.device == "cuda" and config.model.precision == "fp16"
    assert "use_runner_v2" in options.view_as(po.DebugOptions).experiments
    assert encoder_resource_hints(config) == {"accelerator": "type:nvidia-tesla-t4;count:1;install-nvidia-driver",
                                              "min_ram": "16GB"}


@pytest.mark.parametrize("name", ["spark", "flink"])
def test_portable_configs_pass_beams_validator_and_set_the_sdk_environment(name):
    """Everything Beam validates for a PortableRunner submission, and the SDK environment the
    job server would start the Python steps in (what PortableRunner puts in the job)."""
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.portability.portable_runner import PortableRunner
    from apache_beam.transforms.environments import Environment

    config = load_config(config_path(name))
    options = options_of(config)
    assert PipelineOptionsValidator(options, PortableRunner()).validate() == []
    environment = Environment.from_options(options.view_as(PortableOptions)).to_runner_api(None)
    kind = config.beam["environment_type"]
    assert environment.urn == f"beam:env:{kind.lower()}:v1"
    assert config.beam["environment_config"].encode() in environment.payload
    assert encoder_resource_hints(config) == {}  # Spark and Flink ignore resource hints


@pytest.mark.parametrize("name", RUNNERS)
def test_runtime_sections_are_left_out_of_the_hash(name, tmp_path):
    tree = yaml_tree(name)
    stripped = {key: value for key, value in tree.items() if key not in ("beam", "resources")}
    path = tmp_path / "stripped.yaml"
    path.write_text(yaml.safe_dump(stripped))
    config = load_config(config_path(name))
    assert config.hash() == load_config(str(path)).hash()
    assert config.hash() != load_config(config_path(name), ["align.eps=0.2"]).hash()
    assert config.to_dict()["beam"]["runner"] == tree["beam"]["runner"]  # still recorded in summary.json


def test_runtime_sections_never_change_the_default_hash():
    default = Config().hash()
    changed = load_config(None, ["beam.runner=DataflowRunner", "beam.max_num_workers=4", "beam.experiments=[a, b]",
                                 "resources.encoder_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
                                 "resources.encoder_min_ram=32GB"])
    assert changed.beam and changed.resources.encoder_min_ram == "32GB"
    assert changed.hash() == default
    assert load_config(None, ["align.eps=0.05"]).hash() != default
    assert json.loads(json.dumps(changed.to_dict()))["beam"]["experiments"] == ["a", "b"]


@pytest.mark.parametrize("name", RUNNERS)
def test_graph_builds_and_pickles_under_each_config(name, tmp_path):
    """The whole graph, both modes and the resume stages, built (not run) on the DirectRunner
    with the config's options; ``to_runner_api`` pickles every DoFn, ``from_runner_api``
    unpickles them. The video row's file is never opened: nothing runs, no weights load."""
    import apache_beam as beam
    from apache_beam.internal import pickler
    from apache_beam.runners.direct.direct_runner import DirectRunner

    from pipeline.run import manifest_modes
    from pipeline.synth.feature_corpus import write_corpus
    from pipeline.transforms.graph import RunPlan, build_graph

    manifest, _ = write_corpus(str(tmp_path / "in"), helpers.small_corpus(1, 0))
    with open(manifest, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"video_id": "v1", "video": "data/v1.mp4", "captions": "data/v1.vtt"}) + "\n")
    assert manifest_modes(manifest) == {"video", "features"}
    config = load_config(config_path(name), TINY_MODEL)
    options = options_of(config)
    p = beam.Pipeline(runner=DirectRunner(), options=options)
    build_graph(p, RunPlan(manifest, str(tmp_path / "out"), config, 0.0, frozenset(manifest_modes(manifest)), "0" * 64, resume=True))
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ReadManifest", "LoadInputs", "LoadVideoInputs", "Realign", "Resume", "Finalize"} <= names
    blob = proto.SerializeToString()
    assert len(blob) > 0 and pickler.loads(pickler.dumps(blob)) == blob
    again = beam.Pipeline.from_runner_api(proto, DirectRunner(), options)
    assert {t.unique_name for t in again.to_runner_api().components.transforms.values()} == names


def test_encoder_resource_hints_are_what_beam_takes():
    """The kwargs go to ``with_resource_hints`` and land, parsed, in the step's environment (a
    step with hints gets its own environment, so a runner can place it on other workers)."""
    import apache_beam as beam

    config = load_config(config_path("dataflow"))
    p = beam.Pipeline()
    _ = (p | beam.Create([1]) | "Plain" >> beam.Map(lambda v: v)
         | "Encoder" >> beam.Map(lambda v: v).with_resource_hints(**encoder_resource_hints(config)))
    proto = p.to_runner_api()
    env_of = {t.unique_name: t.environment_id for t in proto.components.transforms.values()}
    assert env_of["Encoder"] != env_of["Plain"]
    hints = dict(proto.components.environments[env_of["Encoder"]].resource_hints)
    assert hints == {"beam:resources:accelerator:v1": b"type:nvidia-tesla-t4;count:1;install-nvidia-driver",
                     "beam:resources:min_ram_bytes:v1": b"16000000000"}
    assert encoder_resource_hints(Config()) == {}


# ----------------------------------------------------------------------------- the beam section


@pytest.mark.parametrize("override, needle", [
    ("beam.machine_typ=n1-standard-4", "did you mean 'beam.machine_type'"),
    ("beam.temp_locaton=gs://b/tmp", "did you mean 'beam.temp_location'"),
    ("beam.direct_num_worker=2", "did you mean 'beam.direct_num_workers'"),
    ("beam.job_endpont=localhost:8099", "did you mean 'beam.job_endpoint'"),
    ("beam.max_num_workers=abc", "invalid int value"),
    ("beam.direct_running_mode=fast", "multi_processing"),
    ("beam.runner=[A, B]", "a single value"),
    ("beam.streaming=fast", "true or false"),
    ("beam.experiments=true", "a value or a list of values"),
    ("beam=null", "a mapping of Beam pipeline option names"),
    ("resources.encoder_accelerator=count:1", "type:nvidia-tesla-t4"),
    ("resources.encoder_accelerator=type:nvidia-tesla-t4;count:0", "type:nvidia-tesla-t4"),
    ("resources.encoder_min_ram=lots", "16GB"),
])
def test_bad_runtime_keys_and_values_are_one_line_naming_the_key(override, needle):
    """An unknown Beam option gets the nearest one suggested; a bad value says what is allowed."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert override.split("=")[0] in message and needle in message and "\n" not in message


def test_unknown_beam_option_in_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("beam:\n  runner: DirectRunner\n  experimnts: [a]\n")
    with pytest.raises(ConfigError, match=re.escape("'beam.experimnts'") + ".*did you mean 'beam.experiments'"):
        load_config(str(path))


def test_lists_repeat_the_flag_and_booleans_are_bare_flags(tmp_path):
    from apache_beam.options import pipeline_options as po

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"beam": {
        "experiments": ["use_runner_v2", "no_use_multiple_sdk_containers"], "streaming": True,
        "profile_cpu": False, "use_public_ips": False, "max_num_workers": 4,
        "environment_config": {"command": "/opt/apache/beam/boot"}, "job_name": None}}, sort_keys=False))
    config = load_config(str(path))
    assert beam_args(config) == [
        "--experiments=use_runner_v2", "--experiments=no_use_multiple_sdk_containers", "--streaming",
        "--no_use_public_ips", "--max_num_workers=4", '--environment_config={"command": "/opt/apache/beam/boot"}']
    options = options_of(config)
    assert options.view_as(po.DebugOptions).experiments == ["use_runner_v2", "no_use_multiple_sdk_containers"]
    assert options.view_as(po.StandardOptions).streaming is True
    assert options.view_as(po.ProfilingOptions).profile_cpu is False
    assert options.view_as(po.WorkerOptions).use_public_ips is False
    assert json.loads(options.view_as(po.PortableOptions).environment_config) == {"command": "/opt/apache/beam/boot"}
    assert hash(config) == hash(load_config(str(path)))  # the config stays hashable


def test_set_overrides_and_command_line_flags_win():
    from apache_beam.options import pipeline_options as po

    config = load_config(config_path("dataflow"), ["beam.max_num_workers=8", "beam.region=europe-west4"])
    options = options_of(config, "--runner=DirectRunner", "--max_num_workers=2", "--experiments=extra")
    assert options.view_as(po.StandardOptions).runner == "DirectRunner"
    assert options.view_as(po.WorkerOptions).max_num_workers == 2
    assert options.view_as(po.GoogleCloudOptions).region == "europe-west4"
    assert options.view_as(po.DebugOptions).experiments == ["use_runner_v2", "extra"]  # repeatable options add up
    assert load_config(config_path("dataflow"), ["beam.sdk_container_image=null"]).beam["sdk_container_image"] is None
    assert "--sdk_container_image" not in " ".join(beam_args(
        load_config(config_path("dataflow"), ["beam.sdk_container_image=null"])))


def test_direct_runner_options_in_a_config_reach_beam_through_run(tmp_path, monkeypatch):
    """``run()`` builds its PipelineOptions from the config's beam section, then the caller's
    flags. The pipeline is stopped before it runs (no multi-process pipeline here)."""
    import apache_beam as beam
    from apache_beam.options import pipeline_options as po

    from pipeline.run import run
    from pipeline.synth.feature_corpus import write_corpus

    seen = []

    class Stop(Exception):
        pass

    class RecordingPipeline:
        def __init__(self, options=None, **_):
            seen.append(options)

        def __enter__(self):
            raise Stop

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(beam, "Pipeline", RecordingPipeline)
    manifest, _ = write_corpus(str(tmp_path / "in"), helpers.small_corpus(1, 0))
    config = load_config(None, ["beam.direct_num_workers=2", "beam.direct_running_mode=multi_processing",
                                "beam.runner=DirectRunner"])
    with pytest.raises(Stop):
        run(manifest, str(tmp_path / "out"), config, ["--direct_num_workers=3"])
    direct = seen[0].view_as(po.DirectOptions)
    assert direct.direct_running_mode == "multi_processing"
    assert direct.direct_num_workers == 3  # the caller's flag wins
    assert seen[0].view_as(po.StandardOptions).runner == "DirectRunner"
    assert options_of(config).view_as(po.DirectOptions).direct_num_workers == 2


def test_bad_beam_option_is_one_line_exit_2_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, ["run", "--manifest", str(tmp_path / "m.jsonl"), "--output", str(tmp_path / "o"),
                                       "--set", "beam.machine_typ=n1-standard-4"], catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "did you mean 'beam.machine_type'" in lines[0], result.output


# ----------------------------------------------------------------------------- what workers install


def _run(args, cwd, **kwargs) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_sdist_holds_configs_and_model_assets_and_installs(tmp_path):
    """What ``setup_file`` ships to Dataflow workers: ``setup.py sdist`` (Beam's fallback when
    ``build`` is not installed) of a snapshot of this checkout holds the configs and the model
    files; installed into a clean venv (dependencies borrowed from this venv, nothing
    downloaded), ``nccurate`` runs outside the repository and reads its installed configs."""
    import venv

    src = tmp_path / "src"
    files = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], REPO).split("\0")
    for rel in filter(None, files):
        if os.path.isfile(os.path.join(REPO, rel)):
            os.makedirs(src / os.path.dirname(rel), exist_ok=True)
            with open(os.path.join(REPO, rel), "rb") as a, open(src / rel, "wb") as b:
                b.write(a.read())
    _run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path / "dist")], str(src))
    (sdist,) = (tmp_path / "dist").glob("nccurate-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in ("setup.py", "README.md", "models/configs/nccurate-tiny.json", "models/assets/nccurate-demo-tiny.pt",
                 *(f"configs/{n}.yaml" for n in ("default", "norton-v0") + RUNNERS)):
        assert name in members, name

    # pip builds the sdist into a wheel as on a worker (this venv's setuptools; nothing is
    # downloaded), then installs it into a clean venv before that venv sees any other package
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-index", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(tmp_path / "wheel"), str(sdist)], str(tmp_path))
    (wheel,) = (tmp_path / "wheel").glob("nccurate-*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = str(env / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)], str(tmp_path))
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], str(tmp_path)).strip()
    deps = _run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], REPO).strip()
    with open(os.path.join(site, "zz_nccurate_test_deps.pth"), "w", encoding="utf-8") as handle:
        handle.write(deps + "\n")  # appended after the venv's own site-packages, which wins
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    assert "run" in _run([str(env / "bin" / "nccurate"), "--help"], str(outside), env=clean_env)
    configs = os.path.join(str(env), "share", "nccurate", "configs")
    assert sorted(os.listdir(configs)) == sorted(f"{n}.yaml" for n in ("default", "norton-v0") + RUNNERS)
    # without --config the installed package runs on its field defaults, which its default.yaml documents
    shown = json.loads(_run([python, "-c", "import json, sys, pipeline.config as c, pipeline; "
                             "print(json.dumps([c.load_config(sys.argv[1]) == c.Config(), pipeline.__file__]))",
                             os.path.join(configs, "default.yaml")], str(outside), env=clean_env))
    assert shown[0] is True and shown[1].startswith(site), shown
    loaded = _run([python, "-c", "import sys, pipeline.config as c; print(c.load_config(sys.argv[1]).beam['runner'])",
                   os.path.join(configs, "dataflow.yaml")], str(outside), env=clean_env)
    assert loaded.strip().splitlines()[-1] == "DataflowRunner"


def test_hints_cover_decode_and_frame_embedding_together(tmp_path):
    """With ``dataflow.yaml``'s hints, decode and the frame encoder share one hinted environment
    (so the runner can fuse them and frames never cross workers), the caption encoder has the
    hints too, and the other steps (manifest, realign, writes) have none."""
    import apache_beam as beam
    from apache_beam.runners.direct.direct_runner import DirectRunner

    from pipeline.transforms.graph import RunPlan, build_graph

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"video_id": "v1", "video": "v1.mp4", "captions": "v1.vtt"}) + "\n")
    config = load_config(config_path("dataflow"), TINY_MODEL)
    p = beam.Pipeline(runner=DirectRunner(), options=options_of(config))
    build_graph(p, RunPlan(str(manifest), str(tmp_path / "out"), config, 0.0, frozenset({"video"}), "0" * 64))
    proto = p.to_runner_api()
    env_of = {t.unique_name: t.environment_id for t in proto.components.transforms.values() if t.environment_id}
    hinted = {name for name, env in env_of.items() if proto.components.environments[env].resource_hints}
    decode = next(name for name in env_of if name.endswith("DecodeEmbed/Decode/Run"))
    frames = [name for name in env_of if "DecodeEmbed/EmbedFrames" in name]
    assert frames and {env_of[decode]} == {env_of[name] for name in frames}
    assert decode in hinted and any("EmbedCaptions" in name for name in hinted)
    assert not any(name.startswith(("ReadManifest", "Realign", "WriteShards", "Finalize")) for name in hinted)
