"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from keras_support import import_keras


@pytest.fixture(scope="module")
def keras():
    """Real Keras (JAX backend) for cross-checks; the test is skipped without it."""
    return import_keras()
