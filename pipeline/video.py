"""Video-mode transforms: decode (in a child process, with a timeout) fused with frame
embedding through ``RunInference``, caption embedding through the text tower, and the join
that assembles one :class:`curation.records.VideoInputs` per video.

Decoded frames go straight from ``DecodeFrames`` into ``RunInference`` in the same fused stage;
what crosses the join's shuffle is each video's (T, D) embeddings and small metadata.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.transforms import FAILURES, _StageDoFn

META = "meta"


class _DecodeFn(_StageDoFn):
    """ref -> (video_id, frames (N, S, S, 3) uint8) + meta (video_id, (pts_s, source))."""

    stage = "decode"

    def __init__(self, spec, sample_fps: float, backend: str, timeout_s: float):
        super().__init__()
        self.spec, self.sample_fps, self.backend, self.timeout_s = spec, sample_fps, backend, timeout_s
        self.size = None

    def process(self, ref):
        from models.encoder import input_size_of
        from pipeline.decode import decode_frames_isolated

        if self.size is None:  # from the model config, no weights; not in setup: feature-mode runs never get here
            self.size = input_size_of(self.spec)
        self.count("total")
        try:
            decoded = decode_frames_isolated(ref.video, self.sample_fps, self.size, self.backend, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - every decode error becomes a failures row
            yield self.fail(ref.video_id, exc)
            return
        self.count("ok")
        self.count("frames", len(decoded.frames))
        yield beam.pvalue.TaggedOutput(META, (ref.video_id, (decoded.pts_s, ref.video)))
        yield ref.video_id, decoded.frames


class _CaptionsFn(_StageDoFn):
    """ref -> (video_id, CaptionSet); ``emb`` from caption_features, else None (text tower)."""

    stage = "captions"

    def process(self, ref):
        from pipeline.inputs import load_caption_set

        self.count("total")
        try:
            captions = load_caption_set(ref, None)
        except Exception as exc:  # noqa: BLE001 - every data error becomes a failures row
            yield self.fail(ref.video_id, exc)
            return
        self.count("ok")
        yield ref.video_id, captions


def encoder_spec(model):
    """``config.model`` -> :class:`models.encoder.EncoderSpec`."""
    from models.encoder import EncoderSpec

    return EncoderSpec(name=model.name, pretrained=model.pretrained, device=model.device, precision=model.precision)


def _assemble(item, sample_fps: float):
    """Joined per-video parts -> VideoInputs (None for a part whose stage failed)."""
    import dataclasses

    from curation.records import FrameFeatures, VideoInputs

    video_id, parts = item
    frames = captions = None
    if parts["frames"] and parts[META]:
        pts_s, source = parts[META][0]
        frames = FrameFeatures(video_id, sample_fps, parts["frames"][0], pts_s=pts_s, source=source)
    if parts["captions"]:
        captions = parts["captions"][0]
        if captions.emb is None:
            captions = dataclasses.replace(captions, emb=parts["text_emb"][0]) if parts["text_emb"] else None
    return VideoInputs(video_id, frames, captions)


class LoadVideoInputs(beam.PTransform):
    """Video-mode ``VideoRef`` -> ``VideoInputs``: decode + embed frames, parse + embed captions."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def expand(self, refs):
        from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

        from pipeline.inference import FrameEmbeddingHandler, TextEmbeddingHandler, embeddings_of

        cfg = self.config
        spec = encoder_spec(cfg.model)
        decoded = refs | "Decode" >> beam.ParDo(_DecodeFn(
            spec, cfg.decode.sample_fps, cfg.decode.backend, cfg.decode_timeout_s)).with_outputs(
            META, FAILURES, main="frames")
        frame_emb = (decoded.frames
                     | "EmbedFrames" >> RunInference(KeyedModelHandler(FrameEmbeddingHandler(spec, cfg.model.frame_batch_size)))
                     | "FrameEmb" >> beam.Map(embeddings_of))
        captions = refs | "ParseCaptions" >> beam.ParDo(_CaptionsFn()).with_outputs(FAILURES, main="ok")
        text_emb = (captions.ok
                    | "NeedText" >> beam.Filter(lambda kv: kv[1].emb is None)
                    | "Texts" >> beam.Map(lambda kv: (kv[0], kv[1].text))
                    | "EmbedCaptions" >> RunInference(KeyedModelHandler(TextEmbeddingHandler(spec, cfg.model.text_batch_size)))
                    | "TextEmb" >> beam.Map(embeddings_of))
        every = refs | "Keys" >> beam.Map(lambda ref: (ref.video_id, None))  # one outcome per video
        joined = ({"ref": every, "frames": frame_emb, META: decoded[META], "captions": captions.ok, "text_emb": text_emb}
                  | "JoinByVideo" >> beam.CoGroupByKey())
        inputs = joined | "Assemble" >> beam.Map(_assemble, cfg.decode.sample_fps)
        failures = (decoded[FAILURES], captions[FAILURES]) | "VideoFailures" >> beam.Flatten()
        return {"ok": inputs, FAILURES: failures}
