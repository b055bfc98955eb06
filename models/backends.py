"""CPU inference backends of the encoder besides torch: ONNX Runtime (fp32, int8) and OpenVINO
(fp32, bf16), run on the towers exported from the open_clip model that :func:`models.encoder.load_encoder`
built (never fetched from the network).

* **Export**: both towers are exported once with ``torch.onnx.export`` (the dynamo exporter,
  dynamic batch) and kept in a cache folder named by a key over the model name, a digest of its
  weights, the precision and the exporting libraries' versions (:func:`export_key`), so another
  checkpoint, precision or torch gets its own export. ``int8`` is ONNX Runtime's dynamic
  quantisation of that export: int8 weights per output channel, activations quantised per batch,
  on every MatMul / Gemm (the attention projections included). A cache entry is written to a
  temporary folder and renamed into place, so concurrent workers never see half an export.
* **Checked at every load**: the backend's embeddings of :data:`PROBE_TEXTS` and seeded probe
  frames are compared with the torch model's; below :data:`MIN_COSINE` (a damaged cache entry, an
  exporter bug, int8 saturating on a CPU without VNNI) the load fails naming the model, instead of
  writing embeddings that are silently wrong.
* **Threads**: each session uses ``torch.get_num_threads()`` intra-op threads, the budget the
  runner gave torch (``resources.torch_threads``), so a backend never oversubscribes the cores.
* The packages are optional extras (``nccurate[onnx]``, ``nccurate[openvino]``);
  :func:`missing_packages` names what is absent so a run fails at launch in one line.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

#: ``model.backend`` values.
BACKENDS = ("torch", "onnxruntime", "openvino")
#: The ``model.precision`` values each backend runs.
BACKEND_PRECISIONS = {"torch": ("fp32", "fp16", "bf16"), "onnxruntime": ("fp32", "int8"),
                      "openvino": ("fp32", "bf16")}
#: backend -> (import name, pip distribution) of what it needs besides torch.
_PACKAGES = {"torch": (),
             "onnxruntime": (("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("onnxscript", "onnxscript")),
             "openvino": (("openvino", "openvino"), ("onnx", "onnx"), ("onnxscript", "onnxscript"))}
_EXTRA = {"onnxruntime": "onnx", "openvino": "openvino"}
#: Least cosine to the torch fp32 embedding a backend's probe embeddings must reach at load.
MIN_COSINE = {"fp32": 0.9999, "bf16": 0.999, "int8": 0.999}
#: Caption texts of the load-time check (and of ``nccurate bench throughput --mode encoder``).
PROBE_TEXTS = ("a person cuts an onion on a wooden board", "pour the water into the pot", "and that's it for today",
               "now we tighten the bolt", "thanks for watching", "the dough should look like this")
#: Bumped when the export recipe changes, so old cache entries are not reused.
_RECIPE = 1


def check_backend(backend: str, precision: str, device: str) -> None:
    """ValueError naming the key when ``backend`` does not run ``precision`` on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"model.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    allowed = BACKEND_PRECISIONS[backend]
    if precision not in allowed:
        runs = [b for b, ps in BACKEND_PRECISIONS.items() if precision in ps]
        raise ValueError(f"model.precision: {precision!r} does not run on model.backend {backend!r} "
                         f"(it runs {', '.join(allowed)}); {precision} runs on model.backend {' or '.join(runs)}")
    if backend != "torch" and device != "cpu":
        raise ValueError(f"model.device: {device!r} is not for model.backend {backend!r}, which runs on the CPU "
                         "only; use model.backend torch on a GPU")


def missing_packages(backend: str) -> list[str]:
    """The pip distributions ``backend`` needs that are not installed (importable)."""
    return [dist for module, dist in _PACKAGES[backend] if importlib.util.find_spec(module) is None]


def require_packages(backend: str) -> None:
    """ValueError in one line when ``backend``'s packages are missing, with the install command
    (``torch`` needs none beyond nccurate's own)."""
    missing = missing_packages(backend)
    if missing:
        raise ValueError(f"model.backend {backend!r} needs {', '.join(missing)}, not installed: "
                         f"pip install 'nccurate[{_EXTRA[backend]}]'")


