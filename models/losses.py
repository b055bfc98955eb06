"""Training losses for noisy video-text data: Cali-NCE-style weighted InfoNCE and Norton's
optimal-transport losses (DESIGN §6). Small pure torch functions, differentiable, float32 friendly,
deterministic (no sampling, no atomics-dependent ops).

Notation: ``B`` pairs in a batch, ``D`` embedding width, ``s`` = ``logit_scale`` (the multiplier,
already ``exp``'d, e.g. ``model.logit_scale.exp()``; a float or a 0-d tensor, gradients flow into it).
Embeddings are L2-normalised inside every loss, so ``img @ txt.T`` is a cosine matrix.

* :func:`weighted_info_nce` -- symmetric CLIP InfoNCE with a detached per-pair confidence weight
  (Cali-NCE, Zhao et al., CVPRW 2023; the weight is our own definition, DESIGN §6).
* :func:`sinkhorn_plan`, :func:`sinkhorn_bucket_plan`, :func:`bucket_marginals` -- entropic OT
  plans, log-domain Sinkhorn, computed under ``no_grad`` on detached scores.
* :func:`norton_targets`, :func:`norton_clip_loss` -- Norton's clip-caption loss with OT soft
  targets (faulty-negative exploitation; Lin et al., ICLR 2024).
* :func:`video_paragraph_ot_loss` -- Norton's video-paragraph contrastive loss, OT alignment
  score with the optional alignable prompt bucket.

Both directions of every symmetric loss are *averaged* (``(i2t + t2i) / 2``, the CLIP
convention); Norton's official code *sums* them, i.e. its losses are 2x ours.

torch is imported at module level: importing ``models`` stays light because ``models/__init__``
does not import this module; this module never imports ``apache_beam`` or ``pipeline``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

Scale = Union[float, torch.Tensor]

__all__ = [
    "weighted_info_nce",
    "sinkhorn_plan",
    "bucket_marginals",
    "sinkhorn_bucket_plan",
    "norton_targets",
    "norton_clip_loss",
    "video_paragraph_ot_loss",
]


# ---------------------------------------------------------------------------------------------
# Validation and small helpers
# ---------------------------------------------------------------------------------------------

def _check_pair(image_emb: torch.Tensor, text_emb: torch.Tensor) -> int:
    if not (isinstance(image_emb, torch.Tensor) and isinstance(text_emb, torch.Tensor)):
        raise TypeError("image_emb and text_emb must be torch tensors")
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must both be (B, D) with the same shape; got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    if image_emb.shape[0] < 1:
        raise ValueError("empty batch: B must be >= 1")
    return image_emb.shape[0]


def _check_weights(weights, batch: int, ref: torch.Tensor) -> Optional[torch.Tensor]:
    """``weights: (B,)`` -> detached tensor on ``ref``'s device/dtype; None stays None."""
    if weights is None:
        return None
    w = torch.as_tensor(weights)
    if w.shape != (batch,):
        raise ValueError(f"weights must have shape ({batch},); got {tuple(w.shape)}")
    w = w.detach().to(device=ref.device, dtype=ref.dtype)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weights must be finite")
    if bool((w < 0).any()):
        raise ValueError("weights must be non-negative")
    return w


def _check_eps_iter(eps: float, n_iter: int) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite float > 0; got {eps!r}")
    if not (isinstance(n_iter, int) and n_iter >= 1):
        raise ValueError(f"n_iter must be an int >= 1; got {n_iter!r}")


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _weighted_pair_mean(loss_i2t: torch.Tensor, loss_t2i: torch.Tensor,
                        w: Optional[torch.Tensor]) -> torch.Tensor:
    """``loss_*: (B,)`` per-pair terms -> scalar ``sum_i w_i (l_i2t + l_t2i) / 2 / sum_i w_i``.

    ``w`` None: the plain mean over pairs. ``sum w == 0``: exactly 0 (the numerator is a sum of
    ``0 * finite``), with a graph and zero gradients -- no branch, no NaN.
    """
    per_pair = (loss_i2t + loss_t2i) / 2
    if w is None:
        return per_pair.mean()
    total = w.sum()
    total = torch.where(total > 0, total, torch.ones_like(total))
    return (w * per_pair).sum() / total


