"""Video-mode transforms: decode (in a child process, with a timeout) fused with frame
embedding through ``RunInference``, caption embedding through the text tower, and the join
that assembles one :class:`curation.records.VideoInputs` per video.

Decoded frames go straight from ``DecodeFrames`` into ``RunInference`` in the same fused stage,
streamed in chunks of ``model.frame_batch_size`` frames read from the decode child's file (a
whole video's frames are never held at once); what crosses the join's shuffle is each chunk's
(n, D) embeddings and small metadata.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from pipeline.transforms.core import FAILURES, TaggedParDo, _StageDoFn

META = "meta"


class _DecodeFn(_StageDoFn):
    """ref -> ``((video_id, chunk), frames (n <= chunk_frames, S, S, 3) uint8)`` for chunk = 0,
    1, ... + meta ``(video_id, (pts_s, source, n_chunks))``, or a keyed failure (video_id, row).
    The times and failures are checkpointed under ``OUT/_work`` when ``output`` is set."""

    stage = "decode"

    def __init__(self, spec, sample_fps: float, backend: str, timeout_s: float, chunk_frames: int, threads: int,
                 output: str | None):
        super().__init__()
        self.spec, self.sample_fps, self.backend, self.timeout_s = spec, sample_fps, backend, timeout_s
        self.chunk_frames, self.threads, self.output = chunk_frames, threads, output
        self.size = None

    def process(self, ref):
        from models.encoder import input_size_of
        from pipeline.outputs.checkpoint import save_decode_failure, save_pts
        from pipeline.media.decode import decode_isolated

        if self.size is None:  # from the model config, no weights; not in setup: feature-mode runs never get here
            self.size = input_size_of(self.spec)
        self.count("total")
        try:
            decoded = decode_isolated(ref.video, self.sample_fps, self.size, self.backend, self.timeout_s, self.threads)
        except Exception as exc:  # noqa: BLE001 - every decode error becomes a failures row
            row = self.failure_row(ref.video_id, exc)
            if self.output is not None:
                save_decode_failure(self.output, ref.video_id, row)
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, row))
            return
        with decoded:  # removes the child's files, however this generator ends
            self.count("ok")
            self.count("frames", decoded.n_frames)
            n_chunks = -(-decoded.n_frames // self.chunk_frames)
            if self.output is not None:
                save_pts(self.output, ref.video_id, decoded.pts_s, ref.video, n_chunks)
            yield beam.pvalue.TaggedOutput(META, (ref.video_id, (decoded.pts_s, ref.video, n_chunks)))
            for chunk, frames in enumerate(decoded.in_chunks(self.chunk_frames)):
                yield (ref.video_id, chunk), frames


class _RestoreFramesFn(_StageDoFn):
    """ref -> its checkpointed decode (``(video_id, emb)`` + meta, or its keyed failure), or
    the ref itself on the ``todo`` output when an earlier attempt did not finish it."""

    stage = "resume"

    def __init__(self, output: str):
        super().__init__()
        self.output = output

    def process(self, ref):
        from pipeline.outputs.checkpoint import load_decode_failure, load_frames

        failure = load_decode_failure(self.output, ref.video_id)
        frames = None if failure is not None else load_frames(self.output, ref.video_id)
        if failure is None and frames is None:
            yield beam.pvalue.TaggedOutput("todo", ref)
            return
        self.count("decodes")
        if failure is not None:
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, failure))
            return
        emb, pts_s, source = frames
        yield beam.pvalue.TaggedOutput(META, (ref.video_id, (pts_s, source, 1)))
        yield ref.video_id, (0, emb)


def _by_video(keyed_emb, output: str | None):
    """``((video_id, chunk), emb)`` -> ``(video_id, (chunk, emb))``, the chunk checkpointed to
    ``output``'s ``_work`` first when set."""
    from pipeline.outputs.checkpoint import save_emb_chunk

    (video_id, chunk), emb = keyed_emb
    if output is not None:
        save_emb_chunk(output, video_id, chunk, emb)
    return video_id, (chunk, emb)


class _CaptionsFn(_StageDoFn):
    """ref -> (video_id, CaptionSet); ``emb`` from caption_features, else None (text tower);
    or a keyed failure (video_id, row)."""

    stage = "captions"

    def __init__(self, retry):
        super().__init__()
        self.retry = retry

    def process(self, ref):
        from pipeline.inputs.arrays import load_caption_set

        self.count("total")
        try:
            captions = load_caption_set(ref, None, self.retry)
        except Exception as exc:  # noqa: BLE001 - every data error becomes a failures row
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, self.failure_row(ref.video_id, exc)))
            return
        self.count("ok")
        yield ref.video_id, captions


def encoder_spec(model):
    """``config.model`` -> :class:`models.encoder.EncoderSpec`."""
    from models.encoder import EncoderSpec

    return EncoderSpec(name=model.name, pretrained=model.pretrained, device=model.device, precision=model.precision)


def frame_embeddings(video_id: str, chunks, n_chunks: int):
    """A video's ``(chunk, (n, D) emb)`` parts in any order -> ``(T, D)``; all ``n_chunks`` must be there."""
    ordered = sorted(chunks, key=lambda part: part[0])
    if [chunk for chunk, _ in ordered] != list(range(n_chunks)):
        raise RuntimeError(f"video {video_id}: frame embedding chunks {[c for c, _ in ordered]} of {n_chunks} "
                           "arrived; the runner lost or repeated some")
    return ordered[0][1] if n_chunks == 1 else np.concatenate([emb for _, emb in ordered])


