"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

# CUDA tests run on Numba's simulator unless told otherwise (NUMBA_ENABLE_CUDASIM=0
# on a machine with a GPU); it must be set before Numba is first imported.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402

from keras_support import import_keras  # noqa: E402


@pytest.fixture(scope="module")
def keras():
    """Real Keras (JAX backend) for cross-checks; the test is skipped without it."""
    return import_keras()
