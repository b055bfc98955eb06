"""``nccurate demo``: make a synthetic narrated corpus, curate it, score it against its truth.

Feature mode for now: the corpus is 1-fps features + captions of the synthetic world
(``curation.synth``); the video-file demo arrives with video mode."""

from __future__ import annotations

import os

from curation.synth import make_corpus
from pipeline.config import Config
from pipeline.evaluate_output import score_output
from pipeline.run import run
from pipeline.synth_io import write_corpus


def demo(output: str, config: Config, n_videos: int = 40, seed: int = 0) -> str:
    """Write inputs to ``output/inputs``, curate into ``output/curated`` (replacing a previous
    demo's outputs there); returns a report."""
    inputs, curated = os.path.join(output, "inputs"), os.path.join(output, "curated")
    # a mix of the three caption formats, as a real corpus would have
    manifest, truth_path = write_corpus(inputs, make_corpus(n_videos, seed), ("json", "vtt", "srt"))
    summary = run(manifest, curated, config, overwrite=True)
    score = score_output(curated, truth_path)
    return "\n".join([
        f"nccurate demo: {summary['videos_in']} synthetic videos, {summary['captions_in']} captions "
        f"(~30% describe something visible, ASR times off by a heavy-tailed ~15 s)",
        f"  kept {summary['captions_kept']} captions in {summary['shards']} shard(s); "
        f"dropped {summary['captions_dropped']}",
        f"  R@1 {score['r_at_1']:.1f} (ASR timestamps: {score['asr_r_at_1']:.1f})   "
        f"alignability AUC {score['auc']:.1f}   kept precision {score['kept_precision']:.1f}% "
        f"recall {score['kept_recall']:.1f}%",
        f"  inputs:   {manifest}",
        f"  outputs:  {curated}/shards/*.tar, {curated}/index/*.parquet, {curated}/summary.json",
    ])

