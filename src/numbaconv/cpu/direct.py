"""Direct convolution loop nests for the CPU.

Each nest is written once, as the body of one parallel task (one output row,
or one row of a filter block), and driven two ways:

* **generic** — geometry passed at run time: one compilation per nest and
  dtype (cached on disk, see :mod:`numbaconv.jit`), serving one-off calls and any
  configuration without further compile cost;
* **specialized** — the task compiled with its geometry (kernel size,
  strides, dilation, padding, channel counts, tile width) as constants
  (:class:`~numbaconv.jit.ParallelTask`), so LLVM sees known trip counts and
  unrolls and vectorizes the tiles (several times faster, at ~1-2 s of
  compilation per configuration).

The nests assume what :mod:`numbaconv.functional` guarantees: C-contiguous
arrays of one float dtype, shapes consistent with a validated
:class:`~numbaconv.spec.ConvSpec`.  Reads outside the input are never issued:
the nests clip their loop ranges at the border, except the shifted grouped
nest, which is always given an input padded in space and around each pixel's
channels (:func:`channel_pads`), and the explicit-vector dense nest
(:func:`_dense_vector_task`, specialized only, the dense layers' nest on
CPUs without AVX-512), always given a padded input.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..jit import ParallelTask, helper_jit, kernel_jit, task_jit
from . import layout, target
from .simd import (prefetch_l2, stream_fence, tile_fma, tile_fma_groups, tile_fma_lanes,
                   tile_load, tile_relu, tile_scatter, tile_store, tile_stream)

__all__ = ["NESTS", "generic_kernel", "specialized_kernel", "pack_weights", "pack_bias",
           "channel_pads", "task_count"]


# Fused multiply-add (one rounding instead of two) is what every fast
# convolution uses; no other fast-math liberty (no reassociation) is taken.
_CONTRACT = {"contract"}

# A zero for a float variable is written ``array.dtype.type(0)``: a literal
# 0 would make Numba type the variable float64 and compute float32 in double.


@helper_jit(2, 4)
def _valid_range(count, size, stride, offset):
    """Outputs ``o`` in ``[0, count)`` whose input ``o * stride + offset`` is in ``[0, size)``."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    last = size - 1 - offset
    hi = last // stride + 1 if last >= 0 else 0
    return lo, max(lo, min(hi, count))


def _grouped_task(x, w, b, out, task, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, CF,
                  RELU):
    """channels_last, any groups: one output row, output channels innermost.

    A tile of ``TW`` output pixels × all filters is accumulated in a local
    buffer so each input value loaded feeds ``COUT`` contiguous multiply-adds.
    """
    H, W = x.shape[1], x.shape[2]
    OH, OW = out.shape[1], out.shape[2]
    F = G * COUT
    n = task // OH
    oh = task - n * OH
    ih0 = oh * SH - PT
    ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
    acc = np.empty((TW, F), dtype=out.dtype)
    for ow0 in range(0, OW, TW):
        width = min(TW, OW - ow0)
        for p in range(TW):
            for f in range(F):
                acc[p, f] = b[f]
        for ki in range(ki_lo, ki_hi):
            ih = ih0 + ki * DH
            for p in range(width):
                iw0 = (ow0 + p) * SW - PL
                kj_lo, kj_hi = _valid_range(KW, W, DW, iw0)
                for kj in range(kj_lo, kj_hi):
                    iw = iw0 + kj * DW
                    for g in range(G):
                        for ic in range(CIN):
                            v = x[n, ih, iw, g * CIN + ic]
                            for oc in range(COUT):
                                acc[p, g * COUT + oc] += v * w[ki, kj, ic, g * COUT + oc]
        for p in range(width):
            for f in range(F):
                value = acc[p, f]
                if RELU and value < 0:
                    value = out.dtype.type(0)
                out[n, oh, ow0 + p, f] = value


#: Filters per block of the dense nest: four AVX-512 vectors (eight AVX2 ones).
#: A shorter innermost loop is not vectorized by LLVM (see
#: :mod:`numbaconv.cpu.target`), so filter counts that are not a multiple are
#: padded with zero filters.
DENSE_BLOCK = target.FILTER_BLOCK_BYTES // 4


@njit(inline="always")
def _dense_blocks(filters):
    return (filters + DENSE_BLOCK - 1) // DENSE_BLOCK


def filter_block(nest, dtype):
    """Filters per block of ``nest``'s packed weights (None: the nest reads the Keras layout)."""
    if nest in ("dense", "grouped_shifted"):
        return DENSE_BLOCK
    if nest in VECTOR_SHAPES:
        return VECTOR_SHAPES[nest][1] * vector_lanes(dtype)
    return None


