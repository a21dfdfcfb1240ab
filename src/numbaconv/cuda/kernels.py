"""CUDA kernels, one factory per algorithm, geometry compiled in as closure constants.

Like the CPU's specialized tier, each factory closes over the kernel size,
strides, dilation, padding, group sizes, layout, fused ReLU and the tile
sizes, so ``numba.cuda`` compiles them as constants (known trip counts,
unrolled tap loops, fixed shared-memory shapes).  The arrays' sizes (batch,
image, filters) stay run-time values.

* :func:`tiled_kernel` — dense layers (one group): a block of ``TILE_H ×
  TILE_W`` threads computes as many output pixels × ``TILE_F`` filters, each
  thread a register tile of ``TILE_F`` sums for its pixel.  For every chunk
  of ``CHUNK`` input channels the block stages the input tile with its halo
  and the weights of its filters in shared memory, zero outside the image
  (so padding costs no branch in the inner loop).
* :func:`depthwise_kernel` — one filter per channel: threads along channels
  (coalesced in channels_last), the channel's taps held in registers.
* :func:`direct_kernel` — any configuration: one thread per output value,
  grid-stride loop.  The fallback for grouped layers and for windows whose
  input tile would not fit in shared memory.

Arrays are C-contiguous in the layout given by ``CF`` (channels_first) and
of one float dtype; :mod:`numbaconv.cuda.run` guarantees it.  This module
imports ``numba.cuda`` and is itself imported only once CUDA is known to
run (:func:`numbaconv.cuda.require`).  ``cuda`` must stay a module global
for the kernels: Numba's simulator swaps it for its fake module while a
kernel runs.
"""

from __future__ import annotations

from numba import cuda

__all__ = ["direct_kernel", "depthwise_kernel", "tiled_kernel", "TILE", "tile_footprint"]

#: Tile sizes of the tiled kernel: output rows and columns per block, filters
#: per thread, input channels staged per step.  Tests shrink them so that
#: small problems span several blocks; they are part of the kernel cache key.
TILE = {"TILE_H": 8, "TILE_W": 16, "TILE_F": 8, "CHUNK": 8}

#: Static shared memory a tiled kernel may use (of the 48 KiB every GPU offers).
SHARED_BYTES = 40 << 10


def tile_footprint(geometry, itemsize, tile=None):
    """Bytes of shared memory the tiled kernel needs for ``geometry`` (see :func:`tiled_kernel`)."""
    tile = TILE if tile is None else tile
    kh, kw, sh, sw, dh, dw = geometry[:6]
    in_h = (tile["TILE_H"] - 1) * sh + (kh - 1) * dh + 1
    in_w = (tile["TILE_W"] - 1) * sw + (kw - 1) * dw + 1
    return (in_h * in_w + kh * kw * tile["TILE_F"]) * tile["CHUNK"] * itemsize


@cuda.jit(device=True, inline=True)
def _sizes(x, out, CF):
    """``(N, H, W, OH, OW, F)`` of a convolution's input and output, in either layout."""
    if CF:
        return out.shape[0], x.shape[2], x.shape[3], out.shape[2], out.shape[3], out.shape[1]
    return out.shape[0], x.shape[1], x.shape[2], out.shape[1], out.shape[2], out.shape[3]


@cuda.jit(device=True, inline=True)
def _unflatten(i, C, H, W, CF):
    """``(n, c, h, w)`` of flat index ``i`` into an ``(N, C, H, W)`` array in either layout.

    Kernels hand consecutive indices to consecutive threads, so that they
    write consecutive addresses.
    """
    if CF:
        w = i % W
        rest = i // W
        h = rest % H
        rest = rest // H
        return rest // C, rest % C, h, w
    c = i % C
    rest = i // C
    w = rest % W
    rest = rest // W
    return rest // H, c, rest % H, w


@cuda.jit(device=True, inline=True)
def _pixel(p, OH, OW):
    """``(n, oh, ow)`` of output pixel ``p`` (row-major over images, rows, columns)."""
    rest = p // OW
    return rest // OH, rest % OH, p % OW


@cuda.jit(device=True, inline=True)
def _load(x, n, c, h, w, CF):
    """Input value ``(n, c, h, w)`` in either layout."""
    return x[n, c, h, w] if CF else x[n, h, w, c]


@cuda.jit(device=True, inline=True)
def _store(out, n, f, h, w, value, CF, RELU, ZERO):
    """Output value ``(n, f, h, w)`` in either layout, rectified if ``RELU``."""
    if RELU and value < 0:
        value = ZERO
    if CF:
        out[n, f, h, w] = value
    else:
        out[n, h, w, f] = value


