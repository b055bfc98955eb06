"""End-to-end tests of video mode (``pipeline.run.run`` on the DirectRunner) with a random-init
tiny open_clip model (``nccurate-tiny``, no weights from anywhere).

The corpus is made here: short H.264 files (``tests.videos``), HowTo100M-json and WebVTT
captions, a missing file and a FIFO that hangs the decoder. The checks are on the files a user
gets: clips decode to their realigned spans, every video has an outcome, reruns are byte-identical,
both decode backends and the multi-processing DirectRunner give the same outputs.
"""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest

from tests import helpers
from tests.videos import NORTON_V0, make_video

MODEL = ("model.name=nccurate-tiny", "model.pretrained=null", "max_failure_ratio=1.0",
         "clips.size=48", "clips.fps=4", "decode_timeout_s=4", *NORTON_V0)
DURATIONS_S = {"cook": 40.0, "fix": 32.0, "paint": 48.0}
HANG_TIMEOUT_S = 4.0


def _captions(duration_s: float, rng: np.random.Generator) -> dict:
    starts = np.sort(rng.uniform(0.0, duration_s - 6.0, 6)).round(2)
    ends = (starts + rng.uniform(2.0, 5.0, 6)).round(2)
    texts = [f"step {i} of the video" if i % 2 else f"my cousin says hello {i}" for i in range(6)]
    return {"start": starts.tolist(), "end": ends.tolist(), "text": texts}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(manifest path, directory): three good videos (json and vtt captions), a missing file,
    a FIFO (the decoder blocks opening it until killed at decode_timeout_s)."""
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    rows = []
    for i, (vid, duration) in enumerate(DURATIONS_S.items()):
        make_video(str(root / f"{vid}.mp4"), duration, fps=8, size=(96, 64), pattern="noise")
        caps = _captions(duration, rng)
        if i == 1:  # WebVTT
            cues = [f"00:00:{a:06.3f} --> 00:00:{b:06.3f}\n{t}\n" for a, b, t in zip(caps["start"], caps["end"], caps["text"])]
            (root / f"{vid}.vtt").write_text("WEBVTT\n\n" + "\n".join(cues))
            rows.append({"video_id": vid, "video": f"{vid}.mp4", "captions": f"{vid}.vtt"})
        else:
            (root / f"{vid}.json").write_text(json.dumps(caps))
            rows.append({"video_id": vid, "video": f"{vid}.mp4", "captions": f"{vid}.json"})
    (root / "lost.json").write_text(json.dumps(_captions(30.0, rng)))
    rows.append({"video_id": "lost", "video": "lost.mp4", "captions": "lost.json"})
    os.mkfifo(root / "hang.mp4")
    (root / "hang.json").write_text(json.dumps(_captions(30.0, rng)))
    rows.append({"video_id": "hang", "video": "hang.mp4", "captions": "hang.json"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(manifest), str(root)


@pytest.fixture(scope="module")
def main(corpus, tmp_path_factory):
    manifest, _ = corpus
    started = time.monotonic()
    out = helpers.run_pipeline(manifest, str(tmp_path_factory.mktemp("main") / "out"), MODEL)
    out.wall_s = time.monotonic() - started
    return out


@pytest.fixture(scope="module")
def rerun(corpus, main, tmp_path_factory):
    manifest, _ = corpus
    return helpers.run_pipeline(manifest, str(tmp_path_factory.mktemp("rerun") / "out"), MODEL)


def _clip_duration_s(data: bytes) -> tuple[float, int]:
    """(frames / fps, frame count) of an mp4 clip, decoded with PyAV."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return n / float(stream.average_rate), n


def _top_level_atoms(data: bytes) -> list[str]:
    """The mp4's top-level box types in file order (ISO BMFF: 32-bit size, 4-byte type, and a
    64-bit size after the type when size is 1)."""
    atoms, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        atoms.append(kind)
        pos += size if size else len(data)
    return atoms


