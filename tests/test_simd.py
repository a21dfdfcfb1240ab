"""The explicit-vector register tiles (numbaconv.cpu.simd), against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from numbaconv.cpu import layout
from numbaconv.cpu.simd import (prefetch, prefetch_l2, stream_fence, tile_accumulate, tile_fma,
                                tile_fma_groups, tile_fma_lanes, tile_fma_outer, tile_fma_pairs,
                                tile_fma_spread, tile_fma_window, tile_load, tile_scatter,
                                tile_store, tile_stream)


def _tile_product(P, V, L):
    """A jitted ``(b, x, w, steps) -> out``: bias rows plus ``steps`` broadcast products."""

    @njit
    def product(b, x, w, steps, x_step):
        tile = tile_load(b, 1, 0, P, V, L)  # from b[1:], an offset not a multiple of L
        for k in range(steps):
            tile = tile_fma(tile, x, k, x_step, w, k * V * L)
        out = np.empty(P * V * L, dtype=b.dtype)
        tile_store(out, 0, V * L, tile)
        return out

    return product


@pytest.mark.parametrize("P, V, L, dtype", [
    (1, 1, 4, np.float32), (6, 2, 8, np.float32), (3, 2, 4, np.float64), (2, 3, 16, np.float32)])
def test_tile_is_bias_plus_broadcast_products(P, V, L, dtype):
    rng = np.random.default_rng(P * 100 + V * 10 + L)
    steps, x_step = 5, 7  # pixel p of step k reads x[k + p * x_step]
    b = rng.standard_normal(1 + V * L).astype(dtype)
    x = rng.standard_normal(steps + P * x_step).astype(dtype)
    w = rng.standard_normal((steps, V * L)).astype(dtype)
    got = _tile_product(P, V, L)(b, x, w.ravel(), steps, x_step).reshape(P, V * L)
    pixels = np.array([[x[k + p * x_step] for k in range(steps)] for p in range(P)])
    want = b[1:].astype(float) + pixels.astype(float) @ w.astype(float)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_tile_sizes_must_be_compile_time_constants():
    @njit
    def run_time_sizes(b, pixels):
        tile = tile_load(b, 0, 0, pixels, 1, 4)
        out = np.empty(4, dtype=b.dtype)
        tile_store(out, 0, 4, tile)
        return out

    with pytest.raises(TypingError):
        run_time_sizes(np.zeros(4, np.float32), 1)


def test_arrays_must_be_contiguous_and_of_the_tile_dtype():
    product = _tile_product(1, 1, 4)
    b, w = np.zeros(5, np.float32), np.zeros(8, np.float32)
    with pytest.raises(TypingError):  # strided: flat addressing would read the wrong values
        product(b, np.zeros(20, np.float32)[::2], w, 2, 1)
    with pytest.raises(TypingError):  # float64 weights into a float32 tile
        product(b, np.zeros(10, np.float32), w.astype(np.float64), 2, 1)


def test_scatter_writes_the_valid_lanes_anywhere():
    P, V, L = 3, 2, 4

    @njit
    def scatter(b, out, valid):
        tile = tile_load(b, 0, V * L, P, V, L)  # rows b[0:8], b[8:16], b[16:24]
        tile_scatter(out, 1, 2, 7, valid, tile)  # pixel p, lane l -> out[1 + 2 p + 7 l]

    b = np.arange(P * V * L, dtype=np.float64)
    for valid in (V * L, 5, 0):
        out = np.full(1 + 2 * (P - 1) + 7 * (V * L - 1) + 1, -1.0)
        scatter(b, out, valid)
        want = np.full_like(out, -1.0)
        for p in range(P):
            for lane in range(valid):
                want[1 + 2 * p + 7 * lane] = b[p * V * L + lane]
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("P, V, L, dtype", [(1, 1, 8, np.float32), (4, 1, 8, np.float32),
                                            (2, 3, 4, np.float64), (1, 4, 8, np.float32)])
def test_lane_products_are_elementwise(P, V, L, dtype):
    # The depthwise step: pixel p adds x[k * 3 + p * x_step:][:V*L] * w[k * V*L:][:V*L].
    steps, x_step = 4, 2 * V * L + 3

    @njit
    def lanes(b, x, w):
        tile = tile_load(b, 0, 0, P, V, L)
        for k in range(steps):
            tile = tile_fma_lanes(tile, x, k * 3, x_step, w, k * V * L)
        out = np.empty(P * V * L, dtype=b.dtype)
        tile_store(out, 0, V * L, tile)
        return out

    rng = np.random.default_rng(P + V + L)
    b = rng.standard_normal(V * L).astype(dtype)
    x = rng.standard_normal(steps * 3 + P * x_step + V * L).astype(dtype)
    w = rng.standard_normal((steps, V * L)).astype(dtype)
    got = lanes(b, x, w.ravel()).reshape(P, V * L)
    want = np.array([b.astype(float) + sum(x[k * 3 + p * x_step:][:V * L].astype(float) * w[k]
                                           for k in range(steps)) for p in range(P)])
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def _group_products(P, V, L, G):
    """A jitted ``(b, x, w) -> out``: bias rows plus 3 steps of in-lane group products."""

    @njit
    def products(b, x, w, x_step):
        tile = tile_load(b, 0, 0, P, V, L)
        for k in range(3):
            tile = tile_fma_groups(tile, x, k * 5, x_step, w, k * G * V * L, G)
        out = np.empty(P * V * L, dtype=b.dtype)
        tile_store(out, 0, V * L, tile)
        return out

    return products


@pytest.mark.parametrize("P, V, L, G, dtype", [
    (1, 1, 8, 4, np.float32), (3, 1, 8, 2, np.float32), (2, 2, 4, 2, np.float64),
    (2, 1, 8, 8, np.float32), (1, 2, 8, 1, np.float32), (2, 1, 16, 4, np.float32)])
def test_group_products_read_each_lanes_own_group(P, V, L, G, dtype):
    # Lane f (filter f % G of group f // G) adds, for each channel j of its group, the
    # input at lane f // G * G + j of its own vector times the weight w[k, j, f].
    x_step = V * L + 3
    rng = np.random.default_rng(P * 100 + L * 10 + G)
    b = rng.standard_normal(V * L).astype(dtype)
    x = rng.standard_normal(10 + P * x_step + V * L).astype(dtype)
    w = rng.standard_normal((3, G, V * L)).astype(dtype)
    got = _group_products(P, V, L, G)(b, x, w.ravel(), x_step).reshape(P, V * L)
    lanes = np.arange(V * L)
    want = np.array([b.astype(float) + sum(
        x[k * 5 + p * x_step + lanes // G * G + j].astype(float) * w[k, j]
        for k in range(3) for j in range(G)) for p in range(P)])
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("P, V, L, dtype", [(4, 1, 8, np.float32), (2, 2, 8, np.float32),
                                            (2, 2, 4, np.float64), (8, 1, 8, np.float32)])
def test_spread_products_by_channel_of_the_group(P, V, L, dtype):
    # A grouped kernel gradient's step: row j adds, for lane f, the input in place j of
    # f's group of P lanes times the output gradient at f.
    steps = 3

    @njit
    def spread(x, y):
        tile = tile_load(np.zeros(V * L, dtype=x.dtype), 0, 0, P, V, L)
        for k in range(steps):
            tile = tile_fma_spread(tile, x, k * 7, y, k * V * L)
        out = np.empty(P * V * L, dtype=x.dtype)
        tile_store(out, 0, V * L, tile)
        return out

    rng = np.random.default_rng(P * 10 + L)
    x = rng.standard_normal(steps * 7 + V * L).astype(dtype)
    y = rng.standard_normal((steps, V * L)).astype(dtype)
    got = spread(x, y.ravel()).reshape(P, V * L)
    lanes = np.arange(V * L)
    want = np.array([sum(x[k * 7 + lanes // P * P + j].astype(float) * y[k]
                         for k in range(steps)) for j in range(P)])
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("KH, KW, V, L, dtype", [(3, 3, 1, 8, np.float32), (2, 3, 2, 4, np.float64),
                                                (1, 4, 1, 16, np.float32)])
@pytest.mark.parametrize("rows_inside, columns_inside", [(-1, -1), (0b110, 0b011), (0b01, -1)])
def test_window_products_and_sum(KH, KW, V, L, dtype, rows_inside, columns_inside):
    # A depthwise kernel gradient's step: row ki*KW + kj adds the input at the tap times
    # y, for the taps the masks keep; the last row sums y.
    row_step, column_step, steps = 5 * V * L, V * L + 1, 3
    T = KH * KW + 1  # a constant of the closure: the tile's rows

    @njit
    def window(x, y, rows_inside, columns_inside):
        tile = tile_load(np.zeros(V * L, dtype=x.dtype), 0, 0, T, V, L)
        for k in range(steps):
            tile = tile_fma_window(tile, x, 2 * k, row_step, column_step, y, k * V * L, KW,
                                   True, rows_inside, columns_inside,
                                   np.zeros(V * L, dtype=x.dtype))
        out = np.empty(T * V * L, dtype=x.dtype)
        tile_store(out, 0, V * L, tile)
        return out

    rng = np.random.default_rng(KH * 10 + KW)
    x = rng.standard_normal(2 * steps + KH * row_step + KW * column_step + V * L).astype(dtype)
    y = rng.standard_normal((steps, V * L)).astype(dtype)
    got = window(x, y.ravel(), rows_inside, columns_inside).reshape(KH * KW + 1, V * L)
    want = np.zeros((KH * KW + 1, V * L))
    for k in range(steps):
        for ki in range(KH):
            for kj in range(KW):
                if rows_inside >> ki & 1 and columns_inside >> kj & 1:
                    at = 2 * k + ki * row_step + kj * column_step
                    want[ki * KW + kj] += x[at:at + V * L].astype(float) * y[k]
        want[-1] += y[k]
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_masked_taps_read_nothing():
    # At a border the window's start lies outside the array: masked taps never load.
    @njit
    def corner(x, y):
        tile = tile_load(np.zeros(8, dtype=x.dtype), 0, 0, 10, 1, 8)
        tile = tile_fma_window(tile, x, -1 << 40, 1 << 20, 8, y, 0, 3, True, 0, 0,
                               np.zeros(8, dtype=x.dtype))
        out = np.empty(80, dtype=x.dtype)
        tile_store(out, 0, 8, tile)
        return out

    out = corner(np.ones(8, np.float32), np.full(8, 2, np.float32)).reshape(10, 8)
    assert not out[:9].any() and (out[9] == 2).all()


@pytest.mark.parametrize("hint", [prefetch, prefetch_l2])
def test_prefetch_anywhere_changes_nothing(hint):
    # A hint: far past the array's end it must not fault, and values stay as they were.
    @njit
    def touch(x, ahead):
        total = 0.0
        for i in range(x.size):
            hint(x, i + ahead)
            total += x[i]
        return total

    x = np.arange(64, dtype=np.float64)
    for ahead in (0, 16, 1 << 40, -(1 << 40)):
        assert touch(x, ahead) == x.sum()
    with pytest.raises(TypingError):
        njit(lambda a: hint(a, 0))(np.arange(4))  # integers: not a float array


@pytest.mark.parametrize("C, P, V, L, dtype", [(3, 3, 1, 8, np.float32), (1, 7, 1, 8, np.float32),
                                               (2, 2, 2, 4, np.float64), (4, 1, 1, 16, np.float32)])
def test_outer_products_of_pixels_and_channels(C, P, V, L, dtype):
    # A narrow input gradient's step: row c*P + p adds pixel p's vector times channel c's.
    steps, x_step, w_step = 3, V * L + 5, 2 * V * L
    R = C * P  # a constant of the closure: the tile's rows

    @njit
    def outer(x, w):
        tile = tile_load(np.zeros(V * L, dtype=x.dtype), 0, 0, R, V, L)
        for k in range(steps):
            tile = tile_fma_outer(tile, x, 3 * k, x_step, w, k * C * w_step, w_step, P)
        out = np.empty(R * V * L, dtype=x.dtype)
        tile_store(out, 0, V * L, tile)
        return out

    rng = np.random.default_rng(C * 10 + P)
    x = rng.standard_normal(3 * steps + P * x_step + V * L).astype(dtype)
    w = rng.standard_normal(steps * C * w_step + V * L).astype(dtype)
    got = outer(x, w).reshape(R, V * L)
    want = np.zeros((R, V * L))
    for k in range(steps):
        for c in range(C):
            for p in range(P):
                at, w_at = 3 * k + p * x_step, k * C * w_step + c * w_step
                want[c * P + p] += (x[at:at + V * L].astype(float)
                                    * w[w_at:w_at + V * L].astype(float))
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("width", [3, 16])
def test_group_width_must_divide_the_lanes(width):
    with pytest.raises(TypingError):
        _group_products(1, 1, 8, width)(np.zeros(8, np.float32), np.zeros(64, np.float32),
                                        np.zeros(3 * width * 8, np.float32), 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_stores_write_what_plain_ones_do(dtype):
    P, V, L = 3, 2, 32 // np.dtype(dtype).itemsize  # one 32-byte vector a step

    @njit
    def store_both(b, plain, streamed):
        tile = tile_load(b, 0, V * L, P, V, L)
        tile_store(plain, 2 * V * L, 3 * V * L, tile)
        tile_stream(streamed, 2 * V * L, 3 * V * L, tile)
        stream_fence()

    b = np.arange(P * V * L, dtype=dtype) + 1
    plain = np.zeros(10 * V * L, dtype=dtype)
    streamed = layout.aligned_empty(plain.shape, dtype)  # a misaligned one would fault
    streamed[:] = 0
    assert layout.address(streamed) % layout.ALIGNMENT == 0
    store_both(b, plain, streamed)
    np.testing.assert_array_equal(streamed, plain)
    assert plain[2 * V * L:][:V * L].tolist() == b[:V * L].tolist()


@pytest.mark.parametrize("P, V, L, dtype", [(2, 4, 8, np.float32), (3, 1, 4, np.float64)])
def test_pair_products_summed_into_an_array(P, V, L, dtype):
    # Row p adds x[k + p * x_step:][:V*L] * y[2 k + p * y_step:][:V*L]; the rows are then
    # added, in order, to out[1:].
    steps, x_step, y_step = 3, V * L + 1, V * L + 2

    @njit
    def pairs(x, y, out):
        tile = tile_load(np.zeros(V * L, dtype=x.dtype), 0, 0, P, V, L)
        for k in range(steps):
            tile = tile_fma_pairs(tile, x, k, x_step, y, 2 * k, y_step)
        tile_accumulate(out, 1, tile)

    rng = np.random.default_rng(P * V)
    x = rng.standard_normal(steps + P * x_step + V * L).astype(dtype)
    y = rng.standard_normal(2 * steps + P * y_step + V * L).astype(dtype)
    out = rng.standard_normal(1 + V * L).astype(dtype)
    want = out.astype(float).copy()
    for p in range(P):
        for k in range(steps):
            want[1:] += (x[k + p * x_step:][:V * L].astype(float)
                         * y[2 * k + p * y_step:][:V * L])
    pairs(x, y, out)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, want, rtol=tolerance, atol=tolerance)