def direct_kernel(KH, KW, SH, SW, DH, DW, PT, PL, G, CIN, COUT, CF, RELU, ZERO):
    """``kernel[blocks, threads](x, w, b, out)``: one thread per output value, any geometry.

    ``w`` is in Keras layout ``(KH, KW, CIN, G * COUT)``; ``ZERO`` a zero of the
    compute dtype (a literal 0 would be typed as an integer or a double).
    """

    @cuda.jit
    def kernel(x, w, b, out):
        N, H, W, OH, OW, F = _sizes(x, out, CF)
        total = N * OH * OW * F
        i = cuda.grid(1)
        while i < total:
            n, f, oh, ow = _unflatten(i, F, OH, OW, CF)
            first = (f // COUT) * CIN
            acc = b[f]
            for ki in range(KH):
                ih = oh * SH - PT + ki * DH
                if 0 <= ih < H:
                    for kj in range(KW):
                        iw = ow * SW - PL + kj * DW
                        if 0 <= iw < W:
                            for c in range(CIN):
                                acc += _load(x, n, first + c, ih, iw, CF) * w[ki, kj, c, f]
            _store(out, n, f, oh, ow, acc, CF, RELU, ZERO)
            i += cuda.gridsize(1)

    return kernel


def depthwise_kernel(KH, KW, SH, SW, DH, DW, PT, PL, CF, RELU, DTYPE, ZERO):
    """``kernel[(cblocks, pblocks), (CT, PT_)](x, w, b, out)``: one filter per channel.

    Thread ``x`` indexes channels, thread ``y`` output pixels (grid-stride);
    each thread loads its channel's ``KH × KW`` taps into registers once.
    ``w`` is in Keras layout ``(KH, KW, 1, C)``.
    """
    TAPS = KH * KW

    @cuda.jit
    def kernel(x, w, b, out):
        N, H, W, OH, OW, C = _sizes(x, out, CF)
        c, start = cuda.grid(2)
        if c >= C:
            return
        taps = cuda.local.array(TAPS, DTYPE)
        for ki in range(KH):
            for kj in range(KW):
                taps[ki * KW + kj] = w[ki, kj, 0, c]
        pixels = N * OH * OW
        p = start
        while p < pixels:
            n, oh, ow = _pixel(p, OH, OW)
            acc = b[c]
            for ki in range(KH):
                ih = oh * SH - PT + ki * DH
                if 0 <= ih < H:
                    for kj in range(KW):
                        iw = ow * SW - PL + kj * DW
                        if 0 <= iw < W:
                            acc += _load(x, n, c, ih, iw, CF) * taps[ki * KW + kj]
            _store(out, n, c, oh, ow, acc, CF, RELU, ZERO)
            p += cuda.gridsize(2)[1]

    return kernel


def tiled_kernel(KH, KW, SH, SW, DH, DW, PT, PL, CIN, CF, RELU, DTYPE, ZERO, TILE_H, TILE_W,
                 TILE_F, CHUNK):
    """``kernel[(wblocks, hblocks, N * fblocks), (TILE_W, TILE_H)](x, w, b, out)``: dense layers.

    Block ``(bx, by, bz)`` computes output rows ``by * TILE_H`` + ``[0, TILE_H)``,
    columns ``bx * TILE_W + [0, TILE_W)``, filters ``(bz % fblocks) * TILE_F +
    [0, TILE_F)`` of image ``bz // fblocks``.  ``w`` is in Keras layout
    ``(KH, KW, CIN, F)``.
    """
    IN_H = (TILE_H - 1) * SH + (KH - 1) * DH + 1
    IN_W = (TILE_W - 1) * SW + (KW - 1) * DW + 1
    THREADS = TILE_H * TILE_W

    @cuda.jit
    def kernel(x, w, b, out):
        _, H, W, OH, OW, F = _sizes(x, out, CF)
        fblocks = (F + TILE_F - 1) // TILE_F
        n = cuda.blockIdx.z // fblocks
        f0 = (cuda.blockIdx.z % fblocks) * TILE_F
        oh0 = cuda.blockIdx.y * TILE_H
        ow0 = cuda.blockIdx.x * TILE_W
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TILE_W + tx
        ih0 = oh0 * SH - PT
        iw0 = ow0 * SW - PL
        tile = cuda.shared.array((IN_H, IN_W, CHUNK), DTYPE)
        weights = cuda.shared.array((KH, KW, CHUNK, TILE_F), DTYPE)
        acc = cuda.local.array(TILE_F, DTYPE)
        for r in range(TILE_F):
            acc[r] = b[min(f0 + r, F - 1)]
        for c0 in range(0, CIN, CHUNK):
            # Stage the input tile with its halo (zeros for padding and for
            # channels past CIN) and this block's weights for the chunk.
            e = tid
            while e < IN_H * IN_W * CHUNK:
                cc = e % CHUNK
                rest = e // CHUNK
                s = rest % IN_W
                r = rest // IN_W
                ih = ih0 + r
                iw = iw0 + s
                c = c0 + cc
                value = ZERO
                if 0 <= ih < H and 0 <= iw < W and c < CIN:
                    value = _load(x, n, c, ih, iw, CF)
                tile[r, s, cc] = value
                e += THREADS
            e = tid
            while e < KH * KW * CHUNK * TILE_F:
                r = e % TILE_F
                rest = e // TILE_F
                cc = rest % CHUNK
                rest = rest // CHUNK
                kj = rest % KW
                ki = rest // KW
                value = ZERO
                if c0 + cc < CIN and f0 + r < F:
                    value = w[ki, kj, c0 + cc, f0 + r]
                weights[ki, kj, cc, r] = value
                e += THREADS
            cuda.syncthreads()
            for ki in range(KH):
                for kj in range(KW):
                    for cc in range(CHUNK):
                        value = tile[ty * SH + ki * DH, tx * SW + kj * DW, cc]
                        for r in range(TILE_F):
                            acc[r] += value * weights[ki, kj, cc, r]
            cuda.syncthreads()
        oh = oh0 + ty
        ow = ow0 + tx
        if oh < OH and ow < OW:
            for r in range(TILE_F):
                if f0 + r < F:
                    _store(out, n, f0 + r, oh, ow, acc[r], CF, RELU, ZERO)

    return kernel