def _scale(logit_scale: Scale, ref: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(logit_scale, device=ref.device)
    if s.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar; got shape {tuple(s.shape)}")
    return s.reshape(()).to(ref.dtype)


# ---------------------------------------------------------------------------------------------
# 1. Weighted (Cali-NCE style) InfoNCE
# ---------------------------------------------------------------------------------------------

def weighted_info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor,
                      weights: Optional[torch.Tensor], logit_scale: Scale) -> torch.Tensor:
    """Symmetric CLIP InfoNCE with a per-pair confidence weight (Cali-NCE style).

    Shapes: ``image_emb: (B, D)``, ``text_emb: (B, D)``, ``weights: (B,)`` or None,
    ``logit_scale``: scalar multiplier ``s`` (already exp'd). Returns a 0-d tensor.

    With ``x_i``, ``y_i`` the L2-normalised rows and logits ``L = s * X @ Y.T`` (B x B),

        l_i^{i2t} = -log softmax_j(L[i, :])[i]       (image i retrieves text i)
        l_i^{t2i} = -log softmax_j(L[:, i])[i]       (text i retrieves image i)
        loss      = sum_i w_i * (l_i^{i2t} + l_i^{t2i}) / 2 / sum_i w_i

    * ``weights=None`` means all ones: exactly plain CLIP InfoNCE, the mean over pairs of
      ``(l^{i2t} + l^{t2i}) / 2`` (= ``(CE(L, diag) + CE(L.T, diag)) / 2``).
    * The weights are detached (stop-gradient): no gradient ever reaches them.
    * Loss is invariant to scaling all weights by a positive constant.
    * A zero-weight pair contributes no term of its own, but its image and text stay in the
      batch as negatives in every other pair's softmax (the logits are always B x B).
    * ``sum_i w_i == 0``: the loss is exactly 0 (a tensor with a graph, zero gradients).

    Validation: weights must have shape (B,), be finite and non-negative (ValueError otherwise;
    on CUDA this costs one host sync).
    """
    batch = _check_pair(image_emb, text_emb)
    x = F.normalize(image_emb, dim=-1)
    y = F.normalize(text_emb, dim=-1)
    w = _check_weights(weights, batch, x)
    logits = _scale(logit_scale, x) * (x @ y.T)
    target = torch.arange(batch, device=x.device)
    loss_i2t = F.cross_entropy(logits, target, reduction="none")
    loss_t2i = F.cross_entropy(logits.T, target, reduction="none")
    return _weighted_pair_mean(loss_i2t, loss_t2i, w)


# ---------------------------------------------------------------------------------------------
# 2. Sinkhorn
# ---------------------------------------------------------------------------------------------

def _log_sinkhorn(score: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor,
                  eps: float, n_iter: int) -> torch.Tensor:
    """Batched log-domain Sinkhorn. ``score: (..., n, m)``, ``log_a: (n,)``, ``log_b: (m,)``.

    Maximises ``<P, score> + eps H(P)`` s.t. ``P 1 = a``, ``P.T 1 = b``: potentials ``f, g``
    start at 0 and alternate (in units of eps)

        f = log a - LSE_j(score / eps + g),    g = log b - LSE_i(score / eps + f)

    for ``n_iter`` rounds; ``P = exp(score / eps + f + g)``. Ends on a column update, so the
    column marginals are exact and the row marginals are within the convergence tolerance.
    """
    z = score / eps
    f = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    g = torch.zeros(z.shape[:-2] + z.shape[-1:], dtype=z.dtype, device=z.device)
    for _ in range(n_iter):
        f = log_a - torch.logsumexp(z + g.unsqueeze(-2), dim=-1)
        g = log_b - torch.logsumexp(z + f.unsqueeze(-1), dim=-2)
    return torch.exp(z + f.unsqueeze(-1) + g.unsqueeze(-2))


