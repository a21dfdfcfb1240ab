"""Gradients of the direct convolution, as parallel Numba loop nests (no im2col).

For ``y[n, oh, ow, f] = b[f] + Σ x[n, oh·SH − PT + ki·DH, ow·SW − PL + kj·DW,
g(f)·CIN + c] · w[ki, kj, c, f]`` (channels_last, group ``g(f) = f // COUT``):

* the input gradient is a transposed direct convolution.  Most layers run
  it as forward convolutions (:func:`numbaconv.functional.backward`); layers
  with a few input channels (a stem's 3) sum along the filters here
  (:func:`_narrow_input_gradient_task`; specialized without AVX-512, in tiles
  of pixels × channels: :func:`_narrow_vector_input_gradient_task`), depthwise layers (strided
  ones always, others specialized in vectors) gather each input pixel's output gradients with
  the taps unrolled (:func:`_depthwise_input_gradient_task`,
  :func:`_depthwise_vector_input_gradient_task`), and layers with an axis both
  strided and dilated run :func:`input_gradient`, where each input pixel
  gathers the output gradients of the windows that read it.  One task per
  input row: each task writes only its own row, so no races;
* the kernel gradient correlates input and output gradient: for each tap, a
  matrix product of the input's channels and the output gradient's filters
  over the output pixels (:func:`_kernel_gradient_task`), tiled in registers
  with the filters innermost, specialized per configuration like the
  forward's dense nest (without AVX-512, tiles of explicit vectors:
  :func:`_vector_kernel_gradient_task`; depthwise layers with windows of up
  to :data:`WINDOW_TAPS` taps hold a pixel's every tap, and the bias
  gradient, in registers: :func:`_depthwise_window_gradients_task`, which
  computes their input gradient in the same pass).
  Work items own disjoint parts of the result; where filters and channels
  give too few items, the pixels are split over private copies that are
  added up afterwards — race-free without atomics.

All read channels_last arrays (channels_first data is reordered around
them).  :func:`input_gradient` takes the geometry at run time (one
compilation per dtype, cached on disk); the other nests are tasks, run by a
generic driver or specialized (:class:`~numbaconv.jit.ParallelTask`), chosen
as the forward's tiers are (:func:`numbaconv.dispatch.wants_specialized`).
"""

from __future__ import annotations


import numba
import numpy as np
from numba import njit, prange

from ..cache import kernel_cache
from ..jit import ParallelTask, kernel_jit, task_jit
from . import direct, layout, target
from .direct import _CONTRACT, _valid_range
from .simd import (prefetch, stream_fence, tile_accumulate, tile_fma, tile_fma_lanes,
                   tile_fma_outer, tile_fma_pairs, tile_fma_spread, tile_fma_window, tile_load,
                   tile_store, tile_stream)

__all__ = ["bias_gradient", "depthwise_input_gradient", "gathers_depthwise_input_gradient",
           "input_gradient", "is_narrow", "kernel_and_bias_gradients", "kernel_gradient",
           "kernel_gradient_plan", "narrow_input_gradient", "strided_and_dilated"]


@njit(inline="always")
def _reading_output(position, pad, tap, dilation, stride, count):
    """The output index whose window reads input ``position`` at ``tap``, or -1 if none."""
    start = position + pad - tap * dilation  # = output index * stride
    if start < 0 or start % stride:
        return -1
    index = start // stride
    return index if index < count else -1


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
                oh = _reading_output(ih, PT, ki, DH, SH, OH)
                if oh < 0:
                    continue
                for kj in range(KW):
                    ow = _reading_output(iw, PL, kj, DW, SW, OW)
                    if ow < 0:
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


