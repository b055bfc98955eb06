"""``nccurate demo``: make a synthetic narrated corpus, curate it, score it against its truth.

* ``video`` (default): real H.264 files of a synthetic world (coloured shapes as visual steps,
  background in between, ~65–70% chatter captions with heavy-tailed ASR errors), scored by the
  project's small open_clip model ``nccurate-tiny`` trained on separately generated data
  (``models/assets/nccurate-demo-tiny.pt``, reproducible with ``python -m models.train_demo``).
* ``features``: 1-fps feature matrices of the feature-space world (``curation.synth.features``).
"""

from __future__ import annotations

import dataclasses
import os

from pipeline.config import Config
from pipeline.errors import RunError
from pipeline.outputs.layout import OutputLayout
from pipeline.tools.score import score_output
from pipeline.tools.report import build_report
from pipeline.run import run

DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "models", "assets", "nccurate-demo-tiny.pt")


def demo_config(config: Config, mode: str) -> Config:
    """The demo's model: the shipped tiny encoder in video mode; provenance labels in feature mode."""
    if mode == "video":
        model = dataclasses.replace(config.model, name="nccurate-tiny", pretrained=DEMO_CHECKPOINT)
        clips = dataclasses.replace(config.clips, size=96)
        return dataclasses.replace(config, model=model, clips=clips)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, name="synthetic-features", pretrained=None))


def make_inputs(inputs: str, mode: str, n_videos: int, seed: int) -> tuple[str, str]:
    """Write the demo corpus (a mix of json, vtt and srt captions); returns (manifest, truth)."""
    if mode == "video":
        from pipeline.synth.video_corpus import write_video_corpus

        return write_video_corpus(inputs, n_videos, seed, ("vtt", "json", "srt"))
    from curation.synth.features import make_corpus
    from pipeline.synth.feature_corpus import write_corpus

    return write_corpus(inputs, make_corpus(n_videos, seed), ("json", "vtt", "srt"))


def demo(output: str, config: Config, n_videos: int = 24, seed: int = 0, mode: str = "video") -> str:
    """Write inputs to ``output/inputs``, curate into ``output/curated`` (replacing a previous
    demo's outputs there), build the HTML report of the first 8 videos in ``output/report``
    (beside ``curated``: ``nccurate run --overwrite`` refuses files it did not write); returns
    the printout."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise RunError(f"--output {output}: exists and is not a directory")
    inputs, curated = os.path.join(output, "inputs"), os.path.join(output, "curated")
    manifest, truth_path = make_inputs(inputs, mode, n_videos, seed)
    config = demo_config(config, mode)
    summary = run(manifest, curated, config, overwrite=True)
    layout = OutputLayout(curated)
    score = score_output(curated, truth_path)
    report = build_report(curated, 8, os.path.join(output, "report"))
    payload = config.clips.format if mode == "video" else "npy"
    scorer = (f"open_clip {config.model.name} (models/assets/{os.path.basename(DEMO_CHECKPOINT)}), decoded with {config.decode.backend}"
              if mode == "video" else "synthetic 1-fps features")
    return "\n".join([
        f"nccurate demo ({mode} mode): {summary['videos_in']} synthetic videos, {summary['captions_in']} captions "
        f"(~30% describe something visible, ASR times off by a heavy-tailed ~15 s)",
        f"  scored by {scorer}",
        f"  kept {summary['captions_kept']} captions ({payload}) in {summary['shards']} shard(s); "
        f"dropped {summary['captions_dropped']}; failed videos {summary['videos_failed']}",
        f"  R@1 {score['r_at_1']:.1f} (ASR timestamps: {score['asr_r_at_1']:.1f})   "
        f"alignability AUC {score['auc']:.1f}   kept precision {score['kept_precision']:.1f}% "
        f"recall {score['kept_recall']:.1f}%",
        f"  inputs:   {manifest}",
        f"  outputs:  {layout.shards_glob}, {layout.index_glob}, {layout.summary}",
        f"  report:   {report} (open it in a browser; `nccurate inspect {curated}` prints a summary)",
    ])
