"""BLAS calls whose bits do not depend on the thread count.

Multi-threaded BLAS splits a product differently for different thread counts, and the split
changes the rounding: with OpenBLAS 0.3.31 a (301, 10001) float64 matrix-vector product and a
(3600, 512) x (512, 300) float32 product differed in their last bits between 1 and 2 threads,
and a Sinkhorn loop amplifies such bits into different scores. Dask workers run BLAS on one
thread, a local run on every core, so the same video gave different outputs on different
runners. The alignment math therefore runs its products inside :func:`one_thread`.

OpenBLAS's thread pool is process-wide and threadpoolctl lets one thread at a time set it, so
:func:`one_thread` is a re-entrant process-wide lock around threadpoolctl's limit: concurrent
alignments of one process (a multi-threaded runner) take turns, each on one BLAS thread, and
the setting is restored after each. It costs little: a runner gets its parallelism from one
process per core, and the alignment's products are memory-bound matrix-vector ones (measured
equal at 1 and 2 threads for (301, 3601)).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.RLock()
_controller = None


def _blas():
    """threadpoolctl's controller of the process's BLAS libraries (built once: it scans them)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with every BLAS library (OpenBLAS, MKL, BLIS) on one thread, one block at a
    time per process; the previous setting is restored after it. RuntimeError when a library
    keeps more threads (another thread of the process holds OpenBLAS's limit)."""
    with _lock:
        blas = _blas()
        with blas.limit(limits=1):
            kept = sorted({lib.internal_api for lib in blas.lib_controllers if lib.num_threads != 1})
            if kept:
                raise RuntimeError(f"could not run {', '.join(kept)} on one thread (another thread of this "
                                   "process holds its limit); alignment results would depend on the thread count")
            yield
