"""Dask inputs: lazy results equal, bit for bit in float64, to the in-memory ones.

Every comparison is ``assert_array_equal`` against the same call on the
NumPy array, over chunkings that cut through the halo: 1-pixel chunks,
chunks smaller than the halo, uneven ones, chunks not on stride multiples,
chunked channels.  Computed with Dask's default (threaded) scheduler and on
a ``distributed`` ``LocalCluster`` of 2 worker processes (``processes=True``:
the blocks' functions, weights and activations travel pickled; the workers'
first tasks import Numba and load the kernels, a few seconds).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import zlib

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import numbaconv
from numbaconv import Conv2D
from numbaconv.dask_support import axis_plan, is_dask_array

N, H, W = 3, 13, 11

#: Spatial chunkings of an (H, W) = (13, 11) image, with the batch and channel
#: chunks used alongside.  ``None`` keeps an axis whole.
CHUNKINGS = [
    (1, None, None, None),  # batch only: one map_blocks task per batch chunk
    (2, 1, 1, 3),  # 1-pixel chunks, channels chunked
    (3, 2, 3, None),  # smaller than most halos
    (1, (5, 1, 7), (4, 1, 6), 1),  # uneven, off every stride
    (2, 6, 5, 2),
]


def _chunks(chunking, data_format):
    batch, rows, cols, channels = chunking
    spatial = {1: rows, 2: cols} if data_format == "channels_last" else {2: rows, 3: cols}
    channel_axis = 3 if data_format == "channels_last" else 1
    chunks = {0: batch, channel_axis: channels}
    chunks.update(spatial)
    return {axis: -1 if size is None else size for axis, size in chunks.items()}


def _image(rng, data_format, channels, dtype=np.float64, n=N, h=H, w=W):
    shape = (n, h, w, channels) if data_format == "channels_last" else (n, channels, h, w)
    return rng.standard_normal(shape).astype(dtype)


# (kernel, strides, dilation, groups, filters) with 4 input channels.
GEOMETRIES = [
    (3, 1, 1, 1, 5),
    (3, 2, 1, 2, 6),  # grouped
    (5, 3, 1, 1, 3),
    (3, 1, 2, 4, 4),  # depthwise, dilated
    (2, 2, 1, 1, 4),  # even kernel, no halo
    (1, 3, 1, 4, 8),  # 1x1, stride past the kernel: depthwise with multiplier 2
    (4, 2, 1, 1, 2),
    (3, 2, 2, 1, 3),  # strided and dilated (conv2d allows it)
]
PADDINGS = ["valid", "same", ((3, 0), (1, 4)), ((7, 7), (0, 5))]  # last: windows in padding only


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{}s{}d{}g{}f{}".format(*g))
@pytest.mark.parametrize("padding", PADDINGS, ids=["valid", "same", "explicit", "wide"])
def test_conv2d_matches_in_memory(data_format, geometry, padding):
    kernel_size, strides, dilation, groups, filters = geometry
    rng = np.random.default_rng(zlib.crc32(repr((data_format, geometry, padding)).encode()))
    x = _image(rng, data_format, 4)
    kernel = rng.standard_normal((kernel_size, kernel_size, 4 // groups, filters))
    bias = rng.standard_normal(filters)
    arguments = {"strides": strides, "padding": padding, "data_format": data_format,
                     "dilation_rate": dilation, "bias": bias, "activation": "tanh"}
    expected = numbaconv.conv2d(x, kernel, **arguments)
    for chunking in CHUNKINGS:
        lazy = numbaconv.conv2d(da.from_array(x, chunks=_chunks(chunking, data_format)),
                                kernel, **arguments)
        assert is_dask_array(lazy) and lazy.shape == expected.shape
        assert lazy.chunks[0] == da.from_array(x, chunks=_chunks(chunking, data_format)).chunks[0]
        assert lazy.numblocks[1 if data_format == "channels_first" else 3] == 1
        np.testing.assert_array_equal(lazy.compute(), expected, err_msg=str(chunking))


def test_batch_only_chunks_need_no_halo():
    rng = np.random.default_rng(0)
    x = _image(rng, "channels_last", 4)
    kernel = rng.standard_normal((3, 3, 4, 2))
    lazy = numbaconv.conv2d(da.from_array(x, chunks=(1, -1, -1, -1)), kernel, padding="same")
    assert lazy.chunks == ((1, 1, 1), (H,), (W,), (2,))
    assert not any(name.startswith("overlap") for name in lazy.dask.layers)
    np.testing.assert_array_equal(lazy.compute(), numbaconv.conv2d(x, kernel, padding="same"))


def test_output_chunks_follow_input_chunks(register_file):
    """An output goes to the chunk holding its window's centre; tiny blocks merge."""
    rng = np.random.default_rng(1)
    x = da.from_array(_image(rng, "channels_last", 2, h=16, w=24), chunks=(1, 5, 7, 1))
    kernel = rng.standard_normal((3, 3, 2, 7))
    # 'same', stride 1: the input's chunks, but blocks are at least one register tile
    # wide (4 outputs with AVX-512's tiles, 2 with AVX2's).
    wide = register_file == "avx512"
    assert numbaconv.conv2d(x, kernel, padding="same").chunks == (
        (1, 1, 1), (5, 5, 5, 1), (7, 7, 10) if wide else (7, 7, 7, 3), (7,))
    # Stride 2: centres 2o + 1 -> rows (2, 3, 2, 1), columns (3, 4, 3, 2), merged in pairs
    # under 4-wide tiles; the width keeps the even edge 14.
    assert numbaconv.conv2d(x, kernel, strides=2, padding="same").chunks == (
        (1, 1, 1), (2, 3, 2, 1), (7, 5) if wide else (3, 4, 3, 2), (7,))
    assert numbaconv.conv2d(x, kernel).chunks == ((1, 1, 1), (4, 5, 5),
                                                  (6, 7, 9) if wide else (6, 7, 7, 2), (7,))


