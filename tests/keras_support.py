"""Shared support for the optional comparisons with real Keras (JAX backend)."""

from __future__ import annotations

import contextlib
import os

import pytest


def import_keras():
    """Keras on the JAX backend, or skip the test (also for installed-but-broken Keras)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:  # like pytest.importorskip, but also for installed-but-broken keras
        import keras
    except ImportError as exc:
        pytest.skip(f"keras not importable: {exc}")
    return keras


def x64(keras):
    """Let the JAX backend compute in float64 (off by default in JAX)."""
    if keras.backend.backend() == "jax":
        import jax
        enable = getattr(jax, "enable_x64", None)  # jax >= 0.4.36; older: experimental
        if enable is None:
            from jax.experimental import enable_x64 as enable
        return enable(True)
    return contextlib.nullcontext()
