"""Train the demo's small dual encoder: open_clip ``nccurate-tiny`` on the synthetic pixel world.

``python -m models.train_demo [--out PATH] [--steps N] [--seed S] [--eval-only]``
(every :class:`TrainConfig` field is a flag too, e.g. ``--styles``, ``--lr``, ``--content-share``)
writes ``models/assets/nccurate-demo-tiny.pt`` (a plain fp32 ``state_dict``, 6.9 MB) that
``models.encoder.load_encoder(EncoderSpec(name='nccurate-tiny', pretrained=PATH))`` and
``open_clip.create_model('nccurate-tiny', pretrained=PATH)`` (after
``models.encoder.register_project_configs()``) load, then scores it on the demo's videos.

Shipped asset: ``python -m models.train_demo`` (all defaults: seed 0, 600 steps, 1500 styles),
2-core CPU, torch 2.14.1 (2 threads), open_clip 3.3.0: 3 min 43 s wall in all (frame pool 21 s,
training 182 s, evaluation 11 s); 6,940,905 bytes, md5 2c0b98f1b7651cb6f0c37cfa2cf04d52. A second
run (same command, another ``--out``) gave the same bytes.

**Data: a world the demo never shows.** The demo curates plans ``make_video_plan(i, seed=0)``.
Training frames come from :func:`curation.synth.video.render_frame` with video styles drawn by
``VideoStyle.draw(np.random.default_rng([TRAIN_WORLD_SEED + seed, 0]))`` (``TRAIN_WORLD_SEED``
= 1000): other backgrounds, textures, drifts and jitters than any demo video. Per style
("video") the pool holds ``concepts_per_style`` frames of distinct random concepts and
``background_per_style`` background/distractor frames, each at a random time in [0, 240) s, at
the world's 128x96. The pool is generated once, single-threaded, from that one generator.

**Preprocessing = the pipeline's.** Every frame goes the way a demo frame goes to the model:
RGB -> ``yuv420p`` (what the H.264 file stores) -> one swscale step to 85x64 RGB, bilinear
(``curation.frames.resize_dims(128, 96, 64)``) -> centre crop 64x64 (``curation.frames.center_crop``)
-> ``/255``, normalised with the model's open_clip mean/std (OpenAI's), as
``models.encoder.ClipEncoder.encode_frames`` does. :func:`pipeline_view` makes the swscale call
with PyAV itself (``models`` must not import ``pipeline``); ``tests/models/test_train_demo.py``
checks it is byte-identical to the decoder's ``pipeline.media.pyav.to_rgb``.
Augmentation: Gaussian pixel noise (sigma uniform in [0, ``noise``] grey levels per image), a
stand-in for H.264 quantisation.

**Loss: multi-positive InfoNCE with two "null" targets.** A batch is ``styles_per_batch``
styles x (concept + background frames) plus, per concept frame, one alignable caption of its
concept (a random one of the 16 ``ALIGNABLE_TEMPLATES``) and ``chatter_per_batch`` chatter
sentences. Two learnable unit vectors exist only during training: ``null_text`` and
``null_image``. With ``s = exp(logit_scale)`` (learnable, CLIP init 1/0.07, clamped <= 100):

* image -> text: every frame is a row over columns [alignable texts, chatter texts, null_text];
  a concept frame's positives are the captions of its concept (concepts repeat in a batch:
  multi-positive, ``-log sum_{pos} softmax``), a background frame's positive is ``null_text``;
* text -> image: every text is a row over columns [concept frames, background frames,
  null_image]; an alignable caption's positives are the frames of its concept, a chatter
  sentence's positive is ``null_image``.

Why: the pipeline takes cosine(caption, 1-fps frame), smooths, NCL-normalises and aligns with a
prompt bucket at a per-video quantile of the timestamp-paired similarities. It needs (1) an
alignable caption high on frames of its concept and low on other concepts *of the same video*
(same background: styles are batched whole, so same-style frames are in-batch negatives);
(2) chatter low on every frame, background included, so its best alignment loses to the bucket;
(3) background frames low for every caption. Plain CLIP InfoNCE with chatter/background only as
extra negatives gives them no row of their own, so nothing stops chatter and background from
drifting *towards each other* (neither is ever a negative of the other's row). The null targets
give each a row: background frames are pulled to ``null_text`` and away from every caption,
chatter to ``null_image`` and away from every frame, background included.

Optimiser: AdamW (lr ``lr``, betas (0.9, 0.98), eps 1e-6, weight decay ``weight_decay`` on
matrices only: not on embeddings, biases, norms, logit scale), linear warm-up then cosine decay.
Deterministic given ``--seed`` and the torch thread count: ``torch.manual_seed(seed)`` for the
init and the null vectors, one numpy generator for the pool and one for batch draws.

**The cone: shipped embeddings are CLIP-like, not maximally spread.** Trained to near-zero loss
on a closed world, the model's raw cosines are spread wide (means over the demo's videos:
matching 0.86, other concepts and background about 0, chatter -0.06). The pipeline's NCL step
(Sinkhorn at temperature 0.05) saturates on such contrasts: it gives every caption row the same
retrieval mass, so a flat chatter row comes out nearly as high as a peaked alignable row, and
the prompt bucket then drops the *alignable* captions (the shipped weights minus the cone:
R@1 86.2, AUC 19.3, 11% of alignable captions kept). Real CLIP embeddings sit in a narrow cone
(the "cone effect" of "Mind the Gap", Liang et al. 2022: matched and unmatched cosines differ
by about 0.1), the regime the pipeline and its feature-space benchmark assume (there: a 0.04
bump over noise). So: during training, LayerNorm channel ``CONE_CHANNEL`` of both towers' final
norms and the last embedding coordinate are held at 0 (the loss sees the other 63
coordinates); after training, :func:`apply_cone` gives that channel a constant bias ``C``
routed to the last coordinate, which adds the same orthogonal offset to every embedding. The
pipeline then sees ``cos' ~= k cos + (1 - k)`` with ``k = content_share`` (0.05): an increasing
map, so rankings are kept, and the contrasts shrink to NCL's scale (means: matching 0.991,
other concepts 0.941, background 0.944, chatter 0.951). The map is exact up to the spread of
content norms (frames about 5%; chatter texts' norms are ~20% below alignable ones', so their
rows come out flatter still; mean deviation from the affine map 0.005).
A ``k`` sweep on the same trained weights: 1.0 -> AUC 19.3, 0.2 -> 91.6,
0.12 -> 97.8, 0.05 -> 98.9, 0.03 -> 99.0 (R@1 84.4-86.2). A perfect oracle (one-hot concept
embeddings in the same cone) scores R@1 85.3 and AUC 99.3 with the default aligner: what is
left is the world's and the aligner's (repeated concepts, the +-60 s window), not the encoder's.

**Acceptance** (:func:`evaluate`, also ``--eval-only``): the demo's own plans (seed 0, videos
0..23, ``VideoParams()``, 678 captions), frames at ``t = k + 0.5`` s (the decoder's sampling
rule, ``curation.frames``: nearest source frame at 4 fps; the decoder's resize/crop), captions
through the text tower, then ``curation.evaluate.score_method`` with the pipeline's default
``AlignParams()``: R@1 of the default method vs the ASR timestamps, and alignability ROC-AUC.
The same score through real H.264 files and the pipeline's decoder (``pyav``, the default
backend, or ``decord``) is ``pipeline.bench.train.evaluate_demo_h264``, which passes its frames
to :func:`evaluate`. Targets: R@1 >= ASR R@1 + 15 points and AUC >= 85. The shipped asset:

====================  =====  =========  =====  ===============  =============
frames                R@1    ASR R@1    AUC    kept alignable   kept chatter
====================  =====  =========  =====  ===============  =============
rendered              84.4   36.4       98.9   97.8 %           6.2 %
H.264, decord         85.3   36.4       98.9   97.8 %           6.2 %
H.264, pyav           84.9   36.4       98.9   97.8 %           6.6 %
====================  =====  =========  =====  ===============  =============
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

MODEL_NAME = "nccurate-tiny"
#: Where the demo looks for the checkpoint (``pipeline.demo.DEMO_CHECKPOINT``).
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "nccurate-demo-tiny.pt")
#: Training styles are drawn from ``default_rng([TRAIN_WORLD_SEED + seed, 0])``: not the demo's.
TRAIN_WORLD_SEED = 1000
#: The demo's corpus: ``make_video_plan(i, DEMO_SEED)`` for ``i < DEMO_VIDEOS``.
DEMO_SEED, DEMO_VIDEOS = 0, 24
#: Frame size of the pixel world and the model's input side.
WORLD_W, WORLD_H, INPUT_SIZE = 128, 96, 64
MAX_SIZE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the recipe (defaults = the shipped asset)."""

    steps: int = 600
    seed: int = 0
    styles: int = 1500               # training "videos" (distinct backgrounds) in the pool
    concepts_per_style: int = 6      # distinct concepts rendered per style
    background_per_style: int = 2    # background/distractor frames per style
    styles_per_batch: int = 24       # batch = 24 x 8 = 192 frames, 144 alignable captions
    chatter_per_batch: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    noise: float = 3.0               # max per-image sigma of Gaussian pixel noise (grey levels)
    content_share: float = 0.05      # k: share of each shipped embedding's squared norm that varies
    log_every: int = 100


