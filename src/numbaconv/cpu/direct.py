"""Direct convolution loop nests for the CPU, one per layout.

Each loop nest is written once as plain Python and used two ways:

* **generic** — compiled as is with run-time geometry: one compilation per
  dtype and layout (cached on disk by Numba), serving one-off calls and any
  configuration without further compile cost;
* **specialized** — inlined into a small closure whose geometry (kernel size,
  strides, dilation, padding, channel counts, tile width) are closure
  constants, which lets LLVM unroll and vectorize with known trip counts
  (several times faster, at ~1 s of compilation per configuration).

The nests assume what :mod:`numbaconv.functional` guarantees: C-contiguous
arrays of one float dtype, shapes consistent with a validated
:class:`~numbaconv.spec.ConvSpec`.  Reads outside the input are never issued:
padding is handled by clipping loop ranges, not by reading a padded copy.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["generic_kernel", "specialized_kernel"]


@njit(inline="always")
def _valid_range(count, size, stride, offset):
    """Outputs ``o`` in ``[0, count)`` whose input ``o * stride + offset`` is in ``[0, size)``."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    last = size - 1 - offset
    hi = last // stride + 1 if last >= 0 else 0
    return lo, max(lo, min(hi, count))


def _nhwc(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, RELU):
    """channels_last: rows of output pixels in parallel, output channels innermost.

    A tile of ``TW`` output pixels × all filters is accumulated in a local
    buffer so each input value loaded feeds ``COUT`` contiguous multiply-adds.
    """
    N, H, W = x.shape[0], x.shape[1], x.shape[2]
    OH, OW, F = out.shape[1], out.shape[2], out.shape[3]
    tiles = (OW + TW - 1) // TW
    for task in prange(N * OH):
        n = task // OH
        oh = task - n * OH
        ih0 = oh * SH - PT
        ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
        acc = np.empty((TW, F), dtype=out.dtype)
        for t in range(tiles):
            ow0 = t * TW
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
                        value = 0
                    out[n, oh, ow0 + p, f] = value


def _nchw(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, RELU):
    """channels_first: output rows of ``TW`` filters in parallel, output columns innermost.

    A task owns one output row of a block of ``TW`` filters (one group) and
    accumulates it in a small buffer; every input row it reads is used by
    the ``TW`` filters at once, and the innermost loop runs along the row
    (contiguous for unit stride), with no transposed copy of the input.
    """
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    F, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    blocks = F // TW
    for task in prange(N * blocks * OH):
        n = task // (blocks * OH)
        rest = task - n * blocks * OH
        block = rest // OH
        oh = rest - block * OH
        f0 = block * TW
        g = f0 // COUT
        acc = np.empty((TW, OW), dtype=out.dtype)
        weights = np.empty(TW, dtype=out.dtype)
        for fo in range(TW):
            for ow in range(OW):
                acc[fo, ow] = b[f0 + fo]
        ih0 = oh * SH - PT
        ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
        for ic in range(CIN):
            for ki in range(ki_lo, ki_hi):
                row = x[n, g * CIN + ic, ih0 + ki * DH]
                for kj in range(KW):
                    offset = kj * DW - PL
                    ow_lo, ow_hi = _valid_range(OW, W, SW, offset)
                    if ow_hi <= ow_lo:
                        continue
                    for fo in range(TW):
                        weights[fo] = w[ki, kj, ic, f0 + fo]
                    # Slices start at the first valid column so the loop index
                    # is provably non-negative (no wraparound check).
                    if SW == 1:
                        contiguous = row[ow_lo + offset:ow_hi + offset]
                        for i in range(ow_hi - ow_lo):
                            v = contiguous[i]
                            for fo in range(TW):
                                acc[fo, ow_lo + i] += weights[fo] * v
                    else:
                        strided = row[ow_lo * SW + offset:(ow_hi - 1) * SW + offset + 1:SW]
                        for i in range(ow_hi - ow_lo):
                            v = strided[i]
                            for fo in range(TW):
                                acc[fo, ow_lo + i] += weights[fo] * v
        for fo in range(TW):
            for ow in range(OW):
                value = acc[fo, ow]
                if RELU and value < 0:
                    value = 0
                out[n, f0 + fo, oh, ow] = value