def sinkhorn_plan(score: torch.Tensor, eps: float, n_iter: int = 50) -> torch.Tensor:
    """Entropic OT plan with uniform marginals. ``score: (n, m)`` (larger = better) -> ``(n, m)``.

    Solves ``max_P <P, score> + eps H(P)`` s.t. rows sum to ``1/n`` and columns to ``1/m``
    (total mass 1) by :func:`_log_sinkhorn` -- equivalently POT's ``ot.sinkhorn(a, b, -score,
    reg=eps)``. Computed under ``no_grad`` on ``score.detach()``: the plan is a constant for
    autograd. Output dtype is float64 for float64 input, float32 otherwise.
    """
    _check_eps_iter(eps, n_iter)
    if score.ndim != 2 or min(score.shape) < 1:
        raise ValueError(f"score must be a non-empty (n, m) matrix; got {tuple(score.shape)}")
    with torch.no_grad():
        s = score.detach().to(_work_dtype(score))
        n, m = s.shape
        log_a = torch.full((n,), -math.log(n), dtype=s.dtype, device=s.device)
        log_b = torch.full((m,), -math.log(m), dtype=s.dtype, device=s.device)
        return _log_sinkhorn(s, log_a, log_b, eps, n_iter)


def bucket_marginals(n: int, m: int, dtype: torch.dtype = torch.float32,
                     device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Norton / SuperGlue "dustbin" marginals for an ``(n, m)`` score with a prompt bucket.

    ``a: (n + 1,) = [1, ..., 1, m] / (n + m)``, ``b: (m + 1,) = [1, ..., 1, n] / (n + m)``;
    each sums to 1. Every real row / column has mass ``1 / (n + m)``; the extra row can absorb
    all m real columns and the extra column all n real rows.
    """
    a = torch.ones(n + 1, dtype=dtype, device=device)
    a[-1] = m
    b = torch.ones(m + 1, dtype=dtype, device=device)
    b[-1] = n
    return a / (n + m), b / (n + m)


def sinkhorn_bucket_plan(score: torch.Tensor, prompt_value: float, eps: float,
                         n_iter: int = 50) -> torch.Tensor:
    """Norton's OT with the alignable prompt bucket. ``score: (..., n, m)`` -> ``(..., n+1, m+1)``.

    Augments ``score`` with one extra row and one extra column, every added cell equal to
    ``prompt_value`` (same units as ``score``), and solves entropic OT (eps, log domain) with the
    :func:`bucket_marginals` ``a``, ``b``: rows of the result sum to ``a``, columns to ``b``
    (total mass 1). Row ``i``'s mass in the last column is what it leaves unaligned. Under
    ``no_grad`` on detached input; leading batch dimensions share ``n, m``.
    """
    _check_eps_iter(eps, n_iter)
    if score.ndim < 2 or min(score.shape[-2:]) < 1:
        raise ValueError(f"score must be a non-empty (..., n, m) tensor; got {tuple(score.shape)}")
    if not math.isfinite(float(prompt_value)):
        raise ValueError(f"prompt_value must be finite; got {prompt_value!r}")
    with torch.no_grad():
        s = score.detach().to(_work_dtype(score))
        n, m = s.shape[-2:]
        aug = torch.full(s.shape[:-2] + (n + 1, m + 1), float(prompt_value),
                         dtype=s.dtype, device=s.device)
        aug[..., :n, :m] = s
        a, b = bucket_marginals(n, m, dtype=s.dtype, device=s.device)
        return _log_sinkhorn(aug, a.log(), b.log(), eps, n_iter)


# ---------------------------------------------------------------------------------------------
# 3. Norton clip-level loss with OT soft targets
# ---------------------------------------------------------------------------------------------

def norton_targets(score: torch.Tensor, eps: float = 1.0, alpha: float = 0.3,
                   n_iter: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Norton's soft targets from a square ``score: (B, B)`` -> ``(T_i2t, T_t2i)``, each (B, B).

    ``Q = sinkhorn_plan(score, eps)`` (uniform marginals), then

        Q_i2t = Q / Q.sum(1)            (rows sum to 1; = B * Q up to Sinkhorn tolerance)
        Q_t2i = (Q / Q.sum(0)).T        (the transposed plan rescaled by columns)
        T_i2t = (1 - alpha) I + alpha Q_i2t,   T_t2i = (1 - alpha) I + alpha Q_t2i

    Every row of both targets sums to 1; ``alpha = 0`` gives exactly the identity. Constants
    for autograd (no gradient).
    """
    if score.ndim != 2 or score.shape[0] != score.shape[1]:
        raise ValueError(f"score must be square (B, B); got {tuple(score.shape)}")
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha!r}")
    q = sinkhorn_plan(score, eps, n_iter)
    eye = torch.eye(q.shape[0], dtype=q.dtype, device=q.device)
    q_i2t = q / q.sum(dim=1, keepdim=True)
    q_t2i = (q / q.sum(dim=0, keepdim=True)).T
    return (1 - alpha) * eye + alpha * q_i2t, (1 - alpha) * eye + alpha * q_t2i


