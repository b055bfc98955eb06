"""The trainer of ``nccurate train`` (``models.train``): split, schedule, retrieval, checkpoints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from models.train import (
    Pairs,
    TrainConfig,
    TrainConfigError,
    heldout_video,
    load_train_config,
    lr_at,
    retrieval_at_k,
    split_pairs,
    train,
)


def _pairs(n_videos: int = 6, per_video: int = 4, size: int = 64) -> Pairs:
    """Solid-colour clips, one colour per caption ("red", "green", ...), several videos."""
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230), "yellow": (240, 230, 30)}
    names = list(colours)
    frames, texts, vids, labels = [], [], [], []
    for v in range(n_videos):
        for k in range(per_video):
            name = names[(v + k) % len(names)]
            frames.append(np.broadcast_to(np.array(colours[name], np.uint8), (2, size, size, 3)).copy())
            texts.append(f"a {name} square")
            vids.append(f"vid{v}")
            labels.append(names.index(name))
    return Pairs(np.stack(frames), texts, np.linspace(0.2, 1.0, len(texts)).astype(np.float32), vids, np.array(labels))


def test_split_is_by_video_deterministic_and_never_empty():
    pairs = _pairs(n_videos=10)
    train_a, held_a = split_pairs(pairs, 0.2, seed=3)
    train_b, held_b = split_pairs(pairs, 0.2, seed=3)
    assert held_a.video_ids == held_b.video_ids and len(train_a) + len(held_a) == len(pairs)
    assert not set(train_a.video_ids) & set(held_a.video_ids) and held_a.video_ids and train_a.video_ids
    assert {v for v in set(pairs.video_ids) if heldout_video(v, 0.2, 3)} <= set(held_a.video_ids)
    _, none_held = split_pairs(pairs, 0.0, seed=3)
    assert len(none_held) == 0
    _, tiny = split_pairs(_pairs(n_videos=2), 0.01, seed=0)  # a tiny fraction still holds one video out
    assert len(set(tiny.video_ids)) == 1


def test_lr_warms_up_then_decays_to_zero():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_frac=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-5


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="mse")
    with pytest.raises(ValueError, match="weights"):
        TrainConfig(weights="maybe")
    with pytest.raises(ValueError, match="heldout_fraction"):
        TrainConfig(heldout_fraction=1.0)
    with pytest.raises(ValueError, match=r"train config steps: 0 is not allowed; expected an integer >= 1"):
        TrainConfig(steps=0)


def test_settings_from_a_file_then_set_items(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("steps: 40\nlr: 1e-3\nloss: norton_clip\npretrained: openai\n")
    cfg = load_train_config(str(path), ["steps=7", "pretrained=null", "heldout_fraction=0"])
    assert (cfg.steps, cfg.lr, cfg.loss, cfg.pretrained, cfg.heldout_fraction) == (7, 1e-3, "norton_clip", None, 0.0)
    assert isinstance(cfg.heldout_fraction, float) and load_train_config() == TrainConfig()


@pytest.mark.parametrize("sets, needles", [
    (["stepz=3"], ("unknown key 'stepz'", "did you mean 'steps'", "(from --set stepz=3)")),
    (["steps=abc"], ("train config steps", "'abc'", "an integer", "(from --set steps=abc)")),
    (["steps=2.5"], ("steps", "2.5", "an integer")),
    (["loss=mse"], ("loss", "'mse'", "cali_nce")),
    (["steps"], ("--set 'steps'", "key=value")),
])
def test_bad_settings_name_the_key_and_where_it_was_set(sets, needles):
    with pytest.raises(TrainConfigError) as info:
        load_train_config(None, sets)
    assert "\n" not in str(info.value)
    for needle in needles:
        assert needle in str(info.value)


def test_bad_settings_file_names_the_file(tmp_path):
    (tmp_path / "list.yaml").write_text("- steps\n")
    (tmp_path / "typo.yaml").write_text("batchsize: 3\n")
    for name, needle in (("list.yaml", "mapping"), ("typo.yaml", "did you mean 'batch_size'"), ("nope.yaml", "cannot be read")):
        with pytest.raises(TrainConfigError, match=needle) as info:
            load_train_config(str(tmp_path / name))
        assert name in str(info.value)


@pytest.mark.parametrize("loss", ["cali_nce", "norton_clip", "video_paragraph"])
def test_training_lowers_the_loss_and_saves_an_open_clip_checkpoint(tmp_path, loss):
    import open_clip
    import torch

    from models.encoder import register_project_configs

    pairs = _pairs()
    cfg = TrainConfig(steps=30, batch_size=8, lr=2e-3, loss=loss, videos_per_batch=3, log_every=0, seed=1)
    encoder, result = train(pairs, cfg, str(tmp_path), heldout=pairs)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert result.heldout["queries"] == len(pairs) and 0 <= result.heldout["r_at_1"] <= 100
    register_project_configs()
    loaded = open_clip.create_model("nccurate-tiny", pretrained=str(tmp_path / "model.pt"))
    for name, value in encoder.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["loss"] == loss and metrics["pairs"] == len(pairs)


def test_training_is_deterministic(tmp_path):
    pairs = _pairs(n_videos=3)
    cfg = TrainConfig(steps=5, batch_size=6, log_every=0, seed=2)
    runs = [train(pairs, cfg, str(tmp_path / f"r{i}"))[1].losses for i in range(2)]
    assert runs[0] == runs[1]
    assert (tmp_path / "r0" / "model.pt").read_bytes() == (tmp_path / "r1" / "model.pt").read_bytes()


def test_retrieval_counts_label_hits_and_exact_hits():
    """A trained-enough model on four solid colours retrieves by colour; with labels every clip
    of the right colour counts, without them only the caption's own clip."""
    pairs = _pairs(n_videos=4)
    encoder, _ = train(pairs, TrainConfig(steps=60, batch_size=16, lr=3e-3, log_every=0), None)
    by_label = retrieval_at_k(encoder, pairs)
    exact = retrieval_at_k(encoder, Pairs(pairs.frames, pairs.texts, pairs.weights, pairs.video_ids, None))
    assert by_label["r_at_1"] >= 75.0  # 4 colours: chance is 25%
    assert exact["r_at_1"] <= by_label["r_at_1"] and exact["r_at_5"] <= by_label["r_at_5"]


