"""CUDA kernels of the convolution's gradients, geometry compiled in as closure constants.

The GPU counterpart of :mod:`numbaconv.cpu.backward`, for every
configuration the forward kernels take (padding, strides, dilation, groups,
both layouts, float32/float64), without atomics, so results do not depend on
scheduling:

* :func:`input_gradient_kernel` — the transposed convolution, one thread per
  input value (grid-stride): the sum over the taps and filters of its group
  whose output window reads that value.
* :func:`kernel_gradient_kernel` — the correlation of input and output
  gradient, one block per weight (grid-stride over weights): the block's
  threads share the output pixels (consecutive threads, consecutive
  addresses in channels_first), and their sums are added in a tree in
  shared memory.  In channels_last, :func:`kernel_gradient_lanes_kernel`
  gives a block's lanes consecutive filters instead.
* :func:`bias_gradient_kernel` — the output gradient summed per filter, one
  block per filter, the same tree.

Arrays are C-contiguous in the layout given by ``CF``; ``w`` and the kernel
gradient in Keras layout ``(KH, KW, CIN, G * COUT)``.  Imported only once
CUDA is known to run, like :mod:`numbaconv.cuda.kernels`.
"""

from __future__ import annotations

from numba import cuda

from .kernels import _load, _pixel, _sizes, _unflatten

__all__ = ["INPUT_THREADS", "LANES_BLOCK", "LANES_MIN_BLOCKS", "REDUCE_BLOCKS", "REDUCE_THREADS",
           "bias_gradient_kernel", "input_gradient_kernel", "kernel_gradient_kernel",
           "kernel_gradient_lanes_kernel"]

#: Threads per block of the input gradient, and of the reductions (a power of
#: two).  Tests shrink them; they are part of the kernel cache key.
INPUT_THREADS = 256
REDUCE_THREADS = 128
#: Most blocks a reduction launches (each loops over several weights past it).
REDUCE_BLOCKS = 65535
#: ``(LANES, ROWS)`` block of the channels_last kernel gradient: filters by
#: pixel slices (ROWS a power of two).
LANES_BLOCK = (32, 8)
#: Fewest blocks for which the channels_last kernel gradient takes lanes along
#: filters (a block per ``LANES`` weights; a thread's loop runs over all the
#: pixels a row gets): about four per multiprocessor of a large GPU (an H100
#: has 132).  Below it, one block per weight fills the GPU better.  Measured
#: on an H100 (``bench --backward --device cuda``, N=8): lanes 1.2-1.4x
#: faster on the dense rows (512-18432 blocks), 1.2-7x slower on the stem
#: (294), ResNeXt (144) and depthwise rows (9-162).
LANES_MIN_BLOCKS = 512


@cuda.jit(device=True, inline=True)
def _column_sum(partial, row, lane, value, ROWS, LANES):
    """The sum of ``value`` over the ``ROWS`` threads of a lane, valid in row 0.

    Every thread of the block, ``(lane, row)`` of ``LANES × ROWS``, must call it
    (it synchronizes); ``partial`` is a shared array of ``ROWS * LANES``
    values, free again when it returns.
    """
    partial[row * LANES + lane] = value
    cuda.syncthreads()
    step = ROWS // 2
    while step > 0:
        if row < step:
            partial[row * LANES + lane] += partial[(row + step) * LANES + lane]
        cuda.syncthreads()
        step //= 2
    total = partial[lane]
    cuda.syncthreads()  # all have read row 0 before it is written again
    return total


@cuda.jit(device=True, inline=True)
def _tap_product(x, gy, p, c, f, ki, kj, SH, SW, DH, DW, PT, PL, H, W, OH, OW, CF, ZERO):
    """``gy`` at output pixel ``p``, filter ``f``, times the input value that tap
    ``(ki, kj)`` of the pixel reads in channel ``c`` (zero in the padding)."""
    n, oh, ow = _pixel(p, OH, OW)
    ih = oh * SH - PT + ki * DH
    iw = ow * SW - PL + kj * DW
    if 0 <= ih < H and 0 <= iw < W:
        return _load(x, n, c, ih, iw, CF) * _load(gy, n, f, oh, ow, CF)
    return ZERO


def input_gradient_kernel(KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CF, ZERO):
    """``kernel[blocks, threads](gy, w, gx)``: one thread per input value, any geometry.

    Input row ``h`` is read by tap ``ki`` of output row ``oh`` where
    ``oh * SH = h + PT - ki * DH`` (likewise for columns); only those terms
    are summed.  ``ZERO`` is a zero of the compute dtype.
    """

    @cuda.jit
    def kernel(gy, w, gx):
        N, H, W, OH, OW, _ = _sizes(gx, gy, CF)
        C = G * CIN
        total = N * H * W * C
        i = cuda.grid(1)
        while i < total:
            n, c, ih, iw = _unflatten(i, C, H, W, CF)
            group = c // CIN
            ci = c - group * CIN
            first = group * COUT
            acc = ZERO
            for ki in range(KH):
                row = ih + PT - ki * DH
                if row >= 0 and row % SH == 0 and row // SH < OH:
                    oh = row // SH
                    for kj in range(KW):
                        col = iw + PL - kj * DW
                        if col >= 0 and col % SW == 0 and col // SW < OW:
                            ow = col // SW
                            for co in range(COUT):
                                acc += _load(gy, n, first + co, oh, ow, CF) * w[ki, kj, ci,
                                                                               first + co]
            if CF:
                gx[n, c, ih, iw] = acc
            else:
                gx[n, ih, iw, c] = acc
            i += cuda.gridsize(1)

    return kernel


