"""Every user-facing error of the command line is one line on stderr, ``nccurate: error: ...``,
naming the file, key or value and what is allowed, with exit status 2 and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests import helpers


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A good feature-mode manifest ("M") and a directory of bad inputs ("D")."""
    from pipeline.synth.feature_corpus import write_corpus

    root = tmp_path_factory.mktemp("errors")
    manifest, _ = write_corpus(str(root / "in"), helpers.small_corpus(1, 3))
    files = {
        "empty.jsonl": b"", "blank.jsonl": b"\n  \n", "afile": b"x", "bin.yaml": b"\xff\xfe\x00a",
        "bad.yaml": b"align: [unclosed\n", "list.yaml": b"- a\n- b\n", "typo.yaml": b"algin:\n  eps: 0.1\n",
        "top.yaml": b"max_failure_ration: 0.2\n", "val.yaml": b"align:\n  eps: abc\n", "scal.yaml": b"align: 5\n",
        "latin1.jsonl": b'{"video_id": "a"}\n{"video_id": "caf\xe9"}\n',
        "video.jsonl": json.dumps({"video_id": "v1", "video": "v1.mp4", "captions": "v1.json"}).encode() + b"\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "mdir").mkdir()
    return {"M": manifest, "D": str(root)}


def invoke(bad, *args: str):
    return CliRunner().invoke(main, [arg.format(**bad) for arg in args])


def assert_one_line_error(result, *needles: str) -> str:
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nccurate: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert "Traceback" not in result.output
    return lines[0]


RUN_CASES = {
    "manifest is a directory": (("--manifest", "{D}/mdir"), ("manifest", "mdir", "is a directory", "JSON Lines")),
    "manifest missing": (("--manifest", "{D}/nope.jsonl"), ("nope.jsonl", "no such file")),
    "manifest empty": (("--manifest", "{D}/empty.jsonl"), ("empty.jsonl", "has no rows")),
    "manifest of blank lines": (("--manifest", "{D}/blank.jsonl"), ("blank.jsonl", "has no rows")),
    "manifest not UTF-8": (("--manifest", "{D}/latin1.jsonl"), ("latin1.jsonl", "line 2", "not UTF-8", "0xe9")),
    "remote manifest without its filesystem": (("--manifest", "nofs://bucket/m.jsonl"),
                                               ("manifest nofs://bucket/m.jsonl", "cannot be read")),
    "config missing": (("--config", "{D}/nope.yaml"), ("nope.yaml", "cannot be read")),
    "config is a directory": (("--config", "{D}/mdir"), ("--config", "mdir", "is a directory")),
    "config not UTF-8": (("--config", "{D}/bin.yaml"), ("bin.yaml", "not UTF-8", "0xff")),
    "config not YAML": (("--config", "{D}/bad.yaml"), ("bad.yaml", "not valid YAML")),
    "config not a mapping": (("--config", "{D}/list.yaml"), ("list.yaml", "mapping")),
    "misspelt section in a file": (("--config", "{D}/typo.yaml"),
                                   ("typo.yaml", "'algin.eps'", "did you mean 'align.eps'")),
    "misspelt top-level key in a file": (("--config", "{D}/top.yaml"),
                                         ("top.yaml", "'max_failure_ration'", "did you mean 'max_failure_ratio'")),
    "bad value in a file": (("--config", "{D}/val.yaml"), ("val.yaml", "align.eps", "'abc'", "expected a number")),
    "section given a value": (("--config", "{D}/scal.yaml"), ("scal.yaml", "align is a section", "align.")),
    "--set value of the wrong type": (("--set", "align.eps=abc"), ("--set align.eps=abc", "'abc'", "a number")),
    "--set float for an integer": (("--set", "seed=1.5"), ("seed", "1.5", "an integer")),
    "--set misspelt section": (("--set", "algin.eps=0.1"), ("'algin.eps'", "did you mean 'align.eps'")),
    "--set misspelt leaf": (("--set", "align.epss=0.1"), ("'align.epss'", "did you mean 'align.eps'")),
    "--set misspelt top-level key": (("--set", "max_failure_ration=0.1"), ("did you mean 'max_failure_ratio'",)),
    "--set without a value": (("--set", "align.eps"), ("'align.eps'", "key=value")),
    "--set value not allowed": (("--set", "output.layout=random"), ("output.layout", "'random'", "['grouped', 'shuffled']")),
    "unknown runner": (("--runner", "Foo"), ("--runner 'Foo'", "not a Beam runner", "DirectRunner")),
    "misspelt runner": (("--runner", "DirecRunner"), ("did you mean 'DirectRunner'",)),
    "unknown runner in the config": (("--set", "beam.runner=Nope"), ("config beam.runner 'Nope'", "not a Beam runner")),
    "Beam options a runner rejects": (("--runner", "DataflowRunner"), ("Beam options", "project")),
    "misspelt Beam option": (("--direct_num_worker=2",), ("--direct_num_worker=2", "did you mean --direct_num_workers")),
    "bad Beam option value": (("--direct_num_workers=abc",), ("--direct_num_workers", "invalid int value: 'abc'")),
    "stray argument": (("stray",), ("'stray'",)),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_errors_are_one_line_and_write_nothing(bad, case):
    args, needles = RUN_CASES[case]
    result = invoke(bad, "run", "--manifest", "{M}", "--output", "{D}/out", *args)  # a later --manifest wins
    assert_one_line_error(result, *needles)
    assert not os.path.exists(os.path.join(bad["D"], "out"))


def test_run_output_that_is_a_file(bad):
    assert_one_line_error(invoke(bad, "run", "--manifest", "{M}", "--output", "{D}/afile"),
                          "output", "afile", "not a directory")


def test_run_missing_option_is_one_line(bad):
    assert_one_line_error(invoke(bad, "run", "--output", "{D}/out"), "Missing option '--manifest'", "--help")


def test_unknown_model_name_in_video_mode(bad):
    assert_one_line_error(invoke(bad, "run", "--manifest", "{D}/video.jsonl", "--output", "{D}/out",
                                 "--set", "model.name=NoSuchModel"), "model", "'NoSuchModel'", "nccurate-tiny")


OTHER_CASES = {
    "demo output is a file": (("demo", "--output", "{D}/afile"), ("--output", "afile", "not a directory")),
    "demo videos not a number": (("demo", "--videos", "abc"), ("--videos", "'abc'", "integer")),
    "demo no videos": (("demo", "--videos", "0"), ("--videos", "0", ">=1")),
    "bench align no videos": (("bench", "align", "--videos", "0"), ("--videos", "0", ">=1")),
    "demo unknown mode": (("demo", "--mode", "pictures"), ("--mode", "'pictures'", "'video', 'features'")),
    "train no shards": (("train", "--shards", "{D}/nothing-*.tar", "--output", "{D}/t"),
                        ("--shards", "nothing-*.tar", "no file matches")),
    "bench align truth alone": (("bench", "align", "--truth", "{D}/t.json"), ("--truth and --manifest",)),
    "bench align truth missing": (("bench", "align", "--truth", "{D}/nope.json", "--manifest", "{M}"),
                                  ("nope.json", "No such file")),
    "bench train bad seeds": (("bench", "train", "--seeds", "a,b"), ("--seeds", "'a,b'", "integers")),
    "bench memory bad backend": (("bench", "memory", "--backend", "x"), ("--backend", "'x'", "'decord', 'pyav'")),
    "bench throughput misspelt Beam option": (("bench", "throughput", "--direct_num_worker=1"),
                                              ("--direct_num_worker=1", "did you mean --direct_num_workers")),
    "bench memory workdir under a file": (("bench", "memory", "--workdir", "{D}/afile/sub"), ("afile/sub", "Not a directory")),
    "unknown command": (("nosuchcommand",), ("'nosuchcommand'",)),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_other_commands_errors_are_one_line(bad, case):
    args, needles = OTHER_CASES[case]
    assert_one_line_error(invoke(bad, *args), *needles)


def test_a_real_process_prints_one_line_too(bad):
    """Beam is imported for real (its import-time warnings go to the process's stderr)."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--manifest", bad["M"], "--output",
                           os.path.join(bad["D"], "out"), "--runner", "Foo"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nccurate: error: --runner 'Foo'"), done.stderr


def test_run_help_documents_every_option_and_config_section():
    from pipeline.config import _sections

    text = CliRunner().invoke(main, ["run", "--help"]).output
    for option in ("--manifest", "--output", "--config", "--set", "--runner", "--overwrite", "--quiet"):
        assert option in text
    assert "go to Apache Beam" in text and "checkpoints" in text
    for word in [*_sections(), "max_failure_ratio", "decode_timeout_s", "seed", "checkpoints"]:
        assert f" {word}" in text, word
