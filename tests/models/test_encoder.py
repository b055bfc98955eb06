"""The open_clip encoder wrapper: offline random-init tiny model, shapes, norms, determinism,
resizing, local checkpoints, error messages and lazy imports."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from models.encoder import (
    EncoderSpec,
    LazyEncoder,
    encoder_spec_of,
    input_size_of,
    load_encoder,
    register_project_configs,
    shared_encoder,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
D = 64  # embed_dim of models/configs/nccurate-tiny.json
S = 64  # its image size


def _frames(n: int, size: int = S, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(EncoderSpec())


def _assert_unit_rows(emb: np.ndarray, n: int) -> None:
    assert emb.shape == (n, D)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_load_offline_and_encode_frames(encoder):
    assert encoder.input_size == S == input_size_of(EncoderSpec())
    assert encoder.embed_dim == D
    assert not encoder.model.training
    emb = encoder.encode_frames(_frames(10), batch_size=4)  # 3 chunks
    _assert_unit_rows(emb, 10)
    assert np.linalg.matrix_rank(emb) > 1, "different frames must not collapse to one embedding"


def test_same_input_same_output(encoder):
    frames = _frames(5, seed=1)
    np.testing.assert_array_equal(encoder.encode_frames(frames), encoder.encode_frames(frames))


def test_chunking_does_not_change_embeddings(encoder):
    frames = _frames(7, seed=2)
    np.testing.assert_allclose(encoder.encode_frames(frames, batch_size=2), encoder.encode_frames(frames, batch_size=64),
                               atol=1e-5)


def test_two_loads_with_same_seed_are_identical(encoder):
    import torch

    torch.manual_seed(12345)  # the caller's RNG state must not matter ...
    other = load_encoder(EncoderSpec())
    frames = _frames(4, seed=3)
    np.testing.assert_array_equal(encoder.encode_frames(frames), other.encode_frames(frames))
    np.testing.assert_array_equal(encoder.encode_texts(["a red ball"]), other.encode_texts(["a red ball"]))
    different = load_encoder(EncoderSpec(seed=1))
    assert not np.allclose(encoder.encode_frames(frames), different.encode_frames(frames), atol=1e-3)


def test_load_leaves_global_rng_alone():
    import torch

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_encoder(EncoderSpec())
    assert torch.equal(torch.rand(3), expected)


def test_other_frame_sizes_are_resized(encoder):
    big, small = _frames(3, size=96, seed=4), _frames(2, size=40, seed=5)
    _assert_unit_rows(encoder.encode_frames(big), 3)
    _assert_unit_rows(encoder.encode_frames(small), 2)
    # a constant image stays (nearly) the same image after resizing
    flat = np.full((1, 96, 96, 3), 120, dtype=np.uint8)
    np.testing.assert_allclose(encoder.encode_frames(flat), encoder.encode_frames(flat[:, :S, :S]), atol=1e-4)


def test_empty_inputs(encoder):
    assert encoder.encode_frames(np.zeros((0, S, S, 3), np.uint8)).shape == (0, D)
    assert encoder.encode_texts([]).shape == (0, D)


def test_bad_frames_are_rejected(encoder):
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode_frames(np.zeros((2, S, S, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode_frames(np.zeros((S, S, 3), np.uint8))


def test_encode_texts(encoder):
    texts = ["cut the onion", "whisk two eggs", "subscribe to my channel", "cut the onion"]
    emb = encoder.encode_texts(texts, batch_size=3)
    _assert_unit_rows(emb, 4)
    np.testing.assert_allclose(emb[0], emb[3], atol=1e-6)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(emb[i], emb[j], atol=1e-3), (texts[i], texts[j])
    with pytest.raises(ValueError):
        encoder.encode_texts("one string")


def test_local_checkpoint_is_loaded(tmp_path):
    import open_clip
    import torch

    register_project_configs()
    torch.manual_seed(99)
    model = open_clip.create_model("nccurate-tiny", pretrained=None)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    model.eval()
    path = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), path)

    loaded = load_encoder(EncoderSpec(pretrained=str(path)))
    frames = _frames(4, seed=6)
    texts = ["slice the bread", "pour the milk"]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        pixels = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean) / std
        want_img = model.encode_image(pixels, normalize=True).numpy()
        want_txt = model.encode_text(open_clip.get_tokenizer("nccurate-tiny")(texts), normalize=True).numpy()
    np.testing.assert_allclose(loaded.encode_frames(frames), want_img, atol=1e-5)
    np.testing.assert_allclose(loaded.encode_texts(texts), want_txt, atol=1e-5)
    random_init = load_encoder(EncoderSpec())
    assert not np.allclose(random_init.encode_frames(frames), want_img, atol=1e-3), "the file was not used"


def test_wrapped_state_dict_checkpoint(tmp_path):
    import torch

    reference = load_encoder(EncoderSpec(seed=3))
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.model.state_dict().items()}}, path)
    loaded = load_encoder(EncoderSpec(pretrained=str(path)))
    frames = _frames(2, seed=7)
    np.testing.assert_allclose(loaded.encode_frames(frames), reference.encode_frames(frames), atol=1e-6)


def test_checkpoint_of_another_architecture_is_a_value_error(tmp_path):
    import torch

    path = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="wrong.pt"):
        load_encoder(EncoderSpec(pretrained=str(path)))


def test_missing_checkpoint_is_a_value_error(tmp_path):
    missing = str(tmp_path / "no-such-ckpt.pt")
    with pytest.raises(ValueError, match="no-such-ckpt.pt"):
        load_encoder(EncoderSpec(pretrained=missing))


def test_unknown_model_name_is_a_value_error():
    with pytest.raises(ValueError, match="ViT-Q-99") as info:
        load_encoder(EncoderSpec(name="ViT-Q-99"))
    assert "nccurate-tiny" in str(info.value) and "ViT-B-32" in str(info.value)
    with pytest.raises(ValueError, match="ViT-Q-99"):
        input_size_of(EncoderSpec(name="ViT-Q-99"))


def test_spec_validation_and_input_size_without_weights():
    with pytest.raises(ValueError, match="fp8"):
        EncoderSpec(precision="fp8")
    with pytest.raises(ValueError, match="tpu"):
        EncoderSpec(device="tpu")
    assert input_size_of(EncoderSpec(name="ViT-B-32", pretrained="openai")) == 224  # config only, no download


def test_cpu_ignores_fp16_and_bf16_without_bf16_units_with_a_warning(encoder, caplog, monkeypatch):
    import torch

    import models.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: False)
    frames = _frames(2, seed=8)
    for precision in ("fp16", "bf16"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="models.encoder"):
            half = load_encoder(EncoderSpec(precision=precision))
        assert any(precision in r.getMessage() and "running fp32" in r.getMessage() for r in caplog.records)
        assert half.autocast_dtype is None and half.input_dtype == torch.float32
        np.testing.assert_array_equal(half.encode_frames(frames), encoder.encode_frames(frames))


def test_cpu_bf16_casts_weights_and_input_and_stays_close_to_fp32(encoder, monkeypatch):
    import torch

    import models.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: True)  # bf16 runs (emulated) on any CPU
    bf16 = load_encoder(EncoderSpec(precision="bf16"))
    assert bf16.autocast_dtype is None and bf16.input_dtype == torch.bfloat16
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert bf16.pixels(_frames(1)).dtype == torch.bfloat16
    frames = _frames(16, seed=9)
    texts = ["a person cuts an onion", "pour the water", "the end", ""]
    got_f, want_f = bf16.encode_frames(frames), encoder.encode_frames(frames)
    got_t, want_t = bf16.encode_texts(texts), encoder.encode_texts(texts)
    _assert_unit_rows(got_f, 16)
    assert got_t.dtype == np.float32 and got_t.shape == (4, D)
    assert np.min(np.sum(got_f * want_f, axis=1)) >= 0.999
    assert np.min(np.sum(got_t * want_t, axis=1)) >= 0.999
    assert not np.array_equal(got_f, want_f)  # it really ran in bf16
    np.testing.assert_array_equal(bf16.encode_frames(frames), got_f)  # and deterministically


def test_cpu_has_bf16_reads_the_cpu_flags(tmp_path):
    from models.encoder import cpu_has_bf16

    def cpuinfo(flags: str) -> str:
        path = tmp_path / f"cpuinfo{len(flags)}"
        path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        return str(path)

    assert cpu_has_bf16(cpuinfo("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni"))
    assert cpu_has_bf16(cpuinfo("fpu sse2 avx512f amx_bf16 amx_tile"))
    assert not cpu_has_bf16(cpuinfo("fpu sse2 avx2 avx512f avx512_vnni avx512_bf16x"))
    assert not cpu_has_bf16(cpuinfo(""))
    assert not cpu_has_bf16(str(tmp_path / "missing"))


def test_unavailable_cuda_is_a_value_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="cuda"):
        load_encoder(EncoderSpec(device="cuda"))


def test_shared_encoder_is_one_per_spec_per_process():
    spec = EncoderSpec(seed=11)
    first = shared_encoder(spec)
    assert shared_encoder(EncoderSpec(seed=11)) is first  # equal specs, one model
    other = shared_encoder(EncoderSpec(seed=12))
    assert other is not first
    frames = _frames(2)
    assert not np.allclose(first.encode_frames(frames), other.encode_frames(frames))


def test_lazy_encoder_builds_the_shared_one_on_first_use():
    spec = EncoderSpec(seed=13)
    a, b = LazyEncoder(spec), LazyEncoder(spec)
    assert a._encoder is None and b._encoder is None  # nothing loaded at construction
    np.testing.assert_array_equal(a.encode_texts(["a red circle"], 4), shared_encoder(spec).encode_texts(["a red circle"]))
    assert a.get() is b.get() is shared_encoder(spec)


def test_encoder_spec_of_a_config_model_section():
    from types import SimpleNamespace

    section = SimpleNamespace(name="ViT-B-32", pretrained="openai", device="cuda:1", precision="bf16", backend="torch",
                              frame_batch_size=64, text_batch_size=256)
    assert encoder_spec_of(section) == EncoderSpec(name="ViT-B-32", pretrained="openai", device="cuda:1",
                                                   precision="bf16", seed=0)
    with pytest.raises(ValueError, match="precision"):
        encoder_spec_of(SimpleNamespace(name="ViT-B-32", pretrained=None, device="cpu", precision="int8", backend="torch"))


LAZY = """
import sys
import models.encoder as enc
spec = enc.EncoderSpec()
print("torch_before", 'torch' in sys.modules)
enc.load_encoder(spec)
print("torch_after", 'torch' in sys.modules)
print("beam", 'apache_beam' in sys.modules)
"""


def test_import_is_lazy_and_beam_free():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", LAZY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["torch_before", "False", "torch_after", "True", "beam", "False"], \
        proc.stdout + proc.stderr


THREADS = """
import hashlib
import models.encoder as enc
import torch
encoder = enc.load_encoder(enc.EncoderSpec())
texts = [f"step {i} of the video" if i % 2 else f"my cousin says hello {i}" for i in range(6)]
for threads in (1, 2):
    torch.set_num_threads(threads)
    print(hashlib.md5(encoder.encode_texts(texts, 256).tobytes()).hexdigest())
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for 2 torch threads")
def test_embeddings_do_not_depend_on_the_torch_thread_count():
    """Importing models.encoder turns on MKL's strict reproducibility: a 6-text batch gives the same
    bits on 1 and 2 threads (a user's own MKL_CBWR is kept: empty, it shows the difference)."""
    def hashes(**env_vars):
        env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
        proc = subprocess.run([sys.executable, "-c", THREADS], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=dict(env, PYTHONPATH=str(ROOT), **env_vars))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    one, two = hashes(MKL_CBWR="")
    if one == two:
        pytest.skip("this CPU's MKL gives the same bits on 1 and 2 threads without strict mode")
    one, two = hashes()
    assert one == two
