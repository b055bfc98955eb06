"""The pure package must import without Apache Beam or torch."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

CODE = """
import sys
import curation, curation.align, curation.ot, curation.s2dtw, curation.synth.features, models
print("beam", 'apache_beam' in sys.modules)
print("torch", 'torch' in sys.modules)
"""


def test_pure_modules_do_not_import_beam_or_torch():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines == ["beam", "False", "torch", "False"], proc.stdout + proc.stderr