def norton_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: Scale,
                     eps: float = 1.0, alpha: float = 0.3,
                     weights: Optional[torch.Tensor] = None, n_iter: int = 50) -> torch.Tensor:
    """Norton's clip-caption contrastive loss with OT soft targets ("faulty negative
    exploitation", Lin et al., ICLR 2024). ``image_emb, text_emb: (B, D)``, ``weights: (B,)``
    or None, ``logit_scale``: scalar multiplier. Returns a 0-d tensor.

    With ``C = X @ Y.T`` the cosine matrix of the L2-normalised rows, ``L = s * C`` and
    ``(T_i2t, T_t2i) = norton_targets(C, eps, alpha)`` (computed without gradient):

        l_i^{i2t} = -sum_j T_i2t[i, j] log softmax(L[i, :])[j]
        l_i^{t2i} = -sum_j T_t2i[i, j] log softmax(L[:, i])[j]
        loss      = sum_i w_i (l_i^{i2t} + l_i^{t2i}) / 2 / sum_i w_i     (as weighted_info_nce)

    ``alpha = 0`` is exactly :func:`weighted_info_nce`. Differences from the official code,
    on purpose: the OT runs on the cosine matrix (Norton: on the un-normalised dot-product
    logits, eps = 1; on cosines in [-1, 1] eps = 1 gives a smooth, near-uniform Q -- pass a
    smaller eps for peakier targets), and the two directions are averaged, not summed.
    """
    batch = _check_pair(image_emb, text_emb)
    x = F.normalize(image_emb, dim=-1)
    y = F.normalize(text_emb, dim=-1)
    w = _check_weights(weights, batch, x)
    cos = x @ y.T
    t_i2t, t_t2i = norton_targets(cos, eps, alpha, n_iter)
    logits = _scale(logit_scale, x) * cos
    loss_i2t = -(t_i2t.to(x.dtype) * F.log_softmax(logits, dim=1)).sum(dim=1)
    loss_t2i = -(t_t2i.to(x.dtype) * F.log_softmax(logits.T, dim=1)).sum(dim=1)
    return _weighted_pair_mean(loss_i2t, loss_t2i, w)


# ---------------------------------------------------------------------------------------------
# 4. Norton video-paragraph loss
# ---------------------------------------------------------------------------------------------

def _alignment_plans(sims: torch.Tensor, eps: float, prompt_value: Optional[float],
                     n_iter: int) -> torch.Tensor:
    """``sims: (k, n, m)`` -> real-cell plans ``(k, n, m)``, each with total mass 1 (no grad)."""
    if prompt_value is None:
        with torch.no_grad():
            s = sims.detach().to(_work_dtype(sims))
            n, m = s.shape[-2:]
            log_a = torch.full((n,), -math.log(n), dtype=s.dtype, device=s.device)
            log_b = torch.full((m,), -math.log(m), dtype=s.dtype, device=s.device)
            plan = _log_sinkhorn(s, log_a, log_b, eps, n_iter)
    else:
        n, m = sims.shape[-2:]
        plan = sinkhorn_bucket_plan(sims, prompt_value, eps, n_iter)[..., :n, :m]
    mass = plan.sum(dim=(-2, -1), keepdim=True)
    return plan / mass.clamp_min(torch.finfo(plan.dtype).tiny)


