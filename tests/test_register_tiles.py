"""The register tiles chosen for the CPU's vector registers (numbaconv.cpu.target).

Whatever CPU runs the tests, the ``register_file`` fixture runs each test with
the tiles chosen for AVX-512 and for AVX2, against the NumPy references.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_conv2d, reference_pads
from sampling import sample
from test_backward import kernel_gradient_case

import numbaconv
from numbaconv.cpu import backward, direct, layout, target
from numbaconv.dispatch import checks_input
from numbaconv.functional import call_plan, plan
from numbaconv.spec import ConvSpec


@pytest.mark.parametrize("features, limits", [
    ("+64bit,+avx,+avx2,+avx512f,+avx512vl,+fma", (64, 16)),
    ("+64bit,+avx,+avx2,-avx512f,+fma", (32, 8)),
    ("+64bit,+avx,-avx2", (32, 8)),
    ("+64bit,-avx,+sse4.2", (16, 8)),
    ("", (16, 8)),
])
def test_register_limits_from_feature_strings(features, limits):
    assert target.register_limits(features) == limits


def test_host_limits_are_what_numba_compiles_for():
    from numba.core.codegen import get_host_cpu_features

    assert (target.VECTOR_BYTES, target.ACCUMULATORS) == target.register_limits(
        get_host_cpu_features())


def _spec(shape, kernel_shape, strides=1):
    return ConvSpec.from_arguments(shape, kernel_shape, strides, "same", "channels_last", 1,
                                   "float32")


def test_tile_choice(register_file):
    stem = _spec((1, 224, 224, 3), (7, 7, 3, 64), strides=2)
    dense = _spec((1, 56, 56, 64), (3, 3, 64, 64))
    few = _spec((1, 56, 56, 3), (3, 3, 3, 64))
    resnext = _spec((1, 56, 56, 128), (3, 3, 4, 128))
    tiles = [direct.tile_width(nest, spec) for nest, spec in
             (("dense", stem), ("dense", dense), ("dense", few), ("grouped_shifted", resnext))]
    channels = backward._tile_channels()
    if register_file == "avx512":  # 4 pixels or channels × 4 vectors of 64 bytes: 16 registers
        assert tiles == [4, 4, 4, 4] and channels == 4
    else:  # a 64-filter block takes 8 of the 8 accumulators: 1 pixel, 2 where measured faster
        assert tiles == [2, 1, 1, 2] and channels == 1
    # The specialized kernel is compiled for the tile: it is part of the kernel cache's key.
    assert direct.kernel_arguments("dense", dense)[-2] == tiles[1]


def _check_forward(x, kernel, strides, data_format):
    out = numbaconv.conv2d(x, kernel, strides=strides, padding="same", data_format=data_format)
    xl = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    pads = reference_pads("same", xl.shape[1:3], kernel.shape[:2], (strides,) * 2, (1, 1))
    want = reference_conv2d(xl, kernel, (strides,) * 2, pads)
    if data_format == "channels_first":
        want = want.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 9])
@pytest.mark.parametrize("channels, kernel_width", [(3, 3), (8, 3), (3, 5)])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_dense_tiles_of_either_register_file(register_file, width, channels, kernel_width,
                                             data_format):
    # Tiles of 1, 2 and 4 pixels (the last overlapping its neighbour) and the border
    # pixels around them, in both layouts, generic tier.
    rng = np.random.default_rng(width * 10 + channels)
    x = rng.standard_normal((2, 4, width, channels))
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kernel = rng.standard_normal((3, kernel_width, channels, 70))
    for strides in (1, 2):
        _check_forward(x, kernel, strides, data_format)


def test_specialized_dense_and_shifted_tiles(register_file, specialized):
    # The tiles compiled in: dense with 4 pixels (AVX-512) or the vector nest (AVX2), and
    # the shifted grouped nest (AVX-512; AVX2: the in-lane grouped nest) on groups of 4
    # channels.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 9, 8))
    _check_forward(x, rng.standard_normal((3, 3, 8, 64)), 1, "channels_last")
    x = rng.standard_normal((2, 5, 9, 16)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 4, 16)).astype(np.float32)
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, 1, "same", "channels_last", 1,
                                   "float32")
    assert plan(spec, False, hot=True)[1] == ("grouped_shifted" if register_file == "avx512"
                                              else "grouped_lanes")
    out = numbaconv.conv2d(x, kernel, padding="same")
    pads = reference_pads("same", (5, 9), (3, 3), (1, 1), (1, 1))
    want = reference_conv2d(x.astype(float), kernel.astype(float), (1, 1), pads)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels, filters, groups, dtype, tier", [
    (8, 64, 1, "float32", False), (3, 128, 1, "float64", False), (8, 32, 4, "float32", False),
    (16, 16, 4, "float32", False), (8, 64, 1, "float32", True), (16, 16, 4, "float32", True)])
def test_kernel_gradient_tiles_of_either_register_file(register_file, channels, filters,
                                                       groups, dtype, tier):
    # Channel tiles of 1, 2 (8 and 3 channels on AVX-512: the largest divisor) and 4,
    # and the shifted kernel gradient's shifts rounded up to whole tiles (groups of 4); the
    # specialized tier (compiled per tile) on the dense and the shifted task.
    spec, x, grad_output, want, tolerance = kernel_gradient_case(channels, filters, groups,
                                                                 dtype, 9,
                                                                 seed=filters + channels)
    got = backward.kernel_gradient(spec, x, grad_output, specialized=tier, threads=2)
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 10)


@pytest.mark.parametrize("width", range(1, 20))
def test_vector_row_tiles_cover_a_row_evenly(width):
    spec = _spec((1, 3, width, 4), (1, 1, 4, 16))
    wide, narrow, wide_tiles, narrow_tiles = direct.row_tiles("dense_vector", spec)
    assert wide * wide_tiles + narrow * narrow_tiles == width
    assert 1 <= narrow <= wide <= direct.VECTOR_TILE
    divisors = [size for size in range(4, 7) if width % size == 0]
    if divisors:  # one tile size: the largest of 4 to 6 that divides the row
        assert (wide, narrow_tiles) == (max(divisors), 0)
    else:  # the fewest tiles, as even as can be
        assert wide_tiles + narrow_tiles == -(-width // direct.VECTOR_TILE)
        assert narrow_tiles == 0 or wide - narrow == 1


def test_dense_layers_run_the_vector_nest_without_avx512(register_file, specialized):
    spec = _spec((1, 12, 12, 8), (3, 3, 8, 32))
    nest = plan(spec, False, hot=True)[1]
    assert nest == ("dense" if register_file == "avx512" else "dense_vector")
    # The vector nest has no generic tier: one-off calls run the dense loop nest.
    numbaconv.set_specialization("never")
    assert plan(spec, False, hot=True)[1] == "dense"


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("width, filters, strides, dilation, data_format, dtype", [
    (7, 20, 1, 1, "channels_last", "float32"),  # tiles 4 + 3, a partial filter block
    (13, 16, 2, 1, "channels_last", "float64"),  # 7 outputs: 4 + 3; blocks of 8 float64
    (1, 8, 1, 1, "channels_last", "float32"),  # one pixel per row
    (9, 24, 1, 2, "channels_first", "float32"),  # dilated: taps and channels looped apart
    (11, 12, (1, 2), 1, "channels_first", "float64"),
])
def test_vector_nest_against_the_reference(register_file, specialized, width, filters, strides,
                                           dilation, data_format, dtype):
    rng = np.random.default_rng(width + filters)
    channels = 5
    x = rng.standard_normal((2, 6, width, channels)).astype(dtype)
    kernel = rng.standard_normal((3, 3, channels, filters)).astype(dtype)
    bias = rng.standard_normal(filters).astype(dtype)
    strides = (strides, strides) if isinstance(strides, int) else strides
    xin = x if data_format == "channels_last" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    spec = ConvSpec.from_arguments(xin.shape, kernel.shape, strides, "same", data_format,
                                   dilation, dtype)
    assert plan(spec, False, hot=True)[1] == "dense_vector"
    got = numbaconv.conv2d(xin, kernel, bias=bias, strides=strides, padding="same",
                           data_format=data_format, dilation_rate=dilation)
    if data_format == "channels_first":
        got = got.transpose(0, 2, 3, 1)
    pads = reference_pads("same", x.shape[1:3], (3, 3), strides, (dilation,) * 2)
    want = reference_conv2d(x, kernel, strides, pads, (dilation,) * 2, bias=bias)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("register_file", ["avx2", "avx512"], indirect=True)
def test_channels_first_dense_layers_reorder_around_the_vector_nest(register_file, specialized):
    # The vector nest (AVX2) reads channels_last only: channels_first data is reordered around
    # it. The AVX-512 loop nest reads channels_first in place.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 5, 6, 9)).astype(np.float32)  # channels_first
    kernel = rng.standard_normal((3, 3, 5, 12)).astype(np.float32)
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, (1, 1), "same", "channels_first",
                                   (1, 1), "float32")
    call = call_plan(spec, False, True, True)
    vector = register_file == "avx2"
    assert (call.nest, call.reorder) == (("dense_vector", True) if vector else ("dense", False))
    assert call.run_spec.data_format == ("channels_last" if vector else "channels_first")
    got = numbaconv.conv2d(x, kernel, padding="same", data_format="channels_first")
    pads = reference_pads("same", (6, 9), (3, 3), (1, 1), (1, 1))
    want = reference_conv2d(x.transpose(0, 2, 3, 1), kernel, (1, 1), pads).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if vector:
        with pytest.raises(ValueError, match="channels_last data only"):
            direct.specialized_kernel("dense_vector", spec, False)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
def test_vector_nest_fuses_relu(register_file, specialized):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 8, 6)).astype(np.float32)
    kernel, bias = rng.standard_normal((3, 3, 6, 20)), rng.standard_normal(20)
    spec = _spec(x.shape, kernel.shape)
    assert plan(spec, True, hot=True)[1] == "dense_vector"
    got = numbaconv.conv2d(x, kernel.astype(np.float32), bias=bias.astype(np.float32),
                           padding="same", activation="relu")
    pads = reference_pads("same", (5, 8), (3, 3), (1, 1), (1, 1))
    want = np.maximum(reference_conv2d(x, kernel, (1, 1), pads, bias=bias), 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
def test_vector_nest_block_by_block(register_file, specialized, monkeypatch):
    # Tasks ordered block-major (large weights); as if no weights stayed in the cache.
    monkeypatch.setattr(direct, "CACHED_WEIGHT_BYTES", 0)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 9, 5)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 5, 40)).astype(np.float32)
    spec = _spec(x.shape, kernel.shape)
    assert direct.block_major("dense_vector", spec)
    assert plan(spec, False, hot=True)[1] == "dense_vector"
    pads = reference_pads("same", (6, 9), (3, 3), (1, 1), (1, 1))
    np.testing.assert_allclose(numbaconv.conv2d(x, kernel, padding="same"),
                               reference_conv2d(x, kernel, (1, 1), pads), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels, filters, groups, dtype", [
    (6, 20, 1, "float32"),  # 6 channels × 16 filters, the filters padded to 32
    (5, 12, 1, "float64"),  # 5 channels × 8 float64
    (8, 32, 4, "float32"),  # groups of 2 channels × 8 filters, padded to 16
])
def test_vector_kernel_gradient(register_file, channels, filters, groups, dtype):
    spec, x, grad_output, want, tolerance = kernel_gradient_case(channels, filters, groups,
                                                                 dtype, 9, seed=channels)
    arguments, _ = backward.kernel_gradient_plan(spec, 2, specialized=True)
    vector = register_file == "avx2"
    assert (arguments[0] == backward.VECTOR_KERNEL_GRADIENT) == vector
    if vector:
        assert arguments[12] == min(channels // groups, direct.VECTOR_TILE)  # channels per tile
    got = backward.kernel_gradient(spec, x, grad_output, specialized=True, threads=2)
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 10)
    # The generic tier has no vector task.
    assert backward.kernel_gradient_plan(spec, 2)[0][0] == backward.DENSE_KERNEL_GRADIENT


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("threads", [2, 7])
def test_vector_kernel_gradient_writes_every_sum(register_file, groups, threads):
    # The vector task does not read ``grad`` before its first chunk (nothing clears it):
    # NaN everywhere beforehand must all be overwritten, by a split that has no rows too
    # (7 threads: 4 splits of 2-row chunks over 5 output rows).
    from test_backward import _kernel_gradient_per_tap

    rng = np.random.default_rng(threads)
    x = rng.standard_normal((1, 5, 10, 8)).astype(np.float32)
    shape = (3, 3, 8 // groups, 16 * groups)  # whole blocks of 16 filters a group
    spec = ConvSpec.from_arguments(x.shape, shape, 1, "same", "channels_last", 1, "float32")
    grad_output = rng.standard_normal(spec.output_shape).astype(np.float32)
    want = _kernel_gradient_per_tap(x.astype(float), grad_output.astype(float), shape, 1,
                                    spec.pads, 1, groups)
    arguments, items = backward.kernel_gradient_plan(spec, threads, specialized=True)
    task, kh, kw, _, _, _, _, _, _, g, cin, cout, _, _, rows, splits, _, _ = arguments
    assert task == backward.VECTOR_KERNEL_GRADIENT and g * cout == shape[3]
    assert -(-5 // rows) < splits if threads == 7 else splits == 1
    grad = np.full((splits, kh, kw, cin, g * cout), np.nan, dtype=np.float32)
    backward._run(arguments, items, (x, grad_output, grad), True)
    np.testing.assert_allclose(grad.sum(axis=0), want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("groups, threads, blocks", [(1, 2, 2), (1, 3, 1), (2, 2, 2), (1, 1, 4)])
def test_vector_kernel_gradient_of_1x1_kernels_in_filter_runs(register_file, groups, threads,
                                                              blocks):
    # A 1x1 kernel's item takes several blocks of 16 filters, as many as leave an item a
    # thread (4 blocks over 3 threads: 1 each), each block's sums written from its first
    # chunk (NaN beforehand).
    from test_backward import _kernel_gradient_per_tap

    rng = np.random.default_rng(threads + groups)
    x = rng.standard_normal((2, 5, 6, 8)).astype(np.float32)
    shape = (1, 1, 8 // groups, 64)  # 4 blocks of 16 filters, 2 a group when grouped
    spec = ConvSpec.from_arguments(x.shape, shape, 1, "same", "channels_last", 1, "float32")
    grad_output = rng.standard_normal(spec.output_shape).astype(np.float32)
    want = _kernel_gradient_per_tap(x.astype(float), grad_output.astype(float), shape, 1,
                                    spec.pads, 1, groups)
    arguments, items = backward.kernel_gradient_plan(spec, threads, specialized=True)
    assert arguments[0] == backward.VECTOR_KERNEL_GRADIENT and arguments[17] == blocks
    assert items == 4 // blocks * arguments[15]  # filter runs × splits
    grad = np.full((arguments[15], 1, 1, 8 // groups, 64), np.nan, dtype=np.float32)
    backward._run(arguments, items, (x, grad_output, grad), True)
    np.testing.assert_allclose(grad.sum(axis=0), want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("channels, groups, dtype, lanes", sample([
    (32, 8, "float32", True),  # groups of 4: 4 channels × 16 filters a tile
    (16, 8, "float32", True),  # groups of 2
    (16, 8, "float64", True),  # groups of 2 in vectors of 4 float64, 8 filters a tile
    (24, 6, "float32", False),  # 24 filters: no whole 16-filter blocks, shifted nest
], lambda case: case[:2] == (32, 8)))
def test_grouped_lanes_kernel_gradient(register_file, channels, groups, dtype, lanes):
    spec, x, grad_output, want, tolerance = kernel_gradient_case(channels, channels, groups,
                                                                 dtype, 7, seed=channels)
    arguments, _ = backward.kernel_gradient_plan(spec, 2, specialized=True)
    in_lane = register_file == "avx2" and lanes
    assert (arguments[0] == backward.LANES_KERNEL_GRADIENT) == in_lane
    got = backward.kernel_gradient(spec, x, grad_output, specialized=True, threads=2)
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 10)


@pytest.mark.parametrize("channels, dtype, vectors", sample([
    (32, "float32", 4),  # 4 vectors of 8 channels a step
    (8, "float64", 2),  # 4 float64 lanes: 2 vectors
    (24, "float32", 1),  # 3 vectors, 1 a step
    (40, "float32", None),  # 5 vectors: the loop nest
], lambda case: case[0] == 32))
def test_depthwise_vector_kernel_gradient(register_file, channels, dtype, vectors, monkeypatch):
    # Width 10: an odd count of pixels for the side taps (a last pixel alone).  Windows
    # of more than WINDOW_TAPS taps (5x5) take this nest: here, every window.
    monkeypatch.setattr(backward, "WINDOW_TAPS", 0)
    spec, x, grad_output, want, tolerance = kernel_gradient_case(channels, channels, channels,
                                                                 dtype, 7, seed=channels)
    arguments, _ = backward.kernel_gradient_plan(spec, 2, specialized=True)
    vector = register_file == "avx2" and vectors is not None
    assert (arguments[0] == backward.VECTOR_DEPTHWISE_KERNEL_GRADIENT) == vector
    if vector:
        assert arguments[12] == vectors
    got = backward.kernel_gradient(spec, x, grad_output, specialized=True, threads=2)
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 10)


def _input_gradient_reference(grad_output, kernel, x_shape, strides, pads, dilation):
    """The input gradient in float64: each tap's ``grad_output · kernel[tap]ᵀ`` added into a
    padded input, the padding then cut off."""
    n, h, w, c = x_shape
    (sh, sw), (dh, dw) = strides, dilation
    (pt, pb), (pl, pr) = pads
    oh, ow = grad_output.shape[1:3]
    padded = np.zeros((n, h + pt + pb, w + pl + pr, c))
    for ki in range(kernel.shape[0]):
        for kj in range(kernel.shape[1]):
            padded[:, ki * dh:ki * dh + (oh - 1) * sh + 1:sh,
                   kj * dw:kj * dw + (ow - 1) * sw + 1:sw] += (
                grad_output.astype(float) @ kernel[ki, kj].astype(float).T)
    return padded[:, pt:pt + h, pl:pl + w]


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("shape, kernel_size, strides, dilation, padding, dtype", sample([
    ((2, 11, 12, 3), (7, 7), 2, 1, "same", "float32"),  # a stem: tiles of 3 pixels
    ((1, 9, 10, 1), (3, 3), 1, 1, "same", "float64"),  # 1 channel: tiles of 7
    ((2, 9, 8, 4), (3, 4), 3, 1, ((2, 0), (1, 3)), "float32"),  # 4 channels: tiles of 2
    ((1, 8, 9, 2), (3, 3), 1, 2, "valid", "float32"),
    ((1, 6, 13, 3), (5, 5), (1, 2), 1, "same", "float64"),
], lambda case: case[1] == (7, 7)))
def test_narrow_vector_input_gradient(register_file, shape, kernel_size, strides, dilation,
                                      padding, dtype):
    channels = shape[-1]
    filters = 64 if dtype == "float32" else 32
    rng = np.random.default_rng(channels + shape[2])
    kernel = rng.standard_normal((*kernel_size, channels, filters)).astype(dtype)
    spec = ConvSpec.from_arguments(shape, kernel.shape, strides, padding, "channels_last",
                                   dilation, dtype)
    grad_output = rng.standard_normal(spec.output_shape).astype(dtype)
    assert backward.is_narrow(spec)
    got = np.full(shape, np.nan, dtype=dtype)
    backward.narrow_input_gradient(spec, grad_output, kernel, got, specialized=True)
    want = _input_gradient_reference(grad_output, kernel, shape, spec.strides, spec.pads,
                                     spec.dilation)
    tolerance = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 10)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("shape, kernel_size, strides, dilation, padding, dtype", sample([
    ((2, 6, 10, 16), (3, 3), 1, 1, "same", "float32"),  # 2 vectors of channels
    ((1, 7, 9, 8), (3, 3), 2, 1, "same", "float64"),  # 2 vectors of 4 float64
    ((2, 5, 11, 8), (3, 3), 1, 2, "same", "float32"),  # 2 border columns each side
    ((1, 6, 7, 16), (2, 2), 2, 1, "same", "float32"),  # padding after only
    ((1, 6, 9, 24), (3, 3), (2, 1), 1, "valid", "float32"),  # no border
    ((1, 4, 2, 8), (3, 3), 1, 1, "same", "float32"),  # every pixel a border one
    ((2, 5, 8, 8), (2, 5), 1, 1, "same", "float32"),  # 10 taps and the bias: 11 sums
    ((2, 11, 6, 8), (3, 3), 1, 1, "same", "float32"),  # rows 3 at a time, not across images
    ((1, 13, 5, 8), (3, 3), 2, 1, "same", "float64"),  # rows 2 at a time, strided
    ((1, 12, 7, 8), (3, 3), 1, 2, "same", "float32"),  # rows 3 at a time, dilated
], lambda case: case[1] == (3, 3) and case[4] == "same" and case[2] == 1 and case[3] == 1))
def test_depthwise_window_kernel_and_bias_gradients(register_file, shape, kernel_size, strides,
                                                    dilation, padding, dtype):
    _check_window_gradients(shape, kernel_size, strides, dilation, padding, dtype)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("chunk_rows", [1, 4])
def test_depthwise_window_rows_at_once_within_chunks(register_file, monkeypatch, chunk_rows):
    # Rows taken several at a time never run past their chunk (each channel vector's pass),
    # here chunks of 1 row and of 4 rows (a run of 3 and a single one).
    shape = (2, 11, 6, 8)
    row_bytes = (shape[2] + shape[2]) * shape[3] * 4  # an input and an output gradient row
    monkeypatch.setattr(backward, "WINDOW_CHUNK_BYTES", chunk_rows * row_bytes)
    spec = ConvSpec.from_arguments(shape, (3, 3, 1, 8), 1, "same", "channels_last", 1,
                                   "float32")
    assert backward.kernel_gradient_plan(spec, 2, specialized=True)[0][14] == chunk_rows
    _check_window_gradients(shape, (3, 3), 1, 1, "same", "float32")


def _check_window_gradients(shape, kernel_size, strides, dilation, padding, dtype):
    from test_backward import _kernel_gradient_per_tap

    channels = shape[-1]
    rng = np.random.default_rng(channels + shape[2])
    x = rng.standard_normal(shape).astype(dtype)
    kernel_shape = (*kernel_size, 1, channels)
    spec = ConvSpec.from_arguments(shape, kernel_shape, strides, padding, "channels_last",
                                   dilation, dtype)
    grad_output = rng.standard_normal(spec.output_shape).astype(dtype)
    arguments, _ = backward.kernel_gradient_plan(spec, 2, specialized=True)
    assert arguments[0] == backward.WINDOW_DEPTHWISE_KERNEL_GRADIENT
    got, bias = backward.kernel_and_bias_gradients(spec, x, grad_output, specialized=True,
                                                   threads=2)
    if spec.strides[0] == spec.strides[1]:
        want = _kernel_gradient_per_tap(x.astype(float), grad_output.astype(float),
                                        kernel_shape, spec.strides[0], spec.pads, dilation,
                                        channels)
    else:  # the helper takes one stride (undilated here): each tap by NumPy
        padded = np.pad(x.astype(float), ((0, 0), *spec.pads, (0, 0)))
        (sh, sw), (oh, ow) = spec.strides, spec.output_hw
        want = np.stack([np.einsum("nhwc,nhwc->c", padded[
            :, ki:ki + (oh - 1) * sh + 1:sh, kj:kj + (ow - 1) * sw + 1:sw], grad_output)
            for ki in range(kernel_size[0]) for kj in range(kernel_size[1])])
        want = want.reshape(kernel_shape)
    tolerance = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 10)
    np.testing.assert_allclose(bias, grad_output.astype(float).sum(axis=(0, 1, 2)),
                               rtol=tolerance, atol=tolerance * 10)
    assert got.dtype == bias.dtype == np.dtype(dtype)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("width, channels, strides, dilation, dtype, nest", sample([
    (4, 32, 1, 1, "float32", "grouped_lanes"),  # 2 groups per vector of 8 filters
    (2, 16, 2, 1, "float32", "grouped_lanes"),  # 4 groups per vector
    (2, 12, (1, 2), 1, "float64", "grouped_lanes"),  # 2 groups per vector of 4
    (16, 32, 1, 2, "float32", "grouped_vector"),  # 2 vectors per group
    (4, 24, (1, 2), 1, "float64", "grouped_vector"),  # vectors of 4 float64: one group each
], lambda case: case[1] in (32, 16)))
def test_grouped_vector_nests_against_the_reference(register_file, specialized, width, channels,
                                                    strides, dilation, dtype, nest):
    rng = np.random.default_rng(width + channels)
    x = rng.standard_normal((2, 5, 11, channels)).astype(dtype)
    kernel = rng.standard_normal((3, 3, width, channels)).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    strides = (strides, strides) if isinstance(strides, int) else strides
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, "same", "channels_last",
                                   dilation, dtype)
    assert plan(spec, True, hot=True)[1] == nest
    got = numbaconv.conv2d(x, kernel, bias=bias, strides=strides, padding="same",
                           dilation_rate=dilation, activation="relu")
    pads = reference_pads("same", x.shape[1:3], (3, 3), strides, (dilation,) * 2)
    want = np.maximum(reference_conv2d(x, kernel, strides, pads, (dilation,) * 2, bias=bias), 0)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("width, channels, nest", [(4, 16, "grouped_lanes"),
                                                   (8, 16, "grouped_vector")])
def test_grouped_vector_nests_keep_non_finite_values_in_their_group(register_file, specialized,
                                                                     width, channels, nest):
    # Each lane multiplies its own group's inputs only (no zero weights across groups,
    # where 0 * inf would be NaN), so these nests run inputs holding inf and NaN as they are.
    x = np.ones((1, 5, 8, channels), dtype=np.float32)
    x[0, 2, 3, 4] = np.inf  # group 1 of 4-channel groups, 0 of 8-channel ones
    x[0, 1, 5, 15] = np.nan
    kernel = np.random.default_rng(5).standard_normal((3, 3, width, channels)).astype(np.float32)
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, 1, "same", "channels_last", 1,
                                   "float32")
    assert plan(spec, False, hot=True)[1] == nest and not checks_input(nest)
    out = numbaconv.conv2d(x, kernel, padding="same")
    pads = reference_pads("same", (5, 8), (3, 3), (1, 1), (1, 1))
    with np.errstate(invalid="ignore"):
        want = reference_conv2d(x, kernel, (1, 1), pads)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want))
    assert np.isfinite(out[..., [0, 1, 2, 3] if width == 4 else []]).all()
    finite = np.isfinite(want)
    np.testing.assert_allclose(out[finite], want[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("width, channels, kernel_size, strides, dilation, padding, dtype", sample([
    (13, 16, 3, 1, 1, "same", "float32"),  # 3 tiles of 4, the last shifted left
    (9, 8, 3, 2, 1, "same", "float64"),  # 4 float64 lanes: 2 vectors, border pixels 2 at once
    (20, 24, 3, 1, 2, "valid", "float32"),  # 3 vectors: the border pixels one at a time
    (3, 32, 3, 1, 1, "same", "float32"),  # narrower than a tile: every pixel a border one
    (11, 32, 3, (2, 1), 1, "same", "float32"),
], lambda case: case[0] in (9, 20, 3)))
def test_depthwise_vector_nest_against_the_reference(register_file, specialized, width,
                                                     channels, kernel_size, strides, dilation,
                                                     padding, dtype):
    rng = np.random.default_rng(width + channels)
    x = rng.standard_normal((2, 7, width, channels)).astype(dtype)  # 7 rows: one unpaired
    kernel = rng.standard_normal((kernel_size, kernel_size, 1, channels)).astype(dtype)
    bias = rng.standard_normal(channels).astype(dtype)
    strides = (strides, strides) if isinstance(strides, int) else strides
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, padding, "channels_last",
                                   dilation, dtype)
    assert plan(spec, True, hot=True)[1] == "depthwise_vector"
    got = numbaconv.conv2d(x, kernel, bias=bias, strides=strides, padding=padding,
                           dilation_rate=dilation, activation="relu")
    pads = reference_pads(padding, x.shape[1:3], (kernel_size,) * 2, strides, (dilation,) * 2)
    want = np.maximum(reference_conv2d(x, kernel, strides, pads, (dilation,) * 2, bias=bias), 0)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
def test_depthwise_vector_nest_streams_aligned_outputs_only(register_file, specialized,
                                                            monkeypatch):
    monkeypatch.setattr(direct, "STREAM_MIN_BYTES", 0)  # every output large enough
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 10, 16)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 1, 16)).astype(np.float32)
    bias = np.zeros(16, np.float32)
    spec = _spec(x.shape, kernel.shape)
    assert direct.streams_output("depthwise_vector", spec)
    want = reference_conv2d(x, kernel, (1, 1), reference_pads("same", (6, 10), (3, 3), (1, 1),
                                                              (1, 1)))
    np.testing.assert_allclose(numbaconv.conv2d(x, kernel, padding="same"), want, rtol=1e-5,
                               atol=1e-5)
    # An output off the alignment (one float in) is stored plainly, not faulted on.
    run = direct.specialized_kernel("depthwise_vector", spec, False)
    buffer = layout.aligned_empty((want.size + 1,), np.float32)
    out = buffer[1:].reshape(want.shape)
    run(x, kernel, bias, out, spec, False)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
def test_depthwise_channels_off_the_lanes_run_the_loop_nest(register_file, specialized):
    assert plan(_spec((1, 8, 8, 12), (3, 3, 1, 12)), False, hot=True)[1] == "depthwise"
    assert plan(_spec((1, 8, 8, 16), (3, 3, 1, 16)), False, hot=True)[1] == "depthwise_vector"


def _scattered_input_gradient(grad_output, kernel, spec):
    """The input gradient of a depthwise layer: each output gradient times each tap, scattered
    back to the input pixel the tap read (float64)."""
    (sh, sw), (dh, dw), (pads_h, pads_w) = spec.strides, spec.dilation, spec.pads
    n, oh, ow, channels = grad_output.shape
    padded = np.zeros((n, spec.height + sum(pads_h), spec.width + sum(pads_w), channels))
    for ki in range(kernel.shape[0]):
        for kj in range(kernel.shape[1]):
            padded[:, ki * dh:ki * dh + (oh - 1) * sh + 1:sh,
                   kj * dw:kj * dw + (ow - 1) * sw + 1:sw] += grad_output * kernel[ki, kj, 0]
    return padded[:, pads_h[0]:pads_h[0] + spec.height, pads_w[0]:pads_w[0] + spec.width]


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("shape, kernel_size, strides, dilation, padding, dtype, threads, "
                         "chunk_rows, streamed", sample([
    ((2, 11, 6, 16), 3, 1, 1, "same", "float32", 2, None, True),  # 2 vectors a pixel
    ((2, 11, 6, 16), 3, 1, 1, "same", "float32", 3, 1, False),  # 3 splits, 1-row chunks
    ((1, 9, 11, 16), 3, 2, 1, "same", "float32", 2, 2, True),  # strided: phases
    ((2, 7, 9, 8), 3, 1, 2, "same", "float64", 2, 2, False),  # dilated, 4 float64 lanes
    ((3, 6, 7, 16), 3, (2, 1), 1, "valid", "float32", 4, 1, True),  # rows past their split's
    ((1, 6, 7, 16), 2, 2, 1, "same", "float32", 1, None, False),  # padding after only
], lambda case: case[2] == 1 and case[3] == 1))
def test_depthwise_gradients_in_one_pass(register_file, monkeypatch, shape, kernel_size, strides,
                                         dilation, padding, dtype, threads, chunk_rows,
                                         streamed):
    # The window task's pass computes the input gradient too, row by row after the kernel
    # gradient's chunks: every row once, whatever the splits, chunks and stores.
    monkeypatch.setattr(backward, "TOGETHER_STREAM_MIN_BYTES", 0 if streamed else 1 << 40)
    channels = shape[-1]
    rng = np.random.default_rng(channels + shape[2])
    x = rng.standard_normal(shape).astype(dtype)
    kernel = rng.standard_normal((kernel_size, kernel_size, 1, channels)).astype(dtype)
    spec = ConvSpec.from_arguments(shape, kernel.shape, strides, padding, "channels_last",
                                   dilation, dtype)
    if chunk_rows is not None:  # an input and an output gradient row a chunk's row
        row_bytes = (spec.strides[0] * shape[2] + spec.output_hw[1]) * channels * x.itemsize
        monkeypatch.setattr(backward, "WINDOW_CHUNK_BYTES", chunk_rows * row_bytes)
    grad_output = rng.standard_normal(spec.output_shape).astype(dtype)
    assert backward.depthwise_gradients(spec, x, grad_output, kernel, False) is None
    got = backward.depthwise_gradients(spec, x, grad_output, kernel, True, threads)
    assert got is not None and backward._depthwise_gradients_plan(spec, threads)[3] == streamed
    gx, gk, gb = got
    wide = grad_output.astype(float)
    (sh, sw), (dh, dw), (oh, ow) = spec.strides, spec.dilation, spec.output_hw
    padded = np.pad(x.astype(float), ((0, 0), *spec.pads, (0, 0)))
    want_kernel = np.stack([np.einsum("nhwc,nhwc->c", padded[
        :, ki * dh:ki * dh + (oh - 1) * sh + 1:sh, kj * dw:kj * dw + (ow - 1) * sw + 1:sw], wide)
        for ki in range(kernel_size) for kj in range(kernel_size)])
    tolerance = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(gx, _scattered_input_gradient(wide, kernel.astype(float), spec),
                               rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(gk, want_kernel.reshape(kernel.shape), rtol=tolerance,
                               atol=tolerance * 10)
    np.testing.assert_allclose(gb, wide.sum(axis=(0, 1, 2)), rtol=tolerance, atol=tolerance * 10)
    assert gx.dtype == gk.dtype == gb.dtype == np.dtype(dtype)


@pytest.mark.parametrize("register_file", ["avx2"], indirect=True)
@pytest.mark.parametrize("width, channels, kernel_size, strides, dilation, padding, dtype", sample([
    (11, 16, 3, 2, 1, "same", "float32"),  # 2 vectors a pixel
    (13, 8, 3, (2, 1), (1, 2), "same", "float64"),  # 4 float64 lanes, 2 vectors
    (12, 24, 5, 3, 1, "valid", "float32"),  # 3 vectors: 1 a pixel
    (5, 32, 3, 2, 1, "same", "float32"),  # phases of 3 and 2 pixels: no full tile
    (16, 8, 2, 2, 1, ((1, 0), (0, 1)), "float32"),  # 2x2: one tap a phase, explicit pads
    (11, 16, 3, 1, 1, "same", "float32"),  # stride 1: one phase, every tap
    (10, 8, 3, 1, (2, 3), "valid", "float64"),  # stride 1, dilated
    (6, 24, 5, 1, 1, "same", "float32"),  # stride 1: fewer pixels than a tile's 4 inside
], lambda case: case[0] in (13, 12, 5, 10)))
def test_strided_depthwise_vector_input_gradient(register_file, width, channels, kernel_size,
                                                 strides, dilation, padding, dtype, monkeypatch):
    monkeypatch.setattr(direct, "STREAM_MIN_BYTES", 0)  # aligned outputs streamed
    rng = np.random.default_rng(width + channels)
    shape = (2, 9, width, channels)
    kernel = rng.standard_normal((kernel_size, kernel_size, 1, channels)).astype(dtype)
    spec = ConvSpec.from_arguments(shape, kernel.shape, strides, padding, "channels_last",
                                   dilation, dtype)
    assert backward.gathers_depthwise_input_gradient(spec, specialized=True)
    grad_output = rng.standard_normal(spec.output_shape).astype(dtype)
    want = _scattered_input_gradient(grad_output.astype(float), kernel.astype(float), spec)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for got in (layout.aligned_empty(shape, dtype),  # streamed
                layout.aligned_empty((np.prod(shape) + 1,), dtype)[1:].reshape(shape)):
        got[:] = np.nan
        backward.depthwise_input_gradient(spec, grad_output, kernel, got, specialized=True)
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kernel_size, strides, dilation", [
    (3, 1, 1), (3, 2, 1), (5, 1, 1), (3, 1, 2), (1, 1, 1), (1, 2, 1), (2, 3, 1), (7, 2, 3)])
def test_depthwise_prefetches_the_rows_the_next_pair_reads_first(kernel_size, strides,
                                                                  dilation):
    rows, _ = direct.DEPTHWISE_TILE

    def window(first_output_row):  # the input rows a pair of output rows reads (no padding)
        return {(first_output_row + r) * strides + k * dilation
                for r in range(rows) for k in range(kernel_size)}

    first, count = direct._depthwise_next_rows(kernel_size, strides, dilation)
    new = {row for row in window(rows) if row > max(window(0))}  # the others: read before
    # Their span: with strides past the window, rows in between are read by neither.
    assert (first, first + count - 1) == (min(new), max(new))
    lines = direct._depthwise_prefetches(kernel_size, 1, strides, dilation, 8, 16)
    assert lines in (0, -(-count * direct.DEPTHWISE_TILE[1] * 8 // 16))
    assert lines <= direct.MAX_PREFETCHES_A_STEP
