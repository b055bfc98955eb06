"""Beam ``ModelHandler``s for the open_clip encoder of :mod:`models.encoder` (DESIGN §8).

Both handlers hold only an :class:`~models.encoder.EncoderSpec` and batch sizes, so they pickle
at construction; the model is built in ``load_model`` on the worker (once per process: Beam's
``RunInference`` shares it between the threads of a process through ``shared.Shared``;
``share_model_across_processes`` is False, each process has its own copy). ``load_model`` returns
a :class:`models.encoder.LazyEncoder`, so both handlers share the process's one encoder
(:func:`models.encoder.shared_encoder`).

Use them keyed (the pipeline keys frame chunks by ``(video_id, chunk)``)::

    frames_by_video   # PCollection[(key, frames (N, S, S, 3) uint8)]
    emb = (frames_by_video
           | RunInference(KeyedModelHandler(FrameEmbeddingHandler(spec)))
           | beam.Map(embeddings_of))          # -> (video_id, (N, D) float32)

**Output shape, checked against the installed Beam (2.77):** ``RunInference`` itself does not wrap
predictions; it emits what the handler's ``run_inference`` returns. ``KeyedModelHandler`` zips the
batch's keys with the unkeyed handler's predictions, and our handlers return Beam's conventional
``PredictionResult(example, inference, model_id)``. So each output element is::

    (video_id, PredictionResult(example=<the input frames or texts>,
                                inference=<(N, D) or (m, D) float32 array, L2-normalised rows>,
                                model_id='<name>:<pretrained or random-init-seed-N>'))

and :func:`embeddings_of` turns it into ``(video_id, inference)``. Apply it right after
``RunInference`` (it fuses into the same stage), so the decoded frames carried in ``example``
never cross a shuffle.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.encoder import EncoderSpec, LazyEncoder


def model_id_of(spec: EncoderSpec) -> str:
    """A label of the weights for ``PredictionResult.model_id``."""
    return f"{spec.name}:{spec.pretrained if spec.pretrained is not None else f'random-init-seed-{spec.seed}'}"


def embeddings_of(keyed_result) -> tuple[str, np.ndarray]:
    """``(video_id, PredictionResult)`` from ``RunInference(KeyedModelHandler(...))`` ->
    ``(video_id, inference array)`` (a bare array in place of the PredictionResult is passed on)."""
    video_id, result = keyed_result
    inference = result.inference if isinstance(result, PredictionResult) else result
    return video_id, inference


def _check_sizes(batch_size: int, max_videos_per_batch: int) -> None:
    for label, value in (("batch_size", batch_size), ("max_videos_per_batch", max_videos_per_batch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")


class _EncoderHandler(ModelHandler):
    """What both handlers share: spec, lazy load, batching, pickling."""

    def __init__(self, spec: EncoderSpec, batch_size: int, max_videos_per_batch: int, torch_threads: int = 0):
        _check_sizes(batch_size, max_videos_per_batch)
        super().__init__(max_batch_size=max_videos_per_batch)
        self.spec, self.torch_threads = spec, torch_threads
        self.batch_size = batch_size
        self.max_videos_per_batch = max_videos_per_batch
        self._share_across_processes = False

    def load_model(self) -> LazyEncoder:
        if self.torch_threads:  # process-wide: one worker process per core wants 1
            import torch

            torch.set_num_threads(self.torch_threads)
        return LazyEncoder(self.spec)

    def batch_elements_kwargs(self):
        return {"max_batch_size": self.max_videos_per_batch}

    def share_model_across_processes(self) -> bool:
        return False

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.spec!r}, batch_size={self.batch_size}, "
                f"max_videos_per_batch={self.max_videos_per_batch})")


class FrameEmbeddingHandler(_EncoderHandler):
    """Element = frames (N, S, S, 3) uint8 (in the pipeline: one chunk of a video's frames,
    ``N <= batch_size``, ``pipeline.transforms.embed.DecodeAndEmbed``); prediction = PredictionResult whose
    ``inference`` is (N, D) float32, L2-normalised. A batch's elements are concatenated, encoded
    in chunks of ``batch_size`` frames and split back. Default one element per batch: with
    chunks of ``batch_size`` frames, each forward pass is one full chunk."""

    def __init__(self, spec: EncoderSpec, batch_size: int = 64, max_videos_per_batch: int = 1, torch_threads: int = 0):
        super().__init__(spec, batch_size, max_videos_per_batch, torch_threads)

    def run_inference(self, batch: Sequence[np.ndarray], model: LazyEncoder,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        batch = [np.asarray(frames) for frames in batch]
        if not batch:
            return []
        counts = [len(frames) for frames in batch]
        emb = model.encode_frames(np.concatenate(batch) if len(batch) > 1 else batch[0], self.batch_size)
        parts = np.split(emb, np.cumsum(counts)[:-1])
        model_id = model_id_of(self.spec)
        return [PredictionResult(frames, part, model_id) for frames, part in zip(batch, parts)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(np.asarray(frames).nbytes for frames in batch))

    def get_metrics_namespace(self) -> str:
        return "nccurate_frames"


class TextEmbeddingHandler(_EncoderHandler):
    """Element = one video's caption texts (a tuple of str); prediction = PredictionResult whose
    ``inference`` is (m, D) float32, L2-normalised. Texts of up to ``max_videos_per_batch``
    videos are tokenised together, encoded in chunks of ``batch_size`` and split back.

    The default is one video per batch: which videos share a batch depends on the runner's
    bundles, and a row's float result depends (in its last bits) on the rows it is encoded
    with, so batching across videos would make outputs differ between runners."""

    def __init__(self, spec: EncoderSpec, batch_size: int = 256, max_videos_per_batch: int = 1, torch_threads: int = 0):
        super().__init__(spec, batch_size, max_videos_per_batch, torch_threads)

    def run_inference(self, batch: Sequence[Sequence[str]], model: LazyEncoder,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        batch = list(batch)
        if not batch:
            return []
        for texts in batch:
            if isinstance(texts, str):
                raise ValueError("a TextEmbeddingHandler element is one video's sequence of texts, not one str")
        counts = [len(texts) for texts in batch]
        emb = model.encode_texts([text for texts in batch for text in texts], self.batch_size)
        parts = np.split(emb, np.cumsum(counts)[:-1])
        model_id = model_id_of(self.spec)
        return [PredictionResult(texts, part, model_id) for texts, part in zip(batch, parts)]

    def get_num_bytes(self, batch: Sequence[Sequence[str]]) -> int:
        return int(sum(len(text.encode("utf-8")) for texts in batch for text in texts))

    def get_metrics_namespace(self) -> str:
        return "nccurate_texts"