def _assemble(item, sample_fps: float):
    """Joined per-video parts -> VideoInputs (None for a part whose stage failed, its failure
    rows in ``failures``)."""
    import dataclasses

    from curation.records import FrameFeatures, VideoInputs

    video_id, parts = item
    frames = captions = None
    if parts[META]:
        pts_s, source, n_chunks = parts[META][0]
        frames = FrameFeatures(video_id, sample_fps, frame_embeddings(video_id, parts["frames"], n_chunks),
                               pts_s=pts_s, source=source)
    if parts["captions"]:
        captions = parts["captions"][0]
        if captions.emb is None:
            captions = dataclasses.replace(captions, emb=parts["text_emb"][0]) if parts["text_emb"] else None
    failures = tuple(sorted(parts[FAILURES], key=lambda f: (f["stage"], f["error_class"], f["message"])))
    return VideoInputs(video_id, frames, captions, failures)


class EmbedEach(beam.PTransform):
    """Keyed elements -> ``RunInference`` with ``handler``, one element per call. Batching is
    ours (a chunk of frames, one video's captions), so Beam's ``BatchElements`` is skipped: it
    emits its last batch from ``finish_bundle``, which the DaskRunner drops (DESIGN §9)."""

    def __init__(self, handler):
        super().__init__()
        self.handler = handler

    def expand(self, keyed):
        from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

        return (keyed | "OnePerCall" >> beam.Map(lambda item: [item])
                | "RunInference" >> RunInference(KeyedModelHandler(self.handler).with_no_batching()))


class DecodeAndEmbed(beam.PTransform):
    """``VideoRef`` -> ``{"emb": (video_id, (chunk, (n, D) emb)), META: ..., FAILURES: ...}``:
    decode in a child process, frames streamed in chunks straight into ``RunInference``. One
    composite, so resource hints (a GPU for the encoder) cover decode too and the two stay
    fused: frames never leave the worker that decoded them."""

    def __init__(self, config, save_to: str | None):
        super().__init__()
        self.config, self.save_to = config, save_to

    def expand(self, refs):
        from pipeline.transforms.inference import FrameEmbeddingHandler, embeddings_of

        cfg = self.config
        spec = encoder_spec(cfg.model)
        decoded = refs | "Decode" >> TaggedParDo(_DecodeFn(
            spec, cfg.decode.sample_fps, cfg.decode.backend, cfg.decode_timeout_s, cfg.model.frame_batch_size,
            cfg.resources.decode_threads, self.save_to), META, FAILURES, main="frames")
        handler = FrameEmbeddingHandler(spec, cfg.model.frame_batch_size, torch_threads=cfg.resources.torch_threads)
        emb = (decoded.frames
               | "EmbedFrames" >> EmbedEach(handler)
               | "FrameEmb" >> beam.Map(embeddings_of)
               | "ByVideo" >> beam.Map(_by_video, self.save_to))
        return {"emb": emb, META: decoded[META], FAILURES: decoded[FAILURES]}


class LoadVideoInputs(beam.PTransform):
    """Video-mode ``VideoRef`` -> ``{"ok": VideoInputs}``: decode + embed frames, parse + embed
    captions. ``save_to``: the output directory whose ``_work`` receives the decode checkpoints
    (None: none are written). ``restore_from``: the output directory of an unfinished attempt;
    the decodes it finished are restored instead of redone, and counted in ``"decodes_resumed"``."""

    def __init__(self, config, save_to: str | None = None, restore_from: str | None = None):
        super().__init__()
        self.config, self.save_to, self.restore_from = config, save_to, restore_from

    def expand(self, refs):
        from pipeline.config import encoder_resource_hints
        from pipeline.transforms.inference import TextEmbeddingHandler, embeddings_of

        cfg = self.config
        spec = encoder_spec(cfg.model)
        todo, frame_parts = refs, []
        if self.restore_from is not None:
            restored = refs | "RestoreDecodes" >> TaggedParDo(_RestoreFramesFn(self.restore_from),
                                                              "todo", META, FAILURES, main="emb")
            todo, frame_parts = restored.todo, [restored]
        hints = encoder_resource_hints(cfg)
        decoded = todo | "DecodeEmbed" >> DecodeAndEmbed(cfg, self.save_to).with_resource_hints(**hints)
        captions = refs | "ParseCaptions" >> TaggedParDo(_CaptionsFn(cfg.io), FAILURES, main="ok")
        text_emb = (captions.ok
                    | "NeedText" >> beam.Filter(lambda kv: kv[1].emb is None)
                    | "Texts" >> beam.Map(lambda kv: (kv[0], kv[1].text))
                    | "EmbedCaptions" >> EmbedEach(TextEmbeddingHandler(
                        spec, cfg.model.text_batch_size, torch_threads=cfg.resources.torch_threads)).with_resource_hints(**hints)
                    | "TextEmb" >> beam.Map(embeddings_of))
        every = refs | "Keys" >> beam.Map(lambda ref: (ref.video_id, None))  # one outcome per video
        parts = {
            "ref": every, "captions": captions.ok, "text_emb": text_emb,
            "frames": [decoded["emb"], *(r.emb for r in frame_parts)] | "AllFrames" >> beam.Flatten(),
            META: [decoded[META], *(r[META] for r in frame_parts)] | "AllMeta" >> beam.Flatten(),
            FAILURES: ([decoded[FAILURES], captions[FAILURES], *(r[FAILURES] for r in frame_parts)]
                       | "VideoFailures" >> beam.Flatten()),
        }
        joined = parts | "JoinByVideo" >> beam.CoGroupByKey()
        out = {"ok": joined | "Assemble" >> beam.Map(_assemble, cfg.decode.sample_fps)}
        for r in frame_parts:
            out["decodes_resumed"] = ((r.emb, r[FAILURES]) | "Restored" >> beam.Flatten()
                                      | "CountRestored" >> beam.combiners.Count.Globally())
        return out
