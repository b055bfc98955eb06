"""models.losses: weighted InfoNCE normalisation and stop-gradient, Sinkhorn marginals against POT,
Norton's soft targets and the video-paragraph OT loss (DESIGN §6, §8: invariants for the math)."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from models import losses as L

B, D = 8, 16
SCALE = torch.tensor(14.0)


def _emb(seed: int, b: int = B, d: int = D, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, d, generator=g)
    txt = img + 2.0 * torch.randn(b, d, generator=g)  # noisy pairs, so the loss is not trivial
    return img.requires_grad_(requires_grad), txt.requires_grad_(requires_grad)


def _plain_clip(img, txt, scale):
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.arange(img.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _per_pair_terms(img, txt, scale):
    """l_i = (l_i^{i2t} + l_i^{t2i}) / 2 from explicit logsumexp, (B,)."""
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    diag = torch.diagonal(logits)
    i2t = torch.logsumexp(logits, dim=1) - diag
    t2i = torch.logsumexp(logits, dim=0) - diag
    return (i2t + t2i) / 2


# ---------------------------------------------------------------------------------------------
# weighted_info_nce
# ---------------------------------------------------------------------------------------------

def test_weighted_info_nce_unit_weights_is_plain_clip():
    img, txt = _emb(0)
    ref = _plain_clip(img, txt, SCALE)
    assert ref.item() > 0.1
    got_none = L.weighted_info_nce(img, txt, None, SCALE)
    got_ones = L.weighted_info_nce(img, txt, torch.ones(B), SCALE)
    assert got_none.dtype == torch.float32 and got_none.shape == ()
    torch.testing.assert_close(got_none, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_ones, ref, atol=1e-6, rtol=0)
    # a float scale works too and gives the same value
    torch.testing.assert_close(L.weighted_info_nce(img, txt, None, 14.0), ref, atol=1e-6, rtol=0)


def test_weighted_info_nce_scale_invariant_and_zero_weight_formula():
    img, txt = _emb(1)
    w = torch.rand(B, generator=torch.Generator().manual_seed(5)) + 0.1
    base = L.weighted_info_nce(img, txt, w, SCALE)
    torch.testing.assert_close(L.weighted_info_nce(img, txt, 7.5 * w, SCALE), base, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(L.weighted_info_nce(img, txt, 1e-3 * w, SCALE), base, atol=1e-6, rtol=1e-6)
    # weights matter (the test above could not pass trivially)
    assert abs(base.item() - _plain_clip(img, txt, SCALE).item()) > 1e-3

    k = 3
    w0 = w.clone()
    w0[k] = 0.0
    terms = _per_pair_terms(img, txt, SCALE)   # pair k stays in the batch as a negative
    keep = torch.arange(B) != k
    expected = (w0[keep] * terms[keep]).sum() / w0[keep].sum()
    torch.testing.assert_close(L.weighted_info_nce(img, txt, w0, SCALE), expected, atol=1e-6, rtol=0)
    # dropping pair k from the batch instead would be different (it is still a negative)
    dropped = L.weighted_info_nce(img[keep], txt[keep], w0[keep], SCALE)
    assert abs(dropped.item() - expected.item()) > 1e-4


def test_weighted_info_nce_stop_gradient_on_weights():
    img, txt = _emb(2, requires_grad=True)
    w = (torch.rand(B, generator=torch.Generator().manual_seed(0)) + 0.1).requires_grad_(True)
    scale = torch.tensor(10.0, requires_grad=True)
    loss = L.weighted_info_nce(img, txt, w, scale)
    loss.backward()
    assert w.grad is None or torch.count_nonzero(w.grad) == 0
    for t in (img, txt):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert scale.grad is not None and scale.grad.abs() > 0


def test_weighted_info_nce_all_zero_weights():
    img, txt = _emb(3, requires_grad=True)
    loss = L.weighted_info_nce(img, txt, torch.zeros(B), SCALE)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.isfinite(img.grad).all() and torch.count_nonzero(img.grad) == 0
    assert torch.isfinite(txt.grad).all() and torch.count_nonzero(txt.grad) == 0


@pytest.mark.parametrize("bad", [
    torch.tensor([1.0, -0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    torch.tensor([1.0, float("nan"), 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    torch.tensor([1.0, float("inf"), 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    torch.ones(B - 1),
    torch.ones(B, 1),
])
def test_weighted_info_nce_rejects_bad_weights(bad):
    img, txt = _emb(4)
    with pytest.raises(ValueError, match="weights"):
        L.weighted_info_nce(img, txt, bad, SCALE)


def test_weighted_info_nce_rejects_bad_shapes():
    img, txt = _emb(4)
    with pytest.raises(ValueError):
        L.weighted_info_nce(img, txt[:-1], None, SCALE)


# ---------------------------------------------------------------------------------------------
# sinkhorn_plan / sinkhorn_bucket_plan
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,m,eps", [(5, 7, 0.1), (9, 4, 0.5), (6, 6, 1.0)])
def test_sinkhorn_plan_marginals_and_pot(n, m, eps):
    g = torch.Generator().manual_seed(n * 100 + m)
    score = torch.rand(n, m, generator=g) * 2 - 1          # cosine-like range
    score.requires_grad_(True)
    plan = L.sinkhorn_plan(score, eps, n_iter=300)
    assert plan.shape == (n, m) and plan.dtype == torch.float32 and not plan.requires_grad
    torch.testing.assert_close(plan.sum(1), torch.full((n,), 1 / n), atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((m,), 1 / m), atol=1e-4, rtol=0)
    s = score.detach().double().numpy()
    ref = ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), -s, reg=eps,
                      numItermax=20000, stopThr=1e-13)
    np.testing.assert_allclose(plan.double().numpy(), ref, atol=1e-5, rtol=0)
    # the plan prefers high scores: it is not the independent coupling
    assert np.abs(ref - 1 / (n * m)).max() > 1e-3


def test_sinkhorn_plan_default_iterations_marginals():
    score = torch.rand(12, 10, generator=torch.Generator().manual_seed(9)) * 2 - 1
    plan = L.sinkhorn_plan(score, 0.1)
    torch.testing.assert_close(plan.sum(1), torch.full((12,), 1 / 12), atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((10,), 1 / 10), atol=1e-4, rtol=0)


def test_sinkhorn_rejects_bad_arguments():
    with pytest.raises(ValueError):
        L.sinkhorn_plan(torch.zeros(3, 3), 0.0)
    with pytest.raises(ValueError):
        L.sinkhorn_plan(torch.zeros(3, 3), 0.1, n_iter=0)
    with pytest.raises(ValueError):
        L.sinkhorn_plan(torch.zeros(3), 0.1)


@pytest.mark.parametrize("n,m", [(5, 8), (7, 3)])
def test_bucket_plan_marginals_as_documented_and_pot(n, m):
    score = torch.rand(n, m, generator=torch.Generator().manual_seed(n + m)) * 2 - 1
    p, eps = 0.2, 0.1
    plan = L.sinkhorn_bucket_plan(score, p, eps, n_iter=500)
    assert plan.shape == (n + 1, m + 1)
    # documented: a = [1]*n + [m], b = [1]*m + [n], each / (n + m)
    a = np.array([1.0] * n + [m]) / (n + m)
    b = np.array([1.0] * m + [n]) / (n + m)
    np.testing.assert_allclose(plan.sum(1).double().numpy(), a, atol=1e-4)
    np.testing.assert_allclose(plan.sum(0).double().numpy(), b, atol=1e-4)
    ma, mb = L.bucket_marginals(n, m)
    np.testing.assert_allclose(ma.numpy(), a, atol=1e-7)
    np.testing.assert_allclose(mb.numpy(), b, atol=1e-7)
    aug = np.full((n + 1, m + 1), p)
    aug[:n, :m] = score.double().numpy()
    ref = ot.sinkhorn(a, b, -aug, reg=eps, numItermax=20000, stopThr=1e-13)
    np.testing.assert_allclose(plan.double().numpy(), ref, atol=1e-5, rtol=0)


def test_bucket_takes_unalignable_row():
    """A row whose scores are all far below p sends (almost) all its mass to the bucket."""
    n = m = 5
    score = torch.eye(n) * 0.9
    score[2] = -0.8
    plan = L.sinkhorn_bucket_plan(score, 0.3, 0.05, n_iter=200) * (n + m)
    assert plan[2, m] > 0.9          # unalignable row -> bucket
    assert plan[0, m] < 0.1          # aligned rows stay


# ---------------------------------------------------------------------------------------------
# Norton clip-level loss
# ---------------------------------------------------------------------------------------------

def test_norton_targets_rows_sum_to_one_and_alpha_zero_identity():
    img, txt = _emb(6)
    cos = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    for eps in (1.0, 0.1):
        t_i2t, t_t2i = L.norton_targets(cos, eps=eps, alpha=0.3, n_iter=300)
        torch.testing.assert_close(t_i2t.sum(1), torch.ones(B), atol=1e-6, rtol=0)
        torch.testing.assert_close(t_t2i.sum(1), torch.ones(B), atol=1e-6, rtol=0)
        assert (t_i2t >= 0).all() and (t_t2i >= 0).all()
        # off-diagonal mass is alpha * Q rescaled; Q rows ~ B * plan
        q = L.sinkhorn_plan(cos, eps, n_iter=300) * B
        torch.testing.assert_close(t_i2t, 0.7 * torch.eye(B) + 0.3 * q, atol=1e-4, rtol=0)
        torch.testing.assert_close(t_t2i, 0.7 * torch.eye(B) + 0.3 * q.T, atol=1e-4, rtol=0)
    # rows sum to 1 exactly even when Sinkhorn has not converged (explicit renormalisation)
    t_i2t, t_t2i = L.norton_targets(cos, eps=0.02, alpha=0.5, n_iter=2)
    torch.testing.assert_close(t_i2t.sum(1), torch.ones(B), atol=1e-6, rtol=0)
    torch.testing.assert_close(t_t2i.sum(1), torch.ones(B), atol=1e-6, rtol=0)
    t_i2t, t_t2i = L.norton_targets(cos, eps=1.0, alpha=0.0)
    assert torch.equal(t_i2t, torch.eye(B)) and torch.equal(t_t2i, torch.eye(B))


def test_norton_targets_credit_faulty_negative():
    """A duplicated caption (a false negative) gets more target mass than the others."""
    img, txt = _emb(7)
    txt = txt.clone()
    txt[1] = txt[0]
    cos = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    t_i2t, _ = L.norton_targets(cos, eps=0.1, alpha=0.3)
    assert t_i2t[0, 1] > t_i2t[0, 2:].max()


def test_norton_clip_loss_alpha_zero_is_plain_and_formula():
    img, txt = _emb(8, requires_grad=True)
    ref = _plain_clip(img, txt, SCALE)
    torch.testing.assert_close(L.norton_clip_loss(img, txt, SCALE, alpha=0.0), ref, atol=1e-6, rtol=0)
    w = torch.rand(B, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(L.norton_clip_loss(img, txt, SCALE, alpha=0.0, weights=w),
                               L.weighted_info_nce(img, txt, w, SCALE), atol=1e-6, rtol=0)

    loss = L.norton_clip_loss(img, txt, SCALE, eps=0.1, alpha=0.3, weights=w)
    x, y = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    cos = (x @ y.T).detach()
    t_i2t, t_t2i = L.norton_targets(cos, eps=0.1, alpha=0.3)
    logits = SCALE * x @ y.T
    i2t = -(t_i2t * F.log_softmax(logits, 1)).sum(1)
    t2i = -(t_t2i * F.log_softmax(logits.T, 1)).sum(1)
    expected = (w * (i2t + t2i) / 2).sum() / w.sum()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    assert abs(loss.item() - L.weighted_info_nce(img, txt, w, SCALE).item()) > 1e-3
    loss.backward()
    assert img.grad.abs().sum() > 0 and torch.isfinite(img.grad).all()
    assert L.norton_clip_loss(img, txt, SCALE, weights=torch.zeros(B)).item() == 0.0


# ---------------------------------------------------------------------------------------------
# video-paragraph OT loss
# ---------------------------------------------------------------------------------------------

def _videos(seed: int, sizes, d: int = D):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g) for n in sizes]


def test_video_paragraph_aligned_beats_shuffled_and_gradients():
    clips = [c.requires_grad_(True) for c in _videos(10, [6, 6, 6, 6])]
    g = torch.Generator().manual_seed(11)
    aligned = [c.detach() + 0.1 * torch.randn(c.shape, generator=g) for c in clips]
    shuffled = aligned[1:] + aligned[:1]
    for p in (None, 0.1):
        good = L.video_paragraph_ot_loss(clips, aligned, SCALE, prompt_value=p)
        bad = L.video_paragraph_ot_loss(clips, shuffled, SCALE, prompt_value=p)
        assert good.shape == () and torch.isfinite(good)
        assert good.item() < 0.1 < bad.item(), (p, good.item(), bad.item())
    caps = [c.clone().requires_grad_(True) for c in aligned]
    loss = L.video_paragraph_ot_loss(clips, caps, SCALE, prompt_value=0.1)
    loss = loss + L.video_paragraph_ot_loss(clips, caps[1:] + caps[:1], SCALE)
    loss.backward()
    for t in clips + caps:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_video_paragraph_invariant_to_caption_order():
    """OT with uniform (or bucket) marginals is permutation-equivariant: reordering a video's
    captions leaves every <P, S> and hence the loss unchanged (unlike a diagonal alignment)."""
    clips = _videos(12, [5, 5, 5])
    g = torch.Generator().manual_seed(13)
    caps = [c + 0.3 * torch.randn(c.shape, generator=g) for c in clips]
    perm = [c[torch.randperm(c.shape[0], generator=g)] for c in caps]
    for p in (None, 0.0):
        torch.testing.assert_close(L.video_paragraph_ot_loss(clips, perm, SCALE, prompt_value=p),
                                   L.video_paragraph_ot_loss(clips, caps, SCALE, prompt_value=p),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("prompt_value", [None, 0.05])
def test_video_paragraph_matches_independent_pot(prompt_value):
    """Ragged videos (different n_v, m_v) against a per-pair POT computation in float64."""
    clip_sizes, cap_sizes = [4, 6, 4], [5, 3, 7]
    clips = [c.double().requires_grad_(True) for c in _videos(14, clip_sizes)]
    caps = [c.double().requires_grad_(True) for c in _videos(15, cap_sizes)]
    eps, scale = 0.2, 9.0
    got = L.video_paragraph_ot_loss(clips, caps, torch.tensor(scale), eps=eps,
                                    prompt_value=prompt_value, n_iter=1000)
    assert got.dtype == torch.float64
    got_grads = torch.autograd.grad(got, clips + caps)
    V = len(clips)
    score = [[None] * V for _ in range(V)]
    for a in range(V):
        for b in range(V):
            sim = F.normalize(clips[a], dim=-1) @ F.normalize(caps[b], dim=-1).T
            s = sim.detach().numpy()
            n, m = s.shape
            if prompt_value is None:
                plan = ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), -s, reg=eps,
                                   numItermax=20000, stopThr=1e-13)
            else:
                aug = np.full((n + 1, m + 1), prompt_value)
                aug[:n, :m] = s
                ra = np.array([1.0] * n + [m]) / (n + m)
                rb = np.array([1.0] * m + [n]) / (n + m)
                plan = ot.sinkhorn(ra, rb, -aug, reg=eps, numItermax=20000, stopThr=1e-13)[:n, :m]
            plan = torch.from_numpy(plan / plan.sum())   # a constant: no gradient through the plan
            score[a][b] = (plan * sim).sum()
    logits = scale * torch.stack([torch.stack(row) for row in score])
    target = torch.arange(V)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert abs(got.item() - expected.item()) < 1e-6
    for g_got, g_ref in zip(got_grads, torch.autograd.grad(expected, clips + caps)):
        torch.testing.assert_close(g_got, g_ref, atol=1e-6, rtol=1e-5)


def test_video_paragraph_rejects_mismatched_batches():
    clips = _videos(16, [3, 3])
    with pytest.raises(ValueError):
        L.video_paragraph_ot_loss(clips, clips[:1], SCALE)
    with pytest.raises(ValueError):
        L.video_paragraph_ot_loss(clips, [clips[0], torch.randn(3, D + 1)], SCALE)
