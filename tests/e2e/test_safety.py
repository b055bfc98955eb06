"""Safety: untrusted inputs stay data.

* No deserialiser that can run code: a static scan of ``curation/``, ``models/`` and
  ``pipeline/`` requires ``np.load(..., allow_pickle=False)``, ``torch.load(...,
  weights_only=True)`` (also for open_clip checkpoint loading), no pickle-family loads and no
  ``yaml.load`` without a safe loader. The checker is tested on bad snippets, so it can fail.
* A video_id cannot steer a write: ids outside ``[A-Za-z0-9_-]{1,128}`` are rejected before any
  path or tar member name is made from them, and a run over ``../x``-style ids creates files
  under its output directory only.
* Captions are data, never format strings or markup: ``{0}``, ``%s``, ``<script>``, quotes and
  unicode come out byte-equal in the index ``text``, the shard ``txt`` and the sample ``json``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import tarfile

import pytest

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("curation", "models", "pipeline")

# ------------------------------------------------------------------ (a) deserialisers


#: Loaders that unpickle (run code from the file) whatever their arguments.
PICKLE_LOADS = {f"{mod}.{fn}" for mod in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib")
                for fn in ("load", "loads", "Unpickler")} | {"pandas.read_pickle", "numpy.lib.format.read_array"}
YAML_SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
OPEN_CLIP_LOADERS = {"open_clip.create_model", "open_clip.create_model_and_transforms",
                     "open_clip.create_model_from_pretrained", "open_clip.load_checkpoint"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted module path, from every import in the file (any scope)."""
    names = {"np": "numpy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]  # import a.b binds a; import a.b as c binds c
                names[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(func: ast.AST, aliases: dict[str, str]) -> str | None:
    """``np.load`` -> ``'numpy.load'`` (through import aliases); None for other callees."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    return ".".join([aliases.get(func.id, func.id), *reversed(parts)])


def _keyword(call: ast.Call, name: str, position: int | None = None) -> ast.AST | None:
    """The argument passed as ``name=`` (or at ``position``); a ``**kwargs`` counts as unknown."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
        if kw.arg is None:
            return ast.Name(id="**kwargs")
    if position is not None and len(call.args) > position:
        return call.args[position]
    return None


def _is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _loader_name(node: ast.AST | None) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None


def _safe_local_loaders(tree: ast.AST) -> set[str]:
    """Classes of this module that derive only from safe loaders (or from such classes), so a
    ``yaml.SafeLoader`` subclass with an extra resolver counts as safe and one of
    ``yaml.Loader`` does not."""
    classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    safe: set[str] = set()
    changed = True
    while changed:
        changed = False
        for cls in classes:
            if cls.name not in safe and cls.bases and all(_loader_name(b) in YAML_SAFE_LOADERS | safe for b in cls.bases):
                safe.add(cls.name)
                changed = True
    return safe


def _yaml_loader_is_safe(node: ast.AST | None, local_safe: set[str] = frozenset()) -> bool:
    name = _loader_name(node)
    return name in YAML_SAFE_LOADERS or (isinstance(node, ast.Name) and name in local_safe)


def check_source(source: str, filename: str = "<snippet>") -> tuple[list[str], int]:
    """``(violations, loads_checked)``: one ``'file:line: why'`` per unsafe deserialising call, and
    how many deserialising calls were looked at (so a scan that sees nothing can be told apart)."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    local_safe = _safe_local_loaders(tree)
    violations, checked = [], 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in PICKLE_LOADS:
                    violations.append(f"{filename}:{node.lineno}: imports {node.module}.{alias.name} (unpickles)")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        why = None
        if name == "numpy.load":
            checked += 1
            if not _is_const(_keyword(node, "allow_pickle", 2), False):
                why = "numpy.load without allow_pickle=False"
        elif name == "torch.load":
            checked += 1
            if not _is_const(_keyword(node, "weights_only"), True):
                why = "torch.load without weights_only=True"
        elif name in OPEN_CLIP_LOADERS:
            checked += 1
            pretrained = _keyword(node, "pretrained", 1)
            loads_file = name == "open_clip.load_checkpoint" or not (pretrained is None or _is_const(pretrained, None))
            if loads_file and not _is_const(_keyword(node, "weights_only"), True):
                why = f"{name} loading a checkpoint without weights_only=True"
        elif name in PICKLE_LOADS:
            checked += 1
            why = f"{name} unpickles its input"
        elif name in ("yaml.load", "yaml.load_all"):
            checked += 1
            if not _yaml_loader_is_safe(_keyword(node, "Loader", 1), local_safe):
                why = f"{name} without a safe Loader (use yaml.safe_load)"
        elif name in ("yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all"):
            checked += 1
            why = f"{name} constructs arbitrary objects"
        elif name in ("yaml.safe_load", "yaml.safe_load_all"):
            checked += 1
        if why:
            violations.append(f"{filename}:{node.lineno}: {why}")
    return violations, checked


def _package_files() -> list[str]:
    files = []
    for package in PACKAGES:
        for directory, _, names in os.walk(os.path.join(ROOT, package)):
            files += [os.path.join(directory, n) for n in sorted(names) if n.endswith(".py")]
    return files


def test_no_code_executing_deserialiser_in_the_packages():
    violations, checked = [], 0
    files = _package_files()
    for path in files:
        with open(path, encoding="utf-8") as handle:
            found, n = check_source(handle.read(), os.path.relpath(path, ROOT))
        violations += found
        checked += n
    assert len(files) > 20 and all(any(f"/{p}/" in f for f in files) for p in PACKAGES)
    # np.load in inputs.py and decode.py, yaml.safe_load in config.py, open_clip in encoder.py
    assert checked >= 4, checked
    assert violations == []


BAD_SNIPPETS = {
    "np.load default": "import numpy as np\nnp.load('x.npy')",
    "np.load allow_pickle=True": "import numpy as np\nnp.load(f, allow_pickle=True)",
    "np.load positional True": "import numpy\nnumpy.load(f, None, True)",
    "np.load from a variable": "import numpy as np\nnp.load(f, allow_pickle=flag)",
    "np.load with **kwargs": "import numpy as np\nnp.load(f, **opts)",
    "from numpy import load": "from numpy import load as npload\nnpload(f)",
    "torch.load default": "def f(p):\n    import torch\n    return torch.load(p)",
    "torch.load weights_only=False": "import torch\ntorch.load(p, weights_only=False)",
    "open_clip checkpoint": "import open_clip\nopen_clip.create_model('ViT-B-32', pretrained=path)",
    "open_clip positional pretrained": "import open_clip as oc\noc.create_model_and_transforms('ViT-B-32', 'openai')",
    "pickle.loads": "import pickle\npickle.loads(data)",
    "pickle.load aliased": "import pickle as pk\npk.load(handle)",
    "from pickle import loads": "from pickle import loads\n",
    "joblib.load": "import joblib\njoblib.load(path)",
    "pandas.read_pickle": "import pandas as pd\npd.read_pickle(path)",
    "yaml.load no Loader": "import yaml\nyaml.load(text)",
    "yaml.load FullLoader": "import yaml\nyaml.load(text, Loader=yaml.FullLoader)",
    "yaml.load positional UnsafeLoader": "import yaml\nyaml.load(text, yaml.UnsafeLoader)",
    "yaml.unsafe_load": "import yaml\nyaml.unsafe_load(text)",
    "yaml.full_load": "import yaml\nyaml.full_load(text)",
    "yaml.load local subclass of Loader": "import yaml\nclass L(yaml.Loader):\n    pass\nyaml.load(text, Loader=L)",
    "yaml.load local class of two bases": "import yaml\nclass L(yaml.SafeLoader, yaml.UnsafeLoader):\n    pass\nyaml.load(text, Loader=L)",
}

GOOD_SNIPPETS = {
    "np.load safe": "import numpy as np\nnp.load(f, allow_pickle=False)",
    "torch.load safe": "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
    "open_clip random init": "import open_clip\nopen_clip.create_model('ViT-B-32', pretrained=None)",
    "open_clip no pretrained": "import open_clip\nopen_clip.create_model('ViT-B-32', precision='fp32')",
    "open_clip safe": "import open_clip\nopen_clip.create_model('ViT-B-32', pretrained=p, weights_only=True)",
    "yaml.safe_load": "import yaml\nyaml.safe_load(text)",
    "yaml.load SafeLoader": "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "yaml.load local SafeLoader subclass": "import yaml\nclass A(yaml.SafeLoader):\n    pass\nclass B(A):\n    pass\nyaml.load(text, Loader=B)",
    "other load": "import json\njson.load(handle)",
    "pickle.dumps": "import pickle\npickle.dumps(obj)",
}


@pytest.mark.parametrize("name", BAD_SNIPPETS)
def test_the_checker_finds_an_unsafe_call(name):
    violations, checked = check_source(BAD_SNIPPETS[name])
    assert len(violations) == 1, violations
    assert violations[0].startswith("<snippet>:")


@pytest.mark.parametrize("name", GOOD_SNIPPETS)
def test_the_checker_accepts_a_safe_call(name):
    assert check_source(GOOD_SNIPPETS[name])[0] == []


# ------------------------------------------------------------------ (b) video_id and paths

ESCAPING_IDS = ("../x", "a/b", "..", ".", "", "/abs", "..\\x", "a\\b", "x/../../y", "~", "a.b", "a\x00b",
                "a b", "é", "x\n", "x" * 129)


@pytest.mark.parametrize("video_id", ESCAPING_IDS, ids=[repr(v)[:20] for v in ESCAPING_IDS])
def test_a_path_like_video_id_is_rejected_before_it_names_anything(video_id):
    from curation.errors import InputError
    from pipeline.inputs.manifest import parse_manifest_line
    from pipeline.outputs.shards import sample_key

    line = json.dumps({"video_id": video_id, "features": "f.npy", "fps": 1, "captions": "c.json",
                       "caption_features": "t.npy"})
    with pytest.raises(InputError) as info:
        parse_manifest_line(line, "/data")
    assert info.value.error_class == "invalid_video_id"
    if len(video_id) <= 128:  # sample_key checks characters; the manifest also checks length
        with pytest.raises(ValueError):
            sample_key(video_id, 0)


def test_accepted_video_ids_make_plain_file_names():
    """What the manifest accepts (and so what keys are built from) has no separator and no dot."""
    from curation.records import VIDEO_ID_RE
    from pipeline.outputs.shards import sample_key

    for video_id in ("abc", "A-b_9", "-", "_", "--", "x" * 128):
        assert VIDEO_ID_RE.match(video_id)
        name = f"{sample_key(video_id, 3)}.mp4"
        assert os.path.basename(name) == name and name.count(".") == 1
        assert os.path.normpath(os.path.join("/out", name)) == f"/out/{name}"


NASTY_IDS = ("../x", "a/b", "../../escape", "/tmp/abs", "x/../../y")

#: Caption texts that must survive untouched (each is already whitespace-normalised).
NASTY_TEXTS = (
    "{0} {1!r} {video_id} {{}} {caption_idx:05d}",
    "%s %d %(text)s %% %n",
    "<script>alert(1)</script> &amp; &lt;b&gt; <i>x</i>",
    "quotes \" and ' and `back` and \\ and \\n",
    "naïve café — 日本語 😀 עברית e\u0301 ﬁ \u200d",
    "$(rm -rf /); DROP TABLE captions; -- ../../etc/passwd",
    '{"start": [0], "end": [1], "text": ["x"]}',
    "nul\x00byte and \x7f",
)
TAB_TEXT = "tab\tseparated\t\tcolumns"  # the parsers normalise whitespace: tabs become one space


@pytest.fixture(scope="module")
def safety_run(tmp_path_factory):
    """One feature-mode run over two videos whose captions are :data:`NASTY_TEXTS` (every
    caption kept) plus rows with :data:`NASTY_IDS`; the files under ``root`` before and after."""
    from pipeline.synth.feature_corpus import write_corpus

    root = tmp_path_factory.mktemp("safety")
    texts = NASTY_TEXTS + (TAB_TEXT,)
    videos = [dataclasses.replace(v, texts=tuple(texts[i % len(texts)] for i in range(len(v.texts))))
              for v in helpers.small_corpus(2, 7)]
    manifest, _ = write_corpus(str(root / "in"), videos, "json")
    with open(manifest, encoding="utf-8") as handle:
        good = json.loads(handle.readline())
    with open(manifest, "a", encoding="utf-8") as handle:
        for video_id in NASTY_IDS:
            handle.write(json.dumps({**good, "video_id": video_id}) + "\n")
    output = root / "deep" / "er" / "out"  # "../x" and "../../x" from here still land in root
    before = _files_under(root)
    out = helpers.run_pipeline(manifest, str(output), ["align.min_alignability=0", "max_failure_ratio=1.0"])
    return {"out": out, "videos": videos, "output": str(output), "before": before, "after": _files_under(root)}


def _files_under(root) -> set[str]:
    return {os.path.join(d, n) for d, dirs, names in os.walk(root) for n in names + dirs}


def test_path_like_ids_write_nothing_outside_the_output(safety_run):
    new = safety_run["after"] - safety_run["before"]
    output = safety_run["output"]
    parents = {p for p in new if output.startswith(p + os.sep)}  # deep/ and deep/er/, made for the output
    assert sorted(p for p in new - parents if p != output and not p.startswith(output + os.sep)) == []
    assert any(p.startswith(os.path.join(output, "shards") + os.sep) for p in new)
    out = safety_run["out"]
    assert sorted((f["video_id"], f["error_class"]) for f in out.failures) == sorted(
        (v, "invalid_video_id") for v in NASTY_IDS)
    assert {r["video_id"] for r in out.index} == {v.video_id for v in safety_run["videos"]}


def test_tar_members_are_plain_names(safety_run):
    members = []
    for shard in safety_run["out"].shard_files:
        with tarfile.open(shard) as tar:
            members += tar.getmembers()
    assert members
    for m in members:
        assert m.isfile() and "/" not in m.name and ".." not in m.name and not m.name.startswith("."), m.name


# ------------------------------------------------------------------ (c) captions are data


def test_captions_come_out_byte_equal(safety_run):
    out, videos = safety_run["out"], safety_run["videos"]
    assert all(" ".join(t.split()) == t for t in NASTY_TEXTS)  # the premise: nothing to normalise
    samples = {s["__key__"]: s for s in out.samples}
    seen = set()
    for video in videos:
        rows = out.rows_of(video.video_id)
        assert len(rows) == len(video.texts)
        for row, text in zip(rows, video.texts):
            expected = " ".join(text.split())  # TAB_TEXT -> single spaces; every other text unchanged
            assert row["text"] == expected
            assert row["kept"] and samples[row["key"]]["txt"] == expected.encode("utf-8")
            assert json.loads(samples[row["key"]]["json"])["text"] == expected
            seen.add(text)
    assert seen == set(NASTY_TEXTS) | {TAB_TEXT}