def test_cli_train_on_a_shard(tmp_path):
    """``nccurate train`` on a shard written here (mp4 clips + json weights)."""
    import webdataset as wds
    from click.testing import CliRunner

    from pipeline.cli import main
    from tests.videos import make_video

    shard = str(tmp_path / "shard-000000.tar")
    with wds.TarWriter(shard) as sink:
        for v in range(4):
            for k in range(3):
                path = make_video(str(tmp_path / f"c{v}{k}.mp4"), 2.0, fps=8, size=(96, 64))
                with open(path, "rb") as handle:
                    mp4 = handle.read()
                meta = {"video_id": f"v{v}", "caption_idx": k, "weight": 0.5, "span": [0, 2], "asr_span": [0, 2]}
                sink.write({"__key__": f"v{v}_{k:05d}", "mp4": mp4, "txt": f"clip {k} of video {v}",
                            "json": json.dumps(meta)})
    out = tmp_path / "trained"
    result = CliRunner().invoke(main, ["train", "--shards", str(tmp_path / "*.tar"), "--output", str(out),
                                       "--set", "steps=3", "--set", "batch_size=4", "--set", "heldout_fraction=0.25"])
    assert result.exit_code == 0, result.output
    assert os.path.exists(out / "model.pt") and json.loads((out / "metrics.json").read_text())["heldout"]["queries"] == 3
    missing = CliRunner().invoke(main, ["train", "--shards", str(tmp_path / "nope*.tar"), "--output", str(out)])
    assert missing.exit_code == 2 and "no file matches" in missing.output
    typo = CliRunner().invoke(main, ["train", "--shards", shard, "--output", str(out), "--set", "step=3"])
    assert typo.exit_code == 2 and typo.output.count("\n") == 1
    assert "nccurate: error: train config: unknown key 'step'; did you mean 'steps'? (from --set step=3)" in typo.output


def test_every_file_goes_through_the_callers_writer(tmp_path):
    """``nccurate train`` hands the pipeline's atomic writer down; nothing is written around it."""
    import torch

    written = {}
    cfg = TrainConfig(steps=4, batch_size=8, lr=2e-3, videos_per_batch=3, log_every=0, checkpoint_every=2, seed=1)
    encoder, _ = train(_pairs(), cfg, str(tmp_path), write_file=lambda path, data: written.__setitem__(path, data))
    assert sorted(os.path.basename(p) for p in written) == ["checkpoint-000002.pt", "metrics.json", "model.pt"]
    assert list(tmp_path.iterdir()) == []
    import io

    state = torch.load(io.BytesIO(written[str(tmp_path / "model.pt")]), weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in encoder.model.state_dict().items())