def kernel_gradient_kernel(KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CF, THREADS, DTYPE,
                           ZERO):
    """``kernel[blocks, THREADS](x, gy, gw)``: one block per weight, any geometry.

    Weight ``(ki, kj, ci, f)`` is the sum over the output pixels of
    ``gy[pixel, f]`` times the input value tap ``(ki, kj)`` of that pixel reads
    in channel ``ci`` of ``f``'s group (zero in the padding).
    """

    @cuda.jit
    def kernel(x, gy, gw):
        N, H, W, OH, OW, F = _sizes(x, gy, CF)
        pixels = N * OH * OW
        partial = cuda.shared.array(THREADS, DTYPE)
        t = cuda.threadIdx.x
        item = cuda.blockIdx.x
        while item < KH * KW * CIN * F:  # the same trip count for the whole block
            # Weights in Keras order (KH, KW, CIN, F): consecutive blocks, consecutive filters.
            ki, f, kj, ci = _unflatten(item, F, KW, CIN, False)
            c = (f // COUT) * CIN + ci
            acc = ZERO
            p = t
            while p < pixels:
                acc += _tap_product(x, gy, p, c, f, ki, kj, SH, SW, DH, DW, PT, PL, H, W, OH, OW,
                                    CF, ZERO)
                p += THREADS
            total = _column_sum(partial, t, 0, acc, THREADS, 1)
            if t == 0:
                gw[ki, kj, ci, f] = total
            item += cuda.gridDim.x

    return kernel


def kernel_gradient_lanes_kernel(KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, LANES, ROWS,
                                 DTYPE, ZERO):
    """``kernel[blocks, (LANES, ROWS)](x, gy, gw)``: channels_last, lanes along filters.

    A block computes ``LANES`` consecutive filters of one ``(ki, kj, ci)``:
    lane ``f`` reads ``gy[..., f]``, so a warp's output-gradient loads are one
    contiguous run (and the input value is shared by the lanes of a group),
    where :func:`kernel_gradient_kernel` (one weight per block, threads along
    pixels) reads one value per ``C`` in channels_last.  The block's rows
    share the pixels; their sums are added per lane in shared memory.
    """

    SHARED = ROWS * LANES  # a shared array's size must be one constant, not an expression

    @cuda.jit
    def kernel(x, gy, gw):
        N, H, W, OH, OW, F = _sizes(x, gy, False)
        pixels = N * OH * OW
        fblocks = (F + LANES - 1) // LANES
        partial = cuda.shared.array(SHARED, DTYPE)
        lane = cuda.threadIdx.x
        row = cuda.threadIdx.y
        item = cuda.blockIdx.x
        while item < KH * KW * CIN * fblocks:  # the same trip count for the whole block
            ki, fblock, kj, ci = _unflatten(item, fblocks, KW, CIN, False)
            f = fblock * LANES + lane
            acc = ZERO
            if f < F:
                c = (f // COUT) * CIN + ci
                p = row
                while p < pixels:
                    acc += _tap_product(x, gy, p, c, f, ki, kj, SH, SW, DH, DW, PT, PL, H, W, OH,
                                        OW, False, ZERO)
                    p += ROWS
            total = _column_sum(partial, row, lane, acc, ROWS, LANES)
            if row == 0 and f < F:
                gw[ki, kj, ci, f] = total
            item += cuda.gridDim.x

    return kernel


def bias_gradient_kernel(CF, THREADS, DTYPE, ZERO):
    """``kernel[blocks, THREADS](gy, gb)``: ``gy`` summed per filter, one block per filter."""

    @cuda.jit
    def kernel(gy, gb):
        N, _, _, OH, OW, F = _sizes(gy, gy, CF)
        pixels = N * OH * OW
        partial = cuda.shared.array(THREADS, DTYPE)
        t = cuda.threadIdx.x
        f = cuda.blockIdx.x
        while f < F:
            acc = ZERO
            p = t
            while p < pixels:
                n, oh, ow = _pixel(p, OH, OW)
                acc += _load(gy, n, f, oh, ow, CF)
                p += THREADS
            total = _column_sum(partial, t, 0, acc, THREADS, 1)
            if t == 0:
                gb[f] = total
            f += cuda.gridDim.x

    return kernel
