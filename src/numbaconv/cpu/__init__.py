"""Numba CPU kernels (``@njit(parallel=True)`` direct convolution)."""
