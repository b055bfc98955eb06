"""Scoring a finished run's index against an HTM-Align truth file (used by the demo)."""

from __future__ import annotations

import json

import numpy as np

from curation.metrics import recall_at_1, roc_auc
from pipeline.tools.read import read_index


def score_output(output: str, truth_path: str) -> dict:
    """R@1 / AUC (percent) of the run and of the ASR-timestamp baseline on the truth's videos.

    The baseline's alignability score is the run's own (ASR timestamps carry no score), so its
    AUC row is omitted; its R@1 uses the ASR span centre."""
    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)
    index = read_index(output).sort_by([("video_id", "ascending"), ("caption_idx", "ascending")])
    rows = [r for r in index.to_pylist() if r["video_id"] in truth and r["start"] is not None]
    label = np.array([bool(truth[r["video_id"]][r["caption_idx"]][0]) for r in rows])
    t_start = np.array([truth[r["video_id"]][r["caption_idx"]][1] for r in rows], dtype=float)
    t_end = np.array([truth[r["video_id"]][r["caption_idx"]][2] for r in rows], dtype=float)
    centre = np.array([(r["start"] + r["end"]) / 2 for r in rows])
    asr_centre = np.array([(r["asr_start"] + r["asr_end"]) / 2 for r in rows])
    kept = np.array([r["kept"] for r in rows])
    return {
        "captions": len(rows),
        "r_at_1": 100 * recall_at_1(centre, t_start, t_end, label),
        "asr_r_at_1": 100 * recall_at_1(asr_centre, t_start, t_end, label),
        "auc": 100 * roc_auc(np.array([r["alignability"] for r in rows]), label),
        "kept_precision": 100 * float(label[kept].mean()) if kept.any() else float("nan"),
        "kept_recall": 100 * float(kept[label].mean()) if label.any() else float("nan"),
    }
