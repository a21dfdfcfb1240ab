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
    """channels_first: (image, filter) planes in parallel, output columns innermost.

    Each filter's output plane stays in cache while every (input channel,
    kernel tap) adds one shifted, scaled input plane to it — contiguous along
    the width for unit stride, with no transposed copy of the input.
    ``TW`` is unused here; it keeps one signature for both layouts.
    """
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    F, OH, OW = out.shape[1], out.shape[2], out.shape[3]
    for task in prange(N * F):
        n = task // F
        f = task - n * F
        g = f // COUT
        plane = out[n, f]
        for oh in range(OH):
            for ow in range(OW):
                plane[oh, ow] = b[f]
        for ic in range(CIN):
            c = g * CIN + ic
            for ki in range(KH):
                off_h = ki * DH - PT
                oh_lo, oh_hi = _valid_range(OH, H, SH, off_h)
                for kj in range(KW):
                    off_w = kj * DW - PL
                    ow_lo, ow_hi = _valid_range(OW, W, SW, off_w)
                    weight = w[ki, kj, ic, f]
                    for oh in range(oh_lo, oh_hi):
                        row = x[n, c, oh * SH + off_h]
                        if SW == 1:  # contiguous: lets LLVM vectorize with run-time SW
                            for ow in range(ow_lo, ow_hi):
                                plane[oh, ow] += weight * row[ow + off_w]
                        else:
                            for ow in range(ow_lo, ow_hi):
                                plane[oh, ow] += weight * row[ow * SW + off_w]
        if RELU:
            for oh in range(OH):
                for ow in range(OW):
                    if plane[oh, ow] < 0:
                        plane[oh, ow] = 0


_LOOP_NESTS = {"channels_last": _nhwc, "channels_first": _nchw}

# Run-time geometry: compiled once per dtype/layout, cached on disk.
_GENERIC = {layout: njit(parallel=True, cache=True)(nest) for layout, nest in _LOOP_NESTS.items()}
# Inlinable copies for the specialized closures.  Module globals, not closure
# variables: Numba's disk cache can only key closures over plain values.
_nhwc_inline = njit(inline="always")(_nhwc)
_nchw_inline = njit(inline="always")(_nchw)

#: Output pixels per register tile of the generic channels_last nest.
GENERIC_TILE = 1
#: Output pixels per register tile of the specialized channels_last nest.
SPECIALIZED_TILE = 1


def kernel_arguments(spec, tile):
    """The geometry integers of ``spec`` in loop-nest argument order (after the arrays)."""
    kh, kw = spec.kernel_size
    sh, sw = spec.strides
    dh, dw = spec.dilation
    cin = spec.in_channels // spec.groups
    cout = spec.filters // spec.groups
    return (kh, kw, sh, sw, dh, dw, spec.pads[0][0], spec.pads[1][0], spec.groups, cin, cout,
            tile)


def generic_kernel(data_format):
    """A runner ``run(x, w, b, out, spec, relu)`` with run-time geometry for one layout."""
    nest = _GENERIC[data_format]

    def run(x, w, b, out, spec, relu):
        nest(x, w, b, out, *kernel_arguments(spec, GENERIC_TILE), bool(relu))

    return run


def specialized_kernel(spec, relu):
    """A runner ``run(x, w, b, out, spec, relu)`` with ``spec``'s geometry compiled in.

    The geometry and ``relu`` (fused rectification) are closure constants, so
    the runner ignores its last two arguments: it serves only specs with the
    same :func:`kernel_arguments`.  Nothing is compiled until the first call.
    """
    KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW = kernel_arguments(spec, SPECIALIZED_TILE)
    RELU = bool(relu)

    if spec.data_format == "channels_last":
        @njit(parallel=True, cache=True)
        def compiled(x, w, b, out):
            _nhwc_inline(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, RELU)
    else:
        @njit(parallel=True, cache=True)
        def compiled(x, w, b, out):
            _nchw_inline(x, w, b, out, KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, TW, RELU)

    def run(x, w, b, out, spec, relu):
        compiled(x, w, b, out)

    return run
