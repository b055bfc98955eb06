"""The command line as a user runs it: exit codes, one-line errors, printed tables."""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile

import pytest
from click.testing import CliRunner

from curation.synth.features import WorldParams, make_corpus
from pipeline.cli import main
from pipeline.synth.feature_corpus import write_corpus

SMALL = WorldParams(dim=512, duration_s=(120, 150))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    path, _ = write_corpus(str(tmp_path_factory.mktemp("cli_in")), make_corpus(3, 11, SMALL))
    return path


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_commands_and_run_options():
    assert {"run", "demo", "bench"} <= set(invoke("--help").output.split())
    help_text = invoke("run", "--help").output
    for option in ("--manifest", "--output", "--config", "--set", "--runner", "--overwrite"):
        assert option in help_text


def test_run_succeeds_and_prints_counts(manifest, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--manifest", manifest, "--output", str(out), "--set", "output.samples_per_shard=20")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['captions_kept']} kept of {summary['captions_in']}" in result.output
    assert os.path.exists(out / "shardindex.json")


@pytest.mark.parametrize("args, needle", [
    (("--set", "align.epss=0.1"), "did you mean 'align.eps'"),
    (("--set", "align.method=magic"), "align.method"),
    (("--set", "output.layout=random"), "['grouped', 'shuffled']"),
    (("--config", "/nonexistent/x.yaml"), "/nonexistent/x.yaml"),
])
def test_bad_config_is_one_line_exit_2(manifest, tmp_path, args, needle):
    result = invoke("run", "--manifest", manifest, "--output", str(tmp_path / "o"), *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert not os.path.exists(tmp_path / "o")  # nothing written on bad config


def test_missing_manifest_and_nonempty_output(manifest, tmp_path):
    result = invoke("run", "--manifest", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"))
    assert result.exit_code == 2 and "nope.jsonl" in result.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("precious")
    result = invoke("run", "--manifest", manifest, "--output", str(busy))
    assert result.exit_code == 2 and "not empty" in result.output
    result = invoke("run", "--manifest", manifest, "--output", str(busy), "--overwrite")
    assert result.exit_code == 2 and "did not write" in result.output
    assert (busy / "mine.txt").read_text() == "precious"


def test_bench_align_prints_a_table_of_worlds():
    from curation.synth.worlds import WORLDS

    result = invoke("bench", "align", "--videos", "2", "--seed", "3", "--no-held-out", "--no-video-world")
    assert result.exit_code == 0, result.output
    methods, calibration = result.output.split("Confidence weight of this config (posterior)")
    calibration, keeping = calibration.split("Keeping rules of this config")
    rows = [line.split("|")[1:-1] for line in methods.splitlines() if line.startswith("| ")]
    header, body = [c.strip() for c in rows[0]], rows[1:]
    assert header[1:-1] == list(WORLDS) and header[-1] == "worst R@1 − ASR"
    names = [r[0].strip() for r in body]
    assert names[0] == "ASR timestamps (baseline)" and "this config (posterior)" in names
    assert any(n.startswith("old default") for n in names) and any(n.startswith("S2DTW") for n in names)
    asr = [float(c.split("/")[0]) for c in body[0][1:-1]]
    for row in body:
        cells = [tuple(float(x) for x in c.split("/")) for c in row[1:-1]]
        assert all(0.0 <= r <= 100.0 and (auc != auc or 0.0 <= auc <= 100.0) for r, auc in cells)
        # the last column is the worst margin over the ASR row, recomputed here
        assert abs(float(row[-1]) - min(r - a for (r, _), a in zip(cells, asr))) < 0.11
    assert float(body[0][-1]) == 0.0
    # the weight's calibration: one row per world, ECE and Brier in [0, 1], mean weight a percentage
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in calibration.splitlines() if line.startswith("| ")]
    assert table[0] == ["world", "kept: hit %", "mean weight %", "ECE", "Brier", "legacy ECE", "legacy Brier",
                        "ECE, all captions", "kept: shown %", "ECE vs shown", "Brier vs shown"]
    assert [r[0] for r in table[1:]] == list(WORLDS)
    for _, share, mean, *errors, shown, shown_ece, shown_brier in table[1:]:
        numbers = [float(x) for x in (share, mean, shown, *errors, shown_ece, shown_brier) if x != "nan"]  # a world may keep nothing
        assert all(0 <= x <= 100 for x in numbers[:3]) and all(0 <= x <= 1 for x in numbers[3:])
        # the footage shows at least every hit's caption where its centre is: shown >= hit
        assert share == "nan" or float(shown) >= float(share)
    # keeping rules: precision / recall per world and rule
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in keeping.splitlines() if line.startswith("| ")]
    assert table[0][1:] == ["alignability >= 0.3", "alignability >= 0.5", "alignability >= 0.7", "alignability >= 0.9",
                            "weight >= 0.5"]
    assert [r[0] for r in table[1:]] == list(WORLDS)
    for row in table[1:]:
        for cell in row[1:]:
            precision, recall = cell.split(" / ")
            assert (precision == "nan" or 0 <= float(precision) <= 100) and 0 <= float(recall) <= 100


def test_bench_align_draws_the_weights_reliability_diagrams(tmp_path):
    from curation.synth.worlds import WORLDS

    result = invoke("bench", "align", "--videos", "2", "--seed", "3", "--no-held-out", "--no-video-world",
                    "--plots", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    assert f"reliability diagrams: {tmp_path / 'plots' / 'reliability-*.png'}" in result.output
    [png] = sorted((tmp_path / "plots").iterdir())
    data = png.read_bytes()
    assert png.name == "reliability-seed3.png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    rows = -(-len(WORLDS) // 4)
    assert (width, height) == (4 * 3 * 80, round(rows * 3.4 * 80))  # a panel per world, four a row


def test_bench_align_with_truth_file(tmp_path):
    manifest_path, truth = write_corpus(str(tmp_path / "t"), make_corpus(3, 5, SMALL), ("vtt", "srt"))
    result = invoke("bench", "align", "--manifest", manifest_path, "--truth", truth)
    assert result.exit_code == 0, result.output
    assert "3 videos" in result.output
    bad = tmp_path / "truth_bad.json"
    data = json.loads(open(truth).read())
    first = sorted(data)[0]
    data[first] = data[first][:-1]
    bad.write_text(json.dumps(data))
    result = invoke("bench", "align", "--manifest", manifest_path, "--truth", str(bad))
    assert result.exit_code == 2 and first in result.output


def test_demo_runs_and_scores(tmp_path):
    result = invoke("demo", "--output", str(tmp_path / "demo"), "--videos", "6", "--mode", "features")
    assert result.exit_code == 0, result.output
    assert "R@1" in result.output and "ASR timestamps" in result.output
    assert os.path.exists(tmp_path / "demo" / "curated" / "shardindex.json")


def test_overwrite_refuses_before_deleting_anything(manifest, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", "--manifest", manifest, "--output", str(out)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = invoke("run", "--manifest", manifest, "--output", str(out), "--overwrite")
    assert result.exit_code == 2 and "notes.txt" in result.output
    assert (out / "summary.json").exists() and (out / "shardindex.json").exists()
    (out / "notes.txt").unlink()
    assert invoke("run", "--manifest", manifest, "--output", str(out), "--overwrite").exit_code == 0


def test_demo_twice_replaces_its_outputs(tmp_path):
    for _ in range(2):
        result = invoke("demo", "--output", str(tmp_path / "d"), "--videos", "3", "--mode", "features")
        assert result.exit_code == 0, result.output


def test_demo_video_mode_beats_asr(tmp_path):
    """The default demo (H.264 files, the shipped tiny encoder), on a few videos."""
    result = invoke("demo", "--output", str(tmp_path / "v"), "--videos", "4")
    assert result.exit_code == 0, result.output
    assert "video mode" in result.output and "nccurate-tiny" in result.output
    clips = glob.glob(str(tmp_path / "v" / "curated" / "shards" / "*.tar"))
    assert clips
    with tarfile.open(clips[0]) as tar:
        assert any(name.endswith(".mp4") for name in tar.getnames())
    r_at_1, asr = (float(x) for x in re.search(r"R@1 ([\d.]+) \(ASR timestamps: ([\d.]+)\)", result.output).groups())
    assert r_at_1 > asr


def test_the_group_turns_any_nccurate_error_into_one_line_with_its_exit_code():
    import click

    from pipeline.cli import _OneLineErrors
    from pipeline.errors import NccurateError

    class Busy(NccurateError):
        exit_code = 3

    @click.group(cls=_OneLineErrors)
    def group():
        pass

    @group.command()
    def fails():
        raise Busy("the output\n  is busy")

    result = CliRunner().invoke(group, ["fails"])
    assert result.exit_code == 3 and result.stderr == "nccurate: error: the output is busy\n"
    assert isinstance(result.exception, SystemExit)


def test_bench_options_are_declared_once():
    """throughput and memory share the video-corpus options; every bench takes --config/--set."""
    bench = main.commands["bench"]
    corpus = {"--duration-s", "--width", "--height", "--fps", "--model"}
    for name in ("throughput", "memory"):
        opts = {o for p in bench.commands[name].params for o in p.opts}
        assert corpus <= opts, name
    for name in ("align", "throughput", "memory"):
        opts = {o for p in bench.commands[name].params for o in p.opts}
        assert {"--config", "--set"} <= opts, name
    backend = next(p for p in bench.commands["memory"].params if p.name == "backend")
    assert backend.default == "pyav"
