"""Parallel copies around the loop nests: explicit padding and layout reorders.

The nests that vectorize along channels read and write channels_last, so
channels_first data is reordered for them on the way in and out, as oneDNN
reorders NCHW tensors to its blocked layouts: a copy costs a memory pass,
far less than what vectorizing along channels gains over vectorizing along
short image rows.  The input copy also applies explicit zero padding, so a
padded, reordered input costs one pass, not two.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import prange

from ..jit import kernel_jit

__all__ = ["flipped_transposed_kernel", "flipped_transposed_packed", "pad_channels", "prepare_input", "scratch",
           "to_channels_first", "to_channels_last"]

# The copies index flat arrays with unsigned indices: no views in the loops
# (each costs an atomic reference count, which threads contend for) and no
# negative-index wraparound checks; measured 2.5-3x faster than 4-D indexing
# (52-56 GB/s for a reorder here).


@kernel_jit(parallel=True)
def _gather_channels_last(x, out, top, left, front, CHANNELS_FIRST, CHECK):
    """``out[n, top + h, left + w, front + c] = x[n, h, w, c]`` (or ``x[n, c, h, w]``), zero elsewhere.

    Returns the number of rows holding an inf/NaN among those copied value
    by value (channels_first data, ``out`` with padded channels, or
    ``CHECK``); other channels_last rows are copied unchecked (counted 0).
    """
    N, OH, OW, CP = out.shape
    if CHANNELS_FIRST:
        C, H, W = x.shape[1], x.shape[2], x.shape[3]
    else:
        H, W, C = x.shape[1], x.shape[2], x.shape[3]
    source = x.reshape(x.size)
    target = out.reshape(out.size)
    zero = out.dtype.type(0)
    non_finite_rows = 0
    for row in prange(N * OH):
        n = row // OH
        h = row - n * OH - top
        start = row * OW * CP
        if h < 0 or h >= H:
            for j in range(OW * CP):
                target[np.uint64(start + j)] = zero
            continue
        for j in range(left * CP):
            target[np.uint64(start + j)] = zero
        for j in range((left + W) * CP, OW * CP):
            target[np.uint64(start + j)] = zero
        start += left * CP
        finite = True  # v - v == 0 unless v is inf or NaN; an integer reduction vectorizes
        if CHANNELS_FIRST:
            first = n * C * H * W + h * W
            if CP != C:
                for j in range(W * CP):
                    target[np.uint64(start + j)] = zero
            for c in range(C):
                for w in range(W):
                    value = source[np.uint64(first + c * H * W + w)]
                    target[np.uint64(start + w * CP + front + c)] = value
                    finite &= value - value == zero
        elif CP == C and not CHECK:
            first = (n * H + h) * W * C
            for j in range(W * C):
                target[np.uint64(start + j)] = source[np.uint64(first + j)]
        else:
            for w in range(W):
                first = ((n * H + h) * W + w) * C
                pixel = start + w * CP
                for j in range(front):
                    target[np.uint64(pixel + j)] = zero
                for c in range(C):
                    value = source[np.uint64(first + c)]
                    target[np.uint64(pixel + front + c)] = value
                    finite &= value - value == zero
                for j in range(front + C, CP):
                    target[np.uint64(pixel + j)] = zero
        non_finite_rows += 0 if finite else 1
    return non_finite_rows


@kernel_jit(parallel=True)
def _pad_channels_first(x, out, top, left):
    """``out[n, c, top + h, left + w] = x[n, c, h, w]``, zero elsewhere."""
    N, C, OH, OW = out.shape
    H, W = x.shape[2], x.shape[3]
    source = x.reshape(x.size)
    target = out.reshape(out.size)
    zero = out.dtype.type(0)
    for row in prange(N * C * OH):
        plane = row // OH
        h = row - plane * OH - top
        start = row * OW
        for j in range(OW):
            inside = 0 <= h < H and left <= j < left + W
            target[np.uint64(start + j)] = (
                source[np.uint64((plane * H + h) * W + j - left)] if inside else zero)


@kernel_jit(parallel=True)
def _scatter_channels_first(y, out):
    """``out[n, c, h, w] = y[n, h, w, c]``."""
    N, H, W, C = y.shape
    source = y.reshape(y.size)
    target = out.reshape(out.size)
    for row in prange(N * H):
        n = row // H
        h = row - n * H
        first = row * W * C
        for c in range(C):
            start = ((n * C + c) * H + h) * W
            for w in range(W):
                target[np.uint64(start + w)] = source[np.uint64(first + w * C + c)]


#: Scratch arrays larger than this are not kept between calls.
WORKSPACE_LIMIT_BYTES = 1 << 29
_workspace = threading.local()


def scratch(role, shape, dtype):
    """An uninitialized array for an intermediate result, reused from call to call.

    Large fresh arrays cost page faults and zeroing on every call (glibc
    returns them to the system when freed): measured 1.2 ms of a 3.1 ms
    channels_first depthwise call at N=8.  One buffer per ``role`` and
    thread is kept (up to :data:`WORKSPACE_LIMIT_BYTES`).  Only for arrays
    that never reach the caller and are dead before the next call on this
    thread.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    nbytes = size * dtype.itemsize
    buffers = _workspace.__dict__
    buffer = buffers.get(role)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = np.empty(nbytes, dtype=np.uint8)
        if nbytes <= WORKSPACE_LIMIT_BYTES:
            buffers[role] = buffer
    return buffer[:nbytes].view(dtype).reshape(shape)