def test_axis_plan_covers_every_output():
    cases = itertools.product([1, 7, 16], [1, 3, 6], [1, 2, 3], [1, 2], [(0, 0), (2, 1), (9, 4)],
                              [1, 2, 5], [1, 4])
    for size, kernel, stride, dilation, pads, chunks, least in cases:
        extent = (kernel - 1) * dilation + 1
        count = (size + sum(pads) - extent) // stride + 1
        if count <= 0:
            continue
        input_chunks = tuple(min(chunks, size - i) for i in range(0, size, chunks))
        plan = axis_plan(input_chunks, size, kernel, stride, dilation, pads, least)
        assert sum(plan.in_chunks) == size and sum(plan.out_chunks) == count
        assert len(plan.in_chunks) == len(plan.out_chunks) <= len(input_chunks)
        assert plan.halo == max(extent - stride, 0)
        if len(plan.in_chunks) > 1:  # one neighbour holds the halo; blocks hold a tile
            assert min(plan.in_chunks) >= plan.halo and min(plan.out_chunks) >= least
        first = 0
        for index, (outputs, (keep, before, after)) in enumerate(zip(plan.out_chunks,
                                                                      plan.reads)):
            # A block starts where its first window starts (stride-aligned) ...
            if index:
                assert sum(plan.in_chunks[:index]) == first * stride - pads[0] and before == 0
            # ... and its rows plus padding hold exactly its windows.
            assert keep + before + after == (outputs - 1) * stride + extent
            first += outputs


