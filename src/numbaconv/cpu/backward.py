"""Gradients of the direct convolution, as parallel Numba loop nests (no im2col).

For ``y[n, oh, ow, f] = b[f] + Σ x[n, oh·SH − PT + ki·DH, ow·SW − PL + kj·DW,
g(f)·CIN + c] · w[ki, kj, c, f]`` (channels_last, group ``g(f) = f // COUT``):

* the input gradient is a transposed direct convolution: each input pixel
  gathers the output gradients of the windows that read it (``oh = (ih + PT −
  ki·DH) / SH`` when that divides), times the weights transposed so that the
  loop over the group's input channels is innermost and contiguous.  One task
  per input row: each task writes only its own row, so no races;
* the kernel gradient correlates input and output gradient.  Its sum runs
  over every output pixel, so tasks (chunks of output rows) accumulate into
  private copies that are added up afterwards — race-free without atomics;
  the loop over the group's filters is innermost and contiguous.

Both read channels_last arrays (channels_first data is reordered around
them by :mod:`numbaconv.cpu.layout`) and take the geometry at run time:
compiled once per dtype, cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..jit import kernel_jit
from .direct import _CONTRACT, _valid_range

__all__ = ["input_gradient", "kernel_gradient"]


@kernel_jit(parallel=True, fastmath=_CONTRACT)
def input_gradient(gy, wt, gx, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT):
    """``gx`` (N, H, W, G·CIN) from ``gy`` (N, OH, OW, G·COUT) and ``wt`` (KH, KW, G·COUT, CIN).

    ``wt[ki, kj, f, c]`` is the weight of filter ``f`` for channel ``c`` of its group.
    """
    N, H, W, _ = gx.shape
    OH, OW = gy.shape[1], gy.shape[2]
    zero = gx.dtype.type(0)
    for row in prange(N * H):
        n = row // H
        ih = row - n * H
        for iw in range(W):
            for ch in range(G * CIN):
                gx[n, ih, iw, ch] = zero
            for ki in range(KH):
                top = ih + PT - ki * DH  # = oh * SH for the output rows reading ih
                if top < 0 or top % SH:
                    continue
                oh = top // SH
                if oh >= OH:
                    continue
                for kj in range(KW):
                    left = iw + PL - kj * DW
                    if left < 0 or left % SW:
                        continue
                    ow = left // SW
                    if ow >= OW:
                        continue
                    if CIN == 1 and COUT == 1:  # depthwise: vectorized along channels
                        for ch in range(G):
                            gx[n, ih, iw, ch] += gy[n, oh, ow, ch] * wt[ki, kj, ch, 0]
                        continue
                    for g in range(G):
                        for o in range(COUT):
                            f = g * COUT + o
                            grad = gy[n, oh, ow, f]
                            for c in range(CIN):
                                gx[n, ih, iw, g * CIN + c] += grad * wt[ki, kj, f, c]


@kernel_jit(parallel=True, fastmath=_CONTRACT)
def kernel_gradient(x, gy, partial, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT):
    """``partial[t]`` (KH, KW, CIN, G·COUT): task ``t``'s share of the kernel gradient.

    Task ``t`` of ``partial.shape[0]`` takes every ``T``-th output row; the
    caller sums ``partial`` over its first axis.
    """
    N, H, W, _ = x.shape
    OH, OW = gy.shape[1], gy.shape[2]
    T = partial.shape[0]
    zero = partial.dtype.type(0)
    for t in prange(T):
        # Local sums (not a view of ``partial``): LLVM then knows the input
        # loads cannot alias them.
        acc = np.empty((KH, KW, CIN, G * COUT), dtype=partial.dtype)
        for ki in range(KH):
            for kj in range(KW):
                for c in range(CIN):
                    for f in range(G * COUT):
                        acc[ki, kj, c, f] = zero
        for row in range(t, N * OH, T):
            n = row // OH
            oh = row - n * OH
            ih0 = oh * SH - PT
            ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
            for ow in range(OW):
                iw0 = ow * SW - PL
                kj_lo, kj_hi = _valid_range(KW, W, DW, iw0)
                for ki in range(ki_lo, ki_hi):
                    for kj in range(kj_lo, kj_hi):
                        if CIN == 1 and COUT == 1:  # depthwise: vectorized along channels
                            for ch in range(G):
                                acc[ki, kj, 0, ch] += (x[n, ih0 + ki * DH, iw0 + kj * DW, ch]
                                                       * gy[n, oh, ow, ch])
                            continue
                        for g in range(G):
                            for c in range(CIN):
                                value = x[n, ih0 + ki * DH, iw0 + kj * DW, g * CIN + c]
                                for o in range(COUT):
                                    f = g * COUT + o
                                    acc[ki, kj, c, f] += value * gy[n, oh, ow, f]
        partial[t] = acc


def task_rows(spec, threads):
    """How many private kernel-gradient copies: one per thread, at most one per output row."""
    return max(1, min(threads, spec.batch * spec.output_hw[0]))


def bias_gradient(gy):
    """``Σ gy`` over batch and pixels (channels_last ``gy``), in float64 then cast."""
    return gy.sum(axis=(0, 1, 2), dtype=np.float64).astype(gy.dtype)