def test_every_video_has_an_outcome_and_failures_are_classified(main):
    s = main.summary
    assert s["videos_in"] == 5 and s["videos_ok"] == 3 and s["videos_failed"] == 2
    assert s["reconciled"] and s["problems"] == []
    by_video = {f["video_id"]: f for f in main.failures}
    assert by_video["lost"]["error_class"] == "missing_file" and "lost.mp4" in by_video["lost"]["message"]
    assert by_video["hang"]["error_class"] == "timeout" and by_video["hang"]["stage"] == "decode"
    # captions of failed videos are kept in the index as video_failed; nothing is lost
    assert s["captions_in"] == 5 * 6 == len(main.index)
    assert {r["drop_reason"] for r in main.rows_of("hang")} == {"video_failed"}


def test_hang_is_cut_at_its_timeout_while_the_others_finish(main):
    assert {r["video_id"] for r in main.index if r["kept"]} <= set(DURATIONS_S)
    # the run waited for the hang once (about HANG_TIMEOUT_S), not forever
    assert main.wall_s < 120


def test_clips_are_decodable_mp4_matching_the_realigned_span(main):
    import av

    assert main.samples and len(main.samples) == main.summary["captions_kept"]
    for sample in main.samples:
        assert set(sample) >= {"mp4", "txt", "json"} and "npy" not in sample
        meta = json.loads(sample["json"])
        span_s = meta["span"][1] - meta["span"][0]
        duration_s, n = _clip_duration_s(sample["mp4"])
        assert n >= 1 and abs(duration_s - span_s) <= 0.5, (meta["span"], duration_s)
        assert meta["model"] == "nccurate-tiny" and meta["pretrained"] is None
        assert len(meta["config_hash"]) == 16 and meta["asr_span"] and 0.0 <= meta["weight"] <= 1.0
        assert meta["score_frame_pts_s"] and all(meta["span"][0] - 1 <= t <= meta["span"][1] + 1 for t in meta["score_frame_pts_s"])
        # rates say what they count: the clip's own rate (as its container states it) and the scoring rate
        with av.open(io.BytesIO(sample["mp4"])) as container:
            assert float(container.streams.video[0].average_rate) == meta["clip_fps"] == 4.0
        assert meta["score_fps"] == 1.0 and "fps" not in meta and "frame_pts_s" not in meta
        atoms = _top_level_atoms(sample["mp4"])  # faststart: the index before the media data
        assert "moov" in atoms and "mdat" in atoms and atoms.index("moov") < atoms.index("mdat"), atoms


def test_index_similarities_come_from_the_model(main):
    """Random-init embeddings are not all alike: scores vary across captions."""
    sims = [r["similarity"] for r in main.index if r["drop_reason"] != "video_failed"]
    assert len(sims) == 18 and np.std(sims) > 0


def test_rerun_is_byte_identical(main, rerun):
    assert [os.path.basename(f) for f in main.shard_files] == [os.path.basename(f) for f in rerun.shard_files]
    for a, b in zip(main.shard_files, rerun.shard_files):
        assert helpers.md5_of(a) == helpers.md5_of(b)
    assert main.shardindex_bytes == rerun.shardindex_bytes
    assert main.index == rerun.index


@pytest.mark.parametrize("extra", [("decode.backend=pyav",), ("clips.format=jpg", "output.layout=shuffled")])
def test_other_backend_and_jpg_clips_in_shuffled_layout(corpus, main, tmp_path, extra):
    manifest, _ = corpus
    out = helpers.run_pipeline(manifest, str(tmp_path / "out"), MODEL + extra + ("decode_timeout_s=2",))
    assert out.summary["videos_ok"] == 3 and out.summary["reconciled"]
    assert {f["error_class"] for f in out.failures} == {"missing_file", "timeout"}
    assert len(out.index) == len(main.index)
    if "clips.format=jpg" in extra:
        assert [r["kept"] for r in out.index] == [r["kept"] for r in main.index]
        for sample in out.samples:
            frames = sorted(k for k in sample if k.endswith(".jpg"))
            meta = json.loads(sample["json"])
            assert frames and frames[0] == "f0000.jpg"
            assert abs(len(frames) / 4 - (meta["span"][1] - meta["span"][0])) <= 0.5


