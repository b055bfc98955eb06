"""curation.blas: the alignment's BLAS products give the same bits on any thread count."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_limits

from curation import ot, similarity
from curation.blas import one_thread

needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to run BLAS on 2 threads")


def _blas_threads() -> list[int]:
    return [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]


@needs_two_cores
def test_one_thread_inside_restored_after_and_taken_in_turns_by_threads():
    seen, inside = [], threading.Event()

    def worker():
        with one_thread():
            seen.append(("worker", inside.is_set(), _blas_threads()))

    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert before and set(before) == {2}
    ones = [1] * len(before)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    with one_thread():
        inside.set()
        for thread in threads:
            thread.start()
        with one_thread():  # re-entrant
            seen.append(("main", True, _blas_threads()))
        seen.append(("main", True, _blas_threads()))
        inside.clear()
    for thread in threads:
        thread.join()
    # the workers waited for the main thread to leave, then each ran on one thread
    assert seen == [("main", True, ones)] * 2 + [("worker", False, ones)] * 4
    assert _blas_threads() == before


@needs_two_cores
def test_sinkhorn_and_cosine_bits_do_not_depend_on_the_blas_thread_count():
    rng = np.random.default_rng(0)
    m, t = 300, 10_000  # large enough that OpenBLAS splits the products across threads
    kernel, v = rng.random((m + 1, t + 1)), rng.random(t + 1)
    with threadpool_limits(limits=1, user_api="blas"):
        plain_1 = kernel @ v
    with threadpool_limits(limits=2, user_api="blas"):
        plain_2 = kernel @ v
    if np.array_equal(plain_1, plain_2):
        pytest.skip("this BLAS gives the same bits on 1 and 2 threads for this size")
    sim = rng.uniform(-0.2, 0.4, (m, t))
    caps, frames = rng.standard_normal((m, 512)).astype(np.float32), rng.standard_normal((3600, 512)).astype(np.float32)
    results = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            results[threads] = (ot.norton_bucket_plan(sim, 0.2, eps=0.1, n_iter=5),
                                similarity.cosine_similarity(caps, frames, dtype=np.float32))
    (plan_1, cos_1), (plan_2, cos_2) = results[1], results[2]
    assert np.array_equal(plan_1.plan, plan_2.plan) and np.array_equal(plan_1.bucket_mass, plan_2.bucket_mass)
    assert np.array_equal(cos_1, cos_2)
