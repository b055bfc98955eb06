"""Video mode's expensive step: decode (in a child process, with a timeout) fused with frame
embedding through ``RunInference``.

Decoded frames go straight from decode into ``RunInference`` in the same fused stage, streamed
in chunks of ``model.frame_batch_size`` frames read from the decode child's file (a whole
video's frames are never held at once).
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.transforms.compat import TaggedParDo
from pipeline.transforms.stage import FAILURES, FRAMES, META, OK, TOTAL, _StageDoFn, failure_dict, noted


class _DecodeFn(_StageDoFn):
    """ref -> ``((video_id, chunk), frames (n <= chunk_frames, S, S, 3) uint8)`` for chunk = 0,
    1, ... + meta ``(video_id, (pts_s, source, n_chunks))`` and keyed failure rows of the decode's
    notes (a usable video: ``backend_fallback``, ``truncated``), or a keyed failure (video_id, row).
    The times and failures are checkpointed under ``OUT/_work`` when ``output`` is set."""

    stage = "decode"

    def __init__(self, spec, decode, timeout_s: float, chunk_frames: int, threads: int, output: str | None):
        super().__init__()
        self.spec, self.decode, self.timeout_s = spec, decode, timeout_s  # decode: pipeline.config.DecodeConfig
        self.chunk_frames, self.threads, self.output = chunk_frames, threads, output
        self.size = None

    def process(self, ref):
        from curation.errors import InputError
        from models.encoder import input_size_of
        from pipeline.outputs.checkpoint import save_decode_failure, save_pts
        from pipeline.media.isolated import decode_isolated

        if self.size is None:  # from the model config, no weights; not in setup: feature-mode runs never get here
            self.size = input_size_of(self.spec)
        self.count(TOTAL)
        try:
            decoded = decode_isolated(ref.video, self.decode.sample_fps, self.size, self.decode.backend, self.timeout_s,
                                      self.threads, self.decode.max_bytes, self.decode.deinterlace, self.decode.exact)
        except Exception as exc:  # noqa: BLE001 - every decode error becomes a failures row
            row = self.failure_row(ref.video_id, exc)
            if self.output is not None:
                save_decode_failure(self.output, ref.video_id, row)
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, row))
            return
        with decoded:  # removes the child's files, however this generator ends
            self.count(OK)
            self.count(FRAMES, decoded.n_frames)
            n_chunks = -(-decoded.n_frames // self.chunk_frames)
            notes = [failure_dict(ref.video_id, self.stage, InputError(*note)) for note in decoded.notes]
            for row in notes:
                self.count(noted(row["error_class"]))
            if self.output is not None:
                save_pts(self.output, ref.video_id, decoded.pts_s, ref.video, n_chunks, notes)
            for row in notes:  # a usable video's notes (pipeline.media.decode.NOTE_CLASSES)
                yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, row))
            yield beam.pvalue.TaggedOutput(META, (ref.video_id, (decoded.pts_s, ref.video, n_chunks)))
            for chunk, frames in enumerate(decoded.in_chunks(self.chunk_frames)):
                yield (ref.video_id, chunk), frames


def _by_video(keyed_emb, output: str | None):
    """``((video_id, chunk), emb)`` -> ``(video_id, (chunk, emb))``, the chunk checkpointed to
    ``output``'s ``_work`` first when set."""
    from pipeline.outputs.checkpoint import save_emb_chunk

    (video_id, chunk), emb = keyed_emb
    if output is not None:
        save_emb_chunk(output, video_id, chunk, emb)
    return video_id, (chunk, emb)


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
        from models.encoder import encoder_spec_of
        from pipeline.transforms.inference import FrameEmbeddingHandler, embeddings_of

        cfg = self.config
        spec = encoder_spec_of(cfg.model)
        decoded = refs | "Decode" >> TaggedParDo(_DecodeFn(
            spec, cfg.decode, cfg.decode_timeout_s, cfg.model.frame_batch_size,
            cfg.resources.decode_threads, self.save_to), META, FAILURES, main="frames")
        handler = FrameEmbeddingHandler(spec, cfg.model.frame_batch_size, torch_threads=cfg.resources.torch_threads)
        emb = (decoded.frames
               | "EmbedFrames" >> EmbedEach(handler)
               | "FrameEmb" >> beam.Map(embeddings_of)
               | "ByVideo" >> beam.Map(_by_video, self.save_to))
        return {"emb": emb, META: decoded[META], FAILURES: decoded[FAILURES]}
