"""Imported by pytest before any test: ``models.encoder`` sets MKL's strict reproducibility
(``MKL_CBWR``), which MKL reads at its first call, so it must precede every test's torch work.
Exported encoder towers (``models.backends``) go to a cache folder of this test session, never
to the user's ``~/.cache`` (worker processes inherit the variable)."""

import atexit
import os
import shutil
import tempfile

import models.encoder  # noqa: F401

if "NCCURATE_CACHE" not in os.environ:
    os.environ["NCCURATE_CACHE"] = tempfile.mkdtemp(prefix="nccurate-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NCCURATE_CACHE"], True)