def _nhwc_depthwise(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, RELU):
    """channels_last depthwise (``CIN == 1``): vectorized along the channels.

    Output channel ``c * COUT + m`` reads only input channel ``c``.  Each
    output row (in cache) receives, tap by tap, a shifted input row times the
    tap's channel vector — a long loop over pixels with the weights held in
    registers and contiguous channel vectors inside.  It is memory-bound.
    """
    N, H, W = x.shape[0], x.shape[1], x.shape[2]
    OH, OW, F = out.shape[1], out.shape[2], out.shape[3]
    for task in prange(N * OH):
        n = task // OH
        oh = task - n * OH
        ih0 = oh * SH - PT
        ki_lo, ki_hi = _valid_range(KH, H, DH, ih0)
        row = out[n, oh]
        for ow in range(OW):
            for f in range(F):
                row[ow, f] = b[f]
        if COUT == 1 and SW == 1:
            # Unit stride: a run of TW pixels is one contiguous vector of
            # TW * G values in input and output, so the innermost loop is long
            # enough to vectorize even for few channels.  The taps are tiled
            # TW times to match.
            flat = row.reshape(OW * G)
            span = TW * G
            tiled = np.empty(span, dtype=out.dtype)
            for ki in range(ki_lo, ki_hi):
                source = x[n, ih0 + ki * DH].reshape(W * G)
                for kj in range(KW):
                    offset = kj * DW - PL
                    ow_lo, ow_hi = _valid_range(OW, W, 1, offset)
                    for i in range(span):
                        tiled[i] = w[ki, kj, 0, i % G]
                    for ow in range(ow_lo, ow_hi, TW):
                        size = min(TW, ow_hi - ow) * G
                        dst = flat[ow * G:ow * G + size]
                        src = source[(ow + offset) * G:(ow + offset) * G + size]
                        for i in range(size):
                            dst[i] += src[i] * tiled[i]
        else:
            for ki in range(ki_lo, ki_hi):
                source = x[n, ih0 + ki * DH]
                for kj in range(KW):
                    offset = kj * DW - PL
                    ow_lo, ow_hi = _valid_range(OW, W, SW, offset)
                    taps = w[ki, kj, 0]
                    for ow in range(ow_lo, ow_hi):
                        iw = ow * SW + offset
                        for c in range(G):
                            v = source[iw, c]
                            for m in range(COUT):
                                row[ow, c * COUT + m] += v * taps[c * COUT + m]
        if RELU:
            for ow in range(OW):
                for f in range(F):
                    if row[ow, f] < 0:
                        row[ow, f] = 0


#: The loop nests by name; a nest's index is its compile-time selector.
NESTS = ("nhwc", "nchw", "nhwc_depthwise")
_PY_NESTS = (_nhwc, _nchw, _nhwc_depthwise)

# Run-time geometry: compiled once per nest and dtype, cached on disk.
_GENERIC = {name: njit(parallel=True, cache=True)(nest) for name, nest in zip(NESTS, _PY_NESTS)}
# Inlinable copies for the specialized closures.  Module globals, not closure
# variables: Numba's disk cache can only key closures over plain values.
_nhwc_inline, _nchw_inline, _nhwc_depthwise_inline = (njit(inline="always")(nest)
                                                      for nest in _PY_NESTS)

#: Output pixels per tile of the specialized channels_last nest.
SPECIALIZED_TILE = 1
#: Values per innermost loop of the depthwise nest: long enough to vectorize.
DEPTHWISE_SPAN = 128


def tile_width(nest, spec, specialized):
    """Output pixels per tile for ``nest`` on ``spec``."""
    if nest == "nhwc_depthwise":
        return max(1, min(16, -(-DEPTHWISE_SPAN // spec.groups)))
    if nest == "nchw":  # filters per block: a divisor of the group's filters
        cout = spec.filters // spec.groups
        return next(block for block in (8, 4, 2, 1) if cout % block == 0)
    return SPECIALIZED_TILE if specialized else 1


def kernel_arguments(nest, spec, specialized):
    """The geometry integers of ``spec`` in loop-nest argument order (after the arrays)."""
    kh, kw = spec.kernel_size
    sh, sw = spec.strides
    dh, dw = spec.dilation
    cin = spec.in_channels // spec.groups
    cout = spec.filters // spec.groups
    return (kh, kw, sh, sw, dh, dw, spec.pads[0][0], spec.pads[1][0], spec.groups, cin, cout,
            tile_width(nest, spec, specialized))


def generic_kernel(nest):
    """A runner ``run(x, w, b, out, spec, relu)`` of loop nest ``nest`` with run-time geometry."""
    compiled = _GENERIC[nest]

    def run(x, w, b, out, spec, relu):
        compiled(x, w, b, out, *kernel_arguments(nest, spec, False), bool(relu))

    return run


def specialized_kernel(nest, spec, relu):
    """A runner ``run(x, w, b, out, spec, relu)`` of ``nest`` with ``spec``'s geometry compiled in.

    The geometry and ``relu`` (fused rectification) are closure constants, so
    the runner ignores its last two arguments: it serves only specs with the
    same :func:`kernel_arguments`.  Nothing is compiled until the first call.
    """
    NEST = NESTS.index(nest)
    KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW = kernel_arguments(nest, spec, True)
    RELU = bool(relu)

    @njit(parallel=True, cache=True)
    def compiled(x, w, b, out):
        # NEST is a constant: Numba prunes the other branches before compiling.
        if NEST == 0:
            _nhwc_inline(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, RELU)
        elif NEST == 1:
            _nchw_inline(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, RELU)
        else:
            _nhwc_depthwise_inline(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT,
                                   TW, RELU)

    def run(x, w, b, out, spec, relu):
        compiled(x, w, b, out)

    return run