def test_float32_and_integer_inputs():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 9, 20, 16)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 4, 16)).astype(np.float32)  # narrow groups
    for chunks in [(1, 2, 3, 16), (2, 5, 1, 3)]:
        np.testing.assert_array_equal(
            numbaconv.conv2d(da.from_array(x, chunks=chunks), kernel, padding="same").compute(),
            numbaconv.conv2d(x, kernel, padding="same"))
    ints = rng.integers(-5, 5, (2, 7, 7, 3))
    lazy = numbaconv.conv2d(da.from_array(ints, chunks=(1, 2, 2, 1)), np.ones((3, 3, 3, 1)))
    assert lazy.dtype == np.float64  # float32 input promoted by the float64 kernel
    np.testing.assert_array_equal(lazy.compute(), numbaconv.conv2d(ints, np.ones((3, 3, 3, 1))))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("options", [
    {"filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"filters": 4, "kernel_size": 5, "strides": 2, "padding": "valid", "activation": "sigmoid"},
    {"filters": 8, "kernel_size": 3, "strides": 3, "padding": "same", "groups": 4},
    {"filters": 4, "kernel_size": 3, "dilation_rate": 2, "padding": "same", "groups": 4,
         "activation": "softmax"},
    {"filters": 3, "kernel_size": (2, 4), "strides": (1, 2), "padding": "same", "use_bias": False},
])
def test_layer_matches_in_memory(data_format, options):
    rng = np.random.default_rng(3)
    layer = Conv2D(data_format=data_format, dtype="float64", bias_initializer="normal",
                   **options)
    x = _image(rng, data_format, 4)
    expected = layer(x)
    for chunking in CHUNKINGS:
        lazy = layer(da.from_array(x, chunks=_chunks(chunking, data_format)))
        assert lazy.dtype == np.float64
        np.testing.assert_array_equal(lazy.compute(), expected, err_msg=str(chunking))


def test_layer_weights_are_captured_at_call_time():
    rng = np.random.default_rng(4)
    x = _image(rng, "channels_last", 4)
    layer = Conv2D(5, 3, padding="same", dtype="float64", bias_initializer="normal",
                   activity_regularizer="l2")
    lazy = layer(da.from_array(x, chunks=(2, 4, 4, 4)))  # builds the layer
    assert layer.built and layer.input is not None
    loss = layer.losses[0]
    expected = layer(x)
    expected_loss = layer.losses[0]
    layer.set_weights([w * 2 for w in layer.get_weights()])
    np.testing.assert_array_equal(lazy.compute(), expected)
    np.testing.assert_array_equal(loss.compute(), expected_loss)


def test_lazy_until_computed():
    def explode():
        raise AssertionError("computed too early")

    rng = np.random.default_rng(5)
    lazy_x = da.from_delayed(dask.delayed(explode)(), shape=(2, 8, 8, 3), dtype=np.float64)
    out = numbaconv.conv2d(lazy_x, rng.standard_normal((3, 3, 3, 2)), strides=2)
    assert out.shape == (2, 3, 3, 2)
    assert Conv2D(2, 3)(lazy_x).shape == (2, 6, 6, 2)


def test_errors_name_the_argument():
    x = da.zeros((2, 8, 8, 3), chunks=(1, 4, 4, 3))
    with pytest.raises(ValueError, match="bias"):
        numbaconv.conv2d(x, np.ones((3, 3, 3, 2)), bias=np.ones(3))
    with pytest.raises(ValueError, match="inputs"):
        numbaconv.conv2d(da.zeros((8, 8, 3)), np.ones((3, 3, 3, 2)))
    with pytest.raises(TypeError, match="inputs"):
        numbaconv.conv2d(da.from_array(np.array([["a"]] * 4).reshape(1, 2, 2, 1)),
                         np.ones((1, 1, 1, 1)))
    unknown = x[x[:, 0, 0, 0] > -1]  # unknown batch size
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        numbaconv.conv2d(unknown, np.ones((3, 3, 3, 2)))
    with pytest.raises(ValueError, match="kernel"):
        numbaconv.conv2d(x, np.ones((3, 3, 2, 2)))
    with pytest.raises(NotImplementedError, match="training"):
        Conv2D(2, 3)(x, training=True)


def test_dask_is_not_imported_for_numpy_inputs():
    code = ("import sys, numpy as np, numbaconv; "
            "numbaconv.conv2d(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1))); "
            "numbaconv.Conv2D(1, 3)(np.ones((1, 4, 4, 1))); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dask'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.slow  # a local cluster's start-up: ~25 s
def test_distributed_cluster(client):
    # Worker processes compile for themselves: the geometries alternate the layout (each
    # layout's kernels once) and every chunking meets both layouts.
    assert len(client.scheduler_info()["workers"]) == 2
    rng = np.random.default_rng(6)
    layouts = ("channels_last", "channels_first")
    for number, (kernel_size, strides, dilation, groups, filters) in enumerate(GEOMETRIES[:4]):
        data_format = layouts[number % 2]
        x = _image(rng, data_format, 4, n=4)
        kernel = rng.standard_normal((kernel_size, kernel_size, 4 // groups, filters))
        arguments = {"strides": strides, "padding": "same", "data_format": data_format,
                     "dilation_rate": dilation, "bias": rng.standard_normal(filters),
                     "activation": "relu"}
        expected = numbaconv.conv2d(x, kernel, **arguments)
        for chunking in CHUNKINGS[1:4]:
            lazy = numbaconv.conv2d(da.from_array(x, chunks=_chunks(chunking, data_format)),
                                    kernel, **arguments)
            np.testing.assert_array_equal(client.compute(lazy).result(), expected)
    layer = Conv2D(6, 3, strides=2, padding="same", data_format="channels_first",
                   dtype="float64", bias_initializer="normal", activation="elu")
    x = _image(rng, "channels_first", 4, n=4)
    lazy = layer(da.from_array(x, chunks=_chunks(CHUNKINGS[3], "channels_first")))
    np.testing.assert_array_equal(lazy.compute(), layer(x))  # the client is the default now


def test_device_cuda_runs_each_block_there():
    rng = np.random.default_rng(7)
    x = _image(rng, "channels_last", 2, n=1, h=6, w=6)
    kernel = rng.standard_normal((3, 3, 2, 2))
    try:
        expected = numbaconv.conv2d(x, kernel, padding="same", device="cuda")
    except RuntimeError as err:  # no GPU and no simulator
        pytest.skip(str(err))
    layer = Conv2D(2, 3, padding="same", dtype="float64", device="cuda")
    # One thread: Numba's CUDA simulator (the default in these tests) keeps
    # its kernel state per thread.
    with dask.config.set(scheduler="sync"):
        lazy = numbaconv.conv2d(da.from_array(x, chunks=(1, 3, 3, 1)), kernel, padding="same",
                                device="cuda")
        np.testing.assert_array_equal(lazy.compute(), expected)
        np.testing.assert_array_equal(layer(da.from_array(x, chunks=(1, 3, 3, 1))).compute(),
                                      layer(x))
