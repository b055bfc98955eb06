"""The benchmark family of synthetic feature-mode worlds (``nccurate bench align``).

Each world is a :class:`curation.synth.features.WorldParams`; together they are chosen so that no fixed
knob of an aligner wins all of them:

* ASR offsets from 1.5 to 20 s (4 s inside long steps: ASR mostly right), with and without a
  lead/lag bias and uniform outliers;
* truth = the whole step vs a short moment inside a long step;
* flat vs peaked evidence inside a step; steps 5–120 s; alignable share 15–50%;
* concepts repeated across steps; a CLIP-like narrow cosine band vs a wide one; a per-video
  text bias; temporally correlated frame noise; and a world with no visual signal at all.

:func:`random_world` draws a world's knobs from the same ranges; the benchmark reports such
worlds, on seeds never looked at while the aligner was designed, apart from the named ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from curation.synth.features import WorldParams

#: name -> world. Offsets are ASR time minus true time; a negative bias = narration leads.
WORLDS: dict[str, WorldParams] = {
    # the project's first world: truth = the whole step, heavy-tailed t(2) x 15 s offsets
    "steps": WorldParams(),
    # a sentence's truth is a few seconds inside a flat step of 10-90 s; narration leads by 2.5 s
    # (shaped after an outside study's corpora: there ASR times fell in the right step 75% of
    # the time)
    "long-flat": WorldParams(truth="moment", step_s=(10, 90), gap_s=(2, 10), offset_dist="gauss",
                             offset_bias_s=-2.5, offset_scale_s=10.0, outlier_share=0.25,
                             alignable_fraction=0.3),
    # ASR is mostly right (offsets 4 s) inside long flat steps of 20-120 s: moving a caption
    # anywhere inside its step misses (shaped after an outside corpus whose ASR R@1 was 42%)
    "small-offsets": WorldParams(truth="moment", step_s=(20, 120), gap_s=(2, 10), offset_dist="gauss",
                                 offset_scale_s=4.0, outlier_share=0.05, alignable_fraction=0.3),
    # the moment's frames show a detail only its caption names
    "peaked": WorldParams(truth="moment", evidence="peaked", step_s=(15, 60), offset_dist="gauss",
                          offset_scale_s=10.0, alignable_fraction=0.4),
    # ASR already nearly right: short steps, 1.5 s offsets
    # (and a wide cosine band: little frame and text noise)
    "accurate-asr": WorldParams(step_s=(5, 30), gap_s=(2, 15), offset_dist="gauss", offset_scale_s=1.5,
                                alignable_fraction=0.5, frame_noise=0.3, text_noise=0.4),
    # CLIP-like narrow cosine band, a per-video text bias, repeated concepts, sparse visible
    # captions, large lagging offsets
    "clip-band": WorldParams(shared_strength=2.5, text_bias=1.0, repeat_concept_prob=0.5,
                             step_s=(5, 40), offset_scale_s=20.0, offset_bias_s=5.0, alignable_fraction=0.15),
    # dense long steps, temporally correlated frame noise, lagging offsets with outliers
    "smooth-noise": WorldParams(truth="moment", noise_corr_s=5.0, step_s=(10, 90), gap_s=(1, 8),
                                offset_scale_s=6.0, offset_bias_s=4.0, outlier_share=0.1,
                                alignable_fraction=0.5),
    # the frames show nothing the captions say
    "no-signal": WorldParams(visual_signal=False, truth="moment", offset_dist="gauss", offset_scale_s=10.0),
}


def random_world(seed: int) -> WorldParams:
    """A world whose knobs are drawn from the family's ranges (independently of the named ones)."""
    rng = np.random.default_rng([seed, 7])
    step_lo = int(rng.integers(5, 40))
    step_hi = step_lo + int(rng.integers(5, 90))
    band = rng.random() < 0.5
    return dataclasses.replace(
        WorldParams(),
        truth=str(rng.choice(["step", "moment"])),
        evidence=str(rng.choice(["flat", "peaked"])),
        step_s=(step_lo, step_hi),
        gap_s=(1, int(rng.integers(3, 30))),
        offset_dist=str(rng.choice(["t2", "gauss"])),
        offset_scale_s=float(rng.uniform(2.0, 20.0)),
        offset_bias_s=float(rng.choice([0.0, rng.uniform(-6.0, 6.0)])),
        outlier_share=float(rng.choice([0.0, rng.uniform(0.0, 0.3)])),
        alignable_fraction=float(rng.uniform(0.15, 0.5)),
        repeat_concept_prob=float(rng.uniform(0.0, 0.5)),
        shared_strength=float(rng.uniform(1.5, 3.0)) if band else 0.0,
        frame_noise=float(rng.uniform(0.5, 1.2)),
        text_noise=float(rng.uniform(0.6, 1.5)),
        text_bias=float(rng.choice([0.0, rng.uniform(0.0, 1.0)])),
        noise_corr_s=float(rng.choice([0.0, rng.uniform(1.0, 8.0)])),
    )
