"""RunInference with the encoder's ModelHandlers: keyed outputs equal direct encoding, handlers
pickle before loading, and multi-video batches split back per video."""

from __future__ import annotations

import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from models.encoder import EncoderSpec, load_encoder
from pipeline.transforms.inference import (
    FrameEmbeddingHandler,
    TextEmbeddingHandler,
    embeddings_of,
)

SPEC = EncoderSpec()


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(SPEC)


def _matches(expected: dict[str, np.ndarray]):
    """assert_that matcher: exactly the expected keys, each embedding allclose (1e-5)."""
    def check(actual):
        got = dict(actual)
        if sorted(got) != sorted(expected) or len(actual) != len(expected):
            raise BeamAssertException(f"keys {sorted(k for k, _ in actual)} != {sorted(expected)}")
        for key, want in expected.items():
            emb = got[key]
            if emb.dtype != np.float32 or emb.shape != want.shape or not np.allclose(emb, want, atol=1e-5):
                raise BeamAssertException(f"{key}: embeddings differ from ClipEncoder's ({emb.shape}, {emb.dtype})")
    return check


def _run(elements, handler, expected):
    with BeamTestPipeline() as p:
        out = (p
               | beam.Create(elements)
               | RunInference(KeyedModelHandler(handler))
               | beam.Map(embeddings_of))
        assert_that(out, _matches(expected))


def test_frames_through_run_inference_equal_direct_encoding(encoder):
    videos = {"v1": _frames(5, 1), "v2": _frames(3, 2)}
    expected = {k: encoder.encode_frames(v) for k, v in videos.items()}
    _run(list(videos.items()), FrameEmbeddingHandler(SPEC, batch_size=2), expected)


def test_texts_through_run_inference_equal_direct_encoding(encoder):
    videos = {"v1": ("cut the onion", "now the garlic"), "v2": ("hello everyone",), "v3": ()}
    expected = {k: encoder.encode_texts(v) for k, v in videos.items()}
    _run(list(videos.items()), TextEmbeddingHandler(SPEC, batch_size=2), expected)


class _FullBatches(FrameEmbeddingHandler):
    """BatchElements sizes batches adaptively from 1 upwards; pin them at 3 videos so the
    pipeline really hands the handler multi-video batches."""

    def batch_elements_kwargs(self):
        return {"min_batch_size": self.max_videos_per_batch, "max_batch_size": self.max_videos_per_batch}


def test_several_videos_per_batch_split_back(encoder):
    counts = [4, 1, 7, 2, 5]
    videos = {f"v{i}": _frames(n, 10 + i) for i, n in enumerate(counts)}
    expected = {k: encoder.encode_frames(v) for k, v in videos.items()}
    _run(list(videos.items()), _FullBatches(SPEC, batch_size=3, max_videos_per_batch=3), expected)
    _run(list(videos.items()), FrameEmbeddingHandler(SPEC, batch_size=3, max_videos_per_batch=3), expected)


def test_run_inference_splits_a_batch_directly(encoder):
    """The handler alone: one PredictionResult per element, in order, with its own rows."""
    handler = FrameEmbeddingHandler(SPEC, batch_size=4, max_videos_per_batch=3)
    batch = [_frames(3, 20), _frames(6, 21), _frames(2, 22)]
    results = list(handler.run_inference(batch, encoder))
    assert len(results) == 3
    for frames, result in zip(batch, results):
        assert isinstance(result, PredictionResult)
        assert result.example is frames
        np.testing.assert_allclose(result.inference, encoder.encode_frames(frames), atol=1e-5)
    texts = TextEmbeddingHandler(SPEC, max_videos_per_batch=3)
    results = list(texts.run_inference([("a", "b"), ("c",), ("d", "e", "f")], encoder))
    assert [r.inference.shape[0] for r in results] == [2, 1, 3]
    np.testing.assert_allclose(results[2].inference, encoder.encode_texts(["d", "e", "f"]), atol=1e-5)


def test_keyed_output_shape_is_key_and_prediction_result():
    with BeamTestPipeline() as p:
        out = (p
               | beam.Create([("v1", ("a caption",))])
               | RunInference(KeyedModelHandler(TextEmbeddingHandler(SPEC)))
               | beam.Map(lambda kv: (kv[0], type(kv[1]).__name__, kv[1].example, kv[1].inference.shape,
                                      kv[1].model_id)))
        assert_that(out, equal_to([("v1", "PredictionResult", ("a caption",), (1, 64),
                                    "nccurate-tiny:random-init-seed-0")]))


def test_handlers_pickle_before_loading_and_describe_batching():
    frames = FrameEmbeddingHandler(SPEC, batch_size=16)
    texts = TextEmbeddingHandler(SPEC)
    for handler in (frames, texts, KeyedModelHandler(frames)):
        clone = pickle.loads(pickle.dumps(handler))
        assert type(clone) is type(handler)
    assert pickle.loads(pickle.dumps(frames)).spec == SPEC
    assert frames.batch_elements_kwargs() == {"max_batch_size": 1}
    assert texts.batch_elements_kwargs() == {"max_batch_size": 1}  # batch-independent floats
    lazy = frames.load_model()
    assert lazy._encoder is None, "load_model must not build the model before it is used"
    assert lazy.encode_texts(["a red circle"], 4).shape == (1, 64) and lazy._encoder is not None
    assert texts.load_model().get() is lazy.get(), "both handlers share the process's one encoder"
    assert FrameEmbeddingHandler(SPEC, max_videos_per_batch=3).batch_elements_kwargs() == {"max_batch_size": 3}
    assert not frames.share_model_across_processes() and not texts.share_model_across_processes()
    assert frames.get_metrics_namespace() == "nccurate_frames"
    assert frames.get_num_bytes([_frames(2, 0), _frames(1, 0)]) == 3 * 64 * 64 * 3
    assert texts.get_num_bytes([("ab", "c"), ("dé",)]) == 6
    with pytest.raises(ValueError):
        FrameEmbeddingHandler(SPEC, batch_size=0)


def test_embeddings_of():
    emb = np.ones((2, 4), np.float32)
    assert embeddings_of(("v", PredictionResult("x", emb)))[1] is emb
    assert embeddings_of(("v", emb))[1] is emb


def test_the_run_config_gives_the_handlers_spec():
    """The default config's model section through models.encoder.encoder_spec_of, as the graph,
    the report and the benchmarks build the spec."""
    from models.encoder import encoder_spec_of
    from pipeline.config import load_config

    model = load_config(None, ["model.name=nccurate-tiny", "model.pretrained=null"]).model
    spec = encoder_spec_of(model)
    assert spec == EncoderSpec(name="nccurate-tiny", pretrained=None, device=model.device, precision=model.precision)
    assert FrameEmbeddingHandler(spec).spec == SPEC