# --------------------------------------------------------------------------------------------
# Frames as the pipeline feeds them


def pipeline_view(rgb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB as rendered -> ``(size, size, 3)`` uint8 as the pipeline decodes it
    from an H.264 file (less the compression): yuv420p, one bilinear swscale step to the shorter
    side ``size`` in RGB (the decoder's ``to_rgb``), centre crop (:func:`curation.frames.center_crop`)."""
    import av
    from av.video.reformatter import Interpolation

    from curation.frames import center_crop, resize_dims

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
    w, h = resize_dims(frame.width, frame.height, size)
    out = frame.reformat(width=w, height=h, format="rgb24", interpolation=Interpolation.BILINEAR).to_ndarray()
    return np.ascontiguousarray(center_crop(out, size))


@dataclass(frozen=True)
class FramePool:
    """``images: (n_styles, F, S, S, 3)`` uint8 (pipeline view), ``concepts: (n_styles, F)``
    int64 (-1 = background); per style the concept frames come first."""

    images: np.ndarray
    concepts: np.ndarray


def make_frame_pool(config: TrainConfig, size: int = INPUT_SIZE) -> FramePool:
    """Render the training pool (single-threaded, from ``default_rng([TRAIN_WORLD_SEED + seed, 0])``)."""
    from curation.synth.video import CONCEPTS, VideoStyle, render_frame

    rng = np.random.default_rng([TRAIN_WORLD_SEED + config.seed, 0])
    nc, nb = config.concepts_per_style, config.background_per_style
    images = np.empty((config.styles, nc + nb, size, size, 3), dtype=np.uint8)
    concepts = np.full((config.styles, nc + nb), -1, dtype=np.int64)
    for s in range(config.styles):
        style = VideoStyle.draw(rng)
        concepts[s, :nc] = rng.choice(len(CONCEPTS), nc, replace=False)
        times = rng.uniform(0.0, 240.0, nc + nb)
        for k in range(nc + nb):
            concept = int(concepts[s, k]) if k < nc else None
            rgb = render_frame(concept, float(times[k]), style, rng, WORLD_W, WORLD_H)
            images[s, k] = pipeline_view(rgb, size)
    return FramePool(images, concepts)


def chatter_texts() -> list[str]:
    """Every chatter sentence of the world (each template with every slot combination: 1090),
    in a fixed order. The world's chatter is a closed set, so training on all of it is training
    on the world, not on the demo's videos (which draw from the same set)."""
    import itertools

    from curation.synth.video import CHATTER_SLOTS, CHATTER_TEMPLATES

    out: list[str] = []
    for template in CHATTER_TEMPLATES:
        keys = [k for k in CHATTER_SLOTS if "{" + k + "}" in template]
        for values in itertools.product(*(CHATTER_SLOTS[k] for k in keys)):
            out.append(template.format(**dict(zip(keys, values))))
    return out


# --------------------------------------------------------------------------------------------
# Model and loss


def create_model(seed: int):
    """A fresh ``nccurate-tiny`` (fp32, train mode), initialised under ``torch.manual_seed(seed)``."""
    import open_clip
    import torch

    from models.encoder import register_project_configs

    register_project_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME, precision="fp32", device="cpu",
                                   pretrained_image=False, pretrained_text=False)
    model.train()
    return model


def _normaliser(model):
    import open_clip
    import torch

    pp = open_clip.get_model_preprocess_cfg(model)
    mean = torch.tensor(pp.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std


def multi_positive_nce(logits, positive):
    """Mean over rows of ``-log sum_{j in pos(i)} softmax(logits_i)_j``; ``positive``: bool mask,
    at least one True per row."""
    import torch

    return (torch.logsumexp(logits, dim=1)
            - torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)).mean()


def demo_loss(image_emb, image_concept, text_emb, text_concept, null_text, null_image, scale):
    """The two-way loss of the module docstring. ``image_emb: (n, D)``, ``text_emb: (m, D)``
    L2-normalised; ``*_concept``: (n,) / (m,) int64, -1 = background frame / chatter sentence;
    ``null_*: (D,)`` unit vectors; ``scale``: the logit scale (not its log)."""
    import torch

    bg, chat = image_concept < 0, text_concept < 0
    same = (image_concept[:, None] == text_concept[None, :]) & ~bg[:, None] & ~chat[None, :]  # (n, m)
    # image -> text: columns = texts + null_text
    i2t = scale * torch.cat([image_emb @ text_emb.T, (image_emb @ null_text)[:, None]], dim=1)
    i2t_pos = torch.cat([same, bg[:, None]], dim=1)
    # text -> image: columns = images + null_image
    t2i = scale * torch.cat([text_emb @ image_emb.T, (text_emb @ null_image)[:, None]], dim=1)
    t2i_pos = torch.cat([same.T, chat[:, None]], dim=1)
    return 0.5 * (multi_positive_nce(i2t, i2t_pos) + multi_positive_nce(t2i, t2i_pos))


#: The LayerNorm channel (``visual.ln_post``, ``ln_final``) each tower reserves for the cone.
CONE_CHANNEL = 0


def _reserved(model) -> list[tuple[object, tuple]]:
    """``(parameter, index)`` pairs held at 0 during training: the cone channel of both final
    LayerNorms and its projection row, and the last embedding coordinate of both projections.
    Content then lives in coordinates ``0 .. D-2`` and LayerNorm channel 0 carries nothing."""
    j = CONE_CHANNEL
    return [(model.visual.ln_post.weight, (j,)), (model.visual.ln_post.bias, (j,)),
            (model.visual.proj, (j, slice(None))), (model.visual.proj, (slice(None), -1)),
            (model.ln_final.weight, (j,)), (model.ln_final.bias, (j,)),
            (model.text_projection, (j, slice(None))), (model.text_projection, (slice(None), -1))]


def zero_reserved(model) -> None:
    import torch

    with torch.no_grad():
        for param, index in _reserved(model):
            param[index] = 0.0


def apply_cone(model, content_share: float, images_u8: np.ndarray, tokens) -> tuple[float, float]:
    """Put every embedding of the trained ``model`` into a narrow cone around the last axis ``u``.

    With the cone channel j of a final LayerNorm at weight 0 and bias ``C``, and projection row j
    equal to ``u`` (0 before), each tower's output becomes ``z + C u`` with ``z`` the trained
    content (``z . u = 0``). For contents of norm ~r, the cosine the pipeline sees is
    ``(z1 . z2 + C_1 C_2) / |.||.|`` ~= ``k cos(z1, z2) + (1 - k)``, an increasing affine map,
    with ``k = content_share`` when ``C = r sqrt((1 - k) / k)``; r is each tower's mean content
    norm over ``images_u8: (n, S, S, 3)`` (pipeline view) / ``tokens``. Returns ``(C_image, C_text)``."""
    import torch

    if not 0.0 < content_share <= 1.0:
        raise ValueError(f"content_share must be in (0, 1], got {content_share}")
    model.eval()
    mean, std = _normaliser(model)
    with torch.no_grad():
        x = (torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        r_image = float(torch.cat([model.encode_image(c) for c in x.split(256)]).norm(dim=-1).mean())
        r_text = float(torch.cat([model.encode_text(t) for t in tokens.split(512)]).norm(dim=-1).mean())
        factor = math.sqrt((1.0 - content_share) / content_share)
        c_image, c_text = r_image * factor, r_text * factor
        j = CONE_CHANNEL
        model.visual.ln_post.bias[j] = c_image
        model.visual.proj[j, -1] = 1.0
        model.ln_final.bias[j] = c_text
        model.text_projection[j, -1] = 1.0
    return c_image, c_text


def _param_groups(model, extra, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or name.endswith(("logit_scale", "class_embedding")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay + list(extra), "weight_decay": 0.0}]


def train(config: TrainConfig, pool: FramePool | None = None, verbose: bool = True):
    """Train from the seeded init, then :func:`apply_cone` (unless ``content_share`` is 1);
    returns ``(model in eval mode, loss history: list[float])``."""
    import open_clip
    import torch
    import torch.nn.functional as F

    from curation.synth.video import ALIGNABLE_TEMPLATES, CONCEPTS, alignable_text

    start = time.perf_counter()
    model = create_model(config.seed)
    zero_reserved(model)
    embed_dim = model.text_projection.shape[1]
    null = torch.nn.Parameter(torch.randn(2, embed_dim - 1))  # drawn right after the init: seeded
    if pool is None:
        pool = make_frame_pool(config)
        if verbose:
            print(f"frame pool: {pool.images.shape[0]} styles x {pool.images.shape[1]} frames "
                  f"in {time.perf_counter() - start:.0f} s", flush=True)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    n_t = len(ALIGNABLE_TEMPLATES)
    align_tokens = tokenizer([alignable_text(c, k) for c in range(len(CONCEPTS)) for k in range(n_t)])
    chatter = chatter_texts()
    chatter_tokens = tokenizer(chatter)
    mean, std = _normaliser(model)
    images_u8 = torch.from_numpy(pool.images)  # (n_styles, F, S, S, 3), shared memory
    concepts = torch.from_numpy(pool.concepts)
    n_styles = pool.concepts.shape[0]
    n_batch_styles = min(config.styles_per_batch, n_styles)

    optimiser = torch.optim.AdamW(_param_groups(model, [null], config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    rng = np.random.default_rng([TRAIN_WORLD_SEED + config.seed, 2])
    max_log_scale = math.log(100.0)
    history: list[float] = []
    for step in range(config.steps):
        styles = torch.from_numpy(rng.choice(n_styles, n_batch_styles, replace=False))
        img_concept = concepts[styles].reshape(-1)
        x = images_u8[styles].reshape(-1, *images_u8.shape[2:]).permute(0, 3, 1, 2).float()
        sigma = torch.from_numpy(rng.uniform(0.0, config.noise, (x.shape[0], 1, 1, 1)).astype(np.float32))
        noise = torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32))
        x = ((x + sigma * noise).clamp_(0.0, 255.0) / 255.0 - mean) / std

        shown = img_concept[img_concept >= 0]
        templates = torch.from_numpy(rng.integers(0, n_t, len(shown)))
        chat_idx = torch.from_numpy(rng.choice(len(chatter), config.chatter_per_batch, replace=False))
        tokens = torch.cat([align_tokens[shown * n_t + templates], chatter_tokens[chat_idx]])
        txt_concept = torch.cat([shown, torch.full((len(chat_idx),), -1, dtype=torch.int64)])

        for group in optimiser.param_groups:
            group["lr"] = lr_at(step)
        image_emb = F.normalize(model.encode_image(x)[:, :-1], dim=-1)  # the last coordinate is
        text_emb = F.normalize(model.encode_text(tokens)[:, :-1], dim=-1)  # reserved (always 0 here)
        nulls = F.normalize(null, dim=-1)
        loss = demo_loss(image_emb, img_concept, text_emb, txt_concept, nulls[0], nulls[1], model.logit_scale.exp())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        zero_reserved(model)
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_log_scale)
        history.append(loss.item())
        if verbose and (step % config.log_every == 0 or step == config.steps - 1):
            print(f"step {step:5d}  loss {np.mean(history[-config.log_every:]):.4f}  "
                  f"scale {model.logit_scale.exp().item():.1f}  lr {lr_at(step):.2e}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    if config.content_share < 1.0:
        calibration = pool.images.reshape(-1, *pool.images.shape[2:])[:: max(1, pool.images.shape[0] // 256)]
        c_image, c_text = apply_cone(model, config.content_share, calibration,
                                     torch.cat([align_tokens, chatter_tokens]))
        if verbose:
            print(f"cone: content share {config.content_share}, offsets image {c_image:.2f} text {c_text:.2f}",
                  flush=True)
    return model, history


def save_state_dict(model, path: str) -> int:
    """``torch.save`` the fp32 ``state_dict`` to ``path`` (via a temporary name; the bytes depend
    only on the tensors); returns the file size."""
    import torch

    state = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()  # a file object: the archive's inner name does not depend on ``path``
    torch.save(state, buffer)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
    os.replace(tmp, path)
    size = os.path.getsize(path)
    if size > MAX_SIZE_BYTES:
        raise RuntimeError(f"{path} is {size} bytes, over the {MAX_SIZE_BYTES} byte limit")
    return size


# --------------------------------------------------------------------------------------------
# Acceptance: the demo's videos through the pipeline's aligner


def demo_sample_indices(plan, sample_fps: float = 1.0) -> np.ndarray:
    """``(T,)`` int: the source frame of each sample at ``sample_fps`` of ``plan`` (frame ``i`` at
    ``i / plan.fps`` s, ``plan.n_frames / plan.fps`` s long), by the decoder's rule
    (:func:`curation.frames.sample_times_s` targets, :func:`~curation.frames.nearest_indices`)."""
    from curation.frames import nearest_indices, sample_times_s

    return nearest_indices(np.arange(plan.n_frames) / plan.fps, sample_times_s(plan.n_frames / plan.fps, sample_fps))


def demo_frames(plan, sample_fps: float = 1.0, size: int = INPUT_SIZE) -> np.ndarray:
    """``(T, size, size, 3)`` uint8: sample ``k`` at ``(k + 0.5) / sample_fps`` s, the nearest
    source frame at ``plan.fps`` (ties to the earlier, :func:`demo_sample_indices`), in
    :func:`pipeline_view`."""
    from curation.synth.video import frames_of

    return np.stack([pipeline_view(rgb, size) for rgb in frames_of(plan, demo_sample_indices(plan, sample_fps).tolist())])


def evaluate(checkpoint: str, n_videos: int = DEMO_VIDEOS, seed: int = DEMO_SEED, frames_of_plan=None,
             frames_label: str = "rendered", verbose: bool = True) -> dict:
    """Score ``checkpoint`` on the demo's plans with the pipeline's default ``AlignParams()``;
    returns ``{'r_at_1', 'asr_r_at_1', 'auc', 'kept_alignable', 'kept_other', ...}`` (percent).
    ``frames_of_plan(plan, directory) -> (T, S, S, 3)`` uint8 gives each video's samples
    (default: :func:`demo_frames`, the rendered frames in :func:`pipeline_view`; ``directory`` is
    a scratch directory for files), ``frames_label`` names them in the result and the printout."""
    import tempfile

    from curation.align import AlignParams
    from curation.evaluate import EvalVideo, score_method
    from curation.synth.video import make_video_plan
    from models.encoder import EncoderSpec, load_encoder

    start = time.perf_counter()
    encoder = load_encoder(EncoderSpec(name=MODEL_NAME, pretrained=checkpoint))
    videos, stats = [], {"match": [], "other_concept": [], "background": [], "chatter": []}
    with tempfile.TemporaryDirectory(prefix="nccurate-eval-") as tmp:
        for i in range(n_videos):
            plan = make_video_plan(i, seed)
            frames = frames_of_plan(plan, tmp) if frames_of_plan is not None else demo_frames(plan)
            frame_emb = encoder.encode_frames(frames)
            caption_emb = encoder.encode_texts(list(plan.texts))
            videos.append(EvalVideo(caption_emb, frame_emb, 1.0, plan.asr_start_s, plan.asr_end_s,
                                    plan.alignable, plan.true_start_s, plan.true_end_s))
            _similarity_stats(stats, plan, caption_emb @ frame_emb.T)
    params = AlignParams()
    method = score_method("default", videos, params)
    asr = score_method("asr", videos, dataclasses.replace(params, method="asr"))
    result = {"r_at_1": method.r_at_1, "asr_r_at_1": asr.r_at_1, "auc": method.auc,
              "kept_alignable": method.kept_alignable, "kept_other": method.kept_other,
              "videos": n_videos, "captions": int(sum(len(v.alignable) for v in videos)),
              "frames": frames_label}
    result.update({f"cos_{k}": float(np.mean(v)) if v else float("nan") for k, v in stats.items()})
    if verbose:
        print(f"eval ({result['frames']} frames, {n_videos} demo videos, seed {seed}, "
              f"{result['captions']} captions, {time.perf_counter() - start:.0f} s): "
              f"R@1 {result['r_at_1']:.1f}  ASR R@1 {result['asr_r_at_1']:.1f}  AUC {result['auc']:.1f}  "
              f"kept alignable {result['kept_alignable']:.1f}%  kept chatter {result['kept_other']:.1f}%", flush=True)
        print("  mean cosine: " + "  ".join(f"{k} {result['cos_' + k]:.3f}" for k in stats), flush=True)
    return result


def _similarity_stats(stats: dict, plan, sim: np.ndarray) -> None:
    """Mean raw cosines by kind of (caption, frame) pair, for the printout."""
    t_concept = np.array([plan.concept_at(k + 0.5) if plan.concept_at(k + 0.5) is not None else -1
                          for k in range(sim.shape[1])])
    for row, concept in zip(sim, plan.caption_concept):
        if concept < 0:
            stats["chatter"].extend(row.tolist())
            continue
        stats["match"].extend(row[t_concept == concept].tolist())
        stats["other_concept"].extend(row[(t_concept >= 0) & (t_concept != concept)].tolist())
        stats["background"].extend(row[t_concept < 0].tolist())


def passes(result: dict, margin: float = 15.0, min_auc: float = 85.0) -> bool:
    return result["r_at_1"] >= result["asr_r_at_1"] + margin and result["auc"] >= min_auc


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m models.train_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="checkpoint path (default: the shipped asset)")
    parser.add_argument("--eval-only", action="store_true", help="only score --out on the demo's videos")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    for f in dataclasses.fields(TrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name))
    args = parser.parse_args(argv)
    if not args.eval_only:
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
        start = time.perf_counter()
        model, _ = train(config)
        size = save_state_dict(model, args.out)
        print(f"wrote {args.out} ({size} bytes) after {time.perf_counter() - start:.0f} s", flush=True)
    if args.no_eval:
        return 0
    result = evaluate(args.out)
    ok = passes(result)
    print("acceptance (R@1 >= ASR R@1 + 15, AUC >= 85): " + ("pass" if ok else "FAIL"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
