"""``LoadVideoInputs`` (decode in the child process, frames and captions through RunInference)
on the DirectRunner: its VideoInputs equal the plain decode + encoder calls on the same files,
a missing video becomes a decode failure, and the decode counters say so."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from curation.records import VideoRef
from pipeline.config import load_config
from tests.pipeline.transforms.test_composites import _run, counters
from tests.videos import make_video

SETTINGS = ["model.name=nccurate-tiny", "model.pretrained=null", "decode.backend=pyav", "decode_timeout_s=30"]


def test_load_video_inputs_equal_the_plain_decode_and_encoder(tmp_path):
    from models.encoder import encoder_spec_of, input_size_of, shared_encoder
    from pipeline.media.decode import decode_frames
    from pipeline.transforms.load import LoadVideoInputs

    config = load_config(None, SETTINGS)
    video = make_video(str(tmp_path / "cook.mp4"), 6.0, fps=8, size=(96, 64), pattern="noise")
    texts = ["stir the pot", "my cousin says hello"]
    (tmp_path / "cook.json").write_text(json.dumps({"start": [0.5, 3.0], "end": [2.0, 5.0], "text": texts}))
    (tmp_path / "lost.json").write_text(json.dumps({"start": [0.0], "end": [1.0], "text": ["gone"]}))
    cut = make_video(str(tmp_path / "cut.mkv"), 8.0, fps=8, pattern="noise")  # its header says 8 s
    with open(cut, "r+b") as f:
        f.truncate(int(0.6 * f.seek(0, 2)))
    refs = [VideoRef("cook", str(tmp_path / "cook.json"), video=video),
            VideoRef("lost", str(tmp_path / "lost.json"), video=str(tmp_path / "lost.mp4")),
            VideoRef("cut", str(tmp_path / "cook.json"), video=cut)]

    spec = encoder_spec_of(config.model)
    decoded = decode_frames(video, config.decode.sample_fps, input_size_of(spec), "pyav")
    encoder = shared_encoder(spec)
    want_frames = encoder.encode_frames(decoded.frames, config.model.frame_batch_size)
    want_text = encoder.encode_texts(texts, config.model.text_batch_size)

    def summary(video):
        frames = None if video.frames is None else (video.frames.emb.shape, tuple(np.round(video.frames.pts_s, 6)))
        if video.video_id == "cut":  # usable, with a note in the failures table
            frames = None if video.frames is None else video.frames.emb.shape[0] < 8
        return (video.video_id, frames, video.captions is not None,
                tuple((f["stage"], f["error_class"]) for f in video.failures))

    def close_to_plain(videos):
        cook = next(v for v in videos if v.video_id == "cook")
        np.testing.assert_allclose(cook.frames.emb, want_frames, atol=1e-5)
        np.testing.assert_allclose(cook.captions.emb, want_text, atol=1e-5)
        assert cook.captions.text == tuple(texts) and cook.frames.source == video

    p = BeamTestPipeline()
    out = p | beam.Create(refs) | LoadVideoInputs(config)
    assert_that(out["ok"] | "Summary" >> beam.Map(summary), equal_to([
        ("cook", (want_frames.shape, tuple(np.round(decoded.pts_s, 6))), True, ()),
        ("lost", None, True, (("decode", "missing_file"),)),
        ("cut", True, True, (("decode", "truncated"),)),
    ]), label="Summaries")
    assert_that(out["ok"], close_to_plain, label="Embeddings")
    result = _run(p)
    decode = counters(result, "decode")
    assert 0 < decode.pop("frames") - len(decoded.pts_s) < 8
    assert decode == {"total": 3, "ok": 2, "failed/missing_file": 1, "noted/truncated": 1}
