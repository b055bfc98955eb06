"""The curated-shard loader (models/data.py): frame choice, resize/crop, normalisation, tokens,
weights, order invariance, errors, DataLoader collation. Shards are written here with
webdataset's TarWriter from tiny PyAV videos and JPEG frames whose colour encodes the frame
index (tests/videos.py)."""

from __future__ import annotations

import io
import itertools
import os

import numpy as np
import pytest

from models.data import (
    clip_frames,
    curated_dataset,
    load_curated,
    make_loader,
    set_epoch,
)
from tests.videos import LEFT_BAR, RIGHT_BAR, colour_of, frame_index_of, make_video

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)  # not symmetric: a channel mix-up shows
TEXTS = ["a red circle moves left", "pour the batter into the pan", "thanks for watching"]
WEIGHTS = [0.25, 1.0, 0.0]


def _jpeg_frames(n: int, size=(160, 64), bars: bool = True) -> dict[str, bytes]:
    """``{"f0000.jpg": ...}``: frame k is colour_of(k) with LEFT/RIGHT bars in the outer quarters."""
    from PIL import Image

    width, height = size
    out = {}
    for k in range(n):
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[:] = colour_of(k)
        if bars:
            rgb[:, : width // 4], rgb[:, width - width // 4:] = LEFT_BAR, RIGHT_BAR
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
        out[f"f{k:04d}.jpg"] = buffer.getvalue()
    return out


def _meta(video_id: str, idx: int, weight: float) -> dict:
    return {"video_id": video_id, "caption_idx": idx, "weight": weight, "span": [1.0, 3.5],
            "asr_span": [0.5, 3.0], "alignability": 0.9}


def _write(path: str, samples: list[dict]) -> str:
    import webdataset as wds

    with wds.TarWriter(path) as sink:
        for sample in samples:
            sink.write(sample)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("curated")
    mp4_a = make_video(str(root / "a.mp4"), 2.5, fps=8, size=(96, 64))                  # 20 frames
    mp4_c = make_video(str(root / "c.mp4"), 1.0, fps=8, size=(64, 160), pattern="bars")  # 8, portrait
    samples = [
        {"__key__": "vidA_00000", "mp4": open(mp4_a, "rb").read(), "txt": TEXTS[0], "json": _meta("vidA", 0, WEIGHTS[0])},
        {"__key__": "vidB_00003", **_jpeg_frames(5), "txt": TEXTS[1], "json": _meta("vidB", 3, WEIGHTS[1])},
        {"__key__": "vidC_00001", "mp4": open(mp4_c, "rb").read(), "txt": TEXTS[2], "json": _meta("vidC", 1, WEIGHTS[2])},
    ]
    grouped = _write(str(root / "grouped-000000.tar"), samples)
    shuffled = _write(str(root / "shuffled-000000.tar"), [samples[2], samples[0], samples[1]])
    split = [_write(str(root / "split-000000.tar"), samples[:2]), _write(str(root / "split-000001.tar"), samples[2:])]
    no_media = _write(str(root / "nomedia-000000.tar"), [
        samples[0], {"__key__": "vidD_00007", "txt": "no clip here", "json": _meta("vidD", 7, 1.0)}])
    return dict(samples=samples, grouped=[grouped], shuffled=[shuffled], split=split, no_media=[no_media])


@pytest.fixture(scope="module")
def tokenizer():
    import open_clip

    from models.encoder import register_project_configs

    register_project_configs()
    return open_clip.get_tokenizer("nccurate-tiny")


def _all(dataset) -> list[tuple]:
    return list(dataset)


def _fingerprint(item) -> tuple:
    frames, tokens, weight = item
    return (float(weight), tuple(tokens.tolist()), frames.numpy().round(4).tobytes())


# ---------------------------------------------------------------------------------- clip_frames


def test_mp4_uniform_frame_choice(data):
    rgb = clip_frames(data["samples"][0], n_frames=4, size=32)
    assert rgb.shape == (4, 32, 32, 3) and rgb.dtype == np.uint8
    assert frame_index_of(rgb, 20).tolist() == [2, 7, 12, 17]
    rgb = clip_frames(data["samples"][0], n_frames=1, size=16)
    assert frame_index_of(rgb, 20).tolist() == [10]


def test_jpg_frames_in_name_order_and_repeated_when_short(data):
    sample = dict(data["samples"][1])
    reordered = {k: sample[k] for k in sorted(sample, reverse=True)}  # member order must not matter
    rgb = clip_frames(reordered, n_frames=10, size=24)
    assert rgb.shape == (10, 24, 24, 3) and rgb.dtype == np.uint8
    assert frame_index_of(rgb, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize("which", [1, 2])  # jpg 160x64 landscape; mp4 64x160 portrait
def test_shorter_side_resized_then_centre_cropped(data, which):
    # The bars fill the outer quarters of the longer side; shorter side -> 32 makes the longer
    # side 80 and the centre 32 are source pixels 48..112 of 160: no bar colour may appear.
    rgb = clip_frames(data["samples"][which], n_frames=3, size=32).astype(np.float64)
    ks = frame_index_of(rgb.astype(np.uint8), 8)
    want = colour_of(ks).astype(np.float64)[:, None, None, :]
    assert np.abs(rgb - want).max() < 24, "a bar (or a squashed / off-centre frame) leaked into the crop"
    # an uncropped or squashed resize would keep the bars: check the test can see them
    for bar in (LEFT_BAR, RIGHT_BAR):
        assert np.abs(rgb - np.array(bar, np.float64)).sum(-1).min() > 100


def test_sample_without_media_names_its_key(data):
    sample = {"__key__": "vidD_00007", "txt": b"x", "json": b"{}"}
    with pytest.raises(ValueError, match="vidD_00007"):
        clip_frames(sample, 4, 32)
    with pytest.raises(ValueError, match="vidE_00001.*npy"):
        clip_frames({"__key__": "vidE_00001", "npy": b"\x93NUMPY"}, 4, 32)


# --------------------------------------------------------------------------------- the dataset


def test_weights_from_json_and_ones(data, tokenizer):
    items = _all(curated_dataset(data["grouped"], tokenizer=tokenizer, n_frames=2, size=32))
    assert [float(w) for _, _, w in items] == WEIGHTS
    assert all(w.dtype.is_floating_point and w.dim() == 0 for _, _, w in items)
    ones = _all(curated_dataset(data["grouped"], tokenizer=tokenizer, n_frames=2, size=32, weights="ones"))
    assert [float(w) for _, _, w in ones] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="weights"):
        curated_dataset(data["grouped"], tokenizer=tokenizer, weights="uniform")


def test_frames_shape_dtype_normalisation_and_tokens(data, tokenizer):
    import torch

    items = _all(curated_dataset(data["grouped"], tokenizer=tokenizer, n_frames=4, size=32, mean=MEAN, std=STD))
    assert len(items) == 3
    for (frames, tokens, _), sample, text in zip(items, data["samples"], TEXTS):
        assert frames.shape == (4, 3, 32, 32) and frames.dtype == torch.float32
        rgb = torch.from_numpy(clip_frames(sample, 4, 32)).permute(0, 3, 1, 2).double() / 255
        want = (rgb - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
        torch.testing.assert_close(frames.double(), want, atol=1e-5, rtol=0)
        assert tokens.dtype == torch.int64
        assert torch.equal(tokens, tokenizer([text])[0])


def test_layouts_and_shuffles_keep_the_multiset(data, tokenizer):
    kw = dict(tokenizer=tokenizer, n_frames=2, size=16)
    grouped = [_fingerprint(x) for x in curated_dataset(data["grouped"], **kw)]
    shuffled = [_fingerprint(x) for x in curated_dataset(data["shuffled"], **kw)]
    assert [g[0] for g in grouped] == WEIGHTS and [s[0] for s in shuffled] == [0.0, 0.25, 1.0]
    assert sorted(grouped) == sorted(shuffled)
    urls = data["split"] + data["shuffled"]  # 6 samples in 3 shards
    runs = {}
    for seed, epoch in [(0, 0), (0, 0), (1, 0)] + [(0, e) for e in range(1, 6)]:
        dataset = curated_dataset(urls, shuffle_buffer=4, seed=seed, **kw)
        set_epoch(dataset, epoch)
        order = [_fingerprint(x) for x in dataset]
        assert sorted(order) == sorted(grouped * 2)
        runs.setdefault((seed, epoch), []).append(order)
    assert runs[(0, 0)][0] == runs[(0, 0)][1], "same seed and epoch must give the same order"
    assert len({tuple(runs[(0, e)][0]) for e in range(6)}) > 1, "set_epoch never changed the order"
    # samples are mixed across and within shards, not only the shard order permuted
    per_shard = [[_fingerprint(x) for x in curated_dataset([u], **kw)] for u in urls]
    shard_orders = {tuple(itertools.chain(*p)) for p in itertools.permutations(per_shard)}
    assert any(tuple(r[0]) not in shard_orders for r in runs.values()), "samples were never shuffled"
    # with a one-sample buffer only the shard order changes, and it changes with the epoch
    shard_runs = set()
    for epoch in range(6):
        dataset = curated_dataset(urls, shuffle_buffer=1, seed=0, **kw)
        set_epoch(dataset, epoch)
        order = tuple(_fingerprint(x) for x in dataset)
        assert order in shard_orders
        shard_runs.add(order)
    assert len(shard_runs) > 1, "the shard order never changed with the epoch"


def test_resampled_is_deterministic_given_seed(data, tokenizer):
    kw = dict(tokenizer=tokenizer, n_frames=1, size=16, resampled=True)
    first = [_fingerprint(x) for x in itertools.islice(curated_dataset(data["split"], seed=3, **kw), 7)]
    again = [_fingerprint(x) for x in itertools.islice(curated_dataset(data["split"], seed=3, **kw), 7)]
    assert first == again and len(first) == 7
    assert {f[0] for f in first} <= set(WEIGHTS)


def test_loader_raises_naming_the_sample_without_media(data, tokenizer):
    with pytest.raises(ValueError, match="vidD_00007"):
        _all(curated_dataset(data["no_media"], tokenizer=tokenizer, n_frames=2, size=16))


def test_dataloader_collates_batches_of_two(data, tokenizer):
    import torch

    batches = list(make_loader(data["grouped"], batch_size=2, tokenizer=tokenizer, n_frames=3, size=16))
    assert [len(b[0]) for b in batches] == [2, 1]
    frames, tokens, weight = batches[0]
    assert frames.shape == (2, 3, 3, 16, 16) and frames.dtype == torch.float32
    assert tokens.shape == (2, tokenizer([""]).shape[1]) and tokens.dtype == torch.int64
    assert weight.shape == (2,) and weight.tolist() == WEIGHTS[:2]


def test_dataloader_workers_after_decoding_in_the_parent(data, tokenizer):
    # The parent decodes first (its cached scaler is inherited through fork); workers must not hang.
    from torch.utils.data import DataLoader

    clip_frames(data["samples"][0], 2, 16)
    dataset = curated_dataset(data["split"], tokenizer=tokenizer, n_frames=2, size=16)
    got = [_fingerprint(x) for x in DataLoader(dataset, batch_size=None, num_workers=2, timeout=60)]
    want = [_fingerprint(x) for x in curated_dataset(data["grouped"], tokenizer=tokenizer, n_frames=2, size=16)]
    assert sorted(got) == sorted(want)


# ----------------------------------------------------------------------------------- in memory


def test_load_curated(data):
    out = load_curated(data["grouped"], n_frames=4, size=24)
    assert out["frames"].shape == (3, 4, 24, 24, 3) and out["frames"].dtype == np.uint8
    for got, sample in zip(out["frames"], data["samples"]):
        np.testing.assert_array_equal(got, clip_frames(sample, 4, 24))
    assert out["texts"] == TEXTS
    assert out["weights"].dtype == np.float32 and out["weights"].tolist() == WEIGHTS
    assert out["keys"] == ["vidA_00000", "vidB_00003", "vidC_00001"]
    assert [m["video_id"] for m in out["meta"]] == ["vidA", "vidB", "vidC"]
    assert [m["caption_idx"] for m in out["meta"]] == [0, 3, 1]
    assert "meta" not in load_curated(data["shuffled"], n_frames=1, size=8, with_meta=False)
    assert load_curated(data["shuffled"], n_frames=1, size=8)["keys"] == ["vidC_00001", "vidA_00000", "vidB_00003"]


def test_importing_models_data_stays_light():
    import subprocess
    import sys

    code = ("import sys, models.data; heavy = [m for m in ('torch', 'webdataset', 'av', 'apache_beam', 'pipeline') "
            "if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------- collate_samples


def _feature_samples() -> list[dict]:
    """Raw feature-mode samples (member -> bytes) of 1, 3 and 2 span frames, 4 wide; row j of
    sample i is all i * 10 + j, so padding and order show."""
    import json

    out = []
    for i, k in enumerate((1, 3, 2)):
        arr = np.stack([np.full(4, i * 10 + j, np.float32) for j in range(k)])
        buffer = io.BytesIO()
        np.save(buffer, arr, allow_pickle=False)
        out.append({"__key__": f"v{i}_00000", "npy": buffer.getvalue(), "txt": TEXTS[i].encode(),
                    "json": json.dumps({**_meta(f"v{i}", 0, WEIGHTS[i]), "score_frame_pts_s": [0.5] * k}).encode()})
    return out


def _check_feature_batch(batch: dict) -> None:
    import torch

    assert batch["__key__"] == ["v0_00000", "v1_00000", "v2_00000"]
    assert batch["txt"] == TEXTS and [m["video_id"] for m in batch["json"]] == ["v0", "v1", "v2"]
    assert batch["weight"].dtype == torch.float32 and batch["weight"].tolist() == WEIGHTS
    assert tuple(batch["npy"].shape) == (3, 3, 4) and batch["npy_mask"].tolist() == [
        [True, False, False], [True, True, True], [True, True, False]]
    for i, k in enumerate((1, 3, 2)):
        assert batch["npy"][i, :k, 0].tolist() == [i * 10 + j for j in range(k)]
        assert not batch["npy"][i, k:].any()


def test_collate_pads_features_from_raw_decoded_and_wids_samples():
    import json

    from models.data import collate_samples

    raw = _feature_samples()
    _check_feature_batch(collate_samples(raw))
    # as webdataset's .decode() gives them: arrays, str, dict
    decoded = [{"__key__": s["__key__"], "npy": np.load(io.BytesIO(s["npy"])), "txt": s["txt"].decode(),
                "json": json.loads(s["json"])} for s in raw]
    _check_feature_batch(collate_samples(decoded))
    # as wids gives them: names with a leading dot, values as streams
    wids_like = [{"__key__": s["__key__"], **{f".{k}": io.BytesIO(v) for k, v in s.items() if k != "__key__"}}
                 for s in raw]
    _check_feature_batch(collate_samples(wids_like))


def test_collate_keeps_clips_and_jpg_frames_in_order(data):
    import json

    from models.data import collate_samples

    mp4 = {"__key__": "a_00000", "mp4": b"clip-a", "txt": b"x", "json": json.dumps(_meta("a", 0, 0.5)).encode()}
    batch = collate_samples([mp4, {**mp4, "__key__": "a_00001", "mp4": b"clip-b"}])
    assert batch["mp4"] == [b"clip-a", b"clip-b"] and "npy" not in batch and "jpg" not in batch
    frames = _jpeg_frames(3, bars=False)
    shuffled = dict(reversed(list(frames.items())))  # member order must not matter
    jpg = {"__key__": "b_00000", **shuffled, "txt": b"y", "json": json.dumps(_meta("b", 0, 1.0)).encode()}
    batch = collate_samples([jpg])
    assert batch["jpg"] == [[frames["f0000.jpg"], frames["f0001.jpg"], frames["f0002.jpg"]]]
    assert not any(name.startswith("f0") for name in batch)


def test_collate_refuses_mixed_widths_and_empty_batches():
    from models.data import collate_samples

    samples = _feature_samples()
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 5), np.float32))
    samples[1]["npy"] = buffer.getvalue()
    with pytest.raises(ValueError, match="different widths"):
        collate_samples(samples)
    with pytest.raises(ValueError, match="empty batch"):
        collate_samples([])


def test_collate_works_as_a_dataloader_collate_fn_with_workers(tmp_path):
    import torch
    import webdataset as wds

    from models.data import collate_samples

    samples = _feature_samples()
    urls = [_write(str(tmp_path / f"s{i}.tar"), [s]) for i, s in enumerate(samples)]
    loader = torch.utils.data.DataLoader(wds.WebDataset(urls, shardshuffle=False), batch_size=2,
                                         num_workers=2, collate_fn=collate_samples)
    keys = sorted(k for batch in loader for k in batch["__key__"])
    assert keys == ["v0_00000", "v1_00000", "v2_00000"]
