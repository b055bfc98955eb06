"""The dependency rule of the README's "Code layout": import-linter's contracts (``.importlinter``,
which read function-level imports too) on the real tree, the same contracts catching a forbidden
import planted in a copy of the tree, and Apache Beam imported at module level only in
``pipeline/transforms/``."""

from __future__ import annotations

import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "models", "pipeline")
LINT = str(pathlib.Path(sys.executable).with_name("lint-imports"))


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([LINT, "--no-cache", str(root / ".importlinter")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def _copy_tree(dest: pathlib.Path) -> pathlib.Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("*.pyc", "__pycache__", "*.pt"))
    shutil.copy(ROOT / ".importlinter", dest / ".importlinter")
    return dest


def test_the_tree_keeps_every_contract():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and "KEPT" in done.stdout


@pytest.mark.parametrize("module,planted,edge", [
    # a lazy import inside a function is caught as well as a module-level one
    ("pipeline/tools/inspect.py", "def _planted():\n    from pipeline.transforms import graph\n",
     "pipeline.tools.inspect -> pipeline.transforms.graph"),
    ("models/encoder.py", "import pipeline.run\n", "models.encoder -> pipeline.run"),
    ("pipeline/outputs/shards.py", "def _planted():\n    import pipeline.cli\n", "pipeline.outputs.shards -> pipeline.cli"),
])
def test_a_planted_forbidden_import_breaks_a_contract(tmp_path, module, planted, edge):
    root = _copy_tree(tmp_path)
    assert edge not in _lint(root).stdout
    with open(root / module, "a", encoding="utf-8") as handle:
        handle.write("\n\n" + planted)
    done = _lint(root)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and edge in done.stdout, done.stdout


def _module_level_imports(path: pathlib.Path) -> set[str]:
    """Top-level package names imported by the statements that run when ``path`` is imported
    (module body, class bodies, module-level if/try blocks; not function bodies)."""
    names: set[str] = set()

    def visit(body) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
            elif isinstance(node, (ast.ClassDef, ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []) or []:
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return names


def test_apache_beam_is_imported_at_module_level_only_in_pipeline_transforms():
    offenders = [str(path.relative_to(ROOT)) for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 if "apache_beam" in _module_level_imports(path)
                 and (ROOT / "pipeline" / "transforms") not in path.parents]
    assert offenders == []
    assert "apache_beam" in _module_level_imports(ROOT / "pipeline" / "transforms" / "graph.py")  # the walk sees imports
