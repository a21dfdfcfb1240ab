"""Tests of the functional op ``numbaconv.conv2d`` against an independent NumPy reference.

Nothing here compares the implementation with a stored output of itself: the
ground truth is ``tests/reference.py`` (plain NumPy, float64), hand-computed
values, and optionally Keras (JAX backend) and PyTorch.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv import dispatch
from reference import (
    reference_conv2d,
    reference_conv2d_naive,
    reference_output_size,
    reference_pads,
    reference_same_pads,
)
from sampling import sample

F64_TOL = dict(rtol=1e-10, atol=1e-12)
F32_TOL = dict(rtol=5e-4, atol=1e-6)
LAYOUTS = ("channels_last", "channels_first")


# --------------------------------------------------------------------------- helpers


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def make_data(seed, batch, h, w, channels, kernel_shape, dtype, data_format="channels_last"):
    """Deterministic input (in ``data_format``) and kernel, scaled so outputs are O(1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(batch, h, w, channels))
    fan_in = kernel_shape[0] * kernel_shape[1] * kernel_shape[2]
    k = rng.uniform(-1.0, 1.0, size=kernel_shape) / math.sqrt(fan_in)
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=dtype), np.ascontiguousarray(k, dtype=dtype)


def expected(x, kernel, strides=1, padding="valid", dilation=1, data_format="channels_last",
             bias=None):
    """Reference result (float64) for user-level arguments."""
    x = np.asarray(x)
    strides, dilation = _pair(strides), _pair(dilation)
    hw = x.shape[1:3] if data_format == "channels_last" else x.shape[2:4]
    pads = reference_pads(padding, hw, np.shape(kernel)[:2], strides, dilation)
    return reference_conv2d(x, kernel, strides, pads, dilation, data_format, bias)


def assert_matches(out, ref, dtype):
    """Shape, dtype and values of ``out`` against a float64 reference."""
    dtype = np.dtype(dtype)
    assert isinstance(out, np.ndarray)
    assert out.shape == ref.shape
    assert out.dtype == dtype
    tol = F64_TOL if dtype == np.float64 else F32_TOL
    np.testing.assert_allclose(out.astype(np.float64), ref, **tol)


@pytest.fixture
def specialization():
    """Set a specialization policy for one test, restoring the previous one."""
    previous = dispatch.get_specialization()

    def set_policy(policy):
        dispatch.set_specialization(policy)

    yield set_policy
    dispatch.set_specialization(previous)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty ``$KERAS_HOME``: ``write(fmt)`` creates keras.json there."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def write(**config):
        (tmp_path / "keras.json").write_text(json.dumps(config))

    return write


# --------------------------------------------------------------------------- the reference itself


