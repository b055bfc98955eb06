"""Run-level calibration: decoy pool, alignability against decoys, order-independent merges."""

import numpy as np

from curation import calibration
from curation.align import AlignParams, calibration_stats
from curation.synth.features import WorldParams, make_corpus

SMALL = WorldParams(dim=64, duration_s=(240, 300))


def _run_stats(videos, params=AlignParams()):
    pool = calibration.merge_pools([calibration.pool_candidates(v.video_id, v.caption_emb) for v in videos])
    return [calibration_stats(v.video_id, v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, pool)
            for v in videos]


def test_merges_do_not_depend_on_order():
    videos = make_corpus(5, 3, SMALL)
    pools = [calibration.pool_candidates(v.video_id, v.caption_emb) for v in videos]
    a, b = calibration.merge_pools(pools), calibration.merge_pools(pools[::-1])
    np.testing.assert_array_equal(a.keys, b.keys)
    np.testing.assert_array_equal(a.emb, b.emb)
    assert a.video_ids == b.video_ids
    stats = _run_stats(videos)
    x, y = calibration.merge(stats), calibration.merge([stats[2], stats[0], stats[4], stats[1], stats[3]])
    twice = calibration.merge([calibration.merge(stats[:3]), stats[1], stats[3], stats[4], stats[3]])
    for f, g, h in zip(x, y, twice):  # a runner that delivers an element twice changes nothing
        np.testing.assert_array_equal(f, g)
        np.testing.assert_array_equal(f, h)
    assert len(np.unique(x.keys)) == len(x.keys)
    dup = calibration.merge_pools(pools + pools[:2])
    np.testing.assert_array_equal(dup.keys, a.keys)


def test_a_large_run_scores_decoys_only_for_captions_its_sample_can_hold(monkeypatch):
    """With the run's sample smaller than its captions, a video scores decoys and keeps statistics
    only for captions at or below the run's sample bound, and the merged sample (so the
    calibration) is exactly the one every caption's statistics give."""
    videos = make_corpus(6, 5, SMALL)
    n_captions = sum(len(v.texts) for v in videos)
    monkeypatch.setattr(calibration, "SAMPLE_SIZE", n_captions // 4)
    pool = calibration.merge_pools([calibration.pool_candidates(v.video_id, v.caption_emb) for v in videos])
    assert len(pool.run_keys) == calibration.SAMPLE_SIZE
    every = pool._replace(run_keys=pool.run_keys[:0])  # no bound: every caption scored
    assert every.sample_bound() == np.iinfo(np.uint64).max
    stats = lambda p: [calibration_stats(v.video_id, v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps,
                                         AlignParams(), p) for v in videos]
    bounded, full = stats(pool), stats(every)
    assert sum(len(s.decoy_keys) for s in bounded) == calibration.SAMPLE_SIZE
    assert sum(len(s.decoy_keys) for s in full) == n_captions
    assert all(np.all(s.keys <= np.uint64(pool.sample_bound())) for s in bounded)
    for f, g in zip(calibration.merge(bounded), calibration.merge(full)):
        np.testing.assert_array_equal(f, g)
    a, b = calibration.estimate(calibration.merge(bounded), 60.0), calibration.estimate(calibration.merge(full), 60.0)
    assert a.prior == b.prior and np.array_equal(a.alignability_by_bin, b.alignability_by_bin)
    # a video none of whose captions the sample can hold adds an empty share
    none = stats(pool._replace(run_keys=np.zeros(calibration.SAMPLE_SIZE, np.uint64)))
    assert all(len(s.keys) == len(s.decoy_keys) == 0 and s.on_prob.shape[0] == 0 for s in none)
    for f, g in zip(calibration.merge(bounded + none), calibration.merge(bounded)):
        np.testing.assert_array_equal(f, g)


def test_the_sample_bound_does_not_depend_on_order_or_repeats():
    videos = make_corpus(5, 3, SMALL)
    pools = [calibration.pool_candidates(v.video_id, v.caption_emb) for v in videos]
    keys = np.sort(np.concatenate([calibration.sample_keys(v.video_id, len(v.texts)) for v in videos]))
    for parts in (pools, pools[::-1], pools + pools[1:3]):
        np.testing.assert_array_equal(calibration.merge_pools(parts).run_keys, keys[:calibration.SAMPLE_SIZE])


def test_decoys_come_from_other_videos():
    videos = make_corpus(3, 3, SMALL)
    pool = calibration.merge_pools([calibration.pool_candidates(v.video_id, v.caption_emb) for v in videos])
    mine = videos[0]
    decoys = calibration.decoys_for(pool, mine.video_id, len(mine.texts), SMALL.dim)
    own = {tuple(np.round(e, 5)) for e in mine.caption_emb.astype(np.float32)}
    assert decoys.shape == (len(mine.texts), SMALL.dim)
    assert not any(tuple(np.round(d, 5)) in own for d in decoys)
    lone = calibration.merge_pools([calibration.pool_candidates(mine.video_id, mine.caption_emb)])
    assert calibration.decoys_for(lone, mine.video_id, 3, SMALL.dim) is None


def test_no_visual_signal_drops_every_caption_and_signal_keeps_the_visible_ones():
    blind = make_corpus(12, 5, WorldParams(visual_signal=False))
    merged = calibration.merge(_run_stats(blind))
    calib = calibration.estimate(merged, 60.0)
    assert np.all(calib.alignability(calibration.timing.prior_llr(merged.glr, merged.locus, calib.prior)) < 0.5)
    assert np.all(calib.in_window(merged.llr) < 0.5)
    assert abs(calib.prior.mu_s) < 1.0
    seen = make_corpus(12, 5, WorldParams())
    merged = calibration.merge(_run_stats(seen))
    calib = calibration.estimate(merged, 60.0)
    assert calib.alignability(calibration.timing.prior_llr(merged.glr, merged.locus, calib.prior)).max() > 0.6
    assert calib.in_window(merged.llr).max() > 0.6
    assert 0.1 < calib.visible_share < 0.6


def test_alignability_is_monotone_in_the_evidence():
    rng = np.random.default_rng(0)
    real = np.bincount(calibration.bin_of(np.concatenate([rng.normal(0, 1, 700), rng.normal(20, 5, 300)])),
                       minlength=calibration.N_BINS)
    decoy = np.bincount(calibration.bin_of(rng.normal(0, 1, 1000)), minlength=calibration.N_BINS)
    table = calibration.alignability_table(real, decoy)
    assert np.all(np.diff(table) >= 0)
    assert table[calibration.bin_of(np.array([0.0]))][0] < 0.1
    assert table[calibration.bin_of(np.array([20.0]))][0] > 0.9


def test_describe_says_who_leads():
    calib = calibration.RunCalibration(calibration.timing.OffsetPrior(2.5, 8.0, 0.25, 60.0),
                                       np.zeros(calibration.N_BINS), 10, 10, 0.3, np.zeros(calibration.N_BINS))
    assert calib.describe().startswith("narration leads the action by 2.5 s, spread 8.0 s, 25% outliers")
    assert calib.to_dict()["offset_mu_s"] == 2.5
