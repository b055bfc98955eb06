"""The similarity matrix a run's aligner saw, recomputed from the run's inputs.

The matrix is not stored in the output, so it is rebuilt from ``summary.json``'s ``manifest``
and ``config``: feature mode loads the ``.npy`` features and caption features
(``pipeline.inputs``); video mode decodes at ``decode.sample_fps`` with the run's backend and
embeds frames and captions with the run's encoder (``caption_features`` when the manifest row
has them). It is then prepared exactly as the aligner prepares it
(:func:`curation.align.prepared_similarity`).
"""

from __future__ import annotations

import dataclasses
from functools import cached_property

import numpy as np

from pipeline.storage import files


class SimilarityMatrices:
    """The prepared similarity ``(m captions, T frames)`` of a run's videos, recomputed from its
    inputs; the encoder (video mode) is loaded once, on first use."""

    def __init__(self, summary: dict):
        self.summary = summary

    @cached_property
    def config(self):
        """The run's validated :class:`pipeline.config.Config`, from ``summary.json``'s ``config``."""
        from pipeline.config import Config

        return Config.from_summary(self.summary.get("config", {}))

    @cached_property
    def refs(self) -> dict:
        """video_id -> VideoRef of every usable manifest line (bad and repeated ids left out)."""
        from pipeline.inputs.arrays import read_bytes
        from pipeline.inputs.manifest import parse_manifest_line

        manifest = self.summary.get("manifest") or "?"
        text = read_bytes(manifest, "manifest", self.config.io).decode("utf-8", "replace")
        refs, seen = {}, set()
        for line in filter(str.strip, text.splitlines()):
            try:
                ref = parse_manifest_line(line, files.parent(manifest))
            except ValueError:
                continue
            refs[ref.video_id] = None if ref.video_id in seen else ref
            seen.add(ref.video_id)
        return refs

    @cached_property
    def encoder(self):
        """The run's encoder (``models.encoder.load_encoder`` through the process's cache, so
        the demo reuses the model its run loaded); on the CPU when the run's GPU is absent."""
        import torch

        from models.encoder import encoder_spec_of, shared_encoder

        spec = encoder_spec_of(self.config.model)
        if spec.device != "cpu" and not torch.cuda.is_available():
            spec = dataclasses.replace(spec, device="cpu")
        return shared_encoder(spec)

    def of(self, video_id: str) -> tuple[np.ndarray, float]:
        """``(sim (m, T), fps)``; ValueError/OSError with a one-line reason when the inputs are
        gone or unusable."""
        from curation.align import prepared_similarity

        caption_emb, frame_emb, fps, _ = self.embeddings_of(video_id)
        return prepared_similarity(caption_emb, frame_emb, self.config.align, fps), fps

    def embeddings_of(self, video_id: str):
        """``(caption_emb (m, D), frame_emb (T, D), fps, CaptionSet)`` of one video, as the run
        computed them."""
        from pipeline.inputs.arrays import load_caption_set, load_frame_features

        cfg = self.config
        ref = self.refs.get(video_id)
        if ref is None:
            raise ValueError(f"video {video_id} has no usable line in the manifest {self.summary.get('manifest')}")
        captions = load_caption_set(ref, None, cfg.io)
        if ref.features is not None:
            frames = load_frame_features(ref, None, cfg.io)
            frame_emb, fps = frames.emb, frames.fps
        else:
            from models.encoder import input_size_of
            from pipeline.media.decode import decode_frames

            decoded = decode_frames(ref.video, cfg.decode.sample_fps, input_size_of(self.encoder.spec),
                                    cfg.decode.backend, deinterlace=cfg.decode.deinterlace, exact=cfg.decode.exact)
            frame_emb, fps = self.encoder.encode_frames(decoded.frames, cfg.model.frame_batch_size), cfg.decode.sample_fps
        caption_emb = captions.emb
        if caption_emb is None:
            caption_emb = self.encoder.encode_texts(list(captions.text), cfg.model.text_batch_size)
        return caption_emb, frame_emb, fps, captions