#: Where :func:`aligned_empty` starts arrays: a cache line, and any vector's size
#: (the depthwise vector nest streams its stores to such outputs).
ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """An uninitialized array whose data starts on an :data:`ALIGNMENT` boundary.

    NumPy aligns large arrays to 16 bytes only.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # np.prod: 8 us
    buffer = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -address(buffer) % ALIGNMENT
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def address(array):
    """The address of ``array``'s first element."""
    return array.ctypes.data


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
        ``x`` itself when it already is that array, else a :func:`scratch` array
        valid until the next call on this thread (the caller passes a few images
        at a time, so it stays small).
    """
    (top, bottom), (left, right) = pads
    x = _compute_array(x, dtype)
    reorder = data_format != kernel_format
    if not reorder and top == bottom == left == right == 0:
        return x
    if kernel_format == "channels_first":
        batch, channels, height, width = x.shape
        out = scratch("input", (batch, channels, height + top + bottom, width + left + right),
                      dtype)
        _pad_channels_first(x, out, top, left)
        return out
    return _pad_channels_last(x, data_format, pads, (0, 0), dtype, False)[0]


def pad_channels(x, data_format, pads, channel_pads, dtype):
    """``x`` channels_last, padded in space and around each pixel's channels, and whether finite.

    Parameters
    ----------
    x : numpy.ndarray
        4-D, in ``data_format``.
    data_format : {"channels_last", "channels_first"}
    pads : ((int, int), (int, int))
        ``((top, bottom), (left, right))`` zeros to add.
    channel_pads : (int, int)
        ``(front, back)`` zeros to add before and after each pixel's channels.
    dtype : numpy.dtype

    Returns
    -------
    padded : numpy.ndarray
        A :func:`scratch` array, as :func:`prepare_input` returns.
    finite : bool
        Whether ``x`` holds no inf/NaN (checked during the copy).
    """
    return _pad_channels_last(_compute_array(x, dtype), data_format, pads, channel_pads, dtype,
                              True)


def _compute_array(x, dtype):
    # The copy kernels, like the nests, are compiled for writable C-contiguous
    # arrays of the compute dtype (Numba compiles read-only arrays apart).
    x = np.ascontiguousarray(x, dtype=dtype)
    return x if x.flags.writeable else x.copy()


def _pad_channels_last(x, data_format, pads, channel_pads, dtype, check):
    (top, bottom), (left, right) = pads
    front, back = channel_pads
    if data_format == "channels_first":
        batch, channels, height, width = x.shape
    else:
        batch, height, width, channels = x.shape
    out = scratch("input", (batch, height + top + bottom, width + left + right,
                            front + channels + back), dtype)
    non_finite = _gather_channels_last(x, out, top, left, front, data_format == "channels_first",
                                       check)
    return out, non_finite == 0


def to_channels_last(x, dtype, role=None):
    """The channels_first array ``x`` as a C-contiguous channels_last array of ``dtype``.

    A new array, or with ``role`` the :func:`scratch` array of that role (for
    intermediates: it is overwritten by the next call on this thread).
    """
    x = _compute_array(x, dtype)
    shape = (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    out = np.empty(shape, dtype=dtype) if role is None else scratch(role, shape, dtype)
    _gather_channels_last(x, out, 0, 0, 0, True, False)
    return out


def to_channels_first(y, out=None):
    """The channels_last array ``y`` reordered to channels_first.

    Parameters
    ----------
    y : numpy.ndarray
        C-contiguous, ``(N, H, W, C)``.
    out : numpy.ndarray, optional
        C-contiguous ``(N, C, H, W)`` array of ``y``'s dtype to write into;
        by default a new one.
    """
    shape = (y.shape[0], y.shape[3], y.shape[1], y.shape[2])
    if out is None:
        out = np.empty(shape, dtype=y.dtype)
    elif out.shape != shape or out.dtype != y.dtype or not out.flags.c_contiguous:
        raise ValueError(f"The `out` argument must be a C-contiguous {shape} {y.dtype} array. "
                         f"Received out.shape={out.shape}, dtype={out.dtype}")
    _scatter_channels_first(y, out)
    return out


@kernel_jit(parallel=True)
def _flip_swap(kernel, out, G):
    """``out[i, j, o, g·CIN + c] = kernel[KH−1−i, KW−1−j, c, g·COUT + o]``, by blocks of channels."""
    KH, KW, CIN, F = kernel.shape
    COUT = F // G
    BLOCK = 16  # channels per pass: 16 input rows read, 16-wide output rows written
    blocks = (CIN + BLOCK - 1) // BLOCK
    for task in prange(KH * KW * G * blocks):
        tap = task // (G * blocks)
        rest = task - tap * (G * blocks)
        g = rest // blocks
        c0 = (rest - g * blocks) * BLOCK
        i, j = tap // KW, tap % KW
        si, sj = np.uint64(KH - 1 - i), np.uint64(KW - 1 - j)
        i, j = np.uint64(i), np.uint64(j)
        for o in range(COUT):
            f = np.uint64(g * COUT + o)
            row = np.uint64(o)
            for c in range(c0, min(c0 + BLOCK, CIN)):
                out[i, j, row, np.uint64(g * CIN + c)] = kernel[si, sj, np.uint64(c), f]


@kernel_jit(parallel=True)
def _flip_swap_pack(kernel, out):
    """``out[b, i, j, o, l] = kernel[KH−1−i, KW−1−j, b·L + l, o]``, zero past the channels.

    Returns the number of inf/NaN values.  A task is one block ``b``, tap
    and run of 16 filters ``o``: it reads 16 contiguous values of each of
    the block's ``L`` kernel rows in turn, and writes them down 16 rows of
    ``L`` (the other way round, reads 2 KB apart thrashed the L1 cache).
    """
    KH, KW, CIN, COUT = kernel.shape
    blocks, L = out.shape[0], out.shape[4]
    RUN = 16
    runs = (COUT + RUN - 1) // RUN
    zero = out.dtype.type(0)
    non_finite = 0
    for task in prange(blocks * KH * KW * runs):
        b = task // (KH * KW * runs)
        rest = task - b * (KH * KW * runs)
        tap = rest // runs
        o0 = (rest - tap * runs) * RUN
        i, j = tap // KW, tap % KW
        si, sj = np.uint64(KH - 1 - i), np.uint64(KW - 1 - j)
        bu, iu, ju = np.uint64(b), np.uint64(i), np.uint64(j)
        bad = 0
        for lane in range(L):  # along the kernel's rows: strided reads thrash the L1 cache
            c = b * L + lane
            cu, lu = np.uint64(c), np.uint64(lane)
            for o in range(o0, min(o0 + RUN, COUT)):
                value = kernel[si, sj, cu, np.uint64(o)] if c < CIN else zero
                out[bu, iu, ju, np.uint64(o), lu] = value
                bad += 0 if value - value == zero else 1
        non_finite += bad
    return non_finite


@kernel_jit(parallel=True)
def _pack_filter_blocks(kernel, out):
    """``out[b, i, j, c, l] = kernel[i, j, c, b·L + l]``, zero past the filters.

    Returns the number of inf/NaN values.  A task is one tap and block of
    ``L`` filters: ``CIN`` runs of ``L`` contiguous values, read and written
    in order (flat indices: a view per run would cost an atomic reference
    count, which the threads contend for).
    """
    KH, KW, CIN, COUT = kernel.shape
    blocks, L = out.shape[0], out.shape[4]
    source, target = kernel.reshape(-1), out.reshape(-1)
    zero = out.dtype.type(0)
    non_finite = 0
    for task in prange(KH * KW * blocks):
        tap = task // blocks
        b = task - tap * blocks
        width = min(L, COUT - b * L)  # filters in this block
        bad = 0
        for c in range(CIN):
            read = np.uint64((tap * CIN + c) * COUT + b * L)
            write = np.uint64(((b * KH * KW + tap) * CIN + c) * L)
            for lane in range(width):
                value = source[read + np.uint64(lane)]
                target[write + np.uint64(lane)] = value
                bad += value - value != zero
            for lane in range(width, L):
                target[write + np.uint64(lane)] = zero
        non_finite += bad
    return non_finite


def filter_blocks_packed(kernel, lanes):
    """``kernel`` ``(KH, KW, CIN, COUT)`` in blocks of ``lanes`` filters, ``(blocks, KH, KW, CIN,
    lanes)`` (the last padded with zero filters), in one parallel pass that also checks the
    values.  Returns ``(packed, all_finite)``."""
    kh, kw, cin, cout = kernel.shape
    out = np.empty((-(-cout // lanes), kh, kw, cin, lanes), dtype=kernel.dtype)
    return out, _pack_filter_blocks(np.ascontiguousarray(kernel), out) == 0


def flipped_transposed_packed(kernel, lanes):
    """:func:`flipped_transposed_kernel` of a one-group kernel, packed as the dense nest reads it.

    ``(KH, KW, CIN, COUT)`` → ``(blocks, KH, KW, COUT, lanes)``, the input
    channels in blocks of ``lanes`` (the last padded with zeros), in one
    parallel pass that also checks the values, instead of three (flip and
    transpose, pack, check).  Returns ``(packed, all_finite)``.
    """
    kh, kw, cin, cout = kernel.shape
    out = np.empty((-(-cin // lanes), kh, kw, cout, lanes), dtype=kernel.dtype)
    return out, _flip_swap_pack(np.ascontiguousarray(kernel), out) == 0


#: Kernel elements below which :func:`flipped_transposed_kernel` copies with NumPy
#: (measured: a depthwise 3x3x576 kernel 0.8 µs against 33 µs in the parallel
#: nest, 3x3x64x64 9 against 13; 3x3x128x128 59 against 34).
SMALL_KERNEL = 1 << 16


def flipped_transposed_kernel(kernel, groups):
    """The kernel of the transposed convolution: flipped in space, channel axes swapped per group.

    ``(KH, KW, CIN, G·COUT)`` → ``(KH, KW, COUT, G·CIN)``, one parallel pass
    (numpy's transposing copy of a large kernel ran at a few GB/s, several
    times the cost of the convolution it feeds on small images).
    """
    kh, kw, cin, filters = kernel.shape
    cout = filters // groups
    if kernel.size < SMALL_KERNEL:  # a parallel region costs more than NumPy's copy here
        flipped = kernel[::-1, ::-1].reshape(kh, kw, cin, groups, cout).transpose(0, 1, 4, 3, 2)
        return np.ascontiguousarray(flipped).reshape(kh, kw, cout, groups * cin)
    out = np.empty((kh, kw, cout, groups * cin), dtype=kernel.dtype)
    _flip_swap(np.ascontiguousarray(kernel), out, groups)
    return out
