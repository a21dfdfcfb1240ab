"""Tests aimed at the structure of the CPU loop nests and the copies around them.

Each nest splits an output row into full tiles (overlapping at the end) and
border pixels, and the layout copies pad and reorder; these tests sweep the
sizes around those splits, against the NumPy reference in ``reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import numbaconv
from numbaconv import dispatch
from numbaconv.cpu import layout
from reference import reference_conv2d, reference_pads

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


@pytest.mark.parametrize("width", range(1, 14))
@pytest.mark.parametrize("strides, dilation", [(1, 1), (2, 1), (1, 2), (3, 1)])
@pytest.mark.parametrize("channels, multiplier", [(5, 1), (32, 1), (3, 2)])
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
    _check(x, kernel, strides, "same", dilation, bias, None, "channels_first")


@pytest.mark.parametrize("width", [3, 4, 5, 7, 9, 12])
@pytest.mark.parametrize("filters", [3, 64, 70])
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
