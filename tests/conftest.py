"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

# CUDA tests run on Numba's simulator unless told otherwise (NUMBA_ENABLE_CUDASIM=0
# on a machine with a GPU); it must be set before Numba is first imported.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402

from keras_support import import_keras  # noqa: E402


@pytest.fixture
def specialized():
    """Run a test with the specialization policy "always" (compiled-in geometry)."""
    from numbaconv import dispatch

    previous = dispatch.get_specialization()
    dispatch.set_specialization("always")
    yield
    dispatch.set_specialization(previous)


@pytest.fixture(scope="module")
def keras():
    """Real Keras (JAX backend) for cross-checks; the test is skipped without it."""
    return import_keras()


#: ``(vector bytes, accumulators)`` of the register files the tile sizes are chosen for
#: (numbaconv.cpu.target.register_limits).
REGISTER_FILES = {"avx512": (64, 16), "avx2": (32, 8)}


@pytest.fixture(params=sorted(REGISTER_FILES))
def register_file(request, monkeypatch):
    """Run a test with the register tiles chosen for AVX-512, then for AVX2, whatever the CPU.

    The tile sizes are arguments (or closure constants) of the kernels, never
    globals compiled into them, so either choice runs on any CPU; the
    in-memory kernel cache, whose plans hold the tiles, is emptied around the test.
    """
    from numbaconv.cache import clear_kernel_cache
    from numbaconv.cpu import backward, direct, target

    vector_bytes, accumulators = REGISTER_FILES[request.param]
    monkeypatch.setattr(target, "VECTOR_BYTES", vector_bytes)
    monkeypatch.setattr(target, "ACCUMULATORS", accumulators)
    monkeypatch.setattr(direct, "DENSE_TILE", direct.largest_tile())
    monkeypatch.setattr(backward, "TILE_VECTORS", accumulators)
    clear_kernel_cache()
    yield request.param
    clear_kernel_cache()
