"""Loading one video's inputs: feature mode (``.npy`` features + captions, :class:`LoadInputs`)
and video mode (decode + embed frames, parse + embed captions, joined by video:
:class:`LoadVideoInputs`), each giving one :class:`curation.records.VideoInputs` per video.

In video mode what crosses the join's shuffle is each chunk's (n, D) embeddings and small
metadata, never decoded frames (``pipeline.transforms.embed``).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from pipeline.transforms.compat import TaggedParDo
from pipeline.transforms.embed import DecodeAndEmbed, EmbedEach
from pipeline.transforms.resume import _RestoreFramesFn
from pipeline.transforms.stage import FAILURES, META, OK, TOTAL, _StageDoFn


class _LoadInputsFn(_StageDoFn):
    """Loads features and captions of one video (both, so the failures table names each
    stage that failed) into a :class:`VideoInputs` that carries the failure rows."""

    stage = "load"

    def __init__(self, expected_dim, retry):
        super().__init__()
        self.expected_dim, self.retry = expected_dim, retry

    def process(self, ref):
        from curation.records import VideoInputs
        from pipeline.inputs.arrays import load_caption_set, load_frame_features

        self.count(TOTAL)
        loaded, failures = {}, []
        for stage, load in (("features", load_frame_features), ("captions", load_caption_set)):
            try:
                loaded[stage] = load(ref, self.expected_dim, self.retry)
            except Exception as exc:  # noqa: BLE001 - every data error becomes a failures row
                failures.append(self.failure_row(ref.video_id, exc, stage))
                loaded[stage] = None
        inputs = VideoInputs(ref.video_id, loaded["features"], loaded["captions"], tuple(failures))
        if inputs.ok:
            self.count(OK)
        yield inputs


class LoadInputs(beam.PTransform):
    """``VideoRef`` -> ``VideoInputs`` (features + captions of one video, fused: no shuffle);
    ``retry``: the :class:`pipeline.storage.retry.RetryPolicy` of the reads."""

    def __init__(self, expected_dim, retry):
        super().__init__()
        self.expected_dim, self.retry = expected_dim, retry

    def expand(self, refs):
        return refs | beam.ParDo(_LoadInputsFn(self.expected_dim, self.retry))


class _CaptionsFn(_StageDoFn):
    """ref -> (video_id, CaptionSet); ``emb`` from caption_features, else None (text tower);
    or a keyed failure (video_id, row)."""

    stage = "captions"

    def __init__(self, retry):
        super().__init__()
        self.retry = retry

    def process(self, ref):
        from pipeline.inputs.arrays import load_caption_set

        self.count(TOTAL)
        try:
            captions = load_caption_set(ref, None, self.retry)
        except Exception as exc:  # noqa: BLE001 - every data error becomes a failures row
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, self.failure_row(ref.video_id, exc)))
            return
        self.count(OK)
        yield ref.video_id, captions


class _MediaCaptionsFn(_StageDoFn):
    """ref without a captions file -> (video_id, CaptionSet) made from the video itself (its text
    subtitle track or speech recognition, ``pipeline.media.media_captions``, in a child process),
    written to ``OUT/captions/{video_id}.json`` and reused from there by a resumed run; or a keyed
    failure (video_id, row). Counts ``made/embedded``, ``made/asr`` and ``reused``."""

    stage = "captions"

    def __init__(self, config, output: str | None):
        super().__init__()
        self.captions, self.asr, self.output = config.captions, config.asr, output
        self.decode_timeout_s, self.max_bytes = config.decode_timeout_s, config.decode.max_bytes

    def process(self, ref):
        from pipeline.inputs.arrays import caption_set

        self.count(TOTAL)
        try:
            made = self._made(ref)
        except Exception as exc:  # noqa: BLE001 - every data error becomes a failures row
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, self.failure_row(ref.video_id, exc)))
            return
        self.count(OK)
        self.count(f"made/{made.source}")
        yield ref.video_id, caption_set(ref.video_id, made.cues)

    def _made(self, ref):
        from curation.errors import InputError
        from pipeline.media.media_captions import captions_isolated, made_captions_json, reusable, settings
        from pipeline.outputs.layout import OutputLayout
        from pipeline.storage import atomic, files

        source = self.captions.when_missing if ref.captions_from == "auto" else ref.captions_from
        if source == "none":
            raise InputError("no_captions", f"video {ref.video_id}: the manifest gives no captions and "
                                            "captions.when_missing is none")
        job = settings(source, self.captions.languages, self.asr)
        path = OutputLayout(self.output).made_captions(ref.video_id) if self.output is not None else None
        earlier = files.read_bytes_or_none(path) if path is not None else None
        made = reusable(earlier, job, path) if earlier is not None else None
        if made is not None:
            self.count("reused")
            return made
        timeout_s = self.decode_timeout_s if source == "embedded" else self.asr.timeout_s
        made = captions_isolated(ref.video, source, job, timeout_s, self.max_bytes)
        if path is not None:
            atomic.write_bytes_atomic(path, made_captions_json(made))
        return made


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


class LoadVideoInputs(beam.PTransform):
    """Video-mode ``VideoRef`` -> ``{"ok": VideoInputs}``: decode + embed frames, parse + embed
    captions. ``save_to``: the output directory whose ``_work`` receives the decode checkpoints
    (None: none are written). ``restore_from``: the output directory of an unfinished attempt;
    the decodes it finished are restored instead of redone, and counted in ``"decodes_resumed"``.
    ``output``: where captions made from the videos go (``OUT/captions``; default ``save_to`` or
    ``restore_from``; None: they are made and not kept)."""

    def __init__(self, config, save_to: str | None = None, restore_from: str | None = None, output: str | None = None):
        super().__init__()
        self.config, self.save_to, self.restore_from = config, save_to, restore_from
        self.output = output or save_to or restore_from

    def expand(self, refs):
        from pipeline.beam_options import encoder_resource_hints
        from models.encoder import encoder_spec_of
        from pipeline.transforms.inference import TextEmbeddingHandler, embeddings_of

        cfg = self.config
        spec = encoder_spec_of(cfg.model)
        todo, frame_parts = refs, []
        if self.restore_from is not None:
            restored = refs | "RestoreDecodes" >> TaggedParDo(_RestoreFramesFn(self.restore_from),
                                                              "todo", META, FAILURES, main="emb")
            todo, frame_parts = restored.todo, [restored]
        hints = encoder_resource_hints(cfg)
        decoded = todo | "DecodeEmbed" >> DecodeAndEmbed(cfg, self.save_to).with_resource_hints(**hints)
        # two Filters, not a Partition: the DaskRunner mishandles multi-output ParDos (compat)
        with_file = refs | "HasCaptionsFile" >> beam.Filter(lambda ref: ref.captions_from == "file")
        from_video = refs | "NoCaptionsFile" >> beam.Filter(lambda ref: ref.captions_from != "file")
        captions = with_file | "ParseCaptions" >> TaggedParDo(_CaptionsFn(cfg.io), FAILURES, main="ok")
        made = from_video | "MakeCaptions" >> TaggedParDo(_MediaCaptionsFn(cfg, self.output), FAILURES, main="ok")
        all_captions = (captions.ok, made.ok) | "AllCaptions" >> beam.Flatten()
        text_emb = (all_captions
                    | "NeedText" >> beam.Filter(lambda kv: kv[1].emb is None)
                    | "Texts" >> beam.Map(lambda kv: (kv[0], kv[1].text))
                    | "EmbedCaptions" >> EmbedEach(TextEmbeddingHandler(
                        spec, cfg.model.text_batch_size, torch_threads=cfg.resources.torch_threads)).with_resource_hints(**hints)
                    | "TextEmb" >> beam.Map(embeddings_of))
        every = refs | "Keys" >> beam.Map(lambda ref: (ref.video_id, None))  # one outcome per video
        parts = {
            "ref": every, "captions": all_captions, "text_emb": text_emb,
            "frames": [decoded["emb"], *(r.emb for r in frame_parts)] | "AllFrames" >> beam.Flatten(),
            META: [decoded[META], *(r[META] for r in frame_parts)] | "AllMeta" >> beam.Flatten(),
            FAILURES: ([decoded[FAILURES], captions[FAILURES], made[FAILURES], *(r[FAILURES] for r in frame_parts)]
                       | "VideoFailures" >> beam.Flatten()),
        }
        joined = parts | "JoinByVideo" >> beam.CoGroupByKey()
        out = {"ok": joined | "Assemble" >> beam.Map(_assemble, cfg.decode.sample_fps)}
        for r in frame_parts:
            out["decodes_resumed"] = ((r.emb, r[FAILURES]) | "Restored" >> beam.Flatten()
                                      | "CountRestored" >> beam.combiners.Count.Globally())
        return out
