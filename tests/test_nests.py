"""Tests aimed at the structure of the CPU loop nests and the copies around them.

Each nest splits an output row into full tiles (overlapping at the end) and
border pixels, and the layout copies pad and reorder; these tests sweep the
sizes around those splits, against the NumPy reference in ``reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_conv2d, reference_pads
from sampling import sample

import numbaconv
from numbaconv import dispatch
from numbaconv.cache import clear_kernel_cache
from numbaconv.cpu import direct, layout
from numbaconv.functional import plan
from numbaconv.spec import ConvSpec

F64_TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(params=["never", "always"])
def tier(request):
    """Run a test with the generic, then the specialized kernels."""
    previous = dispatch.get_specialization()
    dispatch.set_specialization(request.param)
    yield request.param
    dispatch.set_specialization(previous)


def _check(x, kernel, strides, padding, dilation, bias, activation, data_format="channels_last"):
    out = numbaconv.conv2d(x, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                           bias=bias, activation=activation, data_format=data_format)
    xl = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    pads = reference_pads(padding, xl.shape[1:3], kernel.shape[:2], (strides, strides),
                          (dilation, dilation))
    want = reference_conv2d(xl, kernel, (strides, strides), pads, (dilation, dilation)) + bias
    if activation == "relu":
        want = np.maximum(want, 0)
    if data_format == "channels_first":
        want = want.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, want, **F64_TOL)


# The specialized tier runs the same task code and compiles once per geometry: it samples
# the widths and, as each geometry and channel count compiles twice (both paddings), 7 of the 12
# pairings of geometry and channels.
_DEPTHWISE_GEOMETRIES = [(1, 1), (2, 1), (1, 2), (3, 1)]
_DEPTHWISE_CHANNELS = [(5, 1), (32, 1), (3, 2)]
_SPECIALIZED_DEPTHWISE = [((1, 1), (5, 1)), ((3, 1), (5, 1)), ((1, 1), (32, 1)),
                          ((2, 1), (32, 1)), ((1, 2), (32, 1)), ((2, 1), (3, 2)),
                          ((1, 2), (3, 2))]
_DEPTHWISE_TIERS = ([(width, *geometry, *channels, "never") for width in range(1, 14)
                     for geometry in _DEPTHWISE_GEOMETRIES for channels in _DEPTHWISE_CHANNELS]
                    + [(width, *geometry, *channels, "always") for width in (1, 3, 4, 5, 8, 9, 13)
                       for geometry, channels in _SPECIALIZED_DEPTHWISE])


# The default run samples the specialized cases: the channel counts that take the vector
# nest (without AVX-512), a depth multiplier, and the largest stride, on two widths.
_DEFAULT_DEPTHWISE = {(1, 1, 32, 1), (2, 1, 3, 2), (3, 1, 5, 1)}


@pytest.mark.parametrize("width, strides, dilation, channels, multiplier, tier",
                         sample(_DEPTHWISE_TIERS, lambda case: case[-1] == "never" or (
                             case[0] in (4, 13) and case[1:5] in _DEFAULT_DEPTHWISE)),
                         indirect=["tier"])
def test_depthwise_tiles_and_borders(width, strides, dilation, channels, multiplier, tier):
    # Widths 1-13 put 0, 1 or more 4-pixel tiles (the last one overlapping) between
    # border pixels; the first and last rows clip the window.
    rng = np.random.default_rng(width * 100 + strides * 10 + dilation)
    x = rng.standard_normal((2, 6, width, channels))
    kernel = rng.standard_normal((3, 3, 1, channels * multiplier))
    bias = rng.standard_normal(channels * multiplier)
    for padding in ("same", "valid"):
        if padding == "valid" and width <= 2 * dilation:
            continue
        _check(x, kernel, strides, padding, dilation, bias, "relu")


@pytest.mark.parametrize("out_width", [32, 33, 35])
@pytest.mark.parametrize("strides, dilation", [(1, 1), (2, 1), (1, 3)])
def test_planar_depthwise_rows_and_borders(out_width, strides, dilation, tier):
    # channels_first depthwise layers wide enough for the nest vectorized along rows:
    # interior pixels, clipped border columns and rows.
    assert out_width >= dispatch.PLANAR_MIN_WIDTH
    rng = np.random.default_rng(out_width + 10 * strides + dilation)
    x = rng.standard_normal((2, 3, 5, out_width * strides))
    kernel = rng.standard_normal((3, 3, 1, 3))
    bias = rng.standard_normal(3)
    _check(x, kernel, strides, "same", dilation, bias, "relu", "channels_first")
    if tier == "never":  # the specialized tier compiles anew for it: same task code
        _check(x, kernel, strides, "same", dilation, bias, None, "channels_first")


# The specialized tier (compiled per filter count, and by the vector nest per row width)
# samples the filters (70 has a full block and a padded one, 3 a padded one alone) and
# the widths: 3 (narrower than a tile), 7 (4 + 3 without AVX-512), 12 (whole tiles).
# test_register_tiles covers the vector nest's row tiles on more widths.
_FILTER_TIERS = ([(width, filters, "never") for width in (3, 4, 5, 7, 9, 12)
                  for filters in (3, 64, 70)]
                 + [(width, filters, "always") for width in (3, 7, 12) for filters in (3, 70)])


@pytest.mark.parametrize("width, filters, tier",
                         sample(_FILTER_TIERS, lambda case: case[2] == "never" or case[0] == 7),
                         indirect=["tier"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_dense_tiles_filter_blocks_and_layouts(width, filters, data_format, tier):
    # 64-filter blocks (70: one full, one padded with zero filters), tiles and
    # border pixels, read and written in both layouts.
    rng = np.random.default_rng(width + filters)
    x = rng.standard_normal((2, 5, width, 3))
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kernel = rng.standard_normal((3, 3, 3, filters))
    bias = rng.standard_normal(filters)
    _check(x, kernel, 1, "same", 1, bias, "relu", data_format)
    _check(x, kernel, 2, "same", 1, bias, None, data_format)


@pytest.fixture
def loop_nests(monkeypatch):
    """The loop nests whatever the CPU: no explicit-vector nests (which CPUs without AVX-512
    run specialized; they are tested in test_register_tiles)."""
    monkeypatch.setattr(direct, "vector_tiles_pay", lambda: False)
    clear_kernel_cache()  # it holds the plans
    yield
    clear_kernel_cache()


def _run_shifted(x, kernel, strides, padding, dilation, bias, activation, data_format):
    """float32 ``conv2d`` through the shifted grouped nest (asserted) and its float64 reference."""
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, padding, data_format,
                                   dilation, "float32")
    assert plan(spec, activation == "relu", hot=True)[1] == "grouped_shifted"
    out = numbaconv.conv2d(x.astype(np.float32), kernel.astype(np.float32), strides=strides,
                           padding=padding, dilation_rate=dilation,
                           bias=bias.astype(np.float32), activation=activation,
                           data_format=data_format)
    xl = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    pads = reference_pads(padding, xl.shape[1:3], kernel.shape[:2], (strides, strides),
                          (dilation, dilation))
    want = reference_conv2d(xl.astype(np.float32), kernel.astype(np.float32),
                            (strides, strides), pads, (dilation, dilation))
    want = want + bias.astype(np.float32)
    if activation == "relu":
        want = np.maximum(want, 0)
    if data_format == "channels_first":
        want = want.transpose(0, 3, 1, 2)
    return out, want


# The specialized tier (the same task code, compiled per geometry) samples the groupings
# and the geometries: each grouping meets two of three geometries, each geometry two groupings.
_GROUPINGS = [(2, 6), (4, 16), (4, 96), (8, 72), (16, 32), (64, 128)]
_SHIFTED_GEOMETRIES = [(4, 1, 1), (5, 1, 1), (9, 2, 1), (13, 1, 2), (11, 3, 1)]
_GROUPING_TIERS = ([(*grouping, *geometry, "never") for grouping in _GROUPINGS
                    for geometry in _SHIFTED_GEOMETRIES]
                   + [(*grouping, *geometry, "always")
                      for grouping, geometries in (((2, 6), ((4, 1, 1), (9, 2, 1))),
                                                   ((4, 96), ((9, 2, 1), (13, 1, 2))),
                                                   ((64, 128), ((4, 1, 1), (13, 1, 2))))
                      for geometry in geometries])


@pytest.mark.parametrize("group_width, channels, width, strides, dilation, tier",
                         sample(_GROUPING_TIERS, lambda case: case[5] == "never"
                                or case[2:5] in ((4, 1, 1), (9, 2, 1))),
                         indirect=["tier"])
def test_shifted_grouped_nest(group_width, channels, width, strides, dilation, tier, loop_nests):
    # Filter blocks of 64 (full, partial, several), shifts of 2 * width - 1 input
    # channels, 4-pixel tiles (the last overlapping), strides, dilation, both paddings.
    rng = np.random.default_rng(group_width * 1000 + channels + width)
    x = rng.standard_normal((2, 6, width * strides, channels))
    kernel = rng.standard_normal((3, 3, group_width, channels))
    bias = rng.standard_normal(channels)
    for padding, activation in (("same", "relu"), ("valid", None)):
        if -(-(width * strides - 2 * dilation) // strides) < 4 and padding == "valid":
            continue
        out, want = _run_shifted(x, kernel, strides, padding, dilation, bias, activation,
                                 "channels_last")
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


def test_shifted_grouped_nest_channels_first_and_kernel_sizes(tier, loop_nests):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 32, 7, 9))
    kernel = rng.standard_normal((2, 5, 4, 32))
    bias = rng.standard_normal(32)
    out, want = _run_shifted(x, kernel, 1, "same", 1, bias, None, "channels_first")
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


def test_shifted_grouped_nest_keeps_non_finite_values_in_their_group(tier, loop_nests):
    # The nest multiplies every channel of a block by a zero weight for the
    # filters outside its group: an inf next to a group must not leak as NaN
    # into it (nor into the next pixel, whose channels follow in memory).
    x = np.ones((1, 5, 8, 16))
    x[0, 2, 3, 4] = np.inf  # group 1 of 4-channel groups
    x[0, 1, 5, 15] = np.nan  # last channel of a pixel, next to the next pixel's first
    kernel = np.random.default_rng(5).standard_normal((3, 3, 4, 16))
    out, want = _run_shifted(x, kernel, 1, "same", 1, np.zeros(16), None, "channels_last")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want))
    assert np.isfinite(out[..., [0, 1, 2, 3, 8, 9, 10, 11]]).all()
    finite = np.isfinite(want)
    np.testing.assert_allclose(out[finite], want[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_prepare_input_pads_channels(data_format):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 5, 4))
    got, finite = layout.pad_channels(x, data_format, ((1, 0), (0, 2)), (3, 5),
                                      np.dtype(np.float32))
    xl = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    want = np.pad(xl.astype(np.float32), ((0, 0), (1, 0), (0, 2), (3, 5)))
    np.testing.assert_array_equal(got, want)
    assert finite
    value = x[1, 2, 1, 0]
    for bad in (np.inf, -np.inf, np.nan):
        x[1, 2, 1, 0] = bad
        for channel_pads in ((1, 0), (0, 0)):  # (0, 0): copied and checked all the same
            assert not layout.pad_channels(x, data_format, ((0, 0), (0, 0)), channel_pads,
                                           np.dtype(np.float32))[1]
    x[1, 2, 1, 0] = value
    got, finite = layout.pad_channels(x, data_format, ((1, 0), (0, 2)), (0, 0),
                                      np.dtype(np.float32))
    np.testing.assert_array_equal(got, want[..., 3:-5])
    assert finite


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("pads", [((0, 0), (0, 0)), ((1, 2), (0, 3)), ((2, 0), (1, 1))])
@pytest.mark.parametrize("kernel_format", ["channels_last", "channels_first"])
def test_prepare_input_pads_and_reorders(data_format, pads, kernel_format):
    if data_format == "channels_last" and kernel_format == "channels_first":
        pytest.skip("only channels_first data is ever reordered")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 4))  # read in data_format's order
    got = layout.prepare_input(x, data_format, kernel_format, pads, np.dtype(np.float32))
    spatial = (1, 2) if data_format == "channels_last" else (2, 3)
    widths = [(0, 0)] * 4
    widths[spatial[0]], widths[spatial[1]] = pads
    want = np.pad(x.astype(np.float32), widths)
    if data_format != kernel_format:
        want = want.transpose(0, 2, 3, 1)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, want)


def test_prepare_input_copies_read_only_arrays_only_when_needed():
    x = np.zeros((1, 3, 3, 2), np.float64)
    same = layout.prepare_input(x, "channels_last", "channels_last", ((0, 0), (0, 0)),
                                np.dtype(np.float64))
    assert same is x
    x.flags.writeable = False
    copy = layout.prepare_input(x, "channels_last", "channels_last", ((0, 0), (0, 0)),
                                np.dtype(np.float64))
    assert copy is not x and copy.flags.writeable
    np.testing.assert_array_equal(copy, x)


def test_to_channels_first_is_a_transpose():
    y = np.random.default_rng(3).standard_normal((2, 17, 19, 35)).astype(np.float32)
    np.testing.assert_array_equal(layout.to_channels_first(y), y.transpose(0, 3, 1, 2))


# Heights 1-9 in the generic tier; the specialized one (the same task code, compiled per
# geometry) samples them.
_ROW_PAIR_CASES = ([(height, strides, dilation, "never") for height in range(1, 10)
                    for strides, dilation in ((1, 1), (2, 1), (1, 2), (3, 1))]
                   + [(height, strides, 1, "always") for height in (5, 6, 7) for strides in (1, 2)])


@pytest.mark.parametrize("height, strides, dilation, tier",
                         sample(_ROW_PAIR_CASES, lambda case: case[3] == "never" or case[1] == 1),
                         indirect=["tier"])
def test_depthwise_row_pairs(height, strides, dilation, tier):
    # Rows whose windows stay inside the input run in pairs from the first such row; heights
    # 1-9 give none, an unpaired last row, or only pairs, with clipped rows above and below.
    rng = np.random.default_rng(height * 100 + strides * 10 + dilation)
    x = rng.standard_normal((2, height, 11, 32))
    kernel = rng.standard_normal((3, 3, 1, 32))
    bias = rng.standard_normal(32)
    for padding, extra_rows in (("same", None), ("valid", 0), (((2, 0), (0, 1)), 2)):
        if extra_rows is not None and height + extra_rows <= 2 * dilation:
            continue  # the window does not fit
        _check(x, kernel, strides, padding, dilation, bias, None)