def test_multi_processing_runner_gives_the_same_shards(corpus, main, tmp_path):
    from pipeline.config import load_config
    from pipeline.run import run

    manifest, _ = corpus
    output = str(tmp_path / "out")
    run(manifest, output, load_config(None, list(MODEL)),
        beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    out = helpers.read_output(output)
    assert out.summary["videos_ok"] == 3
    assert [helpers.md5_of(f) for f in out.shard_files] == [helpers.md5_of(f) for f in main.shard_files]
    assert out.index == main.index


def test_local_checkpoint_file_is_used(corpus, main, tmp_path):
    """A state_dict saved from the seed-0 random init reproduces the random-init run exactly;
    one saved from another seed changes the scores (so the file is really loaded)."""
    import torch

    from models.encoder import EncoderSpec, load_encoder

    manifest, _ = corpus
    results = {}
    for seed in (0, 1):
        path = str(tmp_path / f"tiny-seed{seed}.pt")
        torch.save(load_encoder(EncoderSpec(name="nccurate-tiny", seed=seed)).model.state_dict(), path)
        overrides = tuple(o for o in MODEL if not o.startswith("model.pretrained")) + (f"model.pretrained={path}",)
        results[seed] = helpers.run_pipeline(manifest, str(tmp_path / f"out{seed}"), overrides)
        meta = json.loads(results[seed].samples[0]["json"]) if results[seed].samples else None
        assert meta is None or meta["pretrained"] == path
    sims = lambda out: [r["similarity"] for r in out.index]  # noqa: E731
    assert sims(results[0]) == sims(main)
    assert sims(results[1]) != sims(main)


def test_unknown_model_or_missing_checkpoint_fails_before_the_run(corpus, tmp_path):
    from pipeline.config import load_config
    from pipeline.run import RunError, run

    manifest, _ = corpus
    with pytest.raises(RunError, match="unknown open_clip model name 'no-such-model'"):
        run(manifest, str(tmp_path / "a"), load_config(None, ["model.name=no-such-model"]))
    with pytest.raises(RunError, match="nope.pt"):
        run(manifest, str(tmp_path / "b"), load_config(None, ["model.name=nccurate-tiny", f"model.pretrained={tmp_path}/nope.pt"]))
    assert not os.path.exists(tmp_path / "a" / "summary.json")


def test_a_manifest_may_mix_video_and_feature_rows(corpus, tmp_path):
    """Rows choose their mode: the graph holds both branches and every row gets its outcome."""
    from pipeline.run import manifest_modes
    from pipeline.synth.feature_corpus import write_corpus

    video_manifest, root = corpus
    feature_manifest, _ = write_corpus(str(tmp_path / "feat"), helpers.small_corpus(2, 3), "json")
    rows = [json.loads(line) for line in open(video_manifest, encoding="utf-8")]
    for row in map(json.loads, open(feature_manifest, encoding="utf-8")):
        rows.append({k: (os.path.join(tmp_path, "feat", v) if k in ("features", "captions", "caption_features") else v)
                     for k, v in row.items()})
    mixed = os.path.join(root, "mixed.jsonl")
    with open(mixed, "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows if r["video_id"] != "hang"))
    assert manifest_modes(mixed) == {"video", "features"} and manifest_modes(video_manifest) == {"video"}
    out = helpers.run_pipeline(mixed, str(tmp_path / "out"), MODEL)
    assert out.summary["videos_in"] == 6 and out.summary["videos_ok"] == 5 and out.summary["reconciled"]
    media = {(json.loads(s["json"])["video_id"] in DURATIONS_S, ext) for s in out.samples
             for ext in s if ext in ("mp4", "npy", "f0000.jpg")}
    assert (False, "npy") in media and media <= {(True, "mp4"), (False, "npy")}
