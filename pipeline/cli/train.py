"""``nccurate train``: fine-tune an open_clip model on curated shards."""

from __future__ import annotations

import click

from pipeline.cli.options import train_config_options


@click.command()
@click.option("--shards", required=True, help="Shard files: a glob such as 'OUT/shards/*.tar' (quote it) or a file.")
@click.option("--output", required=True, help="Where model.pt, checkpoints and metrics.json go.")
@train_config_options
def train(shards, output, config):
    """Fine-tune an open_clip model on curated shards (clip, caption, confidence weight).

    \b
    Settings (--config FILE, --set KEY=VALUE; models.train.TrainConfig):
      model, pretrained   open_clip name (default nccurate-tiny); tag or checkpoint file
                          to start from (default: random init)
      device              cpu, cuda or cuda:N
      steps, batch_size, lr, weight_decay, warmup_frac
      loss                cali_nce (weighted InfoNCE), norton_clip (OT soft targets),
                          video_paragraph (+ Norton's video-paragraph OT loss)
      weights             json: the shards' confidence weights; ones: ignore them
      n_frames            frames per clip
      heldout_fraction    share of videos held out for R@1/R@5
      videos_per_batch    whole videos per batch (video_paragraph)
      checkpoint_every    steps between checkpoints (0: final only)
      log_every, seed"""
    from models.train import train_on_shards
    from pipeline.errors import RunError
    from pipeline.storage import files
    from pipeline.storage.atomic import write_bytes_atomic

    try:
        train_on_shards(shards, output, config, log=lambda msg: click.echo(msg, err=True), write_file=write_bytes_atomic,
                        match=files.glob)
    except ValueError as exc:  # models/ (below pipeline.errors) raises ValueError for bad shards and models
        raise RunError(str(exc)) from None
    click.echo(f"model: {output}/model.pt (open_clip: create_model({config.model!r}, pretrained=...)); "
               f"metrics: {output}/metrics.json")
