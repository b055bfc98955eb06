"""models.train_demo: the recipe trains (loss falls, deterministic), its checkpoints load
through ``load_encoder``, its frames are the pipeline decoder's (the swscale step; the sampling
and the resize/crop are curation.frames, tested in tests/curation/test_frames.py), and the
shipped asset is in place."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models import train_demo as td
from models.encoder import EncoderSpec, load_encoder, register_project_configs

D = 64  # embed_dim of nccurate-tiny

TINY = td.TrainConfig(steps=30, seed=3, styles=6, concepts_per_style=4, background_per_style=1,
                      styles_per_batch=4, chatter_per_batch=8, lr=3e-3, warmup=3, log_every=1000)


@pytest.fixture(scope="module")
def pool():
    return td.make_frame_pool(TINY)


@pytest.fixture(scope="module")
def tiny_run(pool):
    return td.train(TINY, pool, verbose=False)


def _unit_rows(emb: np.ndarray, n: int) -> None:
    assert emb.shape == (n, D) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_pool_shapes_and_labels(pool):
    assert pool.images.shape == (6, 5, 64, 64, 3) and pool.images.dtype == np.uint8
    assert pool.concepts.shape == (6, 5)
    assert (pool.concepts[:, :4] >= 0).all() and (pool.concepts[:, 4] == -1).all()
    assert all(len(set(row[:4].tolist())) == 4 for row in pool.concepts)  # distinct per style


def test_pipeline_view_is_the_decoders_swscale_step():
    """pipeline_view makes its own swscale call (models never imports pipeline): it must be the
    PyAV decoder's conversion of a yuv420p frame."""
    import av

    from curation.frames import center_crop, resize_dims
    from curation.synth.video import VideoStyle, render_frame
    from pipeline.media.pyav import to_rgb

    rng = np.random.default_rng(7)
    style = VideoStyle.draw(rng)
    for concept in (0, 17, None):
        rgb = render_frame(concept, 12.5, style, rng)
        decoded_like = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        expected = center_crop(to_rgb(decoded_like, *resize_dims(128, 96, 64)), 64)
        np.testing.assert_array_equal(td.pipeline_view(rgb), expected)


def test_chatter_is_the_whole_closed_set():
    from curation.synth.video import random_chatter_text

    chatter = td.chatter_texts()
    assert len(chatter) == len(set(chatter)) == 1090
    rng = np.random.default_rng(0)
    assert {random_chatter_text(rng) for _ in range(200)} <= set(chatter)


def test_loss_decreases(tiny_run):
    _, history = tiny_run
    assert len(history) == TINY.steps and np.isfinite(history).all()
    assert np.mean(history[-5:]) < np.mean(history[:5]) - 0.2, history


def test_training_is_deterministic(pool):
    import torch

    config = td.TrainConfig(**{**TINY.__dict__, "steps": 4})
    a, ha = td.train(config, pool, verbose=False)
    b, hb = td.train(config, pool, verbose=False)
    assert ha == hb
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def _bare(model):
    """A copy of a coned model without its cone offsets (the trained content alone)."""
    import copy

    import torch

    bare = copy.deepcopy(model)
    with torch.no_grad():
        bare.visual.ln_post.bias[td.CONE_CHANNEL] = 0.0
        bare.ln_final.bias[td.CONE_CHANNEL] = 0.0
    return bare


