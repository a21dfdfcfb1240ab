"""Parallel copies around the loop nests: explicit padding and layout reorders.

The nests that vectorize along channels read and write channels_last, so
channels_first data is reordered for them on the way in and out, as oneDNN
reorders NCHW tensors to its blocked layouts: a copy costs a memory pass,
far less than what vectorizing along channels gains over vectorizing along
short image rows.  The input copy also applies explicit zero padding, so a
padded, reordered input costs one pass, not two.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..jit import kernel_jit

__all__ = ["prepare_input", "to_channels_first"]

#: Square blocks transposed at a time, so that both sides of the copy stay
#: in cache lines already loaded.
_BLOCK = 16


@kernel_jit(parallel=True)
def _gather_channels_last(x, out, top, left, CHANNELS_FIRST):
    """``out[n, top + h, left + w, c] = x[n, h, w, c]`` (or ``x[n, c, h, w]``), zero elsewhere."""
    N, OH, OW, C = out.shape
    H = x.shape[2] if CHANNELS_FIRST else x.shape[1]
    W = x.shape[3] if CHANNELS_FIRST else x.shape[2]
    for row in prange(N * OH):
        n = row // OH
        oh = row - n * OH
        h = oh - top
        dst = out[n, oh]
        if h < 0 or h >= H:
            dst[:, :] = 0
            continue
        dst[:left, :] = 0
        dst[left + W:, :] = 0
        if CHANNELS_FIRST:
            for c0 in range(0, C, _BLOCK):
                for w0 in range(0, W, _BLOCK):
                    for c in range(c0, min(c0 + _BLOCK, C)):
                        for w in range(w0, min(w0 + _BLOCK, W)):
                            dst[left + w, c] = x[n, c, h, w]
        else:
            dst[left:left + W, :] = x[n, h]


@kernel_jit(parallel=True)
def _pad_channels_first(x, out, top, left):
    """``out[n, c, top + h, left + w] = x[n, c, h, w]``, zero elsewhere."""
    N, C, OH, OW = out.shape
    H, W = x.shape[2], x.shape[3]
    for row in prange(N * C * OH):
        plane = row // OH
        oh = row - plane * OH
        n = plane // C
        c = plane - n * C
        h = oh - top
        dst = out[n, c, oh]
        if h < 0 or h >= H:
            dst[:] = 0
        else:
            dst[:left] = 0
            dst[left + W:] = 0
            dst[left:left + W] = x[n, c, h]


@kernel_jit(parallel=True)
def _scatter_channels_first(y, out):
    """``out[n, c, h, w] = y[n, h, w, c]``."""
    N, H, W, C = y.shape
    for row in prange(N * H):
        n = row // H
        h = row - n * H
        src = y[n, h]
        for c0 in range(0, C, _BLOCK):
            for w0 in range(0, W, _BLOCK):
                for c in range(c0, min(c0 + _BLOCK, C)):
                    for w in range(w0, min(w0 + _BLOCK, W)):
                        out[n, c, h, w] = src[w, c]


def prepare_input(x, data_format, kernel_format, pads, dtype):
    """``x`` as the kernel reads it: writable, C-contiguous, ``dtype``, padded, reordered.

    Parameters
    ----------
    x : numpy.ndarray
        4-D, in ``data_format``.
    data_format, kernel_format : {"channels_last", "channels_first"}
        The layout of ``x`` and the one the kernel reads (only channels_first
        to channels_last reorders).
    pads : ((int, int), (int, int))
        ``((top, bottom), (left, right))`` zeros to add.
    dtype : numpy.dtype

    Returns
    -------
    numpy.ndarray
        ``x`` itself when it already is that array.
    """
    (top, bottom), (left, right) = pads
    # The copy kernels, like the nests, are compiled for writable C-contiguous
    # arrays of the compute dtype (Numba compiles read-only arrays apart).
    x = np.ascontiguousarray(x, dtype=dtype)
    if not x.flags.writeable:
        x = x.copy()
    reorder = data_format != kernel_format
    if not reorder and top == bottom == left == right == 0:
        return x
    if data_format == "channels_first":
        batch, channels, height, width = x.shape
    else:
        batch, height, width, channels = x.shape
    height, width = height + top + bottom, width + left + right
    if kernel_format == "channels_first":
        out = np.empty((batch, channels, height, width), dtype=dtype)
        _pad_channels_first(x, out, top, left)
    else:
        out = np.empty((batch, height, width, channels), dtype=dtype)
        _gather_channels_last(x, out, top, left, reorder)
    return out


def to_channels_first(y):
    """The channels_last array ``y`` reordered to channels_first (a new C-contiguous array)."""
    out = np.empty((y.shape[0], y.shape[3], y.shape[1], y.shape[2]), dtype=y.dtype)
    _scatter_channels_first(y, out)
    return out
