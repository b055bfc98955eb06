"""Imported by pytest before any test: ``models.encoder`` sets MKL's strict reproducibility
(``MKL_CBWR``), which MKL reads at its first call, so it must precede every test's torch work.
Exported encoder towers (``models.backends``) go to a cache folder of this test session, never
to the user's ``~/.cache`` (worker processes inherit the variable).

Tests marked ``own_process`` run in a fresh ``python -m pytest`` of their own: they open ONNX
Runtime or OpenVINO sessions, whose native thread pools make a later ``fork`` unsafe (a test that
forks DataLoader workers after them hung or crashed the test process). Their fixtures must not
load those runtimes in this process."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import models.encoder  # noqa: F401

if "NCCURATE_CACHE" not in os.environ:
    os.environ["NCCURATE_CACHE"] = tempfile.mkdtemp(prefix="nccurate-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NCCURATE_CACHE"], True)


#: Set in the child process of an ``own_process`` test, where the test runs for real.
_OWN_PROCESS = "NCCURATE_OWN_PROCESS"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run an ``own_process`` test's body in a child pytest; its failure or skip is this one's."""
    if pyfuncitem.get_closest_marker("own_process") is None or os.environ.get(_OWN_PROCESS):
        return None
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", pyfuncitem.nodeid],
                          cwd=str(pyfuncitem.config.rootpath), env=dict(os.environ, **{_OWN_PROCESS: "1"}),
                          capture_output=True, text=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-4000:]
    if proc.returncode == 0 and " skipped" in proc.stdout and " passed" not in proc.stdout:
        pytest.skip(f"in its own process: {tail.strip().splitlines()[-1]}")
    if proc.returncode != 0 or " passed" not in proc.stdout:
        pytest.fail(f"in its own process (exit {proc.returncode}):\n{tail}", pytrace=False)
    return True
