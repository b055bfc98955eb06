"""The exported CPU backends of the encoder (models.backends): ONNX Runtime fp32 / int8 and
OpenVINO fp32 / bf16 against the torch model they come from, the export cache, and the errors of
a wrong backend, precision, device or a missing package. The tests that open a backend's
sessions run in a process of their own (``own_process``, tests/conftest.py): a process whose
ONNX Runtime or OpenVINO thread pools exist cannot safely fork, and later tests fork DataLoader
workers."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from models import backends
from models.backends import PROBE_TEXTS, least_cosine, probe_frames
from models.encoder import EncoderSpec, check_spec, load_encoder

COMBOS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16")]


@pytest.fixture(scope="module")
def reference():
    return load_encoder(EncoderSpec())


def _exported(backend: str, precision: str):
    for module in ("onnx", "onnxscript", "onnxruntime" if backend == "onnxruntime" else "openvino"):
        pytest.importorskip(module)
    return load_encoder(EncoderSpec(backend=backend, precision=precision))


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


@pytest.mark.own_process
@pytest.mark.parametrize("backend, precision", COMBOS)
def test_embeddings_are_close_to_torch_fp32(backend, precision, reference):
    """Frames and texts it never saw at export (other than the load-time probe) embed within the
    precision's bound of the torch model, as unit float32 rows."""
    exported = _exported(backend, precision)
    frames, texts = _frames(9, seed=5), [f"step {i}: cut the {w}" for i, w in enumerate(("onion", "bread", "wire"))]
    got_f, got_t = exported.encode_frames(frames, 4), exported.encode_texts(texts, 2)
    assert got_f.shape == (9, 64) and got_f.dtype == np.float32 and got_t.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(got_f, axis=1), 1.0, atol=1e-5)
    bound = backends.MIN_COSINE[exported.spec.precision]
    assert least_cosine(got_f, reference.encode_frames(frames)) >= bound
    assert least_cosine(got_t, reference.encode_texts(texts)) >= bound
    if exported.spec.precision != "fp32":  # a lower precision really ran: not the fp32 bits
        assert not np.array_equal(got_f, reference.encode_frames(frames))


@pytest.mark.own_process
@pytest.mark.parametrize("backend, precision", COMBOS)
def test_embeddings_do_not_depend_on_batching_or_repeats(backend, precision):
    """int8 quantises activations per batch, so it runs one input at a time: a frame's embedding
    is the same bits alone, in any batch, and on a second call."""
    exported = _exported(backend, precision)
    frames = _frames(7, seed=6)
    whole = exported.encode_frames(frames, 7)
    np.testing.assert_array_equal(whole, exported.encode_frames(frames, 3))
    np.testing.assert_array_equal(whole[2:3], exported.encode_frames(frames[2:3], 1))
    texts = list(PROBE_TEXTS)
    np.testing.assert_array_equal(exported.encode_texts(texts, 6), exported.encode_texts(texts, 1))


@pytest.mark.own_process
def test_export_is_cached_per_weights(monkeypatch):
    """A second load reuses the export (the exporter is not called again); other weights (another
    seed) get their own folder."""
    pytest.importorskip("onnxruntime"), pytest.importorskip("onnxscript")
    first = load_encoder(EncoderSpec(backend="onnxruntime", seed=3))
    assert isinstance(first.model, backends.ExportedTowers)  # the torch model is not kept
    monkeypatch.setattr(backends, "_export_fp32", lambda *a: pytest.fail("exported again"))
    again = load_encoder(EncoderSpec(backend="onnxruntime", seed=3))
    assert again.model.folder == first.model.folder
    np.testing.assert_array_equal(first.encode_frames(_frames(3, 1)), again.encode_frames(_frames(3, 1)))
    monkeypatch.undo()
    other = load_encoder(EncoderSpec(backend="onnxruntime", seed=4))
    assert other.model.folder != first.model.folder
    assert os.path.dirname(first.model.folder) == backends.cache_root()
    assert not [name for name in os.listdir(backends.cache_root()) if name.startswith(".tmp-")]