@njit(inline="always")
def _kernel_gradient_item(item, G, CIN, COUT, CB, OCB, CG):
    """``(split, first filter, first input channel, channel blocks [lo, hi))`` of a work item.

    The item is one split × one group × one block of ``OCB`` filters × one
    of ``CG`` shares of the group's blocks of ``CB`` input channels.
    """
    f_blocks = COUT // OCB
    c_blocks = CIN // CB
    parts = G * f_blocks * CG
    s = item // parts
    rest = item - s * parts
    g = rest // (f_blocks * CG)
    rest -= g * (f_blocks * CG)
    fb = rest // CG
    share = rest - fb * CG
    return (s, g * COUT + fb * OCB, g * CIN, share * c_blocks // CG,
            (share + 1) * c_blocks // CG)


@njit(inline="always")
def _kernel_gradient_tiles(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CB,
                           OCB, ROWS, SPLITS, CG, SHIFTED):
    """One work item of the kernel gradient of a dense or grouped layer (channels_last).

    ``grad[s, ki, kj, c, f] = Σ x[n, ih, iw, g·CIN + c] · gy[n, oh, ow, f]``
    over split ``s``'s share of the output pixels.  The item is one split
    × one group × one block of ``OCB`` filters × one of ``CG`` shares of the
    group's blocks of ``CB`` input channels.  The output pixels go by
    chunks of ``ROWS`` rows (a few hundred pixels, so the chunk's inputs and
    output gradients stay in cache while every tap and channel block reads
    them); for each tap and channel block, a ``CB`` × ``OCB`` tile of sums
    runs over the chunk in registers, each output gradient vector loaded
    feeding ``CB`` multiply-adds — a matrix product with the filters
    innermost, as the forward's dense nest.

    ``SHIFTED``: the sums of narrow groups (:func:`_shifted_kernel_gradient_task`),
    where "channel" ``c`` is a shift and lane ``o`` reads channel ``c + f0 + o``.
    """
    H, W = x.shape[1], x.shape[2]
    OH, OW = gy.shape[1], gy.shape[2]
    s, f0, x0, cb_lo, cb_hi = _kernel_gradient_item(item, G, CIN, COUT, CB, OCB, CG)
    rows = gy.shape[0] * OH
    acc = np.empty(CB * OCB, dtype=grad.dtype)
    for chunk in range(s, (rows + ROWS - 1) // ROWS, SPLITS):
        r0 = chunk * ROWS
        r1 = min(r0 + ROWS, rows)
        for ki in range(KH):
            for kj in range(KW):
                lo, hi = _valid_range(OW, W, SW, kj * DW - PL)
                for cb in range(cb_lo, cb_hi):
                    c0 = cb * CB
                    for c in range(CB):
                        for o in range(OCB):
                            acc[c * OCB + o] = grad[s, ki, kj, c0 + c, f0 + o]
                    for row in range(r0, r1):
                        n = row // OH
                        oh = row - n * OH
                        ih = oh * SH - PT + ki * DH
                        if ih < 0 or ih >= H:
                            continue
                        n, oh, ih = np.uint64(n), np.uint64(oh), np.uint64(ih)  # no wraparound checks
                        for ow in range(lo, hi):
                            iw = np.uint64(ow * SW - PL + kj * DW)
                            col = np.uint64(ow)
                            for c in range(CB):
                                if SHIFTED:  # a vector of channels (G is 1, x0 is 0)
                                    for o in range(OCB):
                                        acc[c * OCB + o] += (x[n, ih, iw, np.uint64(c0 + c + f0 + o)]
                                                             * gy[n, oh, col, np.uint64(f0 + o)])
                                else:  # one channel for every filter
                                    value = x[n, ih, iw, np.uint64(x0 + c0 + c)]
                                    for o in range(OCB):
                                        acc[c * OCB + o] += value * gy[n, oh, col,
                                                                       np.uint64(f0 + o)]
                    for c in range(CB):
                        for o in range(OCB):
                            grad[s, ki, kj, c0 + c, f0 + o] = acc[c * OCB + o]


def _kernel_gradient_task(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CB,
                          OCB, ROWS, SPLITS, CG):
    """:func:`_kernel_gradient_tiles` of a dense or grouped layer."""
    _kernel_gradient_tiles(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CB,
                           OCB, ROWS, SPLITS, CG, False)


def _vector_kernel_gradient_task(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                                 COUT, CB, OCB, ROWS, SPLITS, CG, V, L, IN_LANE, FB):
    """:func:`_kernel_gradient_task` in a tile of explicit vectors (:mod:`.simd`); specialized.

    ``CB`` channels × ``OCB = V·L`` filters (CPUs without AVX-512: 4 channels
    × 16 float32 for 3x3 56²×64, against 1 × 64 in the loop nest); each step
    broadcasts the ``CB`` input values of one pixel and loads the pixel's
    output gradient vectors once.  ``IN_LANE``: groups of ``CB`` = ``CIN``
    channels in and out, narrower than a vector, run as one group (``G`` 1)
    whose filter block reads the input vectors at its own lanes, spread
    group by group (:func:`~.simd.tile_fma_spread`).  An item takes ``FB``
    blocks of filters, one after the other over each chunk, which then
    reads its input once for them all.  The loops over chunks, taps and rows are
    those of :func:`_kernel_gradient_tiles`, written out again: the tile's
    sizes are types, so its code cannot sit in a branch of the generic
    task (Numba types every branch), and the loop nest's own
    tiles are what LLVM keeps in registers only as written there.
    """
    H, W, XC = x.shape[1], x.shape[2], x.shape[3]
    OH, OW, GC = gy.shape[1], gy.shape[2], gy.shape[3]
    s, f_first, x0, cb_lo, cb_hi = _kernel_gradient_item(item, G, CIN, COUT, CB, FB * OCB, CG)
    rows = gy.shape[0] * OH
    zeros = np.zeros(V * L, dtype=grad.dtype)
    # The split's first chunk starts its sums from zero (``grad`` is not cleared:
    # zeroing 9.4 MB for 7²×512 cost a tenth of its backward); a split without
    # rows runs one empty chunk, which stores the zeros.
    for chunk in range(s, max((rows + ROWS - 1) // ROWS, s + 1), SPLITS):
        r0 = chunk * ROWS
        r1 = min(r0 + ROWS, rows)
        n0 = r0 // OH
        oh0 = r0 - n0 * OH
        for f0 in range(f_first, f_first + FB * OCB, OCB):
            for ki in range(KH):
                for kj in range(KW):
                    lo, hi = _valid_range(OW, W, SW, kj * DW - PL)
                    for cb in range(cb_lo, cb_hi):
                        c0 = cb * CB
                        at = (((s * KH + ki) * KW + kj) * CIN + c0) * GC + f0
                        if chunk == s:
                            tile = tile_load(zeros, 0, 0, CB, V, L)
                        else:
                            tile = tile_load(grad, at, GC, CB, V, L)
                        n, oh = n0, oh0  # of row r0, stepped: a division per row cost a tenth
                        for row in range(r0, r1):
                            ih = oh * SH - PT + ki * DH
                            if 0 <= ih < H:
                                x_at = (((n * H + ih) * W + lo * SW - PL + kj * DW) * XC
                                        + (f0 if IN_LANE else x0 + c0))
                                gy_at = (row * OW + lo) * GC + f0
                                for _ in range(lo, hi):
                                    if IN_LANE:
                                        tile = tile_fma_spread(tile, x, x_at, gy, gy_at)
                                    else:
                                        tile = tile_fma(tile, x, x_at, 1, gy, gy_at)
                                    x_at += SW * XC
                                    gy_at += GC
                            oh += 1
                            if oh == OH:
                                n, oh = n + 1, 0
                        tile_store(grad, at, GC, tile)


def _shifted_kernel_gradient_task(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                                  COUT, CB, OCB, ROWS, SPLITS, CG):
    """The kernel gradient of groups of ``w`` channels in and out (ResNeXt's 4), by shifts.

    Padded to whole blocks of filters, groups of 4 filters would waste 15/16
    of the arithmetic.  Instead, as the forward's shifted nest, lane ``o`` of
    a 64-filter block sums, for every shift ``c`` (``CIN`` of them: ``2w − 1``
    rounded up to whole tiles), the filter's output gradient times input
    channel ``f0 + o + c − (w − 1)``: every load contiguous, about twice the
    useful arithmetic.  The shifts whose channel is in the filter's group
    are the gradient (:func:`kernel_gradient` picks them); the others are
    discarded.  ``x`` has ``w − 1`` zero channels before each pixel's and
    enough after them.
    """
    _kernel_gradient_tiles(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CB,
                           OCB, ROWS, SPLITS, CG, True)


def _depthwise_kernel_gradient_task(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                                    COUT, CB, OCB, ROWS, SPLITS, CG):
    """One work item of a depthwise layer's kernel gradient: split ``item`` of the pixels.

    ``grad[item, ki, kj, 0, c] = Σ x[n, ih, iw, c] · gy[n, oh, ow, c]``, by
    chunks of ``ROWS`` output rows as :func:`_kernel_gradient_task` (every
    channel block of a chunk in the same item: the input is read from
    memory once, measured 2x faster on 112²×96 stride 2), with
    ``x`` and ``gy`` given as flat rows (``(N, H, W·G)``, ``(N, OH, OW·G)``)
    and each tap's sums in ``OCB`` vector lanes: LLVM vectorizes the loop
    over them only at four vectors' length (measured: 10 GFLOP/s with 32
    lanes, 60-70 with 64).  So with ``G ≥ OCB`` channels, blocks of ``OCB``
    channels, the last one shifted left to end at ``G`` (its overlap with the
    previous block is computed again and discarded); with fewer channels,
    ``CB`` neighbouring pixels per step (stride 1: their channels are
    contiguous), lane ``l`` holding channel ``l mod G``, the row's last
    pixels one by one.  A row of taps (``KW``) shares each output gradient
    vector loaded, its ``KW`` sums in registers, over the pixels that every
    column tap reaches; the others run tap by tap (measured against one tap
    per pass: 14²×576 45 → 80 GFLOP/s, 112²×32 70 → 84-100, 112²×96 stride
    2 at N=8, which streams from memory, unchanged).  The pixels the steps
    leave (a row's first and last, for 3 taps) go one by one from a list made
    once per item (against a test per pixel of each row: 1.19-1.26x on
    112²×32, 1.15x on 112²×96 stride 2 at N=8, 14²×576 unchanged).  The
    way LLVM compiles this loop nest is fragile: three other ways of
    skipping the test made it store the sums to memory on every step
    (checked in the assembly).  The row arithmetic is
    written out here and in
    :func:`_kernel_gradient_task` on purpose: moved into an inlined helper,
    it made the dense tile 5x slower (measured).
    """
    H = x.shape[1]
    OH = gy.shape[1]
    W, OW = x.shape[2] // G, gy.shape[2] // G
    blocks = (G + OCB - 1) // OCB if G >= OCB else 1
    lanes = OCB if G >= OCB else CB * G
    width = lanes if G >= OCB else G  # channels a block writes (from its first owned lane)
    rows = gy.shape[0] * OH
    # The pixels every column tap reaches, stepped by CB (the others go one by one).
    lo_all, hi_all = 0, OW
    for kj in range(KW):
        lo, hi = _valid_range(OW, W, SW, kj * DW - PL)
        lo_all, hi_all = max(lo_all, lo), min(hi_all, hi)
    steps_end = lo_all + max(0, hi_all - lo_all) // CB * CB
    # The (pixel, column tap) pairs outside the steps, listed once as offsets
    # in the rows of x, gy and tail: a scan of each row for them (a test per
    # pixel and tap) cost a fifth of the kernel on 112-wide rows, and with
    # the tap index read at run time LLVM kept the sums out of registers.
    edge_x = np.empty(KW * OW, dtype=np.int64)
    edge_gy = np.empty(KW * OW, dtype=np.int64)
    edge_tail = np.empty(KW * OW, dtype=np.int64)
    edges = 0
    for kj in range(KW):
        lo, hi = _valid_range(OW, W, SW, kj * DW - PL)
        for ow in range(lo, hi):
            if ow < lo_all or ow >= steps_end:
                edge_x[edges] = (ow * SW - PL + kj * DW) * G
                edge_gy[edges] = ow * G
                edge_tail[edges] = kj * G
                edges += 1
    acc = np.empty(KW * lanes, dtype=grad.dtype)
    tail = np.empty(KW * G, dtype=grad.dtype)
    for chunk in range(item, (rows + ROWS - 1) // ROWS, SPLITS):
        r0 = chunk * ROWS
        r1 = min(r0 + ROWS, rows)
        for ki in range(KH):
            for b in range(blocks):
                c0 = min(b * OCB, G - OCB) if G >= OCB else 0
                owned = b * OCB - c0  # lanes below it belong to the previous block
                for lane in range(KW * lanes):
                    acc[lane] = 0
                for kj in range(KW):
                    for c in range(c0, c0 + width):
                        tail[kj * G + c] = 0
                for row in range(r0, r1):
                    n = row // OH
                    oh = row - n * OH
                    ih = oh * SH - PT + ki * DH
                    if ih < 0 or ih >= H:
                        continue
                    n, oh, ih = np.uint64(n), np.uint64(oh), np.uint64(ih)  # no wraparound
                    for ow in range(lo_all, steps_end, CB):
                        gs = ow * G + c0
                        for kj in range(KW):  # one output gradient load, KW taps
                            xs = (ow * SW - PL + kj * DW) * G + c0
                            for lane in range(lanes):
                                acc[kj * lanes + lane] += (x[n, ih, np.uint64(xs + lane)]
                                                           * gy[n, oh, np.uint64(gs + lane)])
                    for e in range(edges):  # the pixels left, tap by tap, one by one
                        xs, gs, ts = edge_x[e] + c0, edge_gy[e] + c0, edge_tail[e] + c0
                        for c in range(width):  # the block's channels
                            tail[np.uint64(ts + c)] += (x[n, ih, np.uint64(xs + c)]
                                                        * gy[n, oh, np.uint64(gs + c)])
                for kj in range(KW):
                    for lane in range(owned, width):
                        total = tail[kj * G + c0 + lane]
                        for p in range(lane, lanes, width):
                            total += acc[kj * lanes + p]
                        grad[item, ki, kj, 0, c0 + lane] += total


@njit(inline="always")
def _reaching_taps(position, pad, K, D, S, count):
    """``(lo, hi, step)``: the taps whose window reads input ``position``, as a range.

    Tap ``t`` reads it for output ``(position + pad − t·D) / S`` when that
    divides and lies in ``[0, count)``.  For ``D == 1`` those taps are every
    ``S``-th; for ``S == 1``, consecutive.  (Not both above 1: see :func:`is_narrow`.)
    """
    start = position + pad
    if S == 1:
        lo = max(0, -((count - 1 - start) // D))  # ceil((start - count + 1) / D)
        hi = min(K, start // D + 1) if start >= 0 else 0
        return lo, max(lo, hi), 1
    first = start % S
    low = start - (count - 1) * S  # the smallest tap with an output in range
    lo = first if low <= first else first + -((first - low) // S) * S
    return lo, max(lo, min(K, start + 1)), S


def _narrow_input_gradient_task(gy, w, gx, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT,
                                CB, OCB, ROWS, SPLITS, CG):
    """One input row of the input gradient of a layer with few input channels (a stem's 3).

    ``gx[n, ih, iw, c] = Σ gy[n, oh, ow, f] · w[ki, kj, c, f]`` over the taps
    that read the pixel and the ``COUT`` filters (one group; ``COUT`` whole
    blocks of ``OCB``).  As a forward convolution (the other input
    gradients) it would have ``CIN`` filters, padded to 64: 21x the work for
    3 channels.  Here the sum runs along the filters instead, ``CB``
    channels × ``OCB`` filter lanes in registers, added up lane by lane
    (a fixed tree: no reassociation) once per pixel.
    """
    H, W = gx.shape[1], gx.shape[2]
    OH, OW = gy.shape[1], gy.shape[2]
    n = item // H
    ih = item - n * H
    acc = np.empty(CB * OCB, dtype=gx.dtype)
    fold = np.empty(OCB, dtype=gx.dtype)
    for iw in range(W):
        for c0 in range(0, CIN, CB):
            for lane in range(CB * OCB):
                acc[lane] = 0
            # Clipped ranges of the taps that reach the pixel, no tests in the
            # loops (with them, the sums left the registers: 60-70 GFLOP/s).
            ki_lo, ki_hi, ki_step = _reaching_taps(ih, PT, KH, DH, SH, OH)
            kj_lo, kj_hi, kj_step = _reaching_taps(iw, PL, KW, DW, SW, OW)
            for ki in range(ki_lo, ki_hi, ki_step):
                oh = (ih + PT - ki * DH) // SH
                for kj in range(kj_lo, kj_hi, kj_step):
                    ow = (iw + PL - kj * DW) // SW
                    nu, ohu, owu = np.uint64(n), np.uint64(oh), np.uint64(ow)
                    kiu, kju = np.uint64(ki), np.uint64(kj)
                    for f0 in range(0, COUT, OCB):
                        for c in range(CB):
                            cu = np.uint64(c0 + c)
                            for o in range(OCB):
                                f = np.uint64(f0 + o)
                                acc[c * OCB + o] += gy[nu, ohu, owu, f] * w[kiu, kju, cu, f]
            for c in range(CB):
                # The four vectors added lane by lane, then the lanes in a copy:
                # indexed only in unrolled loops, ``acc`` stays in registers.
                lanes = OCB // 4
                for lane in range(lanes):
                    at = c * OCB + lane
                    fold[lane] = ((acc[at] + acc[at + lanes])
                                  + (acc[at + 2 * lanes] + acc[at + 3 * lanes]))
                span = lanes
                while span > 1:
                    span //= 2
                    for o in range(span):
                        fold[o] += fold[o + span]
                gx[n, ih, iw, c0 + c] = fold[0]


@njit(inline="always")
def _fold_lanes(sums, at, L):
    """``sums[at:at + L]`` added up by a fixed tree (the halves lane by lane, and again)."""
    span = L
    while span > 1:
        span //= 2
        for o in range(span):
            sums[at + o] += sums[at + o + span]
    return sums[at]


@njit(inline="always")
def _narrow_sums(tile, gy, w, n, ih, iw, ki_lo, ki_hi, ki_step, kj_lo, kj_hi, kj_step, KW, SH,
                 SW, DH, DW, PT, PL, CIN, COUT, L, P):
    """``tile`` plus the products of :func:`_narrow_vector_input_gradient_task` for ``P``
    pixels of a phase from ``iw`` (consecutive output columns at every tap)."""
    OH, OW = gy.shape[1], gy.shape[2]
    for ki in range(ki_lo, ki_hi, ki_step):
        g_row = (n * OH + (ih + PT - ki * DH) // SH) * OW
        for kj in range(kj_lo, kj_hi, kj_step):
            g_at = (g_row + (iw + PL - kj * DW) // SW) * COUT
            w_at = (ki * KW + kj) * CIN * COUT
            for f in range(0, COUT, L):
                tile = tile_fma_outer(tile, gy, g_at + f, COUT, w, w_at + f, COUT, P)
    return tile


def _narrow_vector_input_gradient_task(gy, w, gx, item, KH, KW, SH, SW, DH, DW, PT, PL, CIN,
                                       COUT, L, P, R):
    """:func:`_narrow_input_gradient_task` in tiles of explicit vectors (:mod:`.simd`);
    specialized.

    ``P`` input pixels of one column phase (``iw ≡ phase mod SW``: at every
    tap they read consecutive output columns) × the ``CIN`` channels, one
    vector of ``L`` filter lanes each (``R = CIN·P`` sums,
    :func:`~.simd.tile_fma_outer`): each step loads ``P`` output gradient
    vectors and ``CIN`` weight vectors for ``R`` multiply-adds, where the
    loop nest loads two vectors for each.  Pixels whose taps the border
    clips, and a phase's last few, go one at a time.  The lanes are added
    up by a fixed tree.
    """
    H, W = gx.shape[1], gx.shape[2]
    OH, OW = gy.shape[1], gy.shape[2]
    n = item // H
    ih = item - n * H
    ki_lo, ki_hi, ki_step = _reaching_taps(ih, PT, KH, DH, SH, OH)
    sums = np.empty(R * L, dtype=gx.dtype)
    zeros = np.zeros(L, dtype=gx.dtype)
    for phase in range(SW):
        count = (W - phase + SW - 1) // SW  # the phase's pixels
        first = 0 if SW == 1 else (phase + PL) % SW
        whole = (KW - first + SW - 1) // SW  # the taps that reach them, unclipped
        m = 0
        while m < count:
            iw = phase + m * SW
            kj_lo, kj_hi, kj_step = _reaching_taps(iw, PL, KW, DW, SW, OW)
            last_lo, last_hi, _ = _reaching_taps(iw + (P - 1) * SW, PL, KW, DW, SW, OW)
            if (m + P <= count and (kj_hi - kj_lo + kj_step - 1) // kj_step == whole
                    and (last_hi - last_lo + kj_step - 1) // kj_step == whole):
                tile_store(sums, 0, L, _narrow_sums(
                    tile_load(zeros, 0, 0, R, 1, L), gy, w, n, ih, iw, ki_lo, ki_hi, ki_step,
                    kj_lo, kj_hi, kj_step, KW, SH, SW, DH, DW, PT, PL, CIN, COUT, L, P))
                for c in range(CIN):
                    for p in range(P):
                        gx[n, ih, iw + p * SW, c] = _fold_lanes(sums, (c * P + p) * L, L)
                m += P
            else:
                tile_store(sums, 0, L, _narrow_sums(
                    tile_load(zeros, 0, 0, CIN, 1, L), gy, w, n, ih, iw, ki_lo, ki_hi, ki_step,
                    kj_lo, kj_hi, kj_step, KW, SH, SW, DH, DW, PT, PL, CIN, COUT, L, 1))
                for c in range(CIN):
                    gx[n, ih, iw, c] = _fold_lanes(sums, c * L, L)
                m += 1


def _depthwise_input_gradient_task(gy, w, gx, item, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                                   COUT, CB, OCB, ROWS, SPLITS, CG):
    """Input row ``item`` of a depthwise layer's input gradient (one filter a channel).

    ``gx[n, ih, iw, c] = Σ gy[n, oh, ow, c] · w[ki, kj, c]`` over the taps
    that read the pixel, with ``gx`` and ``gy`` as flat rows (``(N, H,
    W·G)``, ``(N, OH, OW·G)``) and ``w`` as ``(KH, KW, G)``.  Those taps
    are every ``SH``-th along an axis from the first, ``(ih + PT) mod SH``
    (an axis is not both strided and dilated here): so a pixel has
    ``⌈KH/SH⌉ × ⌈KW/SW⌉`` tap slots, a constant, unrolled inside the loop
    over channels, which is vectorized with each channel's sum in a
    register.  A slot whose tap or output lies outside reads a clamped
    place and selects zero instead (no branch in the loop).  Against the
    generic gather nest (a test per tap, sums in memory): 1.7x on 112²×96
    stride 2 at N=1, 1.2x at N=8.
    """
    H, OH = gx.shape[1], gy.shape[1]
    W, OW = gx.shape[2] // G, gy.shape[2] // G
    TH, TW = (KH + SH - 1) // SH, (KW + SW - 1) // SW
    n = item // H
    ih = item - n * H
    first_h = (ih + PT) % SH
    nu, ihu = np.uint64(n), np.uint64(ih)
    zero = gx.dtype.type(0)
    for iw in range(W):
        first_w = (iw + PL) % SW
        for c in range(G):
            total = zero
            for a in range(TH):
                ki = first_h + a * SH
                oh = (ih + PT - ki * DH) // SH
                row_inside = ki < KH and 0 <= oh < OH
                ohu, kiu = np.uint64(min(max(oh, 0), OH - 1)), np.uint64(min(ki, KH - 1))
                for b in range(TW):
                    kj = first_w + b * SW
                    ow = (iw + PL - kj * DW) // SW
                    inside = row_inside and kj < KW and 0 <= ow < OW
                    owc, kju = min(max(ow, 0), OW - 1), np.uint64(min(kj, KW - 1))
                    value = gy[nu, ohu, np.uint64(owc * G + c)]
                    total += (value if inside else zero) * w[kiu, kju, np.uint64(c)]
            gx[nu, ihu, np.uint64(iw * G + c)] = total


def _depthwise_vector_input_gradient_task(gy, w, gx, item, KH, KW, SH, SW, DH, DW, PT, PL, G,
                                          V, L, STREAM):
    """:func:`_depthwise_input_gradient_task` in explicit vectors of ``L`` channels (:mod:`.simd`).

    Specialized only, ``G`` a multiple of ``V·L``.  The input pixels of a row
    go by column phase (``iw mod SW``): those of a phase read the same
    column taps, at consecutive outputs, so a tile of 4 of them × ``V``
    vectors is a forward depthwise tile (:func:`~.simd.tile_fma_lanes`) over the output
    gradient, stored every ``SW``-th pixel.  The row's taps are the ones
    that reach it (clipped); the pixels of a phase whose taps leave the
    output gradient go one by one, their taps tested.  With ``STREAM`` the
    tiles are stored non-temporally (``gx`` aligned, pixels of whole cache
    lines; see :func:`~.simd.tile_stream`).  112²×96 stride 2, N=1: 1.6 ms
    with the loop nest (a select per tap slot), 0.4 ms.
    """
    P = 4
    H, OH = gx.shape[1], gy.shape[1]
    W, OW = gx.shape[2] // G, gy.shape[2] // G
    n = item // H
    ih = item - n * H
    ki_lo, ki_hi, ki_step = _reaching_taps(ih, PT, KH, DH, SH, OH)
    zeros = np.zeros(V * L, dtype=gx.dtype)
    gy_image = n * OH * OW * G
    gx_row = item * W * G
    for phase in range(min(SW, W)):
        count = (W - phase + SW - 1) // SW  # input pixels phase + m·SW of the row
        first = (phase + PL) % SW  # the column taps that reach them: first, first + SW, ...
        last = first + (KW - 1 - first) // SW * SW if first < KW else first
        # Pixel m reads output m + (phase + PL − kj·DW) / SW at tap kj (exact: DW = 1 when SW > 1).
        lo = max(0, -((phase + PL - last * DW) // SW))
        hi = max(lo, min(count, OW - (phase + PL - first * DW) // SW))
        tiles = (hi - lo + P - 1) // P if hi - lo >= P else 0
        if tiles == 0:
            hi = lo
        for t in range(tiles):
            m = min(lo + t * P, hi - P)
            for c in range(0, G, V * L):
                tile = tile_load(zeros, 0, 0, P, V, L)
                for ki in range(ki_lo, ki_hi, ki_step):
                    oh = (ih + PT - ki * DH) // SH
                    for kj in range(first, KW, SW):
                        ow = m + (phase + PL - kj * DW) // SW
                        at = np.uint64(gy_image + (oh * OW + ow) * G + c)
                        tile = tile_fma_lanes(tile, gy, at, G, w,
                                              np.uint64((ki * KW + kj) * G + c))
                at = np.uint64(gx_row + (phase + m * SW) * G + c)
                if STREAM:
                    tile_stream(gx, at, SW * G, tile)
                else:
                    tile_store(gx, at, SW * G, tile)
        for e in range(count - (hi - lo)):  # the pixels left of the tiles, then right of them
            m = e if e < lo else e + hi - lo
            iw = phase + m * SW
            for c in range(0, G, L):
                total = tile_load(zeros, 0, 0, 1, 1, L)
                for ki in range(ki_lo, ki_hi, ki_step):
                    oh = (ih + PT - ki * DH) // SH
                    for kj in range(first, KW, SW):
                        ow = (iw + PL - kj * DW) // SW
                        if 0 <= ow < OW:
                            total = tile_fma_lanes(total, gy, gy_image + (oh * OW + ow) * G + c,
                                                   0, w, (ki * KW + kj) * G + c)
                tile_store(gx, gx_row + iw * G + c, 0, total)
    stream_fence()


def _depthwise_vector_kernel_gradient_task(x, gy, grad, item, KH, KW, SH, SW, DH, DW, PT, PL,
                                           G, V, L, ROWS, SPLITS):
    """:func:`_depthwise_kernel_gradient_task` in explicit vectors (:mod:`.simd`); specialized.

    For each tap, over the output pixels whose input the tap reads (as
    :func:`_vector_kernel_gradient_task`: no border code), ``V`` vectors of
    ``L`` channels of two neighbouring pixels' products at a time
    (:func:`~.simd.tile_fma_pairs`: 2·V independent sums), the pixels'
    sums added at the chunk's end (:func:`~.simd.tile_accumulate`), a
    fixed order.  ``x`` and ``gy`` are flat rows as in the loop nest.  The
    loops over chunks, taps and rows are those of the other kernel-gradient
    tasks, written out again for the reason :func:`_vector_kernel_gradient_task`
    gives.
    """
    P = 2
    H, OH = x.shape[1], gy.shape[1]
    W, OW = x.shape[2] // G, gy.shape[2] // G
    rows = gy.shape[0] * OH
    zeros = np.zeros(V * L, dtype=grad.dtype)
    for chunk in range(item, (rows + ROWS - 1) // ROWS, SPLITS):
        r0 = chunk * ROWS
        r1 = min(r0 + ROWS, rows)
        for ki in range(KH):
            for kj in range(KW):
                lo, hi = _valid_range(OW, W, SW, kj * DW - PL)
                pairs = (hi - lo) // P
                odd = (hi - lo) % P
                for c in range(0, G, V * L):
                    tile = tile_load(zeros, 0, 0, P, V, L)
                    last = tile_load(zeros, 0, 0, 1, V, L)
                    for row in range(r0, r1):
                        n = row // OH
                        oh = row - n * OH
                        ih = oh * SH - PT + ki * DH
                        if ih < 0 or ih >= H:
                            continue
                        x_at = np.uint64(((n * H + ih) * W + lo * SW - PL + kj * DW) * G + c)
                        gy_at = np.uint64(((n * OH + oh) * OW + lo) * G + c)
                        for _ in range(pairs):
                            tile = tile_fma_pairs(tile, x, x_at, SW * G, gy, gy_at, G)
                            x_at += np.uint64(P * SW * G)
                            gy_at += np.uint64(P * G)
                        if odd:
                            last = tile_fma_pairs(last, x, x_at, 0, gy, gy_at, 0)
                    at = ((item * KH + ki) * KW + kj) * G + c
                    tile_accumulate(grad, at, tile)
                    tile_accumulate(grad, at, last)


def _depthwise_window_gradients_task(x, gy, w, grad, gx, item, KH, KW, SH, SW, DH, DW, PT, PL,
                                     G, L, ROWS, SPLITS, T, V, STREAM, INPUT_GRADIENT):
    """A depthwise layer's kernel and bias gradients, every tap of a pixel at once, and with
    ``INPUT_GRADIENT`` its input gradient too, chunk by chunk; specialized.

    ``grad[item, t, 0, c]`` sums, for tap ``t = ki·KW + kj``, ``x · gy`` as
    :func:`_depthwise_kernel_gradient_task`, and in row ``KH·KW`` the bias
    gradient ``Σ gy``, over the item's share of the output rows: one run of
    rows, so that each input row is read about once, in chunks of ``ROWS``
    rows that every vector of channels reads while they are in cache (the
    sums stay in registers over a chunk).  Each output gradient
    vector of ``L`` channels is loaded once for all the taps
    (:func:`~.simd.tile_fma_window`: ``T = KH·KW + 1`` sums in registers, a
    compile-time constant), where the tap-by-tap tasks load it once per tap
    and read the output gradient again for the bias.  At the borders the
    taps outside the image read zeros.  Where neighbouring output rows all
    see whole windows, :data:`WINDOW_ROWS` of them go at once, each input
    row they share loaded once.  ``x`` and ``gy`` are flat rows as in the
    loop nest.

    With ``INPUT_GRADIENT``, after each chunk the item computes the rows of
    ``gx`` (its share of them, flat rows, from the kernel ``w`` as
    ``(KH, KW, G)``) whose output gradient rows the chunk has just read, by
    :func:`_depthwise_vector_input_gradient_task` (``V``, ``STREAM``): the
    output gradient is read from memory once for both gradients, not twice
    (``conv2d_backward`` against the two tasks one after the other, N=8:
    14²×576 0.87x the time, 112²×32 0.88x, 112²×96 stride 2 0.93x).
    Without it ``w`` and ``gx`` are not read.
    """
    H, OH = x.shape[1], gy.shape[1]
    W, OW = x.shape[2] // G, gy.shape[2] // G
    rows = gy.shape[0] * OH
    lo = _valid_range(OW, W, SW, -PL)[0]  # the columns whose whole window is inside
    hi = max(lo, _valid_range(OW, W, SW, (KW - 1) * DW - PL)[1])
    base = item * T * G
    first, last = item * rows // SPLITS, (item + 1) * rows // SPLITS
    AHEAD = PREFETCH_LANES if G * x.itemsize >= PREFETCH_MIN_BYTES else 0  # 0: none
    zeros = np.zeros(L, dtype=x.dtype)  # what the taps outside the image read
    whole = (1 << KH) - 1  # the mask of a row whose window rows are all inside
    gx_rows = gx.shape[0] * H
    done, gx_last = item * gx_rows // SPLITS, (item + 1) * gx_rows // SPLITS  # the input gradient's
    RS = WINDOW_ROWS[0] if SH == 1 else WINDOW_ROWS[1]  # rows at once (a constant)
    for r0 in range(first, last, ROWS):  # chunks whose rows stay in cache for every channel
        r1 = min(r0 + ROWS, last)
        for c in range(0, G, L):
            tile = tile_load(grad, base + c, G, T, 1, L)
            row = r0
            while row < r1:
                n = row // OH
                oh = row - n * OH
                ih0 = oh * SH - PT
                rows_inside = 0
                for ki in range(KH):
                    if 0 <= ih0 + ki * DH < H:
                        rows_inside |= 1 << ki
                # RS rows at once where all see whole windows (WINDOW_ROWS), all of this
                # chunk; a whole window's row exists, so they are rows of this image.
                R = RS if (rows_inside == whole and row + RS <= r1
                           and ih0 + (RS - 1) * SH + (KH - 1) * DH < H) else 1
                x_row = ((n * H + ih0) * W - PL) * G + c  # (outside x at a border: masked)
                g_row = (n * OH + oh) * OW * G + c
                x_at = x_row + lo * SW * G
                g_at = g_row + lo * G
                if R > 1:
                    for _ in range(lo, hi):
                        if AHEAD:  # this vector's line of the next pixels' column
                            for ki in range(KH + RS - 1):
                                prefetch(x, x_at + ki * DH * W * G + (KW - 1) * DW * G + AHEAD)
                            for r in range(RS):
                                prefetch(gy, g_at + r * OW * G + AHEAD)
                        for r in range(RS):
                            tile = tile_fma_window(tile, x, x_at + r * SH * W * G, DH * W * G,
                                                   DW * G, gy, g_at + r * OW * G, KW, True, -1,
                                                   -1, zeros)
                        x_at += SW * G
                        g_at += G
                elif rows_inside == whole:  # the interior: whole windows
                    for _ in range(lo, hi):
                        if AHEAD:
                            for ki in range(KH):
                                prefetch(x, x_at + ki * DH * W * G + (KW - 1) * DW * G + AHEAD)
                            prefetch(gy, g_at + AHEAD)
                        tile = tile_fma_window(tile, x, x_at, DH * W * G, DW * G, gy, g_at, KW,
                                               True, -1, -1, zeros)
                        x_at += SW * G
                        g_at += G
                else:
                    for _ in range(lo, hi):
                        tile = tile_fma_window(tile, x, x_at, DH * W * G, DW * G, gy, g_at, KW,
                                               True, rows_inside, -1, zeros)
                        x_at += SW * G
                        g_at += G
                for r in range(R):  # the border columns, left then right
                    for ow in range(OW - (hi - lo)):
                        if ow >= lo:
                            ow += hi - lo
                        columns_inside = 0
                        for kj in range(KW):
                            if 0 <= ow * SW - PL + kj * DW < W:
                                columns_inside |= 1 << kj
                        tile = tile_fma_window(tile, x, x_row + (r * SH * W + ow * SW) * G,
                                               DH * W * G, DW * G, gy,
                                               g_row + (r * OW + ow) * G, KW, True, rows_inside,
                                               columns_inside, zeros)
                row += R
            tile_store(grad, base + c, G, tile)
        if INPUT_GRADIENT:  # the rows of gx whose last output gradient row is in this chunk
            n = (r1 - 1) // OH
            oh = r1 - 1 - n * OH  # gx row ih reads output rows up to (ih + PT) // SH
            ready = (n + 1) * H if oh == OH - 1 else n * H + min(H, max(0, (oh + 1) * SH - PT))
            while done < min(ready, gx_last):
                _vector_depthwise_input_task(gy, w, gx, np.int64(done), KH, KW, SH, SW, DH, DW,
                                             PT, PL, G, V, L, STREAM)
                done += 1
    if INPUT_GRADIENT:  # rows left: those of output rows past this item's share
        while done < gx_last:
            _vector_depthwise_input_task(gy, w, gx, np.int64(done), KH, KW, SH, SW, DH, DW, PT,
                                         PL, G, V, L, STREAM)
            done += 1



#: The tasks by number, the generic drivers' compile-time selector (see
#: :func:`~numbaconv.jit.task_jit`).
(DENSE_KERNEL_GRADIENT, DEPTHWISE_KERNEL_GRADIENT, NARROW_INPUT_GRADIENT,
 SHIFTED_KERNEL_GRADIENT, DEPTHWISE_INPUT_GRADIENT, VECTOR_KERNEL_GRADIENT,
 VECTOR_DEPTHWISE_INPUT_GRADIENT, VECTOR_DEPTHWISE_KERNEL_GRADIENT,
 LANES_KERNEL_GRADIENT, WINDOW_DEPTHWISE_KERNEL_GRADIENT,
 VECTOR_NARROW_INPUT_GRADIENT) = range(11)
(_dense_task, _depthwise_task, _narrow_task, _shifted_task, _depthwise_input_task,
 _vector_task, _vector_depthwise_input_task, _vector_depthwise_task, _window_depthwise_task,
 _vector_narrow_task) = (
    task_jit(fastmath=_CONTRACT)(task) for task in (
        _kernel_gradient_task, _depthwise_kernel_gradient_task, _narrow_input_gradient_task,
        _shifted_kernel_gradient_task, _depthwise_input_gradient_task,
        _vector_kernel_gradient_task, _depthwise_vector_input_gradient_task,
        _depthwise_vector_kernel_gradient_task, _depthwise_window_gradients_task,
        _narrow_vector_input_gradient_task))


def _generic_driver(TASK):
    """The generic driver of task number ``TASK`` (the tasks' arrays differ in rank)."""

    @kernel_jit(parallel=True, fastmath=_CONTRACT)
    def drive(a, b, out, items, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CB, OCB, ROWS,
              SPLITS, CG):
        if TASK == 0:
            for item in prange(items):
                _dense_task(a, b, out, np.int64(item), KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT,
                            CB, OCB, ROWS, SPLITS, CG)
        elif TASK == 1:
            for item in prange(items):
                _depthwise_task(a, b, out, np.int64(item), KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                                COUT, CB, OCB, ROWS, SPLITS, CG)
        elif TASK == 2:
            for item in prange(items):
                _narrow_task(a, b, out, np.int64(item), KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                             COUT, CB, OCB, ROWS, SPLITS, CG)
        elif TASK == 3:
            for item in prange(items):
                _shifted_task(a, b, out, np.int64(item), KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                              COUT, CB, OCB, ROWS, SPLITS, CG)
        else:
            for item in prange(items):
                _depthwise_input_task(a, b, out, np.int64(item), KH, KW, SH, SW, DH, DW, PT, PL, G,
                                      CIN, COUT, CB, OCB, ROWS, SPLITS, CG)

    return drive


_GENERIC = [_generic_driver(task) for task in range(5)]
#: The tasks the generic drivers run, by number.
_GENERIC_TASKS = (_dense_task, _depthwise_task, _narrow_task, _shifted_task, _depthwise_input_task)


def _specialized_task(arguments):
    """Task ``arguments[0]`` as a :class:`~numbaconv.jit.ParallelTask`, the rest compiled in.

    Constants let LLVM unroll the ``CB`` × ``OCB`` tiles into registers
    (measured on 56²×64→64 3x3, N=8: 375-387 GFLOP/s against 59 for the
    generic driver).
    """
    TASK, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CB, OCB, ROWS, SPLITS, CG = arguments[:17]
    window = (KH, KW, SH, SW, DH, DW, PT, PL)
    V = direct.VECTOR_BLOCK_VECTORS  # the vector task's tile: V vectors of L lanes
    L = OCB // V
    if TASK < len(_GENERIC_TASKS):
        return ParallelTask(_GENERIC_TASKS[TASK], arguments[1:])
    if TASK in (VECTOR_KERNEL_GRADIENT, LANES_KERNEL_GRADIENT):
        return ParallelTask(_vector_task, arguments[1:17]  # arguments[17]: FB
                            + (V, L, TASK == LANES_KERNEL_GRADIENT, arguments[17]))
    if TASK == VECTOR_DEPTHWISE_INPUT_GRADIENT:
        return ParallelTask(_vector_depthwise_input_task, window + (G, CB, OCB, ROWS))
    if TASK == VECTOR_NARROW_INPUT_GRADIENT:
        pixels = narrow_pixels(CIN)  # the tile: pixels × channels
        return ParallelTask(_vector_narrow_task, window + (CIN, COUT, OCB, pixels, CIN * pixels))
    if TASK == WINDOW_DEPTHWISE_KERNEL_GRADIENT:  # arguments[17:]: (V, STREAM, INPUT_GRADIENT)
        taps = KH * KW + 1  # the tile: the window's taps and the bias
        return ParallelTask(_window_depthwise_task,
                            window + (G, OCB, ROWS, SPLITS, taps) + arguments[17:])
    return ParallelTask(_vector_depthwise_task, window + (G, CB, OCB, ROWS, SPLITS))


def _specialized(arguments):
    """:func:`_specialized_task`, remembered in :data:`numbaconv.cache.kernel_cache`."""
    return kernel_cache.get(("cpu", "backward", "specialized", arguments),
                            lambda: _specialized_task(arguments))


def _run(arguments, items, arrays, specialized):
    """Run task ``arguments[0]`` over ``items`` on the tuple ``arrays``, specialized or by the
    generic driver (three arrays)."""
    if specialized:
        _specialized(arguments)(items, arrays)
    else:
        _GENERIC[arguments[0]](*arrays, items, *arguments[1:])


#: Output pixels per chunk of the kernel gradient: enough to amortize loading
#: and storing each tile, few enough that the chunk's data stays in cache.
CHUNK_PIXELS = 256

#: Dense and grouped layers with few channels and kernels taller than a row take
#: longer chunks, up to this many bytes of input and output gradient (fewer halo
#: rows read again per chunk): measured side by side, 1.05-1.09x on 56²×64→64 3x3
#: (1024 pixels), 0.99-1.01x on ResNeXt's 56²×128 (512); the wider layers keep 256
#: (1.3-2 MB chunks ran 10-20% slower: past L2), as do 1x1 kernels, which read no
#: halo (56²×64→256 at 409 pixels: 0.96x).
CHUNK_BYTES = 1 << 19

#: Output pixels per chunk of the vector kernel gradient: its tile is small
#: (a few channels × 16 float32 filters), so short chunks keep the chunk's
#: input rows in L1 while every tap and channel block reads them.  Measured
#: with AVX2 (Zen 1, N=8, GFLOP/s) against the loop nest's chunks (256-1024
#: pixels): 56²×64 3x3 48-66 → 62-67, 7x7/2 stem 48 → 64, 3x3/2 56²×128
#: 40 → 46, 14²×256 57 → 58, 7²×512 42 → 40 (one row, 7 pixels: 11).
VECTOR_CHUNK_PIXELS = 64

#: Accumulators per kernel-gradient tile, in vector registers (as the
#: forward's dense tile: more spill): 16 with AVX-512, 8 with AVX2
#: (:mod:`numbaconv.cpu.target`).
TILE_VECTORS = target.ACCUMULATORS


def _tile_channels():
    """Channels per register tile at most: one filter block's sums take
    :func:`~numbaconv.cpu.target.block_vectors` registers (AVX-512: 4 channels,
    AVX2: 1; measured there, on a first-generation EPYC, backward GFLOP/s
    with 1 / 2 / 4 channels: 3x3 56²×64 at N=8 51 / 47 / 42, the 7x7/2 stem
    30 / 30 / 24, 14²×256 41 / 42 / 40)."""
    return max(1, TILE_VECTORS // target.block_vectors())


def _channel_tile(channels):
    """Channels per register tile: the largest divisor of ``channels`` that keeps
    :data:`TILE_VECTORS` accumulators (:func:`_tile_channels`)."""
    return max(d for d in range(1, _tile_channels() + 1) if channels % d == 0)


def strided_and_dilated(spec):
    """Whether an axis of ``spec`` has both a stride and a dilation above 1.

    The taps reaching an input pixel are then no simple range
    (:func:`_reaching_taps`): such layers run the generic gather nest.
    """
    return any(s > 1 and d > 1 for s, d in zip(spec.strides, spec.dilation))


def _shifted(spec):
    """Whether the kernel gradient of ``spec`` runs by shifts: groups of 2-16 channels in and
    as many filters out, whole groups per filter block (ResNeXt's 4)."""
    width = spec.in_channels // spec.groups
    ocb = _filter_lanes(spec)
    return (spec.groups > 1 and spec.filters == spec.in_channels and 2 <= width <= 16
            and ocb % width == 0 and spec.filters % ocb == 0)


def kernel_gradient_plan(spec, threads, specialized=False):
    """How the kernel gradient of ``spec`` is tiled and split into ``threads`` parallel items.

    ``specialized``: for the specialized tasks, which run dense and
    grouped layers on CPUs without AVX-512 in tiles of explicit vectors
    (:func:`_vector_kernel_gradient_task`).

    Returns
    -------
    arguments : tuple
        ``(TASK, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CB, OCB,
        ROWS, SPLITS, CG)``: the task number, the geometry, the tile (``CB`` input channels ×
        ``OCB`` filters; for a depthwise layer, ``OCB`` lanes and ``CB``
        pixels per step), the chunk
        of ``ROWS`` output rows, the number ``SPLITS`` of private copies the
        output pixels are split over, and ``CG`` shares of the channel blocks;
        for the vector tasks then ``FB``, the blocks of filters an item takes.
        ``COUT`` is the filters per group rounded up to whole blocks.
    items : int
        Parallel work items.

    The filter block is four vectors (64 float32, 32 float64): LLVM
    vectorizes the innermost loop over them only at that length (measured,
    56²×32→32: 7 GFLOP/s with blocks of 32 filters, 160 with the filters
    padded to 64), so filters are padded with zeros to whole blocks.
    Items write disjoint parts of their split's copy.  Copies cost memory
    and a sum, so the work is first split by filter blocks, then by channel
    blocks (each share re-reads the output gradient, from cache for small
    layers and streamed once more for large ones), and only then by pixels.
    """
    groups = spec.groups
    cin, cout = spec.in_channels // groups, spec.filters // groups
    depthwise = cin == 1 and cout == 1
    ocb = _filter_lanes(spec)
    task = DEPTHWISE_KERNEL_GRADIENT if depthwise else DENSE_KERNEL_GRADIENT
    lanes = direct.vector_lanes(spec.dtype)
    blocks = 1  # blocks of filters an item (the vector tasks)
    if (depthwise and specialized and direct.vector_tiles_pay() and groups % lanes == 0
            and spec.kernel_size[0] * spec.kernel_size[1] < WINDOW_TAPS):
        task, cb, ocb = WINDOW_DEPTHWISE_KERNEL_GRADIENT, 1, lanes  # ocb: the lanes of a step
        units, c_blocks = 1, 1  # items split the pixels only
    elif (depthwise and specialized and direct.vector_tiles_pay() and groups % lanes == 0
            and groups <= VECTOR_DEPTHWISE_LANES * lanes):
        # cb: vectors of channels a step, ocb: their lanes
        task, ocb = VECTOR_DEPTHWISE_KERNEL_GRADIENT, lanes
        cb = next(vectors for vectors in (4, 2, 1) if groups % (vectors * lanes) == 0)
        units, c_blocks = 1, 1  # items split the pixels only
    elif (specialized and direct.lane_groups(spec)
          and spec.filters % direct.filter_block("dense_vector", spec.dtype) == 0):
        # one group: blocks of filters × their groups' channels (see _vector_kernel_gradient_task)
        task, ocb = LANES_KERNEL_GRADIENT, direct.filter_block("dense_vector", spec.dtype)
        groups, cb, cout = 1, cin, spec.filters
        units, c_blocks = cout // ocb, 1
    elif depthwise:  # cb: pixels per vector step (see _depthwise_kernel_gradient_task)
        few = groups < ocb
        cb = ocb // groups if few and ocb % groups == 0 and spec.strides[1] == 1 else 1
        units, c_blocks = 1, 1  # items split the pixels only
    elif _shifted(spec):  # one group of 2w - 1 shifts (rounded up to tiles) by all filters
        task, cb = SHIFTED_KERNEL_GRADIENT, _tile_channels()
        groups, cin, cout = 1, -(-(2 * cin - 1) // cb) * cb, spec.filters
        units, c_blocks = cout // ocb, cin // cb
    else:
        if specialized and direct.vector_tiles_pay():
            task = VECTOR_KERNEL_GRADIENT
            ocb = direct.filter_block("dense_vector", spec.dtype)
            cb = max(d for d in range(1, direct.VECTOR_TILE + 1) if cin % d == 0)
        else:
            cb = _channel_tile(cin)
        cout = -(-cout // ocb) * ocb
        units, c_blocks = groups * (cout // ocb), cin // cb
        if task == VECTOR_KERNEL_GRADIENT and spec.kernel_size == (1, 1):
            # Each block of filters reads all of the input (nothing amortizes it over taps):
            # as many blocks an item as leave an item a thread (56²×64→256 N=8: 0.78x the time).
            f_blocks = cout // ocb
            blocks = max((d for d in range(1, f_blocks + 1)
                          if f_blocks % d == 0 and units // d >= threads), default=1)
            units, c_blocks = units // blocks, 1  # c_blocks 1: no shares of channel blocks
    out_h, out_w = spec.output_hw
    out_rows = spec.batch * out_h
    vector = task in (VECTOR_KERNEL_GRADIENT, LANES_KERNEL_GRADIENT)
    pixels = VECTOR_CHUNK_PIXELS if vector else CHUNK_PIXELS
    if not vector and not depthwise and spec.kernel_size[0] > 1:
        pixel_bytes = (spec.in_channels + spec.filters) * np.dtype(spec.dtype).itemsize
        pixels = min(4 * CHUNK_PIXELS, max(CHUNK_PIXELS, CHUNK_BYTES // pixel_bytes))
    rows = max(1, min(out_rows, -(-pixels // out_w)))
    if task == WINDOW_DEPTHWISE_KERNEL_GRADIENT:  # input and output gradient rows in cache
        row_bytes = (spec.strides[0] * spec.width + out_w) * groups * np.dtype(spec.dtype).itemsize
        rows = max(1, min(out_rows, WINDOW_CHUNK_BYTES // row_bytes))
    shares, splits = 1, 1
    if units % threads and units < 4 * threads:
        shares = next((share for share in range(2, c_blocks + 1)
                       if (units * share) % threads == 0 or units * share >= 4 * threads),
                      c_blocks)
        if units * shares < threads:
            splits = min(out_rows, -(-threads // (units * shares)))
            rows = min(rows, -(-out_rows // splits))  # a chunk for every split
    kh, kw = spec.kernel_size
    arguments = (task, kh, kw, *spec.strides, *spec.dilation, spec.pads[0][0],
                 spec.pads[1][0], groups, cin, cout, cb, ocb, rows, splits, shares)
    if vector:
        arguments += (blocks,)
    return arguments, splits * units * shares


def kernel_gradient(spec, x, gy, specialized, threads=None):
    """The kernel gradient ``(KH, KW, CIN, filters)`` of ``spec`` from channels_last ``x`` and ``gy``.

    ``specialized`` runs tasks compiled for the configuration (cached in
    :data:`numbaconv.cache.kernel_cache`), else the generic driver.  The work
    is split for ``threads`` (default: Numba's thread count).
    """
    return _kernel_gradients(spec, x, gy, specialized, threads)[0]


def kernel_and_bias_gradients(spec, x, gy, specialized, threads=None):
    """``(kernel gradient, bias gradient)``: :func:`kernel_gradient` and :func:`bias_gradient`,
    in one pass over ``gy`` where the kernel gradient's nest sums the bias too."""
    grad, bias = _kernel_gradients(spec, x, gy, specialized, threads)
    return grad, bias_gradient(gy, threads) if bias is None else bias


def depthwise_gradients(spec, x, gy, kernel, specialized, threads=None):
    """``(grad_inputs, grad_kernel, grad_bias)`` of a depthwise layer in one pass, or None
    where that pass does not run ``spec``.

    The pass is :func:`_depthwise_window_gradients_task`'s: the input
    gradient of :func:`depthwise_input_gradient`'s vector task, row by row
    as the kernel gradient's chunks read the output gradient.  ``x`` and
    ``gy`` are channels_last, ``kernel`` in Keras layout, all of the spec's
    dtype; the work is split for ``threads`` (default: Numba's thread count).
    The call does little beyond the task (a plan per spec): Python between
    large tasks runs as if its caches were cold (measured on 14²×576 N=8:
    70 µs around the task that took 22 µs with the task stubbed out).
    """
    if not specialized:
        return None
    threads = numba.get_num_threads() if threads is None else threads
    plan = kernel_cache.get(("depthwise_gradients", spec, threads),
                            lambda: _depthwise_gradients_plan(spec, threads))
    if plan is None:
        return None
    task, items, splits, streamed = plan
    (kh, kw), groups = spec.kernel_size, spec.groups
    gx = _new_input_gradient(spec, gy, streamed)
    sums = np.zeros((splits, kh * kw + 1, 1, groups), dtype=gy.dtype)
    rows = (*x.shape[:2], -1)  # flat rows, as the task reads them
    task(items, (x.reshape(rows), gy.reshape(*gy.shape[:2], -1),
                 np.ascontiguousarray(kernel).reshape(kh, kw, -1), sums, gx.reshape(rows)))
    total = _sum_splits(sums)
    return gx, total[:-1].reshape(kh, kw, 1, groups), total[-1, 0]


def _depthwise_gradients_plan(spec, threads):
    """``(task, items, splits, streamed)`` of :func:`depthwise_gradients`, or None where it
    does not apply: ``streamed``, the input gradient is allocated aligned and its stores
    are streamed (see :func:`_input_gradient_vectors`)."""
    if not (gathers_depthwise_input_gradient(spec, True) and _vector_input_gradient(spec)):
        return None
    arguments, items = _kernel_gradient_plan(spec, threads, True)
    if arguments[0] != WINDOW_DEPTHWISE_KERNEL_GRADIENT:
        return None
    vectors, streamed = _input_gradient_vectors(spec, None, TOGETHER_STREAM_MIN_BYTES)
    arguments += (vectors, streamed, True)
    return _specialized(arguments), items, arguments[15], bool(streamed)


def _sum_splits(sums):
    """The sum of ``sums`` over its first axis (the splits' private copies), in place in the
    first copy (a third of NumPy's ``sum(axis=0)`` time for two)."""
    total = sums[0]
    for split in sums[1:]:
        np.add(total, split, out=total)
    return total


def _kernel_gradient_plan(spec, threads, specialized):
    """:func:`kernel_gradient_plan`, remembered (planning costs tens of microseconds, a small
    layer's whole kernel)."""
    return kernel_cache.get(("kernel_gradient_plan", spec, threads, specialized),
                            lambda: kernel_gradient_plan(spec, threads, specialized))


def _kernel_gradients(spec, x, gy, specialized, threads):
    """``(kernel gradient, bias gradient or None)``: the bias when the nest summed it."""
    threads = numba.get_num_threads() if threads is None else threads
    arguments, items = _kernel_gradient_plan(spec, threads, specialized)
    task = arguments[0]
    groups, cin, padded, splits = arguments[9], arguments[10], arguments[11], arguments[15]
    cout = spec.filters // groups
    if padded != cout:  # zero filters up to whole blocks
        blocks = np.zeros((*gy.shape[:3], groups, padded), dtype=gy.dtype)
        blocks[..., :cout] = gy.reshape(*gy.shape[:3], groups, cout)
        gy = blocks.reshape(*gy.shape[:3], groups * padded)
    if task in (DEPTHWISE_KERNEL_GRADIENT, VECTOR_DEPTHWISE_KERNEL_GRADIENT,
                WINDOW_DEPTHWISE_KERNEL_GRADIENT):  # flat rows
        x = x.reshape(*x.shape[:2], -1)
        gy = gy.reshape(*gy.shape[:2], -1)
    width = spec.in_channels // spec.groups
    if task == SHIFTED_KERNEL_GRADIENT:  # zero channels around each pixel's: see the task
        x, _ = layout.pad_channels(x, "channels_last", ((0, 0), (0, 0)),
                                   (width - 1, cin - width), x.dtype)
    kh, kw = spec.kernel_size
    if task == WINDOW_DEPTHWISE_KERNEL_GRADIENT:  # the taps, then the bias
        sums = np.zeros((splits, kh * kw + 1, 1, groups), dtype=gy.dtype)
        unread = np.empty((0, 0, 0), dtype=gy.dtype)  # no input gradient: kernel, gx unread
        _run(arguments + (1, 0, False), items, (x, gy, unread, sums, unread), specialized)
        total = _sum_splits(sums)
        return total[:-1].reshape(kh, kw, 1, groups), total[-1, 0]
    # The vector task writes every sum (it is not cleared: see the task).
    allocate = np.empty if task in (VECTOR_KERNEL_GRADIENT, LANES_KERNEL_GRADIENT) else np.zeros
    grad = allocate((splits, kh, kw, cin, groups * padded), dtype=gy.dtype)
    _run(arguments, items, (x, gy, grad), specialized)
    grad = _sum_splits(grad)
    if task == SHIFTED_KERNEL_GRADIENT:
        # Channel c of filter f's group came from shift c - f % width + width - 1.
        member = np.arange(spec.filters) % width
        picks = np.arange(width)[:, None] - member + width - 1
        return np.take_along_axis(grad, np.broadcast_to(picks, (kh, kw, *picks.shape)),
                                  axis=2), None
    if padded != cout:
        grad = np.ascontiguousarray(
            grad.reshape(kh, kw, cin, groups, padded)[..., :cout].reshape(kh, kw, cin, -1))
    return grad, None


#: Input channels up to which the input gradient sums along the filters
#: (:func:`_narrow_input_gradient_task`) instead of running as a convolution.
NARROW_CHANNELS = 4

#: Vector registers the narrow vector task's tile plans for (AVX2's 16).
NARROW_REGISTERS = 16


def narrow_pixels(channels):
    """Pixels per tile of :func:`_narrow_vector_input_gradient_task`: its ``channels × pixels``
    sums, ``pixels`` output gradient vectors and ``channels`` weight vectors in
    :data:`NARROW_REGISTERS` (3 channels: 3 pixels, 15 registers)."""
    return max(1, min(8, (NARROW_REGISTERS - channels) // (channels + 1)))


#: Taps up to which a depthwise window's sums, and the bias's, stay in registers
#: (:func:`_depthwise_window_gradients_task`: 3x3 takes 10 of the 16 with AVX2).
WINDOW_TAPS = 12

#: Bytes of input and output gradient rows per chunk of that task: every vector of
#: channels runs over the chunk's rows while they stay in cache (half a Zen 1 L2).
WINDOW_CHUNK_BYTES = 256 * 1024

#: Input gradients from this size on are streamed by :func:`depthwise_gradients`, below
#: the forward's :data:`~numbaconv.cpu.direct.STREAM_MIN_BYTES`: stored through the
#: cache, they evict the chunk that both gradients read (14²×576 N=8, 3.6 MB: the
#: one pass took 1.01x the time of two tasks, 0.82x streamed).
TOGETHER_STREAM_MIN_BYTES = 1 << 20

#: Output rows the depthwise window sums take at once where their windows are whole,
#: ``(stride 1, strided)``: neighbouring rows share input rows, loaded once for them all.
#: Measured against one row at a time, the kernel gradient alone: 14²×576 N=8 0.88-0.94x
#: the time, 56²×144 N=8 0.89, 112²×96 stride 2 N=1 0.88 (3 rows there: 1.0; at
#: stride 1, 3 rows took 0.93-0.96 of 2 rows' time).
WINDOW_ROWS = (3, 2)

#: How far ahead of the channels they read, in values, the depthwise window sums ask for
#: cache lines (:func:`~.simd.prefetch`: each vector of channels reads one line a pixel, a
#: pattern the hardware prefetchers miss when pixels are far apart).  Kernel gradient
#: alone, AVX2, 14²×576 N=8: 0.86-1.25 ms without, 0.77-0.86 with.
PREFETCH_LANES = 32

#: Bytes a pixel from which the depthwise window sums prefetch: 112²×96 stride 2 (384)
#: ran 4-10% slower with the prefetches at N=1, the hardware prefetching well enough.
PREFETCH_MIN_BYTES = 1024

#: Vectors of channels up to which depthwise layers take the vector kernel gradient
#: (one step for all channels).  Kernel gradient alone, AVX2, loop nest → vector,
#: ms: 112²×32 N=1 0.45 → 0.24, N=8 2.8 → 2.6; with more channels, each tap
#: re-reading its chunk ran slower: 14²×576 N=8 0.81 → 1.14, 112²×96 stride 2
#: N=8 4.7 → 5.2.
VECTOR_DEPTHWISE_LANES = 4


def _filter_lanes(spec):
    """Filters per block: 64 float32, 32 float64
    (:data:`~numbaconv.cpu.target.FILTER_BLOCK_BYTES`)."""
    return target.FILTER_BLOCK_BYTES // np.dtype(spec.dtype).itemsize


def is_narrow(spec):
    """Whether :func:`narrow_input_gradient` computes ``spec``'s input gradient."""
    return (spec.groups == 1 and spec.in_channels <= NARROW_CHANNELS
            and spec.filters % _filter_lanes(spec) == 0
            and not strided_and_dilated(spec))


def narrow_input_gradient(spec, gy, kernel, gx, specialized):
    """The input gradient of a layer :func:`is_narrow` accepts, into channels_last ``gx``.

    ``gy`` is channels_last, ``kernel`` the C-contiguous Keras-layout kernel
    of ``gx``'s dtype.
    """
    kh, kw = spec.kernel_size
    cin = spec.in_channels
    if specialized and direct.vector_tiles_pay():  # tiles of pixels × channels × filter lanes
        task, cb, ocb = VECTOR_NARROW_INPUT_GRADIENT, cin, direct.vector_lanes(spec.dtype)
    else:
        task, cb, ocb = NARROW_INPUT_GRADIENT, _channel_tile(cin), _filter_lanes(spec)
    arguments = (task, kh, kw, *spec.strides, *spec.dilation, spec.pads[0][0],
                 spec.pads[1][0], 1, cin, spec.filters, cb, ocb, 0, 1, 1)
    _run(arguments, gx.shape[0] * gx.shape[1], (gy, kernel, gx), specialized)


def gathers_depthwise_input_gradient(spec, specialized):
    """Whether :func:`depthwise_input_gradient` computes ``spec``'s input gradient.

    A depthwise layer, one filter a channel, no axis both strided and
    dilated: strided (its phases were too small for the forward kernels),
    or, ``specialized``, stride 1 in whole vectors of channels on CPUs
    without AVX-512, where the vector task ran faster than the forward
    kernel on the flipped kernel (input gradient alone, AVX2: 14²×576 at
    N=1 130 → 77 µs, N=8 616 → 538; 112²×32 at N=1 233 → 186, N=8 2.13 →
    1.82 ms).
    """
    if not (spec.is_depthwise and spec.filters == spec.groups and not strided_and_dilated(spec)):
        return False
    return spec.strides != (1, 1) or (specialized and _vector_input_gradient(spec))


def _vector_input_gradient(spec):
    """Whether the depthwise input gradient of ``spec`` runs in explicit vectors."""
    return spec.groups % direct.vector_lanes(spec.dtype) == 0 and direct.vector_tiles_pay()


def _new_input_gradient(spec, gy, aligned):
    """An uninitialized channels_last input gradient for ``gy``, ``aligned`` for streamed
    stores (aligning costs ~6 µs, a small layer's time: only where they may stream)."""
    shape = (gy.shape[0], spec.height, spec.width, spec.in_channels)
    return (layout.aligned_empty if aligned else np.empty)(shape, gy.dtype)


def _input_gradient_vectors(spec, gx, stream_min_bytes=None):
    """``(V, STREAM)`` of the depthwise vector input gradient into ``gx`` (None: an array
    aligned where streamed): vectors of channels per pixel of its tile, and 1 where its
    stores are streamed (whole aligned cache lines, from ``stream_min_bytes``, default
    :data:`~numbaconv.cpu.direct.STREAM_MIN_BYTES`), else 0."""
    lanes = direct.vector_lanes(spec.dtype)
    vectors = 2 if spec.groups % (2 * lanes) == 0 else 1
    itemsize = np.dtype(spec.dtype).itemsize
    nbytes = spec.batch * spec.height * spec.width * spec.in_channels * itemsize
    if stream_min_bytes is None:
        stream_min_bytes = direct.STREAM_MIN_BYTES
    stream = int(nbytes >= stream_min_bytes
                 and (gx is None or layout.address(gx) % layout.ALIGNMENT == 0)
                 and spec.groups * itemsize % layout.ALIGNMENT == 0)
    return vectors, stream


def depthwise_input_gradient(spec, gy, kernel, gx, specialized):
    """The input gradient of a layer :func:`gathers_depthwise_input_gradient` accepts, into
    channels_last ``gx`` (None: a new array, aligned where it may be streamed), returned;
    ``gy`` is channels_last, ``kernel`` in Keras layout, both of the spec's dtype."""
    if gx is None:
        gx = _new_input_gradient(spec, gy, _input_gradient_vectors(spec, None)[1])
    kh, kw = spec.kernel_size
    lanes = direct.vector_lanes(spec.dtype)
    stream, vectors = 0, 1
    if specialized and _vector_input_gradient(spec):
        # CB: vectors per pixel of the tile; OCB: their lanes; ROWS: streamed stores.
        task = VECTOR_DEPTHWISE_INPUT_GRADIENT
        vectors, stream = _input_gradient_vectors(spec, gx)
    else:
        task, lanes = DEPTHWISE_INPUT_GRADIENT, 1
    arguments = (task, kh, kw, *spec.strides, *spec.dilation, spec.pads[0][0],
                 spec.pads[1][0], spec.groups, 1, 1, vectors, lanes, stream, 1, 1)
    flat = (gy.reshape(*gy.shape[:2], -1), np.ascontiguousarray(kernel).reshape(kh, kw, -1),
            gx.reshape(*gx.shape[:2], -1))
    _run(arguments, gx.shape[0] * gx.shape[1], flat, specialized)
    return gx


@kernel_jit(parallel=True)
def _column_sums(rows, partial):
    """``partial[t]``: float64 sums of the columns of task ``t``'s share of ``rows``."""
    T = partial.shape[0]
    count, width = rows.shape
    for t in prange(T):
        sums = np.zeros(width, dtype=np.float64)  # local: no aliasing with ``rows``
        for r in range(t * count // T, (t + 1) * count // T):
            for c in range(width):
                sums[c] += rows[np.uint64(r), np.uint64(c)]
        partial[t] = sums


def bias_gradient(gy, threads=None):
    """``Σ gy`` over batch and pixels (C-contiguous channels_last ``gy``), in float64 then cast.

    A parallel nest: NumPy's float64 sum over the leading axes of a float32
    array ran at ~0.6 GB/s, half the time of a depthwise layer's backward.
    """
    threads = numba.get_num_threads() if threads is None else threads
    rows = gy.reshape(-1, gy.shape[-1])
    partial = np.empty((max(1, min(threads, rows.shape[0])), rows.shape[1]), dtype=np.float64)
    _column_sums(rows, partial)
    return partial.sum(axis=0).astype(gy.dtype)