def probe_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: seeded noise constant over 8x8 blocks (patches with structure)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n, -(-size // 8), -(-size // 8), 3), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(8, axis=1).repeat(8, axis=2)[:, :size, :size])


def weights_digest(model: "torch.nn.Module") -> str:
    """sha256 over the model's state dict: every tensor's name, dtype, shape and bytes, in order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def export_key(name: str, digest: str, precision: str) -> str:
    """The cache folder name of an export: 24 hex digits over the model, its weights, the
    export's precision (fp32 serves every fp32/bf16 backend) and the exporting libraries."""
    stored = "int8" if precision == "int8" else "fp32"
    blob = json.dumps({"recipe": _RECIPE, "model": name, "weights": digest, "precision": stored,
                       "versions": {d: _version(d) for d in ("torch", "onnx", "onnxscript", "onnxruntime")
                                    if d != "onnxruntime" or stored == "int8"}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_root() -> str:
    """``$NCCURATE_CACHE`` or ``~/.cache/nccurate``, + ``/encoders``."""
    root = os.environ.get("NCCURATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nccurate")
    return os.path.join(root, "encoders")


def _tower_module(model, which: str) -> "torch.nn.Module":
    """One tower of the torch ``model`` (``image`` or ``text``) as a module of one tensor input,
    what the exporter takes."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.encode_image(x) if which == "image" else self.model.encode_text(x)

    return Tower()


def _export_fp32(model, input_size: int, tokenizer, folder: str) -> None:
    """Write ``image.onnx`` and ``text.onnx`` (fp32, weights inside the file, dynamic batch) into ``folder``."""
    import torch

    examples = {"image": torch.zeros(2, 3, input_size, input_size),
                "text": tokenizer(list(PROBE_TEXTS[:2]))}
    for which, example in examples.items():
        program = torch.onnx.export(_tower_module(model, which).eval(), (example,), input_names=["x"], output_names=["features"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, dynamo=True,
                                    verbose=False)
        program.save(os.path.join(folder, f"{which}.onnx"), external_data=False)


def _quantize_int8(source: str, folder: str) -> None:
    """ONNX Runtime dynamic quantisation of ``source``'s towers into ``folder``: int8 weights per
    output channel on every MatMul / Gemm."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for which in ("image", "text"):
        quantize_dynamic(os.path.join(source, f"{which}.onnx"), os.path.join(folder, f"{which}.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True)


def _publish(build, target: str) -> str:
    """Run ``build(folder)`` in a temporary folder beside ``target`` and rename it to ``target``
    (whoever renames first wins; the loser's copy is removed). Returns ``target``."""
    if os.path.isdir(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    folder = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        build(folder)
        try:
            os.rename(folder, target)
        except OSError:
            if not os.path.isdir(target):
                raise
    finally:
        if os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
    return target


def exported_towers(model, name: str, input_size: int, tokenizer, precision: str) -> str:
    """The cache folder holding ``image.onnx`` and ``text.onnx`` of ``model`` at ``precision``
    (``fp32`` or ``int8``), exported now if absent."""
    digest = weights_digest(model)
    root = cache_root()
    fp32 = _publish(lambda folder: _export_fp32(model, input_size, tokenizer, folder),
                    os.path.join(root, export_key(name, digest, "fp32")))
    if precision != "int8":
        return fp32
    return _publish(lambda folder: _quantize_int8(fp32, folder), os.path.join(root, export_key(name, digest, "int8")))


class ExportedTowers:
    """Both towers of an export behind the torch model's interface: ``encode_image(pixels)`` and
    ``encode_text(tokens)`` take and return CPU torch tensors (features not normalised).

    ``per_row``: run one input at a time. Dynamic int8 quantises each activation tensor with one
    scale over the whole batch, so a frame's int8 embedding would depend on the frames batched
    with it; one at a time it depends on the frame alone (and ran 6% slower than batch 64 on
    ViT-B-32, 2026-12-03)."""

    def __init__(self, image, text, backend: str, folder: str, per_row: bool = False):
        self._image, self._text = image, text
        self.backend = backend
        self.folder = folder
        self.per_row = per_row

    def _run(self, run, x: np.ndarray) -> np.ndarray:
        if not self.per_row or len(x) <= 1:
            return run(x)
        return np.concatenate([run(x[i:i + 1]) for i in range(len(x))])

    def __repr__(self) -> str:
        return f"ExportedTowers({self.backend!r}, {self.folder!r})"

    def encode_image(self, pixels: "torch.Tensor") -> "torch.Tensor":
        import torch

        return torch.from_numpy(self._run(self._image, np.ascontiguousarray(pixels.float().numpy())))

    def encode_text(self, tokens: "torch.Tensor") -> "torch.Tensor":
        import torch

        return torch.from_numpy(self._run(self._text, np.ascontiguousarray(tokens.numpy().astype(np.int64))))


def _onnxruntime_runner(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def _openvino_runner(path: str, threads: int, precision: str):
    import openvino as ov

    core = ov.Core()
    # no CPU pinning: OpenVINO pins its threads to cores by default, and two worker processes of
    # one thread each then shared one core (2 workers ran at 0.95x of 1; unpinned, 2 x 20 images/s)
    compiled = core.compile_model(path, "CPU",
                                  {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                   "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False})
    request = compiled.create_infer_request()

    def run(x):
        return np.array(request.infer({0: x})[0], dtype=np.float32, copy=True)

    return run


def open_towers(folder: str, backend: str, precision: str, threads: int) -> ExportedTowers:
    """Sessions over ``folder``'s towers with ``threads`` intra-op threads each."""
    if backend == "onnxruntime":
        make = lambda which: _onnxruntime_runner(os.path.join(folder, f"{which}.onnx"), threads)  # noqa: E731
    else:
        make = lambda which: _openvino_runner(os.path.join(folder, f"{which}.onnx"), threads, precision)  # noqa: E731
    return ExportedTowers(make("image"), make("text"), backend, folder, per_row=precision == "int8")


def least_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """min over rows of the cosine between rows of ``a`` and ``b`` (n, D)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.sum(a * b, axis=1).min())


class Reference(NamedTuple):
    """What a load checks an export against, made with the torch model before it is dropped:
    the export's folder, the probe inputs and the torch model's features of them."""

    folder: str
    name: str
    pixels: "torch.Tensor"
    tokens: "torch.Tensor"
    features: tuple[np.ndarray, np.ndarray]  # (frames (8, D), texts (6, D)), not normalised


def export_with_reference(model, name: str, input_size: int, tokenizer, precision: str, pixels_of) -> Reference:
    """Export (or reuse) ``model``'s towers at ``precision`` and embed the probe inputs with
    ``model`` itself (``pixels_of``: uint8 frames -> the model's input tensor). The caller may
    then drop the torch model before the sessions are opened, so both are never in memory at once."""
    import torch

    folder = exported_towers(model, name, input_size, tokenizer, precision)
    pixels, tokens = pixels_of(probe_frames(8, input_size)), tokenizer(list(PROBE_TEXTS))
    with torch.inference_mode():
        features = (model.encode_image(pixels).float().numpy(), model.encode_text(tokens).float().numpy())
    return Reference(folder, name, pixels, tokens, features)


def checked_towers(reference: Reference, backend: str, precision: str, threads: int) -> ExportedTowers:
    """The sessions of ``reference.folder`` (``threads`` threads each), checked against the torch
    features: ValueError naming the model when frames or texts fall below :data:`MIN_COSINE`."""
    towers = open_towers(reference.folder, backend, precision, threads)
    got = (towers.encode_image(reference.pixels).numpy(), towers.encode_text(reference.tokens).numpy())
    cosines = (least_cosine(got[0], reference.features[0]), least_cosine(got[1], reference.features[1]))
    if min(cosines) < MIN_COSINE[precision]:
        raise ValueError(f"model {reference.name!r} on model.backend {backend!r} at {precision}: embeddings differ "
                         f"from torch fp32 (least cosine frames {cosines[0]:.5f}, texts {cosines[1]:.5f}, need "
                         f">= {MIN_COSINE[precision]}); export in {reference.folder}; use model.backend torch")
    return towers