def test_reference_matches_scalar_loops():
    """The einsum reference agrees with a scalar-loop version on random geometries."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        d = tuple(int(v) for v in rng.integers(1, 4, 2))
        groups, cin, cout = (int(v) for v in rng.integers(1, 4, 3))
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        pads = tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2))
        x = rng.standard_normal((2, h, w, groups * cin))
        k = rng.standard_normal((kh, kw, cin, groups * cout))
        a = reference_conv2d(x, k, s, pads, d)
        b = reference_conv2d_naive(x, k, s, pads, d)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "size, k, s, d, pads",
    [
        (5, 3, 1, 1, (1, 1)),
        (6, 3, 2, 1, (0, 1)),
        (4, 2, 1, 1, (0, 1)),
        (7, 3, 1, 2, (2, 2)),
        (1, 7, 1, 1, (3, 3)),
        (5, 1, 1, 1, (0, 0)),
        (10, 3, 3, 1, (1, 1)),
        (8, 4, 2, 1, (1, 1)),
        (8, 3, 2, 1, (0, 1)),
        (2, 5, 3, 1, (1, 2)),
        (9, 1, 3, 1, (0, 0)),
        (6, 2, 2, 1, (0, 0)),
        (3, 3, 2, 3, (3, 3)),
    ],
)
def test_reference_same_pads_hand_values(size, k, s, d, pads):
    assert reference_same_pads(size, k, s, d) == pads
    out = reference_output_size(size, k, s, d, pads)
    assert out == -(-size // s)


# --------------------------------------------------------------------------- the grid

KERNELS = [(1, 1), (2, 2), (3, 3), (1, 3), (3, 1), (2, 5), (4, 3), (5, 5), (6, 6), (7, 7)]
STRIDES = [(1, 1), (2, 2), (1, 2), (3, 3), (2, 1), (1, 1), (3, 1), (2, 3)]
DILATIONS = [(1, 1), (2, 2), (1, 1), (1, 3), (3, 3), (2, 1), (1, 2)]
# (name, in_channels, kernel.shape[2], filters)
GROUPINGS = [("g1", 3, 3, 4), ("g2", 4, 2, 6), ("dw1", 3, 1, 3), ("dw2", 3, 1, 6)]
SIZES = [5, 6, 7, 8, 9, 10, 11]
BATCHES = [1, 2, 1, 0, 1, 2, 1]


def _build_grid():
    """Every kernel x grouping x layout x dtype x padding, other factors rotated.

    Strides, dilations, sizes and batch sizes are assigned by a seeded shuffle
    so that each value meets every layout/grouping/padding many times; a few
    "same" cases get an input smaller than the kernel.  Deterministic.
    """
    rng = random.Random(20240531)
    cases = []
    for i, (kernel, grouping, layout, dtype, padding) in enumerate(itertools.product(
            KERNELS, GROUPINGS, LAYOUTS, ("float32", "float64"), ("valid", "same"))):
        stride = STRIDES[rng.randrange(len(STRIDES))]
        dilation = DILATIONS[rng.randrange(len(DILATIONS))]
        h, w = rng.choice(SIZES), rng.choice(SIZES)
        batch = BATCHES[i % len(BATCHES)]
        extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        if padding == "valid":
            # keep the output non-empty: grow the input past the dilated kernel
            h = h if h >= extent[0] else extent[0] + h % 3
            w = w if w >= extent[1] else extent[1] + w % 3
        elif i % 5 == 0 and max(kernel) > 1:
            # input smaller than the (dilated) kernel
            h = max(1, min(h, extent[0] - 1))
            w = max(1, min(w, extent[1] - 1)) if i % 3 else w
        cases.append((kernel, stride, dilation, grouping, layout, dtype, padding, (h, w), batch))
    return cases


GRID = _build_grid()


def _grid_id(case):
    kernel, stride, dilation, grouping, layout, dtype, padding, hw, batch = case
    return (f"k{kernel[0]}x{kernel[1]}-s{stride[0]}{stride[1]}-d{dilation[0]}{dilation[1]}-"
            f"{grouping[0]}-{'nhwc' if layout == 'channels_last' else 'nchw'}-{dtype}-{padding}-"
            f"{hw[0]}x{hw[1]}-n{batch}")


def test_grid_covers_the_brief():
    kinds = {c[3][0] for c in GRID}
    assert kinds == {"g1", "g2", "dw1", "dw2"}
    assert {c[1] for c in GRID} == set(STRIDES)
    assert {c[2] for c in GRID} == set(DILATIONS)
    assert {c[8] for c in GRID} == {0, 1, 2}
    assert any(c[6] == "same" and (c[7][0] < (c[0][0] - 1) * c[2][0] + 1) for c in GRID)
    assert any(c[1] != (1, 1) and c[2] != (1, 1) for c in GRID)
    assert {c[7][0] % 2 for c in GRID} == {0, 1}


@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_grid_against_reference(case):
    kernel, stride, dilation, (_, channels, kch, filters), layout, dtype, padding, (h, w), batch = case
    seed = GRID.index(case)
    x, k = make_data(seed, batch, h, w, channels, (*kernel, kch, filters), dtype, layout)
    out = numbaconv.conv2d(x, k, strides=stride, padding=padding, data_format=layout,
                           dilation_rate=dilation)
    ref = expected(x, k, stride, padding, dilation, layout)
    oh = -(-h // stride[0]) if padding == "same" else (h - (kernel[0] - 1) * dilation[0] - 1) // stride[0] + 1
    ow = -(-w // stride[1]) if padding == "same" else (w - (kernel[1] - 1) * dilation[1] - 1) // stride[1] + 1
    shape = (batch, oh, ow, filters) if layout == "channels_last" else (batch, filters, oh, ow)
    assert ref.shape == shape
    assert_matches(out, ref, dtype)


# A small subset run on the specialized tier (geometry compiled in): ~1 s each.
# (kernel, strides, dilation, grouping, layout, dtype, padding, (h, w), batch, activation)
SPECIALIZED = [
    ((3, 3), (1, 1), (1, 1), GROUPINGS[0], "channels_last", "float32", "same", (8, 8), 2, None),
    ((3, 3), (1, 1), (1, 1), GROUPINGS[0], "channels_first", "float32", "same", (8, 8), 2, None),
    ((3, 3), (2, 2), (1, 1), GROUPINGS[0], "channels_last", "float64", "same", (9, 10), 1, "relu"),
    ((3, 3), (2, 2), (1, 1), GROUPINGS[0], "channels_first", "float64", "same", (10, 9), 1, "relu"),
    ((1, 1), (1, 1), (1, 1), GROUPINGS[0], "channels_last", "float64", "valid", (5, 6), 2, None),
    ((1, 1), (2, 1), (1, 1), GROUPINGS[1], "channels_first", "float32", "valid", (7, 6), 1, None),
    ((5, 5), (1, 1), (1, 1), GROUPINGS[0], "channels_last", "float32", "valid", (9, 9), 1, "relu"),
    ((2, 5), (1, 2), (2, 1), GROUPINGS[1], "channels_last", "float64", "same", (7, 8), 1, None),
    ((2, 5), (1, 2), (2, 1), GROUPINGS[1], "channels_first", "float64", "same", (7, 8), 1, None),
    ((3, 3), (1, 1), (2, 2), GROUPINGS[2], "channels_last", "float32", "same", (9, 8), 2, None),
    ((3, 3), (1, 1), (2, 2), GROUPINGS[2], "channels_first", "float32", "same", (9, 8), 2, "relu"),
    ((3, 3), (2, 2), (1, 1), GROUPINGS[3], "channels_last", "float64", "valid", (11, 10), 1, "relu"),
    ((3, 3), (2, 2), (1, 1), GROUPINGS[3], "channels_first", "float64", "valid", (11, 10), 1, None),
    ((7, 7), (2, 2), (1, 1), GROUPINGS[0], "channels_last", "float32", "same", (11, 11), 1, None),
    ((7, 7), (3, 3), (1, 1), GROUPINGS[0], "channels_first", "float64", "same", (10, 10), 1, None),
    ((3, 1), (3, 1), (1, 3), GROUPINGS[0], "channels_last", "float64", "same", (10, 7), 1, None),
    ((1, 3), (1, 3), (3, 1), GROUPINGS[3], "channels_first", "float32", "same", (6, 10), 1, None),
    ((4, 3), (2, 3), (2, 2), GROUPINGS[1], "channels_last", "float32", "valid", (11, 11), 2, "relu"),
    ((4, 3), (2, 3), (2, 2), GROUPINGS[1], "channels_first", "float32", "valid", (11, 11), 2, None),
    ((6, 6), (1, 1), (1, 1), GROUPINGS[2], "channels_last", "float64", "same", (4, 5), 1, None),
    ((2, 2), (2, 2), (1, 1), GROUPINGS[0], "channels_first", "float64", "same", (8, 7), 1, "relu"),
    ((5, 5), (3, 2), (2, 3), GROUPINGS[3], "channels_last", "float32", "same", (11, 9), 1, None),
    ((3, 3), (1, 1), (1, 1), GROUPINGS[1], "channels_last", "float64", ((2, 0), (1, 3)), (6, 6), 1, None),
    ((3, 3), (1, 1), (1, 1), GROUPINGS[1], "channels_first", "float64", ((0, 2), (3, 1)), (6, 6), 1, None),
]


@pytest.mark.parametrize("case", sample(SPECIALIZED, lambda case: SPECIALIZED.index(case) % 2 == 0,
                                         single=True),
                         ids=[_grid_id(c[:9]) + f"-{c[9]}" for c in SPECIALIZED])
def test_specialized_tier_against_reference(case, specialization):
    kernel, stride, dilation, (_, channels, kch, filters), layout, dtype, padding, (h, w), batch, act = case
    specialization("always")
    x, k = make_data(1000 + SPECIALIZED.index(case), batch, h, w, channels,
                     (*kernel, kch, filters), dtype, layout)
    bias = np.linspace(-0.5, 0.5, filters).astype(dtype)
    out = numbaconv.conv2d(x, k, strides=stride, padding=padding, data_format=layout,
                           dilation_rate=dilation, bias=bias, activation=act)
    ref = expected(x, k, stride, padding, dilation, layout, bias)
    if act == "relu":
        ref = np.maximum(ref, 0.0)
    assert_matches(out, ref, dtype)
    # the same call on the generic tier agrees with the reference too
    specialization("never")
    again = numbaconv.conv2d(x, k, strides=stride, padding=padding, data_format=layout,
                             dilation_rate=dilation, bias=bias, activation=act)
    assert_matches(again, ref, dtype)


def test_auto_specializes_repeated_large_call(specialization):
    """Under "auto" a repeated large call moves to the specialized tier; results stay right."""
    specialization("auto")
    x, k = make_data(5, 1, 48, 48, 16, (3, 3, 16, 32), "float32")
    ref = expected(x, k, 1, "same")
    first = numbaconv.conv2d(x, k, padding="same")
    second = numbaconv.conv2d(x, k, padding="same")
    third_before = numbaconv.kernel_cache_info()
    third = numbaconv.conv2d(x, k, padding="same")
    third_after = numbaconv.kernel_cache_info()
    for out in (first, second, third):
        assert_matches(out, ref, "float32")
    assert third_after.entries == third_before.entries
    assert third_after.misses == third_before.misses
    assert third_after.hits > third_before.hits


# --------------------------------------------------------------------------- kernel cache


@pytest.mark.parametrize("policy", ["auto", "never", "always"])
def test_repeated_call_is_cache_hit(policy, specialization):
    specialization(policy)
    x, k = make_data(3, 1, 7, 6, 4, (3, 2, 2, 4), "float64")
    kwargs = dict(strides=(1, 2), padding="same", dilation_rate=(2, 1), data_format="channels_last")
    first = numbaconv.conv2d(x, k, **kwargs)
    before = numbaconv.kernel_cache_info()
    second = numbaconv.conv2d(x, k, **kwargs)
    after = numbaconv.kernel_cache_info()
    assert len(before) == 3 and tuple(after) == (after.hits, after.misses, after.entries)
    assert after.hits == before.hits + 1
    assert after.misses == before.misses
    assert after.entries == before.entries
    ref = expected(x, k, **{"strides": (1, 2), "padding": "same", "dilation": (2, 1)})
    assert_matches(first, ref, "float64")
    assert_matches(second, ref, "float64")


# --------------------------------------------------------------------------- hypothesis


@st.composite
def conv_configs(draw):
    layout = draw(st.sampled_from(LAYOUTS))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    groups, cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    batch = draw(st.integers(0, 2))
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same", "SAME", "Valid"]),
        st.integers(0, 3),
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                  st.tuples(st.integers(0, 3), st.integers(0, 3))),
    ))
    use_bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    strides_arg = strides if strides[0] != strides[1] or draw(st.booleans()) else strides[0]
    return dict(layout=layout, dtype=dtype, kernel=(kh, kw), strides=strides,
                strides_arg=strides_arg, dilation=dilation, groups=groups, cin_g=cin_g,
                cout_g=cout_g, hw=(h, w), batch=batch, padding=padding, use_bias=use_bias,
                seed=seed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(conv_configs())
def test_hypothesis_against_reference(cfg):
    kh, kw = cfg["kernel"]
    h, w = cfg["hw"]
    pads = reference_pads(cfg["padding"], (h, w), (kh, kw), cfg["strides"], cfg["dilation"])
    oh = reference_output_size(h, kh, cfg["strides"][0], cfg["dilation"][0], pads[0])
    ow = reference_output_size(w, kw, cfg["strides"][1], cfg["dilation"][1], pads[1])
    assume(oh > 0 and ow > 0)
    channels, filters = cfg["groups"] * cfg["cin_g"], cfg["groups"] * cfg["cout_g"]
    x, k = make_data(cfg["seed"], cfg["batch"], h, w, channels, (kh, kw, cfg["cin_g"], filters),
                     cfg["dtype"], cfg["layout"])
    bias = (np.random.default_rng(cfg["seed"]).standard_normal(filters).astype(cfg["dtype"])
            if cfg["use_bias"] else None)
    out = numbaconv.conv2d(x, k, strides=cfg["strides_arg"], padding=cfg["padding"],
                           data_format=cfg["layout"], dilation_rate=cfg["dilation"], bias=bias)
    ref = reference_conv2d(x, k, cfg["strides"], pads, cfg["dilation"], cfg["layout"], bias)
    assert_matches(out, ref, cfg["dtype"])


# --------------------------------------------------------------------------- padding rule


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size, k, s, d", [
    (5, 3, 1, 1), (6, 3, 2, 1), (6, 2, 1, 1), (7, 4, 2, 1), (8, 3, 2, 2), (9, 5, 3, 1),
    (4, 7, 1, 1), (10, 2, 3, 2), (3, 3, 3, 3), (1, 4, 2, 1),
])
def test_same_equals_explicit_reference_pads(size, k, s, d, layout):
    w_size = size + 1
    pads = (reference_same_pads(size, k, s, d), reference_same_pads(w_size, k, s, d))
    x, kern = make_data(size * 31 + k, 1, size, w_size, 2, (k, k, 2, 3), "float64", layout)
    same = numbaconv.conv2d(x, kern, strides=s, padding="same", dilation_rate=d, data_format=layout)
    explicit = numbaconv.conv2d(x, kern, strides=s, padding=pads, dilation_rate=d,
                                data_format=layout)
    ref = reference_conv2d(x, kern, (s, s), pads, (d, d), layout)
    assert_matches(same, ref, "float64")
    assert_matches(explicit, ref, "float64")
    np.testing.assert_allclose(same, explicit, rtol=1e-13, atol=1e-14)
    hw = same.shape[1:3] if layout == "channels_last" else same.shape[2:4]
    assert hw == (-(-size // s), -(-w_size // s))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_even_kernel_pads_bottom_right(layout):
    """2x2 ones kernel, "same", stride 1: pads (0, 1) — the extra row/column is after."""
    img = np.arange(1.0, 17.0).reshape(4, 4) ** 1.5  # distinct values
    x = img[None, :, :, None] if layout == "channels_last" else img[None, None]
    out = numbaconv.conv2d(x, np.ones((2, 2, 1, 1)), padding="same", data_format=layout)
    o = out[0, :, :, 0] if layout == "channels_last" else out[0, 0]
    assert o.shape == (4, 4)
    # window (0, 0) covers rows 0-1, cols 0-1 (with top/left padding it would be img[0, 0] alone)
    np.testing.assert_allclose(o[0, 0], img[:2, :2].sum(), rtol=1e-13)
    # the last window covers only the bottom-right pixel plus padding
    np.testing.assert_allclose(o[3, 3], img[3, 3], rtol=1e-13)
    np.testing.assert_allclose(o[3, 0], img[3, 0] + img[3, 1], rtol=1e-13)
    np.testing.assert_allclose(o[0, 3], img[0, 3] + img[1, 3], rtol=1e-13)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_stride2_even_size_pads_bottom_right(layout):
    """size 6, k 3, stride 2: total pad 1, after the input; output 3x3."""
    img = np.arange(36.0).reshape(6, 6) ** 1.3
    x = img[None, :, :, None] if layout == "channels_last" else img[None, None]
    out = numbaconv.conv2d(x, np.ones((3, 3, 1, 1)), strides=2, padding="same", data_format=layout)
    o = out[0, :, :, 0] if layout == "channels_last" else out[0, 0]
    assert o.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(o[i, j], img[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum(),
                                       rtol=1e-13)


@pytest.mark.parametrize("padding, pads", [
    (1, ((1, 1), (1, 1))),
    ((2, 0), ((2, 2), (0, 0))),
    ((0, 3), ((0, 0), (3, 3))),
    (((1, 0), (0, 2)), ((1, 0), (0, 2))),
    (((0, 3), (2, 1)), ((0, 3), (2, 1))),
    ([[2, 1], [1, 2]], ((2, 1), (1, 2))),
    (0, ((0, 0), (0, 0))),
])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_explicit_padding_forms(padding, pads, layout):
    x, k = make_data(11, 2, 6, 5, 2, (3, 2, 2, 3), "float64", layout)
    out = numbaconv.conv2d(x, k, strides=(1, 2), padding=padding, data_format=layout)
    assert_matches(out, reference_conv2d(x, k, (1, 2), pads, (1, 1), layout), "float64")


@pytest.mark.parametrize("padding", ["same", "SAME", "Same", "valid", "VALID", "vAlId"])
def test_padding_case_insensitive(padding):
    x, k = make_data(12, 1, 7, 6, 2, (3, 3, 2, 2), "float64")
    out = numbaconv.conv2d(x, k, strides=2, padding=padding, data_format="channels_last")
    assert_matches(out, expected(x, k, 2, padding.lower()), "float64")


# --------------------------------------------------------------------------- layouts, bias, activations


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel_shape, channels", [((3, 3, 3, 5), 3), ((2, 4, 2, 4), 4),
                                                    ((3, 3, 1, 6), 3)])
def test_layouts_agree(kernel_shape, channels, dtype):
    x, k = make_data(21, 2, 9, 8, channels, kernel_shape, dtype)
    kwargs = dict(strides=(2, 1), padding="same", dilation_rate=(1, 2))
    last = numbaconv.conv2d(x, k, data_format="channels_last", **kwargs)
    first = numbaconv.conv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), k,
                             data_format="channels_first", **kwargs)
    assert first.shape == (last.shape[0], last.shape[3], last.shape[1], last.shape[2])
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.transpose(0, 2, 3, 1), last, **tol)
    assert_matches(last, expected(x, k, (2, 1), "same", (1, 2)), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_added_per_channel(layout, dtype):
    x, k = make_data(22, 2, 6, 7, 4, (3, 3, 2, 6), dtype, layout)
    bias = np.array([10.0, -20.0, 0.5, 0.0, 3.0, -1.25], dtype=dtype)
    plain = numbaconv.conv2d(x, k, padding="same", data_format=layout)
    with_bias = numbaconv.conv2d(x, k, padding="same", data_format=layout, bias=bias)
    shape = (1, 1, 1, 6) if layout == "channels_last" else (1, 6, 1, 1)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(with_bias - plain, np.broadcast_to(bias.reshape(shape), plain.shape),
                               **tol)
    assert_matches(with_bias, expected(x, k, 1, "same", 1, layout, bias), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_relu_matches_unfused(layout, dtype):
    x, k = make_data(23, 2, 8, 7, 3, (3, 3, 3, 4), dtype, layout)
    bias = np.array([0.3, -0.3, 0.0, 1.0], dtype=dtype)  # bias moves the sign
    ref = expected(x, k, 1, "same", 1, layout, bias)
    assert (ref > 0).any() and (ref < 0).any()
    fused = numbaconv.conv2d(x, k, padding="same", data_format=layout, bias=bias, activation="relu")
    unfused = numbaconv.conv2d(x, k, padding="same", data_format=layout, bias=bias,
                               activation=lambda t: np.maximum(t, 0))
    linear = numbaconv.conv2d(x, k, padding="same", data_format=layout, bias=bias)
    assert_matches(fused, np.maximum(ref, 0), dtype)
    assert_matches(unfused, np.maximum(ref, 0), dtype)
    assert_matches(linear, ref, dtype)
    assert (fused >= 0).all()
    np.testing.assert_array_equal(fused, np.maximum(linear, 0))


def _softmax_last(t):
    e = np.exp(t - t.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


NUMPY_ACTIVATIONS = {
    None: lambda t: t,
    "linear": lambda t: t,
    "relu": lambda t: np.maximum(t, 0),
    "sigmoid": lambda t: 1 / (1 + np.exp(-t)),
    "tanh": np.tanh,
    "softmax": _softmax_last,
    "elu": lambda t: np.where(t > 0, t, np.expm1(t)),
    "softplus": lambda t: np.log1p(np.exp(t)),
    "softsign": lambda t: t / (1 + np.abs(t)),
    "relu6": lambda t: np.clip(t, 0, 6),
    "silu": lambda t: t / (1 + np.exp(-t)),
    "swish": lambda t: t / (1 + np.exp(-t)),
    "exponential": np.exp,
    "selu": lambda t: 1.0507009873554805 * np.where(t > 0, t, 1.6732632423543772 * np.expm1(t)),
    "leaky_relu": lambda t: np.where(t > 0, t, 0.2 * t),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(NUMPY_ACTIVATIONS), ids=str)
def test_activations_after_bias(name, layout):
    x, k = make_data(24, 2, 6, 5, 2, (2, 3, 2, 3), "float64", layout)
    x = 3 * x
    bias = np.array([1.5, -2.0, 0.25])
    out = numbaconv.conv2d(x, k, padding="same", data_format=layout, bias=bias, activation=name)
    ref = NUMPY_ACTIVATIONS[name](expected(x, k, 1, "same", 1, layout, bias))
    assert out.shape == ref.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_softmax_over_last_axis(layout):
    """Softmax normalizes the LAST axis (channels for NHWC, width for NCHW), as Keras does."""
    x, k = make_data(25, 1, 5, 6, 2, (3, 3, 2, 4), "float32", layout)
    out = numbaconv.conv2d(x, k, padding="same", data_format=layout, activation="softmax")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)
    assert not np.allclose(out.sum(axis=1), 1.0)
    ref = _softmax_last(expected(x, k, 1, "same", 1, layout))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "elu", "selu", "silu", "tanh", "softmax",
                                  "log_softmax", "gelu", "mish", "relu", "softsign", "relu6"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_activations_on_large_outputs_are_finite_and_warning_free(name, layout):
    """Outputs of magnitude ~1e3 must not overflow (pytest turns NumPy warnings into errors)."""
    x, k = make_data(28, 1, 5, 5, 2, (3, 3, 2, 3), "float32", layout)
    x = np.sign(x) * 3000.0
    out = numbaconv.conv2d(x, k, padding="same", data_format=layout, activation=name)
    ref = expected(x, k, 1, "same", 1, layout)
    assert np.abs(ref).max() > 200
    assert out.dtype == np.float32 and np.isfinite(out).all()
    if name in ("sigmoid",):
        with np.errstate(over="ignore"):
            np.testing.assert_allclose(out, 1 / (1 + np.exp(-ref)), rtol=1e-4, atol=1e-6)
    if name in ("softplus",):
        np.testing.assert_allclose(out, np.logaddexp(0, ref), rtol=1e-4, atol=1e-6)
    if name in ("softmax",):
        np.testing.assert_allclose(out, _softmax_last(ref), rtol=1e-4, atol=1e-6)


def test_callable_activation_receives_biased_output():
    seen = {}

    def act(t):
        seen["arg"] = np.array(t, copy=True)
        return 2 * t - 1

    x, k = make_data(26, 1, 5, 5, 1, (3, 3, 1, 2), "float64")
    bias = np.array([5.0, -5.0])
    out = numbaconv.conv2d(x, k, bias=bias, activation=act, data_format="channels_last")
    ref = expected(x, k, bias=bias)
    np.testing.assert_allclose(seen["arg"], ref, **F64_TOL)
    np.testing.assert_allclose(out, 2 * ref - 1, **F64_TOL)
    assert out.dtype == np.float64


def test_unknown_activation_raises():
    x, k = make_data(27, 1, 5, 5, 1, (3, 3, 1, 1), "float32")
    with pytest.raises(ValueError):
        numbaconv.conv2d(x, k, activation="no_such_activation", data_format="channels_last")


# --------------------------------------------------------------------------- data_format default


@pytest.mark.parametrize("config, layout", [
    ({"image_data_format": "channels_first"}, "channels_first"),
    ({"image_data_format": "channels_last"}, "channels_last"),
    ({"floatx": "float32"}, "channels_last"),
    (None, "channels_last"),
])
def test_default_data_format_from_keras_json(keras_home, config, layout):
    if config is not None:
        keras_home(**config)
    # (1, 4, 6, 2): channels_first -> C=4, 2 groups; channels_last -> C=2, 1 group
    x = np.random.default_rng(31).uniform(-1, 1, (1, 4, 6, 2))
    k = np.random.default_rng(32).uniform(-1, 1, (3, 3, 2, 4))
    out = numbaconv.conv2d(x, k, padding="same")
    assert_matches(out, expected(x, k, 1, "same", 1, layout), "float64")


def test_default_data_format_follows_file_changes(keras_home):
    x = np.random.default_rng(33).uniform(-1, 1, (1, 4, 6, 2))
    k = np.random.default_rng(34).uniform(-1, 1, (3, 3, 2, 4))
    keras_home(image_data_format="channels_first")
    assert_matches(numbaconv.conv2d(x, k, padding="same"),
                   expected(x, k, 1, "same", 1, "channels_first"), "float64")
    keras_home(image_data_format="channels_last")
    assert_matches(numbaconv.conv2d(x, k, padding="same"),
                   expected(x, k, 1, "same", 1, "channels_last"), "float64")


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("x_dtype, k_dtype, b_dtype, result", [
    ("float32", "float32", None, "float32"),
    ("float64", "float64", None, "float64"),
    ("float32", "float64", None, "float64"),
    ("float64", "float32", None, "float64"),
    ("float32", "float32", "float64", "float64"),
    ("float32", "float32", "float32", "float32"),
    ("int32", "float32", None, "float32"),
    ("int64", "int64", None, "float32"),
    ("uint8", "int16", None, "float32"),
    ("bool", "float32", None, "float32"),
    ("bool", "bool", None, "float32"),
    ("int32", "float64", None, "float64"),
    ("float16", "float16", None, "float16"),
    ("float16", "float32", None, "float32"),
    ("float16", "float16", "float16", "float16"),
])
def test_result_dtype(x_dtype, k_dtype, b_dtype, result):
    rng = np.random.default_rng(41)
    x = rng.integers(0, 3, (2, 6, 5, 2)).astype(x_dtype)  # small ints: exact in every dtype
    k = rng.integers(-1, 2, (3, 2, 2, 3)).astype(k_dtype)
    bias = None if b_dtype is None else np.array([1, -2, 0]).astype(b_dtype)
    out = numbaconv.conv2d(x, k, padding="same", bias=bias, data_format="channels_last")
    assert out.dtype == np.dtype(result)
    ref = expected(x.astype(np.float64), k.astype(np.float64), 1, "same", bias=bias)
    np.testing.assert_array_equal(out.astype(np.float64), ref)


def test_float16_computes_in_float32():
    """2048 + 1 + 1 is 2048 in float16 arithmetic but 2050 (exact in float16) in float32."""
    x = np.array([2048.0, 1.0, 1.0], dtype=np.float16).reshape(1, 1, 3, 1)
    k = np.ones((1, 3, 1, 1), dtype=np.float16)
    out = numbaconv.conv2d(x, k, data_format="channels_last")
    assert out.dtype == np.float16
    assert out.shape == (1, 1, 1, 1)
    assert float(out[0, 0, 0, 0]) == 2050.0


def test_float16_random_values():
    x, k = make_data(42, 2, 7, 6, 3, (3, 3, 3, 4), "float32")
    x16, k16 = x.astype(np.float16), k.astype(np.float16)
    out = numbaconv.conv2d(x16, k16, padding="same", data_format="channels_last")
    assert out.dtype == np.float16
    ref = expected(x16, k16, 1, "same")
    # one final rounding to float16 (plus float32 accumulation)
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("arg", ["inputs", "kernel"])
@pytest.mark.parametrize("bad", [
    lambda a: a.astype(np.complex128),
    lambda a: a.astype(np.complex64),
    lambda a: a.astype(object),
    lambda a: a.astype(str),
    lambda a: np.full(a.shape, "x"),
    lambda a: a.astype(np.int64).astype("timedelta64[s]"),
], ids=["complex128", "complex64", "object", "str", "str-const", "timedelta"])
def test_non_real_arrays_raise_type_error(arg, bad):
    x, k = make_data(43, 1, 5, 5, 1, (3, 3, 1, 1), "float64")
    args = {"inputs": x, "kernel": k}
    args[arg] = bad(args[arg])
    with pytest.raises(TypeError, match=arg):
        numbaconv.conv2d(args["inputs"], args["kernel"], data_format="channels_last")


def test_complex_bias_raises_type_error():
    x, k = make_data(44, 1, 5, 5, 1, (3, 3, 1, 2), "float64")
    with pytest.raises(TypeError, match="bias"):
        numbaconv.conv2d(x, k, bias=np.zeros(2, np.complex128), data_format="channels_last")


def test_ragged_list_raises_type_error():
    with pytest.raises(TypeError, match="inputs"):
        numbaconv.conv2d([[[[1.0]], [[1.0, 2.0]]]], np.ones((1, 1, 1, 1)),
                         data_format="channels_last")


# --------------------------------------------------------------------------- array kinds


def test_python_list_inputs():
    x, k = make_data(51, 1, 5, 4, 2, (2, 2, 2, 3), "float64")
    out = numbaconv.conv2d(x.tolist(), k.tolist(), bias=[0.5, 0.0, -0.5],
                           data_format="channels_last")
    assert out.dtype == np.float64  # Python floats are float64
    assert_matches(out, expected(x, k, bias=[0.5, 0.0, -0.5]), "float64")


def test_python_int_list_inputs_give_float32():
    x = [[[[1], [2], [3]], [[4], [5], [6]]]]  # (1, 2, 3, 1)
    out = numbaconv.conv2d(x, [[[[1]]], [[[2]]]], data_format="channels_last")  # (2, 1, 1, 1)
    assert out.dtype == np.float32
    assert out.shape == (1, 1, 3, 1)
    np.testing.assert_array_equal(out[0, :, :, 0], [[9.0, 12.0, 15.0]])


def _views(x):
    """Awkward views of ``x`` that hold the same values as ``x``."""
    n, h, w, c = x.shape
    big = np.zeros((n, 2 * h, 3 * w, 2 * c), dtype=x.dtype)
    big[:, ::2, ::3, ::2] = x
    yield "strided", big[:, ::2, ::3, ::2]
    yield "fortran", np.asfortranarray(x)
    flipped = np.ascontiguousarray(x[:, ::-1, ::-1, ::-1])
    yield "negative-stride", flipped[:, ::-1, ::-1, ::-1]
    ro = x.copy()
    ro.setflags(write=False)
    yield "read-only", ro
    yield "transposed", np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_awkward_array_views(layout, dtype):
    x, k = make_data(52, 1, 7, 6, 4, (3, 2, 2, 6), dtype, layout)
    bias = np.linspace(-1, 1, 6).astype(dtype)
    ref = expected(x, k, (2, 1), "same", (1, 2), layout, bias)
    kernel_views = dict(_views(k))
    bias_views = {"strided": np.repeat(bias, 2)[::2], "negative-stride": bias[::-1].copy()[::-1]}
    for name, xv in _views(x):
        np.testing.assert_array_equal(xv, x)
        kv = kernel_views[name]
        bv = bias_views.get(name, bias)
        out = numbaconv.conv2d(xv, kv, strides=(2, 1), padding="same", dilation_rate=(1, 2),
                               data_format=layout, bias=bv)
        assert_matches(out, ref, dtype)
        np.testing.assert_array_equal(xv, x)  # inputs untouched


@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_stride_broadcast_inputs(layout):
    x1, k = make_data(56, 1, 6, 7, 2, (2, 3, 2, 3), "float32", layout)
    x = np.broadcast_to(x1, (3, *x1.shape[1:]))  # batch axis has stride 0, read-only
    kb = np.broadcast_to(k[:, :, :1, :], k.shape)  # channel axis of the kernel has stride 0
    out = numbaconv.conv2d(x, kb, padding="same", data_format=layout)
    assert_matches(out, expected(np.array(x), np.array(kb), 1, "same", 1, layout), "float32")


def test_memmap_inputs(tmp_path):
    x, k = make_data(53, 2, 6, 6, 2, (3, 3, 2, 2), "float32")
    xm = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=x.shape)
    xm[:] = x
    xm.flush()
    ro = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="r", shape=x.shape)
    km = np.memmap(tmp_path / "k.dat", dtype=np.float32, mode="w+", shape=k.shape)
    km[:] = k
    out = numbaconv.conv2d(ro, km, strides=2, padding="same", data_format="channels_last")
    assert type(out) is np.ndarray
    assert_matches(out, expected(x, k, 2, "same"), "float32")
    del xm, ro, km


def test_does_not_modify_inputs():
    x, k = make_data(54, 2, 6, 6, 2, (3, 3, 2, 2), "float64")
    bias = np.array([1.0, -1.0])
    x0, k0, b0 = x.copy(), k.copy(), bias.copy()
    numbaconv.conv2d(x, k, bias=bias, padding="same", activation="relu", data_format="channels_last")
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(k, k0)
    np.testing.assert_array_equal(bias, b0)


def test_output_is_fresh_writeable_array():
    x, k = make_data(55, 1, 5, 5, 1, (1, 1, 1, 1), "float64")
    out = numbaconv.conv2d(x, k, data_format="channels_last")
    assert out.flags.writeable and not np.shares_memory(out, x) and not np.shares_memory(out, k)


# --------------------------------------------------------------------------- NaN / inf


NAN_CASES = [
    (1, 1, "same", (3, 4, 1)),
    (2, 1, "same", (3, 4, 1)),      # odd position skipped by some windows
    (2, 1, "valid", (1, 1, 0)),     # row/col 1 with stride 2, k 3: read by window 0 only
    (1, 2, "same", (0, 0, 3)),
    (3, 1, "valid", (6, 6, 2)),     # never read: last row/col beyond every window
    ((1, 2), (2, 1), "same", (5, 2, 0)),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("strides, dilation, padding, where", NAN_CASES)
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("per_group", [4, 2, 1])  # dense, 2 groups, depthwise nests
def test_nan_spreads_exactly_to_covering_windows(layout, strides, dilation, padding, where,
                                                 activation, per_group):
    check_nan_spreads(layout, strides, dilation, padding, where, activation, per_group)


# The specialized tier compiles once per case: the dense and the depthwise nest take four
# geometries each (each meets strides above 1 with both paddings, and dilation).
_SPECIALIZED_NAN_CASES = ([(*NAN_CASES[i], 4) for i in (0, 2, 4, 5)]
                          + [(*NAN_CASES[i], 1) for i in (1, 2, 3, 4)])


@pytest.mark.parametrize("strides, dilation, padding, where, per_group",
                         sample(_SPECIALIZED_NAN_CASES,
                                lambda case: _SPECIALIZED_NAN_CASES.index(case) % 2 == 0))
def test_nan_spreads_exactly_in_specialized_kernels(strides, dilation, padding, where,
                                                    per_group, specialization):
    # Tiles, border pixels and fused ReLU of the specialized dense and depthwise nests.
    specialization("always")
    check_nan_spreads("channels_last", strides, dilation, padding, where, "relu", per_group)


def check_nan_spreads(layout, strides, dilation, padding, where, activation, per_group):
    h, w, c = 7, 8, 4
    x, k = make_data(61, 2, h, w, c, (3, 3, per_group, 4), "float64")
    k = np.abs(k) + 0.1  # no zero weights
    r, col, ch = where
    x[1, r, col, ch] = np.nan
    indicator = np.zeros_like(x)
    indicator[1, r, col, ch] = 1.0
    if layout == "channels_first":
        x, indicator = x.transpose(0, 3, 1, 2).copy(), indicator.transpose(0, 3, 1, 2).copy()
    out = numbaconv.conv2d(x, k, strides=strides, padding=padding, dilation_rate=dilation,
                           data_format=layout, activation=activation)
    mask = expected(indicator, np.ones_like(k), strides, padding, dilation, layout) > 0
    np.testing.assert_array_equal(np.isnan(out), mask)  # relu(NaN) is NaN, as in Keras
    finite = expected(np.nan_to_num(x, nan=0.0), k, strides, padding, dilation, layout)
    if activation == "relu":
        finite = np.maximum(finite, 0.0)
    np.testing.assert_allclose(out[~mask], finite[~mask], **F64_TOL)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel_shape", [(3, 3, 2, 3), (3, 3, 1, 2)])  # dense, depthwise
@pytest.mark.parametrize("policy", ["never", "always"])
def test_inf_propagates(layout, dtype, kernel_shape, policy, specialization):
    specialization(policy)
    x, k = make_data(62, 1, 9, 10, 2, kernel_shape, "float64")
    k = np.abs(k) + 0.1
    x[0, 2, 3, 1] = np.inf
    indicator = np.zeros_like(x)
    indicator[0, 2, 3, 1] = 1.0
    if layout == "channels_first":
        x, indicator = x.transpose(0, 3, 1, 2).copy(), indicator.transpose(0, 3, 1, 2).copy()
    out = numbaconv.conv2d(x.astype(dtype), k.astype(dtype), strides=2, padding="same",
                           data_format=layout)
    mask = expected(indicator, np.ones_like(k), 2, "same", 1, layout) > 0
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(np.isposinf(out), mask)
    assert np.isfinite(out[~mask]).all()


# --------------------------------------------------------------------------- empty batch


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "float16"])
def test_empty_batch(layout, dtype):
    shape = (0, 7, 6, 4) if layout == "channels_last" else (0, 4, 7, 6)
    x = np.zeros(shape, dtype=dtype)
    k = np.ones((3, 2, 2, 6), dtype=dtype)
    out = numbaconv.conv2d(x, k, strides=2, padding="same", data_format=layout,
                           activation="relu", bias=np.zeros(6, dtype))
    want = (0, 4, 3, 6) if layout == "channels_last" else (0, 6, 4, 3)
    assert out.shape == want
    assert out.dtype == (np.float32 if dtype == "int32" else np.dtype(dtype))
    out = numbaconv.conv2d(x, k, padding="valid", data_format=layout)
    assert out.shape == ((0, 5, 5, 6) if layout == "channels_last" else (0, 6, 5, 5))


def test_empty_batch_still_validates():
    with pytest.raises(ValueError):
        numbaconv.conv2d(np.zeros((0, 2, 2, 1)), np.ones((3, 3, 1, 1)), padding="valid",
                         data_format="channels_last")
    with pytest.raises(ValueError):
        numbaconv.conv2d(np.zeros((0, 5, 5, 3)), np.ones((3, 3, 2, 1)), data_format="channels_last")


# --------------------------------------------------------------------------- validation


X = np.zeros((1, 6, 6, 4))
K = np.zeros((3, 3, 2, 4))


@pytest.mark.parametrize("inputs", [np.zeros((6, 6, 4)), np.zeros((1, 1, 6, 6, 4)), np.zeros(4),
                                    np.float64(1.0)], ids=["3d", "5d", "1d", "0d"])
def test_wrong_input_rank(inputs):
    with pytest.raises(ValueError, match="inputs"):
        numbaconv.conv2d(inputs, K, data_format="channels_last")


@pytest.mark.parametrize("kernel", [np.zeros((3, 3, 4)), np.zeros((1, 3, 3, 4, 4)),
                                    np.zeros((3, 3))], ids=["3d", "5d", "2d"])
def test_wrong_kernel_rank(kernel):
    with pytest.raises(ValueError, match="kernel"):
        numbaconv.conv2d(X, kernel, data_format="channels_last")


@pytest.mark.parametrize("layout, shape", [
    ("channels_last", (1, 0, 6, 4)), ("channels_last", (1, 6, 0, 4)),
    ("channels_first", (1, 4, 0, 6)), ("channels_first", (1, 4, 6, 0)),
    ("channels_last", (0, 0, 0, 4)),
])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_zero_height_or_width(layout, shape, padding):
    with pytest.raises(ValueError, match="inputs|height|width"):
        numbaconv.conv2d(np.zeros(shape), np.zeros((1, 1, 4, 2)), padding=padding,
                         data_format=layout)


@pytest.mark.parametrize("x_shape, k_shape", [
    ((1, 6, 6, 4), (3, 3, 3, 4)),   # 4 channels not a multiple of 3
    ((1, 6, 6, 4), (3, 3, 8, 4)),   # more kernel channels than inputs
    ((1, 6, 6, 4), (3, 3, 2, 3)),   # 2 groups, 3 filters
    ((1, 6, 6, 6), (3, 3, 1, 4)),   # depthwise, 6 groups, 4 filters
    ((1, 6, 6, 4), (3, 3, 0, 4)),   # zero kernel channels
    ((1, 6, 6, 4), (3, 3, 4, 0)),   # zero filters
    ((1, 6, 6, 0), (3, 3, 1, 1)),   # zero input channels
    ((1, 6, 6, 0), (3, 3, 2, 4)),   # zero input channels, 2 kernel channels
    ((1, 6, 6, 4), (0, 3, 4, 4)),   # zero kernel height
    ((1, 6, 6, 4), (3, 0, 4, 4)),   # zero kernel width
])
def test_channel_mismatch(x_shape, k_shape):
    with pytest.raises(ValueError):
        numbaconv.conv2d(np.zeros(x_shape), np.zeros(k_shape), data_format="channels_last")


def test_channel_mismatch_channels_first():
    # channels_first: C=3 matches kernel.shape[2]=3; channels_last: C=4 does not
    x = np.zeros((1, 3, 6, 4))
    k = np.zeros((3, 3, 3, 2))
    numbaconv.conv2d(x, k, padding="same", data_format="channels_first")
    with pytest.raises(ValueError):
        numbaconv.conv2d(x, k, padding="same", data_format="channels_last")


@pytest.mark.parametrize("k_shape, strides, dilation", [
    ((7, 3, 2, 4), 1, 1),
    ((3, 7, 2, 4), 1, 1),
    ((3, 3, 2, 4), 1, 3),      # dilated extent 7 > 6
    ((4, 1, 2, 4), 2, (2, 1)),
    ((1, 4, 2, 4), 1, (1, 2)),  # extent 7
])
def test_valid_output_nonpositive(k_shape, strides, dilation):
    with pytest.raises(ValueError):
        numbaconv.conv2d(X, np.zeros(k_shape), strides=strides, dilation_rate=dilation,
                         padding="valid", data_format="channels_last")
    # "same" is always fine
    out = numbaconv.conv2d(X, np.zeros(k_shape), strides=strides, dilation_rate=dilation,
                           padding="same", data_format="channels_last")
    assert out.shape[1:3] == tuple(-(-6 // s) for s in _pair(strides))


def test_valid_output_exactly_one():
    x, k = make_data(71, 1, 7, 5, 4, (4, 3, 2, 4), "float64")
    out = numbaconv.conv2d(x, k, dilation_rate=2, data_format="channels_last")
    assert_matches(out, expected(x, k, 1, "valid", 2), "float64")
    assert out.shape == (1, 1, 1, 4)


@pytest.mark.parametrize("padding", ["full", "causal", "", "same ", "valid_", None, 1.5, -1,
                                     (1, -1), ((1, 2), (3,)), ((1, 2), (3, 4), (5, 6)),
                                     ((1, 2, 3), (1, 2)), ("same", "same"), ((1.0, 2), (0, 0))],
                         ids=str)
def test_bad_padding(padding):
    with pytest.raises(ValueError, match="padding"):
        numbaconv.conv2d(X, K, padding=padding, data_format="channels_last")


@pytest.mark.parametrize("data_format", ["NHWC", "channels_middle", "", 3, "channels-last"],
                         ids=str)
def test_bad_data_format(data_format):
    with pytest.raises(ValueError, match="data_format"):
        numbaconv.conv2d(X, K, data_format=data_format)


BAD_TUPLES = [0, -1, (1, 0), (0, 1), (-2, 1), (1,), (1, 2, 3), 1.5, (1.0, 2), "2", None, (),
              ((1, 1), (1, 1))]


def test_validated_specs_are_remembered_for_plain_arguments_only():
    from numbaconv.spec import ConvSpec

    arguments = ((1, 5, 5, 2), (3, 3, 2, 4), (1, 1), "same", "channels_last", 1, "float32")
    first = ConvSpec.from_arguments(*arguments)
    assert ConvSpec.from_arguments(*arguments) is first
    # Equal values of other types are checked every time: (1.0, 1) == (1, 1) as a key.
    with pytest.raises(ValueError, match="strides"):
        ConvSpec.from_arguments(arguments[0], arguments[1], (1.0, 1), *arguments[3:])
    same = ConvSpec.from_arguments(arguments[0], arguments[1], (np.int64(1), 1), *arguments[3:])
    assert same == first


def test_spec_hashes_travel_as_their_fields():
    # A spec remembers its hash, but a pickled one is hashed again where it lands: string
    # hashes differ between processes (a stale hash would miss every cache there).
    import dataclasses
    import pickle
    import subprocess

    from numbaconv.spec import ConvSpec

    spec = ConvSpec.from_arguments((2, 4, 7, 9), (3, 3, 2, 8), 1, "same", "channels_first", 1,
                                   "float64")
    fields = tuple(getattr(spec, field.name) for field in dataclasses.fields(spec))
    assert hash(spec) == hash(fields) == hash(dataclasses.replace(spec))
    assert hash(dataclasses.replace(spec, batch=3)) != hash(spec)
    script = ("import pickle, sys, dataclasses\n"
              "spec = pickle.loads(sys.stdin.buffer.read())\n"
              "fields = tuple(getattr(spec, f.name) for f in dataclasses.fields(spec))\n"
              "print(hash(spec) == hash(fields))")
    result = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(spec),
                            capture_output=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": "random"})
    assert result.stdout.decode().strip() == "True"


@pytest.mark.parametrize("strides", BAD_TUPLES, ids=str)
def test_bad_strides(strides):
    with pytest.raises(ValueError, match="strides"):
        numbaconv.conv2d(X, K, strides=strides, data_format="channels_last")


@pytest.mark.parametrize("dilation", BAD_TUPLES, ids=str)
def test_bad_dilation(dilation):
    with pytest.raises(ValueError, match="dilation_rate"):
        numbaconv.conv2d(X, K, dilation_rate=dilation, data_format="channels_last")


@pytest.mark.parametrize("bias", [np.zeros(3), np.zeros(5), np.zeros((1, 4)), np.zeros((4, 1)),
                                  np.float64(0.0), np.zeros(0), [0.0] * 3],
                         ids=["3", "5", "1x4", "4x1", "scalar", "empty", "list3"])
def test_bad_bias_shape(bias):
    with pytest.raises(ValueError, match="bias"):
        numbaconv.conv2d(X, K, bias=bias, data_format="channels_last")


@pytest.mark.parametrize("strides, dilation, s, d", [
    (np.int64(2), np.int32(1), (2, 2), (1, 1)),
    ((np.int8(1), 2), [2, np.uint8(1)], (1, 2), (2, 1)),
    ([3, 2], np.array([1, 2]), (3, 2), (1, 2)),
])
def test_numpy_integer_geometry_accepted(strides, dilation, s, d):
    x, k = make_data(72, 1, 9, 8, 4, (3, 3, 2, 4), "float64")
    out = numbaconv.conv2d(x, k, strides=strides, dilation_rate=dilation, padding="same",
                           data_format="channels_last")
    assert_matches(out, expected(x, k, s, "same", d), "float64")


def test_public_names(specialization):
    from numbaconv.functional import conv2d

    assert numbaconv.conv2d is conv2d
    assert callable(numbaconv.kernel_cache_info)
    specialization("never")
    with pytest.raises(ValueError):
        dispatch.set_specialization("sometimes")
    assert dispatch.get_specialization() == "never"


# --------------------------------------------------------------------------- optional cross-checks


def _keras_jax():
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras was imported with another backend")
    return keras


KERAS_CASES = [
    # (x_shape in NHWC, kernel_shape, strides, padding, dilation, layout)
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, "same", 1, "channels_last"),
    ((2, 9, 8, 3), (3, 3, 3, 4), 2, "same", 1, "channels_first"),
    ((1, 10, 10, 4), (2, 2, 4, 3), 2, "same", 1, "channels_last"),
    ((1, 10, 11, 4), (3, 3, 2, 6), (2, 1), "same", (1, 2), "channels_last"),
    ((1, 10, 11, 4), (3, 3, 2, 6), (2, 1), "same", (1, 2), "channels_first"),
    ((1, 12, 12, 2), (3, 3, 2, 2), 2, "same", 2, "channels_last"),
    ((1, 12, 12, 2), (4, 4, 2, 2), 3, "same", 2, "channels_first"),
    ((2, 8, 9, 6), (3, 3, 1, 6), 1, "same", 1, "channels_last"),
    ((2, 8, 9, 6), (3, 3, 1, 12), 2, "valid", 1, "channels_first"),
    ((1, 7, 7, 3), (7, 7, 3, 2), 1, "same", 1, "channels_last"),
    ((1, 4, 5, 3), (5, 5, 3, 2), 2, "same", 1, "channels_first"),
    ((1, 11, 9, 6), (2, 5, 3, 4), (3, 2), "valid", (2, 1), "channels_last"),
    ((1, 6, 6, 2), (6, 6, 2, 2), 2, "same", 1, "channels_last"),
]


@pytest.mark.parametrize("case", KERAS_CASES, ids=str)
def test_against_keras_jax(case):
    keras = _keras_jax()
    x_shape, k_shape, strides, padding, dilation, layout = case
    x, k = make_data(81 + KERAS_CASES.index(case), *x_shape, k_shape, "float32", layout)
    want = np.asarray(keras.ops.conv(x, k, strides=strides, padding=padding,
                                     data_format=layout, dilation_rate=dilation))
    ref = expected(x, k, strides, padding, dilation, layout)
    np.testing.assert_allclose(want, ref, rtol=1e-4, atol=1e-5)  # the reference agrees with Keras
    out = numbaconv.conv2d(x, k, strides=strides, padding=padding, data_format=layout,
                           dilation_rate=dilation)
    assert out.shape == want.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax", "gelu", "selu", "elu",
                                  "softplus", "silu", "mish", "hard_sigmoid", "leaky_relu",
                                  "relu6", "log_softmax", "softsign", "exponential"])
def test_activations_against_keras_jax(name):
    keras = _keras_jax()
    x, k = make_data(99, 1, 6, 5, 2, (3, 3, 2, 3), "float32", "channels_first")
    x = 2 * x
    bias = np.array([0.5, -0.5, 0.1], np.float32)
    conv = keras.ops.conv(x, k, padding="same", data_format="channels_first")
    want = np.asarray(keras.activations.get(name)(conv + bias.reshape(1, 3, 1, 1)))
    out = numbaconv.conv2d(x, k, padding="same", data_format="channels_first", bias=bias,
                           activation=name)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-5)


def test_infinite_weight_on_padding_against_keras_jax():
    # 0 * inf = NaN where an infinite weight meets the zero padding, as in XLA.
    keras = _keras_jax()
    x = np.ones((1, 3, 3, 1), np.float32)
    k = np.ones((3, 3, 1, 1), np.float32)
    k[0, 0, 0, 0] = -np.inf
    want = np.asarray(keras.ops.conv(x, k, padding="same"))
    out = numbaconv.conv2d(x, k, padding="same", data_format="channels_last")
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("case", KERAS_CASES[:8], ids=str)
def test_against_torch(case):
    torch = pytest.importorskip("torch")
    x_shape, k_shape, strides, padding, dilation, layout = case
    x, k = make_data(90, *x_shape, k_shape, "float64", "channels_first")
    s, d = _pair(strides), _pair(dilation)
    pads = reference_pads(padding, x.shape[2:], k.shape[:2], s, d)
    xt = torch.nn.functional.pad(torch.from_numpy(x), (*pads[1], *pads[0]))
    groups = x.shape[1] // k.shape[2]
    want = torch.nn.functional.conv2d(xt, torch.from_numpy(k.transpose(3, 2, 0, 1).copy()),
                                      stride=s, dilation=d, groups=groups).numpy()
    out = numbaconv.conv2d(x, k, strides=strides, padding=padding, dilation_rate=dilation,
                           data_format="channels_first")
    assert_matches(out, want, "float64")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_nonfinite_weight_meets_zero_padding(data_format):
    x = np.ones((1, 4, 5, 2))
    k = np.ones((3, 3, 2, 2))
    k[0, 0, 1, 0] = np.inf
    k[2, 1, 0, 1] = np.nan
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    pads = (reference_same_pads(4, 3, 1, 1), reference_same_pads(5, 3, 1, 1))
    with np.errstate(invalid="ignore"):
        want = reference_conv2d(x, k, (1, 1), pads, (1, 1), data_format)
    out = numbaconv.conv2d(x, k, padding="same", data_format=data_format)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("filters", [16, 70])
def test_large_kernel_packed_and_checked_in_one_pass(data_format, filters, monkeypatch,
                                                     register_file):
    """Every one-group kernel takes the one-pass packing and check (as large ones do): the
    op, a layer (its packed form remembered until the weights change) and inf/NaN weights
    meeting the padding's zeros (the AVX-512 dense nest skips padding taps unless told)."""
    from numbaconv.cpu import layout

    monkeypatch.setattr(layout, "SMALL_KERNEL", 0)
    rng = np.random.default_rng(filters)
    x = rng.standard_normal((2, 40, 41, 3))  # large: border pixels skip the padding's taps
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    k = rng.standard_normal((3, 3, 3, filters))
    pads = (reference_same_pads(40, 3, 1, 1), reference_same_pads(41, 3, 1, 1))
    layer = numbaconv.Conv2D(filters, 3, padding="same", data_format=data_format, use_bias=False,
                             dtype="float64")
    layer.build(x.shape)
    for weights in (k, np.where(np.arange(k.size).reshape(k.shape) == 40, np.inf, k),
                    np.where(np.arange(k.size).reshape(k.shape) == 7, np.nan, k)):
        with np.errstate(invalid="ignore"):
            want = reference_conv2d(x, weights, (1, 1), pads, (1, 1), data_format)
        layer.set_weights([weights])
        for out in (numbaconv.conv2d(x, weights, padding="same", data_format=data_format),
                    layer(x), layer(x)):
            np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
            np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