def _raw_embeddings(model, frames: np.ndarray, texts: list[str]):
    """Unnormalised (image, text) tower outputs, as numpy."""
    import open_clip
    import torch

    mean, std = td._normaliser(model)
    x = (torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.no_grad():
        return (model.encode_image(x).numpy().astype(np.float64),
                model.encode_text(open_clip.get_tokenizer("nccurate-tiny")(texts)).numpy().astype(np.float64))


def test_cone_adds_one_constant_orthogonal_offset_per_tower(tiny_run, pool):
    """Training keeps the cone channel and the last coordinate at 0; apply_cone then adds a
    constant offset along the last axis: output = trained content (last coordinate 0) + C u."""
    model, _ = tiny_run
    j = td.CONE_CHANNEL
    assert model.visual.ln_post.weight[j] == 0 and model.ln_final.weight[j] == 0
    assert (model.visual.proj[:, -1] != 0).sum() == 1 and (model.visual.proj[j, :-1] == 0).all()
    assert (model.text_projection[:, -1] != 0).sum() == 1 and (model.text_projection[j, :-1] == 0).all()
    frames, texts = pool.images.reshape(-1, 64, 64, 3), td.chatter_texts()[:5] + ["now take the red circle"]
    img, txt = _raw_embeddings(model, frames, texts)
    bare_img, bare_txt = _raw_embeddings(_bare(model), frames, texts)
    assert np.allclose(bare_img[:, -1], 0.0) and np.allclose(bare_txt[:, -1], 0.0)
    np.testing.assert_allclose(img[:, :-1], bare_img[:, :-1], atol=1e-4)
    np.testing.assert_allclose(txt[:, :-1], bare_txt[:, :-1], atol=1e-4)
    c_img, c_txt = model.visual.ln_post.bias[j].item(), model.ln_final.bias[j].item()
    np.testing.assert_allclose(img[:, -1], c_img, rtol=1e-5)
    np.testing.assert_allclose(txt[:, -1], c_txt, rtol=1e-5)
    # C = r sqrt((1 - k) / k) for the mean content norm r over the calibration frames / texts
    k = TINY.content_share
    r = np.linalg.norm(bare_img, axis=1).mean()
    assert 0.8 < c_img / (r * np.sqrt((1 - k) / k)) < 1.25


def test_saved_checkpoint_loads_through_load_encoder(tiny_run, pool, tmp_path):
    import torch

    model, _ = tiny_run
    path = str(tmp_path / "tiny.pt")
    assert td.save_state_dict(model, path) <= td.MAX_SIZE_BYTES
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    encoder = load_encoder(EncoderSpec(name="nccurate-tiny", pretrained=path))
    frames = pool.images.reshape(-1, 64, 64, 3)
    emb = encoder.encode_frames(frames)
    _unit_rows(emb, len(frames))
    texts = encoder.encode_texts(["now take the red circle", "my cousin loves fishing"])
    _unit_rows(texts, 2)
    # the file holds the trained weights: the loaded encoder matches the in-memory model
    with torch.no_grad():
        mean, std = td._normaliser(model)
        x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        ref = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_evaluate_runs_on_one_video(tiny_run, tmp_path):
    model, _ = tiny_run
    path = str(tmp_path / "tiny.pt")
    td.save_state_dict(model, path)
    result = td.evaluate(path, n_videos=1, verbose=False)
    for key in ("r_at_1", "asr_r_at_1", "auc", "kept_alignable", "kept_other"):
        assert key in result
    assert 0.0 <= result["asr_r_at_1"] <= 100.0 and result["frames"] == "rendered"
    # other frames come in through frames_of_plan: the same frames give the same scores
    same = td.evaluate(path, n_videos=1, verbose=False, frames_label="passed in",
                       frames_of_plan=lambda plan, directory: td.demo_frames(plan))
    assert same["frames"] == "passed in" and same["r_at_1"] == result["r_at_1"] and same["auc"] == result["auc"]


def test_demo_frames_sample_the_pipeline_grid():
    from curation.synth.video import frames_of, make_video_plan

    plan = make_video_plan(0, 0)
    assert plan.fps == 4.0
    idx = td.demo_sample_indices(plan)
    assert idx.tolist() == [4 * k + 2 for k in range(plan.duration_s)]  # the frame at k + 0.5 s
    assert td.demo_sample_indices(plan, 0.5).tolist() == [8 * k + 4 for k in range(plan.duration_s // 2)]  # 2k + 1 s
    frames = td.demo_frames(plan)
    assert frames.shape == (plan.duration_s, 64, 64, 3)  # one per second, k + 0.5 s
    np.testing.assert_array_equal(frames[3], td.pipeline_view(next(frames_of(plan, [14]))))


# ------------------------------------------------------------------------------ shipped asset


def test_shipped_asset_exists_and_is_small():
    assert os.path.isfile(td.DEFAULT_OUT), "run `python -m models.train_demo` to make it"
    assert os.path.getsize(td.DEFAULT_OUT) <= td.MAX_SIZE_BYTES


def test_shipped_asset_loads_with_open_clip():
    import open_clip

    register_project_configs()
    model = open_clip.create_model("nccurate-tiny", pretrained=td.DEFAULT_OUT, weights_only=True)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_shipped_asset_separates_captions_on_a_demo_video():
    """Frames of a step are closer to that step's caption than to chatter or other concepts."""
    from curation.synth.video import (
        alignable_text,
        make_video_plan,
        random_chatter_text,
    )

    encoder = load_encoder(EncoderSpec(name="nccurate-tiny", pretrained=td.DEFAULT_OUT))
    plan = make_video_plan(0, 0)
    frames = td.demo_frames(plan)
    emb = encoder.encode_frames(frames)
    _unit_rows(emb, len(frames))
    rng = np.random.default_rng(0)
    for start, end, concept in plan.steps:
        other = (concept + 7) % 40
        texts = encoder.encode_texts([alignable_text(concept, 0), alignable_text(other, 0), random_chatter_text(rng)])
        sim = emb[start:end] @ texts.T  # frames k in [start, end) show the step
        assert (sim[:, 0] > sim[:, 1]).mean() > 0.9 and (sim[:, 0] > sim[:, 2]).mean() > 0.9


def test_shipped_asset_cosines_are_an_affine_map_of_its_content():
    """On a demo video, the shipped (coned) cosines are ~ k cos + (1 - k) of the bare content's,
    and each alignable caption's row keeps its shape."""
    import open_clip

    from curation.synth.video import make_video_plan

    register_project_configs()
    model = open_clip.create_model("nccurate-tiny", pretrained=td.DEFAULT_OUT, weights_only=True).eval()
    plan = make_video_plan(1, 0)
    frames = td.demo_frames(plan)

    def cosines(m):
        img, txt = _raw_embeddings(m, frames, list(plan.texts))
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        return txt @ img.T

    coned, raw = cosines(model), cosines(_bare(model))
    k = td.TrainConfig().content_share
    # affine up to the spread of content norms (chatter texts have smaller ones: flatter rows)
    assert np.abs(coned - (k * raw + (1 - k))).mean() < 0.01
    rows = np.flatnonzero(plan.alignable)
    assert min(np.corrcoef(raw[i], coned[i])[0, 1] for i in rows) > 0.95
    assert (np.argmax(raw[rows], axis=1) == np.argmax(coned[rows], axis=1)).mean() >= 0.8