def video_paragraph_ot_loss(clip_emb: Sequence[torch.Tensor], caption_emb: Sequence[torch.Tensor],
                            logit_scale: Scale, eps: float = 0.1,
                            prompt_value: Optional[float] = None, n_iter: int = 50) -> torch.Tensor:
    """Norton's video-paragraph contrastive loss for a batch of V videos. Returns a 0-d tensor.

    ``clip_emb[v]: (n_v, D)`` clip embeddings of video v, ``caption_emb[v]: (m_v, D)`` its
    caption (paragraph) embeddings; sizes may differ between videos, D may not.

    For every pair (video a, paragraph b): ``S_ab = X_a @ Y_b.T`` (n_a, m_b), the cosine matrix
    of the L2-normalised rows, and ``P_ab`` its entropic OT plan (eps, ``n_iter`` log-domain
    Sinkhorn iterations, computed without gradient):

    * ``prompt_value`` None: uniform marginals ``1/n_a``, ``1/m_b`` (:func:`sinkhorn_plan`).
    * ``prompt_value = p``: Norton's alignable prompt bucket -- ``S_ab`` gets an extra row and
      column of value p, solved with the dustbin marginals of :func:`bucket_marginals`
      (``a = [1]*n + [m]``, ``b = [1]*m + [n]``, each / (n + m)); the bucket row and column are
      then dropped. p is in cosine units (Norton: a low percentile, e.g. the 30th, of the
      diagonal clip-caption similarities).

    The real part of the plan is renormalised to total mass 1 (Norton also equalises the mass
    of every pair, to its sequence length 8 -- a constant factor on ``s``), so the score

        score[a, b] = <P_ab, S_ab> = sum_ij P_ab[i, j] S_ab[i, j]     in [-1, 1]

    is a plan-weighted mean cosine; the gradient flows through ``S_ab`` only. Then, with
    ``L = s * score`` (V x V, diagonal = positives),

        loss = (CE(L, diag) + CE(L.T, diag)) / 2        (Norton sums the two terms).

    Pairs that share ``(n_a, m_b)`` are solved in one batched Sinkhorn call. Cost: V^2 plans.
    """
    n_videos = len(clip_emb)
    if n_videos < 1 or len(caption_emb) != n_videos:
        raise ValueError(f"need V >= 1 videos and as many paragraphs; got {len(clip_emb)} clip "
                         f"sets and {len(caption_emb)} caption sets")
    _check_eps_iter(eps, n_iter)
    dim = clip_emb[0].shape[-1]
    for name, seq in (("clip_emb", clip_emb), ("caption_emb", caption_emb)):
        for v, t in enumerate(seq):
            if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] < 1 or t.shape[1] != dim:
                raise ValueError(f"{name}[{v}] must be a non-empty (n, {dim}) tensor; got "
                                 f"{tuple(getattr(t, 'shape', ()))}")
    clips = [F.normalize(t, dim=-1) for t in clip_emb]
    caps = [F.normalize(t, dim=-1) for t in caption_emb]

    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a in range(n_videos):
        for b in range(n_videos):
            groups.setdefault((clips[a].shape[0], caps[b].shape[0]), []).append((a, b))
    flat: list[Optional[torch.Tensor]] = [None] * (n_videos * n_videos)
    for pairs in groups.values():  # insertion order: deterministic
        sims = torch.stack([clips[a] @ caps[b].T for a, b in pairs])          # (k, n, m)
        plans = _alignment_plans(sims, eps, prompt_value, n_iter).to(sims.dtype)
        scores = (plans * sims).sum(dim=(-2, -1))                              # (k,)
        for (a, b), sc in zip(pairs, scores.unbind(0)):
            flat[a * n_videos + b] = sc
    score = torch.stack(flat).reshape(n_videos, n_videos)
    logits = _scale(logit_scale, score) * score
    target = torch.arange(n_videos, device=score.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