def pack_weights(nest, kernel):
    """``kernel`` (Keras layout) in the order ``nest`` reads it.

    The dense nests read ``(blocks, kh, kw, CIN, F)`` filter blocks of
    :func:`filter_block` filters, the last one padded with zero filters.
    The shifted grouped nest reads ``(blocks, kh, kw, shifts, 64)``: for each
    shift ``s`` of the input channels, the weight each filter gives the
    channel that lands in its lane, zero where that channel is outside its
    group (see :func:`_grouped_shifted_task`).  The other nests read the
    Keras layout as is.  Large kernels are packed by a parallel nest
    (:func:`~.layout.filter_blocks_packed`; 3x3 512→512 in 2.2 ms against
    6.0 by NumPy, 256→256 0.30 against 0.55, with AVX2 and 2 threads).
    """
    kh, kw, cin, filters = kernel.shape
    block = filter_block(nest, kernel.dtype)
    if block is None:
        return kernel
    blocks = -(-filters // block)
    if nest != "grouped_shifted":
        if kernel.size >= layout.SMALL_KERNEL:  # NumPy's transposing copy: 2.7x slower here
            return layout.filter_blocks_packed(kernel, block)[0]
        if filters % block == 0:  # no zero filters to add: one copy
            return np.ascontiguousarray(
                kernel.reshape(kh, kw, cin, blocks, block).transpose(3, 0, 1, 2, 4))
        packed = np.zeros((kh, kw, cin, blocks * block), dtype=kernel.dtype)
        packed[..., :filters] = kernel
        return np.ascontiguousarray(
            packed.reshape(kh, kw, cin, blocks, block).transpose(3, 0, 1, 2, 4))
    shifts = 2 * cin - 1
    packed = np.zeros((kh, kw, shifts, blocks * block), dtype=kernel.dtype)
    member = np.arange(filters) % cin  # each filter's place in its group
    for shift in range(shifts):
        channel = member + shift - (cin - 1)  # the group channel lane f reads at this shift
        inside = (channel >= 0) & (channel < cin)
        packed[:, :, shift, :filters][..., inside] = kernel[:, :, channel[inside],
                                                            np.flatnonzero(inside)]
    return np.ascontiguousarray(
        packed.reshape(kh, kw, shifts, blocks, block).transpose(3, 0, 1, 2, 4))


def pack_bias(nest, bias):
    """``bias`` laid out like the filters of :func:`pack_weights`."""
    filters = bias.shape[0]
    block = filter_block(nest, bias.dtype)
    if block is None or filters % block == 0:
        return bias
    packed = np.zeros(-(-filters // block) * block, dtype=bias.dtype)
    packed[:filters] = bias
    return packed


def channel_pads(nest, spec):
    """``(front, back)``: zero channels ``nest`` reads around each input pixel's channels.

    The shifted grouped nest reads, for every 64-filter block, the block's
    channels shifted by up to ``CIN - 1`` either way: the zeros keep the reads
    of the first and last pixels inside the array, and give the last block's
    missing filters zeros to read.
    """
    if nest != "grouped_shifted":
        return 0, 0
    width = spec.in_channels // spec.groups
    blocks = -(-spec.filters // DENSE_BLOCK)
    return width - 1, blocks * DENSE_BLOCK - spec.in_channels + width - 1


@njit(inline="always")
def _accumulate_tile(x, w, blk, acc, b, n, ih0, ki_lo, ki_hi, iw0, kj_lo, kj_hi, oc0, P, OCB,
                     SW, DH, DW, CIN, CF):
    """``acc = bias + x · w[blk]`` for ``P`` pixels from column ``iw0`` × ``OCB`` filters.

    ``w[blk]`` is one packed filter block, ``(kh, kw, CIN, OCB)``.  The
    innermost loop runs over its ``OCB`` contiguous filters with the input
    value broadcast; the ``P`` pixels share every weight vector loaded.  The
    input values are scalar loads either way, so ``x`` may be channels_first
    (``CF``): each tile then reads a few cache lines per channel row.
    """
    for p in range(P):
        for o in range(OCB):
            acc[p * OCB + o] = b[oc0 + o]
    for ki in range(ki_lo, ki_hi):
        ih = ih0 + ki * DH
        for kj in range(kj_lo, kj_hi):
            iw = iw0 + kj * DW
            for ic in range(CIN):
                for p in range(P):
                    if CF:
                        v = x[n, ic, ih, iw + p * SW]
                    else:
                        v = x[n, ih, iw + p * SW, ic]
                    for o in range(OCB):
                        acc[p * OCB + o] += v * w[blk, ki, kj, ic, o]


@njit(inline="always")
def _store_tile(out, acc, n, oh, ow, oc0, P, OCB, COUT, CF, RELU):
    """Write ``P`` pixels × the real filters of ``acc`` to ``out``, rectified if ``RELU``.

    A channels_first ``out`` (``CF``) receives ``P`` contiguous values per filter.
    """
    # A constant OCB when the filters fill whole blocks; the last block of a
    # padded kernel holds fewer real filters.
    valid = OCB if COUT % OCB == 0 else min(OCB, COUT - oc0)
    for p in range(P):
        for o in range(valid):
            value = acc[p * OCB + o]
            if RELU and value < 0:
                value = out.dtype.type(0)
            if CF:
                out[n, oc0 + o, oh, ow + p] = value
            else:
                out[n, oh, ow + p, oc0 + o] = value


@njit(inline="always")
def _image_sizes(x, out, CF):
    """``(H, W, OH, OW)`` of channels_last, or channels_first (``CF``), arrays."""
    if CF:
        return x.shape[2], x.shape[3], out.shape[2], out.shape[3]
    return x.shape[1], x.shape[2], out.shape[1], out.shape[2]


@njit(inline="always")
def _dense_row(task, OH, COUT):
    """``(n, oh, blk, OCB)`` of a dense task: rows of output pixels × filter blocks."""
    OCB = DENSE_BLOCK
    blocks = _dense_blocks(COUT)
    row = task // blocks
    blk = task - row * blocks
    n = row // OH
    return n, row - n * OH, blk, OCB


@helper_jit(3, 7)
def _dense_interior(OW, W, KW, SW, DW, PL, TW):
    """Columns ``[lo, hi)`` covered by full ``TW``-pixel tiles, and the number of tiles.

    A tile's window lies inside the input for every pixel.  When the
    interior width is not a multiple of ``TW``, the last tile is shifted
    left to end at ``hi``, overlapping its neighbour: recomputing a few
    pixels at full speed beats computing them one by one.
    """
    lo = min(OW, (PL + SW - 1) // SW)
    hi = max(lo, min(OW, (W - 1 - (KW - 1) * DW + PL) // SW + 1))
    count = (hi - lo + TW - 1) // TW if hi - lo >= TW else 0
    return lo, (hi if count else lo), count


def _dense_task(x, w, b, out, task, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, CF, RELU):
    """One group, either layout: the interior tiles of one output row × one 64-filter block.

    ``w`` is packed by :func:`pack_weights`.  Each tile of ``TW`` pixels
    runs the full window, the pixels sharing every weight vector loaded and
    the filters innermost.  Border pixels are left to :func:`_dense_edge_task`,
    which runs as a separate parallel loop: sharing a loop body with them
    keeps LLVM from holding the tile in registers.
    """
    H, W, OH, OW = _image_sizes(x, out, CF)
    n, oh, blk, OCB = _dense_row(task, OH, COUT)
    oc0 = blk * OCB
    ih0 = oh * SH - PT
    ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
    inner_lo, inner_hi, tiles = _dense_interior(OW, W, KW, SW, DW, PL, TW)
    acc = np.empty(TW * OCB, dtype=out.dtype)
    for t in range(tiles):
        ow = min(inner_lo + t * TW, inner_hi - TW)
        _accumulate_tile(x, w, blk, acc, b, n, ih0, ki_lo, ki_hi, ow * SW - PL, 0, KW, oc0,
                         TW, OCB, SW, DH, DW, CIN, CF)
        _store_tile(out, acc, n, oh, ow, oc0, TW, OCB, COUT, CF, RELU)


def _dense_edge_task(x, w, b, out, task, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW,
                     CF, RELU):
    """The pixels of one output row × filter block that :func:`_dense_task` leaves: window clipped."""
    H, W, OH, OW = _image_sizes(x, out, CF)
    n, oh, blk, OCB = _dense_row(task, OH, COUT)
    oc0 = blk * OCB
    ih0 = oh * SH - PT
    ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
    inner_lo, inner_hi, _ = _dense_interior(OW, W, KW, SW, DW, PL, TW)
    acc = np.empty(OCB, dtype=out.dtype)
    for ow in range(OW):
        if inner_lo <= ow < inner_hi:
            continue
        iw0 = ow * SW - PL
        kj_lo, kj_hi = _valid_range(KW, W, DW, iw0)
        _accumulate_tile(x, w, blk, acc, b, n, ih0, ki_lo, ki_hi, iw0, kj_lo, kj_hi, oc0, 1,
                         OCB, SW, DH, DW, CIN, CF)
        _store_tile(out, acc, n, oh, ow, oc0, 1, OCB, COUT, CF, RELU)


#: Vectors of filters per block of the explicit-vector dense nest, and output
#: pixels per tile at most: 6 × 2 = 12 sums, 2 weight vectors and one broadcast
#: input value in 16 registers.  Measured with AVX2 on a first-generation EPYC
#: (3x3 56²×64→64 at N=8, interior, GFLOP/s): 6 × 2 vectors 76, 5 × 2 76,
#: 4 × 2 76, 7 × 2 68, 2 × 4 75, 3 × 4 48, 8 × 1 62; the 64-filter loop of
#: :func:`_dense_task`, 1 pixel: 62.
VECTOR_BLOCK_VECTORS = 2
VECTOR_TILE = 6

#: ``(pixels, vectors)`` of the tiles of the explicit-vector nests.  Grouped
#: layers take one vector of filters: 12 pixels share each weight vector of
#: groups at least a vector wide; narrower groups hold their weight vectors
#: for each channel of the group (ResNeXt's 4) besides 8 pixels' sums
#: (measured with AVX2 on 56²×128 in groups of 4 at N=8, GFLOP/s: 4 pixels
#: 38.5, 8 40.5, 12 37.8).
VECTOR_SHAPES = {"dense_vector": (VECTOR_TILE, VECTOR_BLOCK_VECTORS), "grouped_vector": (12, 1),
                 "grouped_lanes": (8, 1)}


def vector_lanes(dtype):
    """Values of ``dtype`` per vector register of the CPU Numba compiles for."""
    return target.VECTOR_BYTES // np.dtype(dtype).itemsize


@njit(inline="always")
def _vector_window(tile, x, w, x_at, w_at, KH, KW, DH, DW, CIN, F, pixel_step, row_step,
                   column_step, SPLIT, IN_LANE):
    """``tile`` plus its pixels' full windows, the first one's starting at ``x[x_at]``.

    Unless ``SPLIT`` (a block reading some of the channels), a kernel row's
    taps × channels are contiguous when undilated.
    ``IN_LANE``: groups of ``CIN`` channels in and out, each lane reading its
    group's channels in its own vector (:func:`~.simd.tile_fma_groups`).
    """
    for ki in range(KH):
        x_row = x_at + ki * DH * row_step
        w_row = w_at + ki * KW * CIN * F
        if IN_LANE:
            for kj in range(KW):
                tile = tile_fma_groups(tile, x, x_row + kj * DW * column_step, pixel_step, w,
                                       w_row + kj * CIN * F, CIN)
        elif not SPLIT and DW == 1:  # one loop
            for k in range(KW * CIN):
                tile = tile_fma(tile, x, x_row + k, pixel_step, w, w_row + k * F)
        else:
            for kj in range(KW):
                for ic in range(CIN):
                    tile = tile_fma(tile, x, x_row + kj * DW * column_step + ic, pixel_step,
                                    w, w_row + (kj * CIN + ic) * F)
    return tile


def row_tiles(nest, spec):
    """``(wide, narrow, wide_tiles, narrow_tiles)``: an output row in tiles of a vector nest.

    At most :data:`VECTOR_SHAPES` pixels each: one tile size where one of the
    three largest divides the row (56 = 14 × 4), else as even as two sizes
    allow (a row of 7 is 4 + 3, not 6 + 1: a 1-pixel tile loads a weight
    vector per multiply-add).  Tile sizes are part of a tile's type, so they
    are compile-time constants of the specialized kernel, and each size is
    code of its own to compile.
    """
    width = spec.output_hw[1]
    largest = VECTOR_SHAPES[nest][0]
    size = next((size for size in range(largest, max(0, largest - 3), -1) if width % size == 0),
                None)
    if size is not None:
        return size, size, width // size, 0
    tiles = -(-width // largest)
    wide = -(-width // tiles)
    wide_tiles = width - (wide - 1) * tiles
    return wide, max(1, wide - 1), wide_tiles, tiles - wide_tiles


@njit(inline="always")
def _vector_tile_out(tile, out, n, oh, ow, oc0, F, COUT, RELU):
    """Store ``tile``'s pixels × filters (channels_last): vector stores where contiguous."""
    if RELU:
        tile = tile_relu(tile)
    OH, OW = out.shape[1], out.shape[2]
    at = ((n * OH + oh) * OW + ow) * COUT + oc0
    if oc0 + F <= COUT:  # a full block: its filters are contiguous
        tile_store(out, at, COUT, tile)
    else:
        tile_scatter(out, at, COUT, 1, COUT - oc0, tile)


#: Bytes of packed weights that stay in a core's cache while its tasks move
#: from row to row (half a first-generation EPYC's 512 KB L2).
CACHED_WEIGHT_BYTES = 256 * 1024


def block_major(nest, spec):
    """Whether the vector nest's tasks run block by block rather than row by row.

    Row by row, every row reads all the weights; block by block, every
    block reads the whole input.  Block by block when the weights do not
    stay in the cache and reading them per row moves more bytes (7²×512 at
    N=8: 56 rows × 9.4 MB of weights against 32 blocks × 1.3 MB of input;
    measured with AVX2, 6 interleaved rounds: 72 GFLOP/s against 54).
    """
    itemsize = np.dtype(spec.dtype).itemsize
    block = filter_block(nest, spec.dtype)
    weight_bytes = (spec.kernel_size[0] * spec.kernel_size[1] * spec.filters
                    * spec.in_channels // spec.groups)
    input_bytes = spec.batch * spec.height * spec.width * spec.in_channels
    rows = spec.batch * spec.output_hw[0]
    blocks = -(-spec.filters // block)
    return (weight_bytes * itemsize > CACHED_WEIGHT_BYTES
            and rows * weight_bytes > blocks * input_bytes)


def _dense_vector_task(x, w, b, out, task, KH, KW, SH, SW, DH, DW, CIN, XC, GW, COUT, V, L,
                       WIDE, NARROW, WIDE_TILES, NARROW_TILES, BLOCK_MAJOR, IN_LANE, RELU):
    """One output row × one block of ``V·L`` filters, in tiles of explicit vectors (:mod:`.simd`).

    Specialized only: the tile sizes (:func:`row_tiles`, ``V``, ``L``) are
    part of the tile's type.  ``x`` is zero-padded (there is no border code)
    and ``w`` packed by :func:`pack_weights`; ``x`` and ``out`` are channels_last (the
    dispatcher reorders channels_first data around this nest: read in place,
    its broadcast input values lay a channel plane apart and its stores
    scattered value by value, 0.92-0.95 of the time reordered on 3x3 56²×64).
    Each block reads ``CIN`` of the ``XC`` channels of the input: all of
    them (a dense layer, group width ``GW`` 0), or for groups of ``GW`` =
    ``CIN`` channels in and out, its group's (``GW`` a multiple of the
    block), or, ``IN_LANE`` (groups narrower than a vector), the
    vectors of its own filters' channels, each lane reading its group's
    (see :func:`_vector_window`).  Tasks run block by block
    (``BLOCK_MAJOR``, each thread's blocks then stay in its cache) or row by
    row (:func:`block_major`).
    """
    F = V * L
    H, W, OH, OW = _image_sizes(x, out, False)
    blocks = (COUT + F - 1) // F
    if BLOCK_MAJOR:
        rows = x.shape[0] * OH
        blk = task // rows
        row = task - blk * rows
    else:
        row = task // blocks
        blk = task - row * blocks
    n = row // OH
    oh = row - n * OH
    oc0 = blk * F
    if GW == 0:
        c0 = 0
    elif IN_LANE:
        c0 = oc0
    else:
        c0 = oc0 // GW * GW
    pixel_step, row_step, column_step = SW * XC, W * XC, XC
    x_at = (n * H + oh * SH) * W * XC + c0
    w_at = blk * KH * KW * CIN * F
    for t in range(WIDE_TILES):
        ow = t * WIDE
        tile = _vector_window(tile_load(b, oc0, 0, WIDE, V, L), x, w, x_at + ow * pixel_step, w_at,
                              KH, KW, DH, DW, CIN, F, pixel_step, row_step, column_step,
                              CIN != XC, IN_LANE)
        _vector_tile_out(tile, out, n, oh, ow, oc0, F, COUT, RELU)
    for t in range(NARROW_TILES):
        ow = WIDE_TILES * WIDE + t * NARROW
        narrow = _vector_window(tile_load(b, oc0, 0, NARROW, V, L), x, w, x_at + ow * pixel_step,
                                w_at, KH, KW, DH, DW, CIN, F, pixel_step, row_step,
                                column_step, CIN != XC, IN_LANE)
        _vector_tile_out(narrow, out, n, oh, ow, oc0, F, COUT, RELU)


@njit(inline="always")
def _shifted_tile(x, w, blk, acc, b, n, ih0, iw0, P, KH, KW, SW, DH, DW, SHIFTS, CF_OUT, out,
                  oh, ow, COUT, RELU):
    """``P`` output pixels from column ``iw0`` × one 64-filter block of the shifted grouped nest."""
    OCB = DENSE_BLOCK
    c0 = blk * OCB
    for p in range(P):
        for o in range(OCB):
            acc[p * OCB + o] = b[c0 + o]
    # Shifts outside the column taps: the loads of one shift at neighbouring
    # columns repeat across taps, and LLVM reuses them (measured 2.5x).
    for ki in range(KH):
        ih = ih0 + ki * DH
        for s in range(SHIFTS):
            for kj in range(KW):
                iw = iw0 + kj * DW
                for p in range(P):
                    for o in range(OCB):
                        acc[p * OCB + o] += w[blk, ki, kj, s, o] * x[n, ih, iw + p * SW,
                                                                      c0 + s + o]
    _store_tile(out, acc, n, oh, ow, c0, P, OCB, COUT, CF_OUT, RELU)


def _grouped_shifted_task(x, w, b, out, task, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW,
                          CF, RELU):
    """channels_last groups of 2-64 channels in and as many out (ResNeXt's 4): one output row.

    Vectorized along 64 filters as the dense nest is, although each group
    reads only its own ``CIN`` channels: lane ``o`` of a filter block is
    multiplied by the input channel ``o + s - (CIN - 1)`` of the block for
    every shift ``s`` in ``[0, 2 CIN - 1)``, with the weight of that channel
    when it is in the lane's group and zero otherwise (:func:`pack_weights`).
    That is ``(2 CIN - 1) / CIN`` times the arithmetic, every load contiguous
    and no shuffle; the alternatives (one filter group at a time, or the
    dense nest on block-diagonal weights) leave the vector units mostly idle.
    A zero weight meets every other channel of the block, so an inf/NaN
    input would leak into the other groups (0 * inf is NaN): such inputs go
    to the plain grouped nest (see
    :attr:`numbaconv.dispatch.Implementation.finite_inputs_only`).
    ``x`` is zero-padded in space and around each pixel's channels
    (:func:`channel_pads`), so there is no border code; the output is at
    least ``TW`` pixels wide (a narrower one would need a second unrolled
    tile, ~0.5 s more compilation).  ``CF`` is always false here.
    """
    OH, OW = out.shape[1], out.shape[2]
    F = G * COUT
    SHIFTS = 2 * CIN - 1
    n = task // OH
    oh = task - n * OH
    ih0 = oh * SH
    acc = np.empty(TW * DENSE_BLOCK, dtype=out.dtype)
    for t in range((OW + TW - 1) // TW):  # dispatch guarantees OW >= TW
        ow = min(t * TW, OW - TW)  # the last tile overlaps its neighbour
        for blk in range(_dense_blocks(F)):
            _shifted_tile(x, w, blk, acc, b, n, ih0, ow * SW, TW, KH, KW, SW, DH, DW, SHIFTS,
                          CF, out, oh, ow, F, RELU)


#: Output pixels per tile of the depthwise nest: 2 rows × 4 columns, each
#: pixel with its own sums in registers, sharing every tap's weights and
#: (across a row's pixels and the two rows) input vectors loaded.  Measured
#: here, flat-indexed, 112²×32 and 14²×576 at N=1: 1 row × 4 pixels 255 and
#: 160 GFLOP/s, 1 × 8 232 and 167, 2 × 4 298 and 237.
DEPTHWISE_TILE = (2, 4)


@njit(inline="always")
def _depthwise_clipped_pixel(x, w, b, out, n, oh, ow, H, W, OH, OW, C, KH, KW, SH, SW, DH, DW,
                             PT, PL, RELU):
    """One output pixel whose window the input's border clips: the taps inside only.

    Each tap is a vectorized loop over the channels, accumulated in the
    output.  Flat indices as in :func:`_depthwise_tile`.
    """
    ih0 = oh * SH - PT
    iw0 = ow * SW - PL
    ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
    kj_lo, kj_hi = _valid_range(KW, W, DW, iw0)
    at_out = ((n * OH + oh) * OW + ow) * C
    for c in range(C):
        out[np.uint64(at_out + c)] = b[np.uint64(c)]
    for ki in range(ki_lo, ki_hi):
        for kj in range(kj_lo, kj_hi):
            at = ((n * H + ih0 + ki * DH) * W + iw0 + kj * DW) * C
            tap = (ki * KW + kj) * C
            for c in range(C):
                out[np.uint64(at_out + c)] += x[np.uint64(at + c)] * w[np.uint64(tap + c)]
    if RELU:
        zero = out.dtype.type(0)
        for c in range(C):
            out[np.uint64(at_out + c)] = max(out[np.uint64(at_out + c)], zero)


@njit(inline="always")
def _depthwise_tile(x, w, b, out, xb, ob, C, KH, KW, SH, SW, DH, DW, WC, OWC, RELU):
    """2 output rows × 4 pixels whose windows lie inside the input.

    ``x``, ``w`` and ``out`` are flat views; ``xb`` is the flat index of the
    first pixel's window corner, ``ob`` that of the first pixel, ``WC`` and
    ``OWC`` the input's and output's row lengths (width × channels).  With
    the channel count a constant, every tap's load is one base register plus
    a constant offset (indexed in four dimensions, each load computed its
    own address from run-time shapes: 2-3x slower).  The tap loops unroll,
    so the loop over channels is the innermost one and is vectorized; each
    pixel keeps its sum in registers (written out: a loop over pixels would
    be vectorized instead).  Unsigned indices: signed ones get wraparound
    checks that keep LLVM from vectorizing.
    """
    for c in range(C):
        s0 = b[np.uint64(c)]
        s1 = s2 = s3 = t0 = t1 = t2 = t3 = s0
        for ki in range(KH):
            row = xb + ki * DH * WC + c
            for kj in range(KW):
                weight = w[np.uint64((ki * KW + kj) * C + c)]
                at = row + kj * DW * C
                s0 += x[np.uint64(at)] * weight
                s1 += x[np.uint64(at + SW * C)] * weight
                s2 += x[np.uint64(at + 2 * SW * C)] * weight
                s3 += x[np.uint64(at + 3 * SW * C)] * weight
                at += SH * WC  # the second row's window
                t0 += x[np.uint64(at)] * weight
                t1 += x[np.uint64(at + SW * C)] * weight
                t2 += x[np.uint64(at + 2 * SW * C)] * weight
                t3 += x[np.uint64(at + 3 * SW * C)] * weight
        if RELU:
            zero = out.dtype.type(0)
            s0, s1, s2, s3 = max(s0, zero), max(s1, zero), max(s2, zero), max(s3, zero)
            t0, t1, t2, t3 = max(t0, zero), max(t1, zero), max(t2, zero), max(t3, zero)
        out[np.uint64(ob + c)] = s0
        out[np.uint64(ob + C + c)] = s1
        out[np.uint64(ob + 2 * C + c)] = s2
        out[np.uint64(ob + 3 * C + c)] = s3
        out[np.uint64(ob + OWC + c)] = t0
        out[np.uint64(ob + OWC + C + c)] = t1
        out[np.uint64(ob + OWC + 2 * C + c)] = t2
        out[np.uint64(ob + OWC + 3 * C + c)] = t3


@helper_jit(6, 13)
def _depthwise_rows(task, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PT, PL):
    """``(n, oh, rows, lo, hi, tiles)``: what the depthwise task ``task`` computes.

    Output rows whose windows keep inside the input's rows go in pairs, from
    the first such row: the task of the pair's first row computes both
    (``rows`` is 2; the second row's task has none) in ``tiles`` tiles
    across columns ``[lo, hi)``.  Every other pixel of the task's rows (by
    the border, and in an unpaired last row) is a border pixel.
    """
    ROWS, COLS = DEPTHWISE_TILE
    n = task // OH
    oh = task - n * OH
    first, end = _valid_range(OH, H - (KH - 1) * DH, SH, -PT)
    if first <= oh < end and (oh - first) % ROWS:
        return n, oh, 0, 0, 0, 0  # the second row of a pair
    if first <= oh and oh + ROWS - 1 < end:
        lo, hi, tiles = _dense_interior(OW, W, KW, SW, DW, PL, COLS)
        return n, oh, ROWS, lo, hi, tiles
    return n, oh, 1, 0, 0, 0


def _depthwise_task(x, w, b, out, task, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PT, PL, C, RELU):
    """channels_last depthwise, one filter per channel: the tiles of output row ``task``.

    ``x``, ``w`` (Keras layout) and ``out`` come flattened, with the image
    sizes beside them (see :func:`_depthwise_tile` for why); rows pair as
    :func:`_depthwise_rows` says, and the last tile of a row is shifted
    left to end at the interior's end, overlapping its neighbour.  The
    border pixels are left to :func:`_depthwise_edge_task`, run by a
    generic pass after the tiles (see :func:`_finish`): in the specialized
    kernel, with the geometry constant, they tripled its compilation (0.7
    to 2.2 s), and with it read at run time LLVM no longer vectorized the
    tile.  Compile cost shaped this too: every inlined copy of the unrolled
    tile costs ~0.5 s, so there is one.  Several filters per channel (a
    depth multiplier) go to the grouped nest.
    """
    ROWS, COLS = DEPTHWISE_TILE
    n = task // OH
    oh = task - n * OH
    first, end = _valid_range(OH, H - (KH - 1) * DH, SH, -PT)
    # As _depthwise_rows, written out: through its returned values, LLVM no
    # longer vectorized the tile (measured: 7x slower).
    if first <= oh and oh + ROWS - 1 < end and (oh - first) % ROWS == 0:
        lo, hi, tiles = _dense_interior(OW, W, KW, SW, DW, PL, COLS)
        x_row = (n * H + oh * SH - PT) * W * C
        out_row = (n * OH + oh) * OW * C
        for t in range(tiles):
            ow = min(lo + t * COLS, hi - COLS)
            _depthwise_tile(x, w, b, out, x_row + (ow * SW - PL) * C, out_row + ow * C, C, KH,
                            KW, SH, SW, DH, DW, W * C, OW * C, RELU)


@njit(inline="always")
def _depthwise_vector_pixel(x, w, b, out, n, oh, ow, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PT,
                            PL, C, L, EV, RELU):
    """One output pixel of :func:`_depthwise_vector_task`, its window clipped by the border.

    ``EV`` vectors of channels at a time: independent sums (with one, each
    multiply-add waited for the previous one).
    """
    ih0 = oh * SH - PT
    iw0 = ow * SW - PL
    ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
    kj_lo, kj_hi = _valid_range(KW, W, DW, iw0)
    out_at = ((n * OH + oh) * OW + ow) * C
    for c in range(0, C, EV * L):
        total = tile_load(b, c, 0, 1, EV, L)
        for ki in range(ki_lo, ki_hi):
            for kj in range(kj_lo, kj_hi):
                total = tile_fma_lanes(total, x, ((n * H + ih0 + ki * DH) * W + iw0 + kj * DW) * C
                                       + c, 0, w, (ki * KW + kj) * C + c)
        if RELU:
            total = tile_relu(total)
        tile_store(out, out_at + c, 0, total)


def _depthwise_vector_task(x, w, b, out, task, H, W, OH, OW, stream, ahead, KH, KW, SH, SW,
                           DH, DW, PT, PL, C, L, EV, AHEAD_ROW, PREFETCHES, LINE, RELU):
    """:func:`_depthwise_task` in explicit vectors (:mod:`.simd`), ``C`` a multiple of ``L``.

    Specialized only.  The tile is 2 rows × 4 pixels × one vector of ``L``
    channels (8 sums and a weight vector in registers; each input vector is
    read once, as an operand of its multiply-add), over the channels vector
    by vector; rows pair and tiles shift as in :func:`_depthwise_task`.  The
    border pixels are computed here too, ``EV`` vectors of channels at a
    time, while their rows are in cache.  Left to a pass with the geometry at
    run time, compiled once for all configurations, they would save ~1 s of
    each configuration's compilation, but the layers took 29-48% longer at
    N=1 and up to 13% at N=8 (23-47% at N=1 with that pass run in the same
    parallel loop, right after each row's tiles).  With ``stream`` the tiles are
    stored non-temporally (:func:`~.simd.tile_stream`: ``out`` 64-byte
    aligned): a depthwise layer moves ~8 bytes per 18 flops, and a plain
    store first reads the line it overwrites.  Measured with AVX2 (2
    threads, kernel alone, GFLOP/s, the loop-vectorized nest → this one):
    112²×32 N=1 48 → 56, N=8 34 → 43 (streamed); 14²×576 N=1 32 → 48, N=8
    28 → 35.  With ``ahead`` (an input larger than the caches) each step also
    prefetches into L2 ``PREFETCHES`` lines of the rows the next pair reads
    first (from row ``AHEAD_ROW`` of this pair's window, see
    :func:`_depthwise_prefetches`).  112²×32 N=8 took 1.0 ms on data in cache,
    1.04 storing to memory, 1.25 reading from it, 1.38 both; prefetched, 0.88-0.93
    of the time.
    """
    ROWS, COLS = DEPTHWISE_TILE
    n, oh, rows, _, _, _ = _depthwise_rows(task, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PT, PL)
    lo, hi, tiles = _dense_interior(OW, W, KW, SW, DW, PL, COLS)
    # A row left alone (by the top or bottom border, or unpaired) runs tiles
    # of one row over the taps inside the input (14²×576: 27% of the pixels
    # by the border, 14% without those rows).
    ki_lo, ki_hi = _valid_range(KH, H, DH, oh * SH - PT)
    x_row = (n * H + oh * SH - PT) * W * C
    out_row = (n * OH + oh) * OW * C
    next_rows = x_row + AHEAD_ROW * W * C  # see _depthwise_prefetches
    for t in range(tiles if rows else 0):
        ow = min(lo + t * COLS, hi - COLS)
        x_at = x_row + (ow * SW - PL) * C
        out_at = np.uint64(out_row + ow * C)
        for c in range(0, C, L):
            if ahead:
                for j in range(PREFETCHES):
                    prefetch_l2(x, np.uint64(next_rows + ((t * (C // L) + c // L) * PREFETCHES
                                                          + j) * LINE))
            top = tile_load(b, np.uint64(c), 0, COLS, 1, L)
            if rows == ROWS:
                bottom = top
                for ki in range(KH):
                    for kj in range(KW):
                        at = np.uint64(x_at + ki * DH * W * C + kj * DW * C + c)
                        w_at = np.uint64((ki * KW + kj) * C + c)
                        top = tile_fma_lanes(top, x, at, SW * C, w, w_at)
                        bottom = tile_fma_lanes(bottom, x, at + np.uint64(SH * W * C), SW * C,
                                                w, w_at)
            else:
                bottom = top  # unused
                for ki in range(ki_lo, ki_hi):
                    for kj in range(KW):
                        at = np.uint64(x_at + ki * DH * W * C + kj * DW * C + c)
                        top = tile_fma_lanes(top, x, at, SW * C, w,
                                             np.uint64((ki * KW + kj) * C + c))
            if RELU:
                top, bottom = tile_relu(top), tile_relu(bottom)
            at = out_at + np.uint64(c)
            if stream:
                tile_stream(out, at, C, top)
            else:
                tile_store(out, at, C, top)
            if rows == ROWS:
                if stream:
                    tile_stream(out, at + np.uint64(OW * C), C, bottom)
                else:
                    tile_store(out, at + np.uint64(OW * C), C, bottom)
    for r in range(rows):
        for e in range(OW - (hi - lo)):  # the pixels left of the tiles, then those right of them
            ow = e if e < lo else e + hi - lo
            _depthwise_vector_pixel(x, w, b, out, n, oh + r, ow, H, W, OH, OW, KH, KW, SH, SW,
                                    DH, DW, PT, PL, C, L, EV, RELU)
    stream_fence()


def _depthwise_edge_task(x, w, b, out, task, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PT, PL, C,
                         RELU):
    """The border pixels of :func:`_depthwise_task`'s rows, one by one, windows clipped."""
    n, oh, rows, lo, hi, _ = _depthwise_rows(task, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PT, PL)
    for r in range(rows):
        for e in range(OW - (hi - lo)):  # the pixels left of the tiles, then those right of them
            ow = e if e < lo else e + hi - lo
            _depthwise_clipped_pixel(x, w, b, out, n, oh + r, ow, H, W, OH, OW, C, KH, KW, SH,
                                     SW, DH, DW, PT, PL, RELU)


@njit(inline="always")
def _planar_row_clipped(x, w, b, out, n, c, oh, lo, hi, ih0, H, W, KH, KW, SW, DH, DW, PL,
                        RELU):
    """Output columns ``[lo, hi)`` of row ``out[n, c, oh]``, any window clipping, tap by tap.

    Each tap is a vectorized loop over the columns whose input pixel is
    inside the input.
    """
    for o in range(lo, hi):
        out[n, c, oh, o] = b[c]
    for ki in range(KH):
        ih = ih0 + ki * DH
        if 0 <= ih < H:
            for kj in range(KW):
                offset = kj * DW - PL
                first, last = _valid_range(hi, W, SW, offset)
                tap = w[ki, kj, 0, c]
                for o in range(max(lo, first), last):
                    out[n, c, oh, o] += x[n, c, ih, np.uint64(o * SW + offset)] * tap
    if RELU:
        zero = out.dtype.type(0)
        for o in range(lo, hi):
            out[n, c, oh, o] = max(out[n, c, oh, o], zero)


def _depthwise_planar_task(x, w, b, out, task, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW,
                           CF, RELU):
    """channels_first depthwise, one filter per channel: one output row of one channel.

    Each channel is an independent plane, so the row is vectorized along
    its pixels, with the taps unrolled and the channel's weights held in
    registers (no reorder of the data).  Rows and columns whose window
    leaves the input go through :func:`_planar_row_clipped`.  Indexed in four
    dimensions, without views (a view costs an atomic reference count, which
    the threads contend for), with unsigned indices (signed ones get
    wraparound checks that keep LLVM from vectorizing).
    """
    H, W = x.shape[2], x.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    plane_index = task // OH
    oh = task - plane_index * OH
    n = plane_index // G
    c = plane_index - n * G
    ih0 = oh * SH - PT
    if 0 <= ih0 and ih0 + (KH - 1) * DH < H:
        lo = min(OW, (PL + SW - 1) // SW)
        hi = max(lo, min(OW, (W - 1 - (KW - 1) * DW + PL) // SW + 1))
        for o in range(lo, hi):
            value = b[c]
            for ki in range(KH):
                for kj in range(KW):
                    value += x[np.uint64(n), np.uint64(c), np.uint64(ih0 + ki * DH),
                               np.uint64(o * SW - PL + kj * DW)] * w[ki, kj, 0, c]
            if RELU and value < 0:
                value = out.dtype.type(0)
            out[np.uint64(n), np.uint64(c), np.uint64(oh), np.uint64(o)] = value
        _planar_row_clipped(x, w, b, out, n, c, oh, 0, lo, ih0, H, W, KH, KW, SW, DH, DW, PL,
                            RELU)
        _planar_row_clipped(x, w, b, out, n, c, oh, hi, OW, ih0, H, W, KH, KW, SW, DH, DW, PL,
                            RELU)
    else:
        _planar_row_clipped(x, w, b, out, n, c, oh, 0, OW, ih0, H, W, KH, KW, SW, DH, DW, PL,
                            RELU)


@njit(inline="always")
def _flat_views(x, w, out):
    """``(H, W, OH, OW, x, w, out)``: channels_last image sizes and flat views of the arrays.

    For the depthwise nests, indexed flat; made in the drivers, outside the
    parallel loop: a view costs an atomic reference count, which the
    threads would contend for.
    """
    return (x.shape[1], x.shape[2], out.shape[1], out.shape[2], x.reshape(-1), w.reshape(-1),
            out.reshape(-1))


#: The nests by name, in the order of the generic driver's compile-time selector
#: (the vector nests run specialized only: :func:`_vector_kernel`).
NESTS = ("grouped", "depthwise", "dense", "dense_edge", "depthwise_planar",
         "grouped_shifted", "depthwise_edge", "dense_vector", "grouped_vector",
         "depthwise_vector", "grouped_lanes")
#: The nests that run specialized only (their tile sizes are types).
SPECIALIZED_ONLY = ("dense_vector", "grouped_vector", "depthwise_vector", "grouped_lanes")
# Called by the generic drivers and, specialized, by ParallelTask (see
# :func:`~numbaconv.jit.task_jit`).
(_grouped, _depthwise, _dense, _dense_edge, _depthwise_planar, _grouped_shifted,
 _depthwise_edge, _dense_vector, _depthwise_vector) = (
    task_jit(fastmath=_CONTRACT)(task)
    for task in (_grouped_task, _depthwise_task, _dense_task, _dense_edge_task,
                 _depthwise_planar_task, _grouped_shifted_task, _depthwise_edge_task,
                 _dense_vector_task, _depthwise_vector_task))




def _generic_driver(NEST):
    """A parallel driver for nest number ``NEST`` taking the geometry at run time."""

    @kernel_jit(parallel=True, fastmath=_CONTRACT)
    def drive(x, w, b, out, tasks, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, CF, RELU):
        # NEST is a constant: Numba prunes the other branches before compiling.
        if NEST == 0:
            for task in prange(tasks):
                _grouped(x, w, b, out, np.int64(task), KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT,
                         TW, CF, RELU)
        elif NEST == 1:
            H, W, OH, OW, xf, wf, outf = _flat_views(x, w, out)
            for task in prange(tasks):
                _depthwise(xf, wf, b, outf, np.int64(task), H, W, OH, OW, KH, KW, SH, SW, DH, DW,
                           PT, PL, G, RELU)
        elif NEST == 2:
            for task in prange(tasks):
                _dense(x, w, b, out, np.int64(task), KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT,
                       TW, CF, RELU)
        elif NEST == 3:
            for task in prange(tasks):
                _dense_edge(x, w, b, out, np.int64(task), KH, KW, SH, SW, DH, DW, PT, PL, G, CIN,
                            COUT, TW, CF, RELU)
        elif NEST == 4:
            for task in prange(tasks):
                _depthwise_planar(x, w, b, out, np.int64(task), KH, KW, SH, SW, DH, DW, PT, PL, G,
                                  CIN, COUT, TW, CF, RELU)
        elif NEST == 5:
            for task in prange(tasks):
                _grouped_shifted(x, w, b, out, np.int64(task), KH, KW, SH, SW, DH, DW, PT, PL, G,
                                 CIN, COUT, TW, CF, RELU)
        else:
            H, W, OH, OW, xf, wf, outf = _flat_views(x, w, out)
            for task in prange(tasks):
                _depthwise_edge(xf, wf, b, outf, np.int64(task), H, W, OH, OW, KH, KW, SH, SW, DH,
                                DW, PT, PL, G, RELU)

    return drive


_GENERIC = {name: _generic_driver(index) for index, name in enumerate(NESTS)
            if name not in SPECIALIZED_ONLY}
#: The tasks :func:`specialized_kernel` runs (the vector nests have runners of their own).
_SPECIALIZED_TASKS = {"grouped": _grouped, "depthwise": _depthwise, "dense": _dense,
                      "depthwise_planar": _depthwise_planar, "grouped_shifted": _grouped_shifted}

def largest_tile():
    """The most output pixels a tile of the dense nests takes on this CPU (2 to 4)."""
    return max(2, min(4, target.ACCUMULATORS // target.block_vectors()))


#: Output pixels per tile of the dense and shifted grouped nests (each shares the
#: weight loads), at most: as many as the accumulators allow (see
#: :mod:`numbaconv.cpu.target` and :func:`register_tile`).  With AVX-512, 4 pixels
#: × 64 filters = 16 accumulators; measured there, 5 and 6 (which fit the
#: register file on paper) ran 3-4x slower: LLVM spills them.
DENSE_TILE = largest_tile()


def register_tile(nest, spec):
    """Output pixels per tile of the dense or shifted grouped nest on ``spec``.

    :data:`DENSE_TILE` with AVX-512.  With fewer registers (AVX2: a 64-filter
    block takes 8 of the 16), the best tile was measured on a first-generation
    EPYC (2 threads, GFLOP/s with 1 / 2 pixels): 1 pixel wherever the loop over
    a kernel row's taps × channels is short or long (3x3 56²×64→64 55 / 40,
    56²×24→64 49 / 38, 14²×256 51 / 38, 1x1 56²×64→256 51 / 34, 3x3 3→64
    26 / 19), 2 in between, 15-48 products (the 7x7/2 stem 3→64 25 / 34,
    5x5 3→64 26 / 31, 3x3 16→64 22 / 35, 1x1 16→64 20 / 25; 3x3 8→64 21 /
    22), where LLVM unrolls that loop differently; 4 pixels ran at 19-31 on
    all.  The shifted grouped nest takes 2 (ResNeXt: 1: 8, 2: 9.5, 4: 9).
    """
    if DENSE_TILE >= 4:
        return DENSE_TILE
    if nest == "grouped_shifted":
        return 2
    span = spec.in_channels // spec.groups * spec.kernel_size[1]
    return 2 if 15 <= span <= 48 else 1


def tile_width(nest, spec):
    """The tile size ``TW`` of ``nest`` on ``spec``, in output pixels along a row."""
    if nest in ("dense", "grouped_shifted"):
        return register_tile(nest, spec)
    if nest in ("depthwise", "depthwise_vector"):
        return DEPTHWISE_TILE[1]
    return 1


def specialization_key(nest, spec):
    """What a specialized kernel of ``nest`` compiles in from ``spec``: equal keys, one kernel."""
    key = (*kernel_arguments(nest, spec), spec.dtype)
    if nest in VECTOR_SHAPES:
        return (*key, *row_tiles(nest, spec), block_major(nest, spec))
    return key


def vector_groups(spec):
    """Whether the grouped vector nest runs ``spec``: groups of as many channels in as
    filters out, a whole number of filter blocks each (narrower ones: :func:`lane_groups`)."""
    width = spec.in_channels // spec.groups
    block = filter_block("grouped_vector", spec.dtype)
    return (spec.groups > 1 and spec.filters == spec.in_channels and width % block == 0
            and vector_tiles_pay())


def lane_groups(spec):
    """Whether the in-lane grouped nest runs ``spec``: groups of 2 or more channels in and as
    many filters out, narrower than a vector and dividing it, whole vectors of filters.

    Measured with AVX2 (2 threads, GFLOP/s) against the block-diagonal
    weights it replaced (one vector of filters reading its groups' channels,
    zero weights across groups): groups of 4 on 56²×128 27.9 → 46.7 at N=1,
    24.8 → 40.5 at N=8; groups of 2 on 56²×64 14.2 → 44.5.
    """
    width = spec.in_channels // spec.groups
    lanes = vector_lanes(spec.dtype)
    return (spec.groups > 1 and 2 <= width < lanes and lanes % width == 0
            and spec.filters == spec.in_channels and spec.filters % lanes == 0
            and vector_tiles_pay())


def vector_tiles_pay():
    """Whether the dense layers run the explicit-vector nest (specialized): without AVX-512.

    With 16 vector registers the 64-filter loop of :func:`_dense_task` holds
    one pixel and loads a weight vector per multiply-add; the vector nest's
    6 × 2-vector tile reuses each for 6 (measured with AVX2 on a prototype of
    the two, 3x3 layers at N=8, interior pixels, GFLOP/s: 56²×64 62 → 76,
    16²×256 53 → 76, 9²×512 37 → 64).  With AVX-512 the loop's 4 × 4-vector
    tile ran at 95-165 and is kept (not measured against the vector nest:
    no AVX-512 machine since).
    """
    return target.ACCUMULATORS < 16


def kernel_arguments(nest, spec):
    """The geometry integers of ``spec`` in task-body argument order (after ``task``)."""
    kh, kw = spec.kernel_size
    sh, sw = spec.strides
    dh, dw = spec.dilation
    cin = spec.in_channels // spec.groups
    cout = spec.filters // spec.groups
    return (kh, kw, sh, sw, dh, dw, spec.pads[0][0], spec.pads[1][0], spec.groups, cin, cout,
            tile_width(nest, spec), spec.data_format == "channels_first")


def interior_pixels(spec):
    """Output columns per row that the dense nest runs in full tiles (the rest are border)."""
    lo, hi, _ = _dense_interior.py_func(spec.output_hw[1], spec.width, spec.kernel_size[1],
                                        spec.strides[1], spec.dilation[1], spec.pads[1][0],
                                        register_tile("dense", spec))
    return hi - lo


def task_count(nest, spec):
    """Parallel tasks of ``nest`` on ``spec``: output rows, times filter blocks where split."""
    out_h = spec.output_hw[0]
    if nest == "dense":
        return spec.batch * out_h * -(-spec.filters // DENSE_BLOCK)
    if nest == "depthwise_planar":
        return spec.batch * out_h * spec.filters
    if nest in VECTOR_SHAPES:
        return spec.batch * out_h * -(-spec.filters // filter_block(nest, spec.dtype))
    return spec.batch * out_h


#: The nests whose border pixels a generic edge pass computes after them.
_EDGES = {"dense": "dense_edge", "depthwise": "depthwise_edge"}


def _finish(nest, x, w, b, out, spec, relu):
    """The dense and depthwise nests' border pixels, by a generic edge driver.

    They are a small share of the work, and compiling them once for every
    configuration instead of per configuration halves the specialization's
    compile time.
    """
    if nest in _EDGES:
        _GENERIC[_EDGES[nest]](x, w, b, out, task_count(nest, spec),
                               *kernel_arguments(nest, spec), bool(relu))


def generic_kernel(nest):
    """A runner ``run(x, w, b, out, spec, relu)`` of ``nest`` with run-time geometry.

    ``w`` is packed by :func:`pack_weights` for this nest.
    """
    drive = _GENERIC[nest]

    def run(x, w, b, out, spec, relu):
        b = pack_bias(nest, b)
        drive(x, w, b, out, task_count(nest, spec), *kernel_arguments(nest, spec), bool(relu))
        _finish(nest, x, w, b, out, spec, relu)

    return run


def specialized_kernel(nest, spec, relu):
    """A runner ``run(x, w, b, out, spec, relu)`` of ``nest`` with ``spec``'s geometry compiled in.

    ``w`` is packed by :func:`pack_weights` for this nest.  The geometry and
    ``relu`` (fused rectification) are the constants of a
    :class:`~numbaconv.jit.ParallelTask`, so the runner serves only specs with
    the same :func:`kernel_arguments` (it ignores the geometry of its ``spec``
    argument but takes the task count from it).  Nothing is compiled until
    the first call.
    """
    if nest in _EDGES.values():  # border passes run generic only (see _finish)
        raise ValueError(f"The edge nest {nest!r} has no specialized driver")
    RELU = bool(relu)
    if nest in VECTOR_SHAPES:
        return _vector_kernel(nest, spec, RELU)
    if nest == "depthwise_vector":
        return _depthwise_vector_kernel(spec, RELU)
    geometry = kernel_arguments(nest, spec)
    flat = nest == "depthwise"  # its task reads flat arrays and only the window's geometry
    task = ParallelTask(_SPECIALIZED_TASKS[nest], (geometry[:9] if flat else geometry) + (RELU,))

    def run(x, w, b, out, spec, relu):
        b = pack_bias(nest, b)
        arrays, sizes = _flat_arrays(x, w, b, out) if flat else ((x, w, b, out), ())
        task(task_count(nest, spec), arrays, sizes)
        _finish(nest, x, w, b, out, spec, relu)

    return run


def _flat_arrays(x, w, b, out):
    """``((x, w, b, out) flat, (H, W, OH, OW))``: the depthwise tasks' arrays and image sizes.

    The depthwise nests index flat arrays: views of the C-contiguous arrays
    (a copy of ``out`` would lose what the tasks write).  The generic
    drivers make the same views in compiled code (:func:`_flat_views`).
    """
    if not out.flags.c_contiguous:
        raise ValueError("The depthwise nests write into a C-contiguous output only")
    return ((x.reshape(-1), w.reshape(-1), b, out.reshape(-1)),
            (x.shape[1], x.shape[2], out.shape[1], out.shape[2]))


def _vector_kernel(nest, spec, RELU):
    """:func:`specialized_kernel` of an explicit-vector nest (dense or grouped)."""
    KH, KW, SH, SW, DH, DW, _, _, _, _, _, _, CF = kernel_arguments(nest, spec)
    if CF:
        raise ValueError(f"The {nest!r} nest reads channels_last data only. Received "
                         f"data_format={spec.data_format!r}")
    V, L = VECTOR_SHAPES[nest][1], vector_lanes(spec.dtype)
    CIN = spec.in_channels // spec.groups
    XC, COUT = spec.in_channels, spec.filters
    GW = 0 if nest == "dense_vector" else spec.in_channels // spec.groups
    WIDE, NARROW, WIDE_TILES, NARROW_TILES = row_tiles(nest, spec)
    BLOCK_MAJOR = block_major(nest, spec)
    IN_LANE = nest == "grouped_lanes"
    task = ParallelTask(_dense_vector, (KH, KW, SH, SW, DH, DW, CIN, XC, GW, COUT, V, L, WIDE,
                                        NARROW, WIDE_TILES, NARROW_TILES, BLOCK_MAJOR, IN_LANE,
                                        RELU))

    def run(x, w, b, out, spec, relu):
        task(task_count(nest, spec), (x, w, pack_bias(nest, b), out))

    return run


#: Outputs from this size on are streamed by the depthwise vector nest (see
#: :func:`~.simd.tile_stream`): smaller ones are likely to be read again
#: from the cache by the next layer.
STREAM_MIN_BYTES = 4 << 20

#: The most cache lines the depthwise vector nest prefetches a step (see
#: :func:`_depthwise_prefetches`): 112²×96 stride 2, 16 a step, ran 3% slower.
MAX_PREFETCHES_A_STEP = 4


def streams_output(nest, spec):
    """Whether ``nest`` stores ``spec``'s output non-temporally, given an aligned one
    (:func:`~.layout.aligned_empty`)."""
    return (nest == "depthwise_vector"
            and math.prod(spec.output_shape) * np.dtype(spec.dtype).itemsize >= STREAM_MIN_BYTES)


def depthwise_vectors(spec):
    """Whether the depthwise vector nest runs ``spec`` (channels a multiple of the lanes)."""
    return spec.in_channels % vector_lanes(spec.dtype) == 0 and vector_tiles_pay()


def _depthwise_next_rows(KH, SH, DH):
    """``(first, count)``: the span of input rows past this pair's window that the next
    pair of output rows reads, ``first`` counted from this pair's first input row (its
    rows between this pair's, with dilation, are left to the hardware)."""
    ROWS = DEPTHWISE_TILE[0]
    last = (ROWS - 1) * SH + (KH - 1) * DH  # this pair's last row
    first = max(ROWS * SH, last + 1)
    return first, last + ROWS * SH + 1 - first


def _depthwise_prefetches(KH, SW, SH, DH, L, LINE):
    """Cache lines (of ``LINE`` elements) that :func:`_depthwise_vector_task` prefetches a
    step of ``L`` channels: the rows :func:`_depthwise_next_rows` finds, in order, as many
    lines a tile as its pixels span in them (the pair's tiles cover about all), or none
    where that is more than :data:`MAX_PREFETCHES_A_STEP`."""
    COLS = DEPTHWISE_TILE[1]
    lines = -(-_depthwise_next_rows(KH, SH, DH)[1] * COLS * SW * L // LINE)
    return lines if lines <= MAX_PREFETCHES_A_STEP else 0


def _depthwise_vector_kernel(spec, RELU):
    """:func:`specialized_kernel` of the depthwise vector nest."""
    KH, KW, SH, SW, DH, DW, PT, PL, C, _, _, _, _ = kernel_arguments("depthwise_vector", spec)
    L = vector_lanes(spec.dtype)
    EV = next(vectors for vectors in (4, 2, 1) if C % (vectors * L) == 0)
    LINE = layout.ALIGNMENT // np.dtype(spec.dtype).itemsize  # elements a cache line
    task = ParallelTask(_depthwise_vector, (KH, KW, SH, SW, DH, DW, PT, PL, C, L, EV,
                                            _depthwise_next_rows(KH, SH, DH)[0],
                                            _depthwise_prefetches(KH, SW, SH, DH, L, LINE), LINE,
                                            RELU))

    def run(x, w, b, out, spec, relu):
        stream = (out.nbytes >= STREAM_MIN_BYTES
                  and layout.address(out) % layout.ALIGNMENT == 0)
        arrays, sizes = _flat_arrays(x, w, b, out)
        task(task_count("depthwise_vector", spec), arrays,
             sizes + (stream, x.nbytes >= STREAM_MIN_BYTES))

    return run