@pytest.mark.own_process
def test_a_wrong_cache_entry_fails_the_load_naming_the_model():
    """A cache entry holding another model's towers (a damaged or stale export) is caught by the
    load-time check against the torch model, not used."""
    pytest.importorskip("onnxruntime"), pytest.importorskip("onnxscript")
    good = load_encoder(EncoderSpec(backend="onnxruntime", seed=5)).model.folder
    other = load_encoder(EncoderSpec(backend="onnxruntime", seed=6)).model.folder
    shutil.copyfile(os.path.join(other, "image.onnx"), os.path.join(good, "image.onnx"))
    with pytest.raises(ValueError, match=r"model 'nccurate-tiny' on model.backend 'onnxruntime'.*least cosine"):
        load_encoder(EncoderSpec(backend="onnxruntime", seed=5))


@pytest.mark.own_process
def test_openvino_bf16_without_bf16_units_runs_fp32_with_a_warning(monkeypatch, caplog, reference):
    pytest.importorskip("openvino"), pytest.importorskip("onnxscript")
    import models.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="models.encoder"):
        enc = load_encoder(EncoderSpec(backend="openvino", precision="bf16"))
    assert "bf16 ignored" in caplog.text
    frames = _frames(4, seed=7)
    assert least_cosine(enc.encode_frames(frames), reference.encode_frames(frames)) >= backends.MIN_COSINE["fp32"]


@pytest.mark.parametrize("backend, precision, device, message", [
    ("torch", "int8", "cpu", "model.precision: 'int8' does not run on model.backend 'torch'.*onnxruntime"),
    ("onnxruntime", "bf16", "cpu", "does not run on model.backend 'onnxruntime' .*torch or openvino"),
    ("openvino", "int8", "cpu", "runs fp32, bf16"),
    ("onnxruntime", "fp32", "cuda", "model.device: 'cuda' is not for model.backend 'onnxruntime', which runs on the CPU only"),
    ("tensorrt", "fp32", "cpu", "model.backend: 'tensorrt' is not one of torch, onnxruntime, openvino"),
])
def test_wrong_backend_precision_or_device_is_a_value_error(backend, precision, device, message):
    with pytest.raises(ValueError, match=message):
        EncoderSpec(backend=backend, precision=precision, device=device)


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ValueError) as info:
        check_spec(EncoderSpec(backend="onnxruntime", precision="int8"))
    assert str(info.value) == ("model.backend 'onnxruntime' needs onnxruntime, not installed: "
                               "pip install 'nccurate[onnx]'")
    with pytest.raises(ValueError, match="needs onnxruntime"):
        load_encoder(EncoderSpec(backend="onnxruntime"))


def test_the_config_checks_backend_and_precision_together():
    from pipeline.config import ConfigError, load_config

    cfg = load_config(None, ["model.backend=onnxruntime", "model.precision=int8"])
    assert (cfg.model.backend, cfg.model.precision) == ("onnxruntime", "int8")
    assert cfg.hash() != load_config(None, ["model.backend=onnxruntime"]).hash() != load_config(None, []).hash()
    with pytest.raises(ConfigError, match=r"^config model.precision: 'int8' does not run on model.backend 'torch'.*int8 runs on model.backend onnxruntime \(from --set model.precision=int8\)$"):
        load_config(None, ["model.precision=int8"])


def test_probe_frames_are_seeded_block_noise():
    a, b = probe_frames(3, 20, seed=1), probe_frames(3, 20, seed=1)
    assert a.shape == (3, 20, 20, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(a[:, :8, :8], np.broadcast_to(a[:, :1, :1], (3, 8, 8, 3)))
    assert not np.array_equal(a, probe_frames(3, 20, seed=2))
