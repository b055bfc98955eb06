"""``nccurate manifest``: a folder mixing sidecar captions (.json, .vtt, .srt), a video with an
embedded text subtitle track (an .srt muxed into .mkv with PyAV), caption-less videos, colliding
and invalid stems and stray caption files -> the exact manifest rows, the printed counts and the
unpaired files; a caption table for the videos without a sidecar; ``--no-asr``; caption features;
feature-mode pairing; a ``memory://`` source and manifest; the CLI's one-line errors (exit 2)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid

import fsspec
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.inputs.manifest import parse_manifest_line
from pipeline.media.subtitles import has_text_subtitles
from pipeline.tools.manifest import build_manifest, video_ids
from pipeline.storage import files
from tests.videos import make_video

SRT = "1\n00:00:00,100 --> 00:00:00,400\nhello from the track\n\n2\n00:00:00,500 --> 00:00:00,900\nsecond cue\n"
BAD_NAME_ID = "bad_name-" + hashlib.sha256(b"bad name").hexdigest()[:8]


def _mkv_with_subtitles(path: str, video: str, srt_path: str) -> str:
    """``video``'s H.264 stream and ``srt_path``'s subtitle stream remuxed into the .mkv ``path``."""
    import av

    with av.open(video) as vin, av.open(srt_path) as sin, av.open(path, "w") as out:
        vs = out.add_stream_from_template(vin.streams.video[0])
        ss = out.add_stream_from_template(sin.streams.subtitles[0])
        for src, stream, dst in ((vin, vin.streams.video[0], vs), (sin, sin.streams.subtitles[0], ss)):
            for packet in src.demux(stream):
                if packet.dts is None:
                    continue
                packet.stream = dst
                out.mux(packet)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    mp4 = make_video(str(root / "v.mp4"), 0.5, fps=8)
    (root / "t.srt").write_text(SRT, encoding="utf-8")
    mkv = _mkv_with_subtitles(str(root / "subs.mkv"), mp4, str(root / "t.srt"))
    assert has_text_subtitles(mkv) and not has_text_subtitles(mp4)
    return mp4, mkv


def _captions_json(text: str) -> str:
    return json.dumps({"start": [0.1], "end": [0.4], "text": [text]})


@pytest.fixture
def corpus(tmp_path, media):
    """``tmp/src`` (see the module docstring) and the manifest path ``tmp/out/manifest.jsonl``."""
    mp4, mkv = media
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    for name in ("a.mp4", "b.mkv", "c.mov", "plain.mp4", "tabled.webm", "nested/a.mp4", "bad name.mp4", ".hidden.mp4"):
        shutil.copy(mp4, src / name)
    shutil.copy(mkv, src / "subs.mkv")
    (src / "a.json").write_text(_captions_json("a json"), encoding="utf-8")
    (src / "a.vtt").write_text("WEBVTT\n\n00:00.100 --> 00:00.400\na vtt\n", encoding="utf-8")
    (src / "b.vtt").write_text("WEBVTT\n\n00:00.100 --> 00:00.400\nb vtt\n", encoding="utf-8")
    (src / "c.srt").write_text("1\n00:00:00,100 --> 00:00:00,400\nc srt\n", encoding="utf-8")
    (src / "orphan.srt").write_text("1\n00:00:00,100 --> 00:00:00,400\nnobody\n", encoding="utf-8")
    (src / "notes.txt").write_text("not a video", encoding="utf-8")
    return src, tmp_path / "out" / "manifest.jsonl"


def _rows(manifest) -> list[dict]:
    return [json.loads(line) for line in open(manifest, encoding="utf-8")]


def _parse_all(manifest, base_dir: str) -> list:
    """Every line of ``manifest`` as the run reads it (raises on a row the run would fail)."""
    text = files.read_bytes(str(manifest)).decode("ascii")
    return [parse_manifest_line(line, base_dir) for line in text.splitlines()]


def _invoke(*args):
    return CliRunner().invoke(main, ["manifest", *map(str, args)], catch_exceptions=False)


def test_mixed_folder_rows_counts_unpaired_and_ids(corpus):
    src, manifest = corpus
    result = _invoke(src, "-o", manifest)
    assert result.exit_code == 0, result.output
    assert _rows(manifest) == [
        {"video_id": "a_mp4", "video": "../src/a.mp4", "captions": "../src/a.json"},
        {"video_id": "b", "video": "../src/b.mkv", "captions": "../src/b.vtt"},
        {"video_id": BAD_NAME_ID, "video": "../src/bad name.mp4", "captions": "asr"},
        {"video_id": "c", "video": "../src/c.mov", "captions": "../src/c.srt"},
        {"video_id": "nested_a_mp4", "video": "../src/nested/a.mp4", "captions": "asr"},
        {"video_id": "plain", "video": "../src/plain.mp4", "captions": "asr"},
        {"video_id": "subs", "video": "../src/subs.mkv", "captions": "embedded"},
        {"video_id": "tabled", "video": "../src/tabled.webm", "captions": "asr"},
    ]
    lines = result.output.splitlines()
    assert lines[0] == f"manifest: {manifest}"
    assert lines[1] == "8 videos, 4 with captions (3 sidecar, 0 table, 1 embedded), 4 needing ASR"
    assert f"  caption file without a video: {src / 'orphan.srt'}" in lines
    assert f"  caption file not used (a preferred one is): {src / 'a.vtt'}" in lines
    assert "unpaired (2):" in lines
    ids_file = manifest.parent / "manifest.ids.json"
    assert json.loads(ids_file.read_text()) == {"a.mp4": "a_mp4", "bad name.mp4": BAD_NAME_ID,
                                                "nested/a.mp4": "nested_a_mp4"}
    assert f"video ids that are not the file's stem (3, written to {ids_file}):" in lines
    assert "  nested/a.mp4 -> nested_a_mp4" in lines
    # every row parses as the run reads it, paths resolved to the real files
    for line in open(manifest, encoding="utf-8"):
        row = json.loads(line)
        ref = parse_manifest_line(line, str(manifest.parent))
        assert ref.video_id == row["video_id"] and ref.video == str(src / row["video"][len("../src/"):])
        if row["captions"] in ("asr", "embedded"):
            assert (ref.captions_from, ref.captions) == (row["captions"], None)
        else:
            assert ref.captions_from == "file" and os.path.exists(ref.captions)
            assert ref.captions == str(src / row["captions"][len("../src/"):])


def test_existing_manifest_refused_unless_overwrite_and_output_is_deterministic(corpus):
    src, manifest = corpus
    assert _invoke(src, "-o", manifest).exit_code == 0
    first = manifest.read_bytes()
    refused = _invoke(src, "-o", manifest)
    assert refused.exit_code == 2
    assert refused.output == f"nccurate: error: {manifest}: manifest exists; use --overwrite to replace it\n"
    manifest.write_bytes(b"something else\n")
    assert _invoke(src, "-o", manifest, "--overwrite").exit_code == 0
    assert manifest.read_bytes() == first
    assert first.decode("ascii").splitlines()[0] == '{"video_id": "a_mp4", "video": "../src/a.mp4", "captions": "../src/a.json"}'


def test_table_supplies_captions_for_videos_without_a_sidecar(corpus, tmp_path):
    src, manifest = corpus
    table = tmp_path / "caption.json"
    table.write_text(json.dumps({
        "tabled": {"start": [0.0, 0.2], "end": [0.2, 0.4], "text": ["from", "the table"]},
        "a": {"start": [0.1], "end": [0.3], "text": ["nested a"]},           # a.mp4 has a sidecar: nested/a.mp4
        "plain": {"start": [0.3], "end": [0.1], "text": ["backwards"]},     # bad: plain falls back to ASR
        "bad name": {"start": [0], "end": [1], "text": ["mapped key"]},
        "b": {"start": [0], "end": [1], "text": ["b has a sidecar"]},       # not converted
        "nobody": {"start": [0], "end": [1], "text": ["no such video"]},
    }), encoding="utf-8")
    result = _invoke(src, "-o", manifest, "--table", table)
    assert result.exit_code == 0, result.output
    rows = {row["video_id"]: row for row in _rows(manifest)}
    assert rows["tabled"]["captions"] == "captions/tabled.json"
    assert rows["nested_a_mp4"]["captions"] == "captions/a.json"
    assert rows[BAD_NAME_ID]["captions"] == f"captions/{BAD_NAME_ID}.json"
    assert rows["plain"]["captions"] == "asr" and rows["b"]["captions"] == "../src/b.vtt"
    captions = manifest.parent / "captions"
    assert sorted(os.listdir(captions)) == sorted(["tabled.json", "a.json", f"{BAD_NAME_ID}.json"])
    assert (captions / "tabled.json").read_bytes() == b'{"end":[0.2,0.4],"start":[0.0,0.2],"text":["from","the table"]}\n'
    lines = result.output.splitlines()
    assert lines[1] == "8 videos, 7 with captions (3 sidecar, 3 table, 1 embedded), 1 needing ASR"
    assert f"table {table}: 3 entries converted into {captions}, 1 bad, 2 for no video here" in lines
    assert "  plain: end[0] (0.1) is before start[0] (0.3)" in lines
    refs = {ref.video_id: ref for ref in _parse_all(manifest, str(manifest.parent))}
    assert refs["tabled"].captions == str(captions / "tabled.json") and refs["tabled"].captions_from == "file"
    # a manifest inside SOURCE: its captions folder, ids file and itself are not listed on a rerun
    inside = src / "manifest.jsonl"
    assert _invoke(src, "-o", inside, "--table", table).exit_code == 0
    assert (src / "captions" / "tabled.json").exists() and (src / "manifest.ids.json").exists()
    again = _invoke(src, "-o", inside, "--table", table, "--overwrite")
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[1] == lines[1]
    assert [line for line in again.output.splitlines() if "caption file without a video" in line] == [
        f"  caption file without a video: {src / 'orphan.srt'}"]


def test_no_asr_leaves_caption_less_videos_out_and_reports_them(corpus):
    src, manifest = corpus
    result = _invoke(src, "-o", manifest, "--no-asr")
    assert result.exit_code == 0, result.output
    assert [row["video_id"] for row in _rows(manifest)] == ["a_mp4", "b", "c", "subs"]
    lines = result.output.splitlines()
    assert lines[1] == "4 videos, 4 with captions (3 sidecar, 0 table, 1 embedded), 0 needing ASR"
    left_out = [line for line in lines if line.startswith("  video left out (no captions; --no-asr): ")]
    assert sorted(line.rsplit(": ", 1)[1] for line in left_out) == sorted(
        str(src / n) for n in ("bad name.mp4", "nested/a.mp4", "plain.mp4", "tabled.webm"))
    assert json.loads((manifest.parent / "manifest.ids.json").read_text()) == {"a.mp4": "a_mp4"}
    assert [ref.captions_from for ref in _parse_all(manifest, str(manifest.parent))] == ["file", "file", "file", "embedded"]


def test_no_asr_with_no_captioned_video_is_a_one_line_error(tmp_path, media):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(media[0], src / "x.mp4")
    result = _invoke(src, "-o", tmp_path / "m.jsonl", "--no-asr")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "no manifest written: none of the 1 videos" in result.output and not (tmp_path / "m.jsonl").exists()


def test_caption_features_in_video_mode(corpus, tmp_path):
    src, manifest = corpus
    feats = tmp_path / "capfeats"
    (feats / "deep").mkdir(parents=True)
    for stem in ("b", "subs", "plain", "zz"):
        np.save(feats / f"{stem}.npy", np.zeros((1, 4), np.float32))
    np.save(feats / "deep" / "c.npy", np.zeros((1, 4), np.float32))
    result = _invoke(src, "-o", manifest, "--caption-features", feats)
    assert result.exit_code == 0, result.output
    rows = {row["video_id"]: row for row in _rows(manifest)}
    assert rows["b"]["caption_features"] == "../capfeats/b.npy"
    assert rows["c"]["caption_features"] == "../capfeats/deep/c.npy"
    assert "caption_features" not in rows["plain"] and "caption_features" not in rows["a_mp4"]
    assert "caption_features" not in rows["subs"]  # the manifest takes caption features only with a captions file
    lines = result.output.splitlines()
    assert f"  caption features without a video: {feats / 'zz.npy'}" in lines
    for stem in ("plain", "subs"):
        assert f"  caption features not used (the video's captions are not a file): {feats / (stem + '.npy')}" in lines
    for line in open(manifest, encoding="utf-8"):  # every row parses
        ref = parse_manifest_line(line, str(manifest.parent))
        if ref.video_id == "b":
            assert ref.caption_features == str(feats / "b.npy")


def test_feature_mode_pairs_by_stem_and_reports_the_rest(tmp_path):
    caps, feats, cfeats = tmp_path / "caps", tmp_path / "feats", tmp_path / "cfeats"
    for folder in (caps / "sub", feats, cfeats, feats / "other"):
        folder.mkdir(parents=True, exist_ok=True)
    (caps / "x.json").write_text(_captions_json("x"), encoding="utf-8")
    (caps / "x.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nx srt\n", encoding="utf-8")
    (caps / "sub" / "y.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\ny\n", encoding="utf-8")
    (caps / "q.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nq\n", encoding="utf-8")
    (caps / "nocf.json").write_text(_captions_json("nocf"), encoding="utf-8")
    (caps / "my clip.json").write_text(_captions_json("mapped"), encoding="utf-8")
    for stem in ("x", "y", "z", "nocf", "my clip", "dup"):
        np.save(feats / f"{stem}.npy", np.zeros((3, 4), np.float32))
    np.save(feats / "other" / "dup.npy", np.zeros((3, 4), np.float32))
    for stem in ("x", "y", "w", "my clip"):
        np.save(cfeats / f"{stem}.npy", np.zeros((1, 4), np.float32))
    manifest = tmp_path / "m.jsonl"
    result = _invoke(caps, "-o", manifest, "--features", feats, "--fps", "1", "--caption-features", cfeats)
    assert result.exit_code == 0, result.output
    mapped = "my_clip-" + hashlib.sha256(b"my clip").hexdigest()[:8]
    assert _rows(manifest) == [
        {"video_id": mapped, "features": "feats/my clip.npy", "fps": 1.0, "captions": "caps/my clip.json",
         "caption_features": "cfeats/my clip.npy"},
        {"video_id": "x", "features": "feats/x.npy", "fps": 1.0, "captions": "caps/x.json", "caption_features": "cfeats/x.npy"},
        {"video_id": "y", "features": "feats/y.npy", "fps": 1.0, "captions": "caps/sub/y.vtt", "caption_features": "cfeats/y.npy"},
    ]
    for line in open(manifest, encoding="utf-8"):
        ref = parse_manifest_line(line, str(tmp_path))
        assert ref.fps == 1.0 and os.path.exists(ref.features) and os.path.exists(ref.captions)
        assert os.path.exists(ref.caption_features)
    lines = result.output.splitlines()
    assert lines[1] == "3 videos, 3 with captions (3 sidecar, 0 table, 0 embedded), 0 needing ASR"
    for expected in (f"  features without captions: {feats / 'z.npy'}",
                     f"  features without caption features: {feats / 'nocf.npy'}",
                     f"  caption file without features: {caps / 'q.srt'}",
                     f"  caption file not used (a preferred one is): {caps / 'x.srt'}",
                     f"  caption features without features: {cfeats / 'w.npy'}",
                     f"  ambiguous (another file of its kind has its stem): {feats / 'dup.npy'}",
                     f"  ambiguous (another file of its kind has its stem): {feats / 'other' / 'dup.npy'}",
                     f"  my clip -> {mapped}"):
        assert expected in lines, expected
    assert json.loads((tmp_path / "m.ids.json").read_text()) == {"my clip": mapped}


def test_feature_mode_with_a_table(tmp_path):
    caps, feats, cfeats = tmp_path / "caps", tmp_path / "feats", tmp_path / "cfeats"
    for folder in (caps, feats, cfeats):
        folder.mkdir()
    for stem in ("t1", "t2"):
        np.save(feats / f"{stem}.npy", np.zeros((3, 4), np.float32))
        np.save(cfeats / f"{stem}.npy", np.zeros((1, 4), np.float32))
    (tmp_path / "t.jsonl").write_text(
        "\n".join(json.dumps({"video_id": "t1", "start": s, "end": s + 1, "text": f"c{s}"}) for s in (0, 1)) + "\n",
        encoding="utf-8")
    summary = build_manifest(str(caps), str(tmp_path / "m.jsonl"), table=str(tmp_path / "t.jsonl"),
                             features=str(feats), fps=2.5, caption_features=str(cfeats))
    assert (summary.rows, summary.table, summary.sidecar) == (1, 1, 0)
    assert _rows(tmp_path / "m.jsonl") == [{"video_id": "t1", "features": "feats/t1.npy", "fps": 2.5,
                                            "captions": "captions/t1.json", "caption_features": "cfeats/t1.npy"}]
    assert ("features without captions", str(feats / "t2.npy")) in summary.unpaired


@pytest.fixture
def memory_root():
    root = f"memory://nccurate-manifest-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root.split("://", 1)[1]):
        fs.rm(root.split("://", 1)[1], recursive=True)


def _put(uri: str, data: bytes) -> None:
    fs, inner = files.filesystem(uri)
    fs.pipe_file(inner, data)


def test_remote_source_is_listed_not_downloaded(memory_root, tmp_path):
    src = f"{memory_root}/src"
    _put(f"{src}/a.mp4", b"not probed")
    _put(f"{src}/a.srt", b"1\n00:00:00,000 --> 00:00:01,000\nremote\n")
    _put(f"{src}/deep/b.webm", b"not probed")
    _put(f"{src}/stray.vtt", b"WEBVTT\n")
    manifest = tmp_path / "m.jsonl"
    result = _invoke(src, "-o", manifest)
    assert result.exit_code == 0, result.output
    assert _rows(manifest) == [{"video_id": "a", "video": f"{src}/a.mp4", "captions": f"{src}/a.srt"},
                               {"video_id": "b", "video": f"{src}/deep/b.webm"}]
    first, second = (parse_manifest_line(line, str(tmp_path)) for line in manifest.read_text().splitlines())
    assert (first.captions_from, first.captions) == ("file", f"{src}/a.srt")
    assert (second.captions_from, second.captions, second.video) == ("auto", None, f"{src}/deep/b.webm")
    lines = result.output.splitlines()
    assert lines[1] == "2 videos, 1 with captions (1 sidecar, 0 table, 0 embedded), 0 needing ASR"
    assert lines[2].startswith("1 remote videos without a captions file")
    assert f"  caption file without a video: {src}/stray.vtt" in lines
    no_asr = _invoke(src, "-o", manifest, "--no-asr", "--overwrite")
    assert no_asr.exit_code == 0 and _rows(manifest)[1] == {"video_id": "b", "video": f"{src}/deep/b.webm",
                                                            "captions": "embedded"}


def test_remote_manifest_and_table(memory_root, tmp_path):
    src, out = f"{memory_root}/src", f"{memory_root}/out"
    _put(f"{src}/v1.mp4", b"x")
    _put(f"{src}/v2.mp4", b"x")
    table = tmp_path / "caption.json"
    table.write_text(json.dumps({"v1": {"start": [0], "end": [1], "text": ["remote table"]}}), encoding="utf-8")
    result = _invoke(src, "-o", f"{out}/m.jsonl", "--table", table)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in files.read_bytes(f"{out}/m.jsonl").decode().splitlines()]
    assert rows == [{"video_id": "v1", "video": f"{src}/v1.mp4", "captions": f"{out}/captions/v1.json"},
                    {"video_id": "v2", "video": f"{src}/v2.mp4"}]
    assert files.read_bytes(f"{out}/captions/v1.json") == b'{"end":[1],"start":[0],"text":["remote table"]}\n'
    assert [ref.captions for ref in _parse_all(f"{out}/m.jsonl", out)] == [f"{out}/captions/v1.json", None]


def test_video_id_rule():
    long = "x" * 130 + ".mp4"
    ids = video_ids(["a.mp4", "k/a.mp4", "b.mp4", "b.mkv", "ok-1_2.mp4", "é t.mp4", long, "a_mp4.mp4", "k/a.mp4x"])
    h = lambda name: hashlib.sha256(name.encode()).hexdigest()[:8]  # noqa: E731
    assert ids == {
        "a.mp4": "a_mp4-" + h("a.mp4"),          # a_mp4 is also a_mp4.mp4's stem: the path-named one gets a hash
        "k/a.mp4": "k_a_mp4",
        "b.mp4": "b_mp4", "b.mkv": "b_mkv",
        "ok-1_2.mp4": "ok-1_2",
        "é t.mp4": "__t-" + h("é t"),
        long: "x" * 119 + "-" + h("x" * 130),
        "a_mp4.mp4": "a_mp4",
        "k/a.mp4x": "k_a_mp4x",                   # its stem a is shared too (video_ids takes any path)
    }
    assert all(len(v) <= 128 for v in ids.values()) and len(set(ids.values())) == len(ids)


@pytest.mark.parametrize("args, message", [
    (["{tmp}/absent", "-o", "{tmp}/m.jsonl"], "{tmp}/absent: SOURCE folder not found"),
    (["{tmp}/empty", "-o", "{tmp}/m.jsonl"], "no video"),
    (["{tmp}/file.txt", "-o", "{tmp}/m.jsonl"], "is not a folder"),
    (["{tmp}/one", "-o", "{tmp}/m.jsonl", "--table", "{tmp}/broken.json"], "{tmp}/broken.json: invalid JSON at character"),
    (["{tmp}/one", "-o", "{tmp}/m.jsonl", "--table", "{tmp}/t.csv"], "unknown caption table format"),
    (["{tmp}/one", "-o", "{tmp}/m.jsonl", "--table", "{tmp}/nope.json"], "caption table not found"),
    (["{tmp}/one", "-o", "{tmp}/m.jsonl", "--fps", "2"], "--fps is for feature mode"),
    (["{tmp}/one", "-o", "{tmp}/m.jsonl", "--fps", "abc"], "'abc' is not a valid float"),
    (["{tmp}/one", "-o", "{tmp}/m.jsonl", "--features", "{tmp}/empty"], "feature mode needs --fps"),
    (["{tmp}/one", "-o", "{tmp}/m.jsonl", "--features", "{tmp}/empty", "--fps", "0", "--caption-features", "{tmp}/e2"],
     "--fps must be a positive number"),
    (["{tmp}/one"], "Missing option '-o'"),
])
def test_cli_errors_are_one_line_with_status_2(tmp_path, media, args, message):
    tmp = str(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "e2").mkdir()
    (tmp_path / "one").mkdir()
    shutil.copy(media[0], tmp_path / "one" / "v.mp4")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "broken.json").write_text('{"v": {"start": [0], "end": [1], "text": ["a"]} "w": 1}')
    (tmp_path / "t.csv").write_text("video_id\n")
    result = _invoke(*(a.format(tmp=tmp) for a in args))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("nccurate: error: ") and result.output.count("\n") == 1, result.output
    assert message.format(tmp=tmp) in result.output
    assert not (tmp_path / "m.jsonl").exists()
