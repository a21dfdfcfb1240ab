"""CUDA kernels, device selection and weight residency, on Numba's CUDA simulator.

``tests/conftest.py`` turns the simulator on (``NUMBA_ENABLE_CUDASIM=1``)
unless the environment says otherwise, so these run on any machine; on one
with a GPU, ``NUMBA_ENABLE_CUDASIM=0 python -m pytest tests/test_cuda.py``
runs them on the hardware.  The simulator executes about a thousand threads
a second: shapes are small and the blocks shrunk (fixture ``small_blocks``)
so that every problem still spans several blocks in every grid dimension.
"""

from __future__ import annotations

import pickle

import numba
import numpy as np
import pytest
from reference import reference_conv2d, reference_pads

import numbaconv
from numbaconv import cuda as cuda_target
from numbaconv.bench import SUITE
from numbaconv.spec import ConvSpec

numba_cuda = pytest.importorskip("numba.cuda")
if not cuda_target.available():
    pytest.skip("CUDA cannot run here (neither a GPU nor the simulator)", allow_module_level=True)

from numbaconv.cuda import backward as cuda_backward
from numbaconv.cuda import kernels, run

F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few threads, part of the kernel cache key like the real sizes."""
    monkeypatch.setitem(kernels.TILE, "TILE_H", 2)
    monkeypatch.setitem(kernels.TILE, "TILE_W", 3)
    monkeypatch.setitem(kernels.TILE, "TILE_F", 2)
    monkeypatch.setitem(kernels.TILE, "CHUNK", 2)
    monkeypatch.setattr(run, "DIRECT_THREADS", 16)
    monkeypatch.setattr(run, "DEPTHWISE_BLOCK", (2, 4))
    monkeypatch.setattr(cuda_backward, "INPUT_THREADS", 16)
    monkeypatch.setattr(cuda_backward, "REDUCE_THREADS", 2)
    monkeypatch.setattr(cuda_backward, "REDUCE_BLOCKS", 3)
    monkeypatch.setattr(cuda_backward, "LANES_BLOCK", (4, 2))
    # channels_last kernel gradients: dense and grouped cases (36-54 blocks of lanes) take
    # the lanes kernel, depthwise ones (9) a block per weight.
    monkeypatch.setattr(cuda_backward, "LANES_MIN_BLOCKS", 20)


def _expected(x, kernel, strides, padding, dilation, bias, activation, data_format):
    xl = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    pads = reference_pads(padding, xl.shape[1:3], kernel.shape[:2], (strides,) * 2,
                          (dilation,) * 2)
    want = reference_conv2d(xl, kernel, (strides,) * 2, pads, (dilation,) * 2) + bias
    if activation == "relu":
        want = np.maximum(want, 0)
    return want if data_format == "channels_last" else want.transpose(0, 3, 1, 2)


def _data(shape, kernel_shape, dtype, seed, data_format="channels_last"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kernel = rng.standard_normal(kernel_shape).astype(dtype)
    bias = rng.standard_normal(kernel_shape[3]).astype(dtype)
    return x, kernel, bias


def _resident_kernel(layer):
    """The layer's kernel as uploaded to the device (failing if it was not)."""
    return layer._kernel.snapshot().derived(("cuda", np.dtype(np.float32)),
                                            lambda value: pytest.fail("kernel not uploaded"))


def _kernel_name(x, kernel, strides, padding, dilation, data_format):
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, padding, data_format,
                                   dilation, x.dtype.name)
    return run.select(spec, False)[0]


# (channels, filters, groups): dense (tiled kernel), grouped (direct), depthwise.
GROUPINGS = [(3, 5, 1), (4, 6, 2), (4, 4, 4)]
GEOMETRIES = [(1, "valid", 1), (1, "same", 1), (2, "same", 1), (1, "same", 2), (2, "valid", 1)]


# Every grouping in every geometry, each pair in one layout (alternating, so that every
# grouping and every geometry meets both): the simulator takes 1-3 s per case.
_FORWARD_CASES = [(*grouping, *geometry, ("channels_last", "channels_first")[(i + j) % 2])
                  for j, grouping in enumerate(GROUPINGS)
                  for i, geometry in enumerate(GEOMETRIES)]


@pytest.mark.parametrize("channels, filters, groups, strides, padding, dilation, data_format",
                         _FORWARD_CASES)
def test_device_arrays_match_the_reference(channels, filters, groups, strides, padding,
                                           dilation, data_format):
    x, kernel, bias = _data((2, 7, 6, channels), (3, 3, channels // groups, filters),
                            np.float64, seed=channels + 10 * strides + dilation,
                            data_format=data_format)
    out = numbaconv.conv2d(numba_cuda.to_device(x), kernel, strides=strides, padding=padding,
                           dilation_rate=dilation, bias=bias, activation="relu",
                           data_format=data_format)
    assert cuda_target.is_device_array(out)  # device in, device out
    host = out.copy_to_host()
    want = _expected(x, kernel, strides, padding, dilation, bias, "relu", data_format)
    assert host.shape == want.shape and host.dtype == np.float64
    np.testing.assert_allclose(host, want, **F64)


def test_the_grid_exercises_every_kernel_over_several_blocks():
    names = set()
    for channels, filters, groups in GROUPINGS:
        x, kernel, _ = _data((2, 7, 6, channels), (3, 3, channels // groups, filters),
                             np.float64, 0)
        names.add(_kernel_name(x, kernel, 1, "same", 1, "channels_last"))
    assert names == {"cuda.tiled", "cuda.depthwise", "cuda.direct"}
    # 7x6 outputs in 2x3-pixel blocks, 5 filters in 2-filter tiles, 2 images.
    assert -(-7 // kernels.TILE["TILE_H"]) > 1 and -(-6 // kernels.TILE["TILE_W"]) > 1
    assert -(-5 // kernels.TILE["TILE_F"]) > 1


@pytest.mark.parametrize("channels, filters, groups", GROUPINGS)
def test_float32_and_no_bias_no_activation(channels, filters, groups):
    x, kernel, _ = _data((1, 5, 6, channels), (2, 3, channels // groups, filters), np.float32,
                         3)
    out = numbaconv.conv2d(numba_cuda.to_device(x), kernel, padding="same").copy_to_host()
    assert out.dtype == np.float32
    want = _expected(x.astype(np.float64), kernel.astype(np.float64), 1, "same", 1, 0, None,
                     "channels_last")
    np.testing.assert_allclose(out, want, **F32)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_cpu_and_cuda_agree(data_format):
    x, kernel, bias = _data((2, 6, 5, 4), (3, 3, 4, 3), np.float64, 5, data_format)
    kwargs = dict(strides=2, padding="same", bias=bias, data_format=data_format)
    on_gpu = numbaconv.conv2d(x, kernel, device="cuda", **kwargs)
    on_cpu = numbaconv.conv2d(x, kernel, device="cpu", **kwargs)
    assert isinstance(on_gpu, np.ndarray)  # host in, host out
    np.testing.assert_allclose(on_gpu, on_cpu, **F64)


def test_device_input_computed_on_the_cpu_when_asked():
    x, kernel, bias = _data((1, 5, 5, 2), (3, 3, 2, 3), np.float64, 6)
    out = numbaconv.conv2d(numba_cuda.to_device(x), kernel, bias=bias, device="cpu")
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, _expected(x, kernel, 1, "valid", 1, bias, None,
                                              "channels_last"), **F64)


def test_other_activations_and_float16_on_the_device():
    x, kernel, _ = _data((1, 4, 5, 2), (3, 3, 2, 2), np.float32, 7)
    out = numbaconv.conv2d(numba_cuda.to_device(x), kernel, padding="same",
                           activation="sigmoid").copy_to_host()
    want = 1 / (1 + np.exp(-_expected(x.astype(np.float64), kernel.astype(np.float64), 1,
                                      "same", 1, 0, None, "channels_last")))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    half = numbaconv.conv2d(numba_cuda.to_device(x.astype(np.float16)),
                            kernel.astype(np.float16), padding="same")
    assert cuda_target.is_device_array(half) and half.dtype == np.float16
    cpu = numbaconv.conv2d(x.astype(np.float16), kernel.astype(np.float16), padding="same")
    np.testing.assert_array_equal(half.copy_to_host(), cpu)


def test_dense_layers_too_wide_for_shared_memory_use_the_direct_kernel(monkeypatch):
    x, kernel, bias = _data((1, 9, 9, 2), (3, 3, 2, 3), np.float64, 8)
    assert _kernel_name(x, kernel, 1, "same", 1, "channels_last") == "cuda.tiled"
    monkeypatch.setattr(kernels, "SHARED_BYTES", 64)
    assert _kernel_name(x, kernel, 1, "same", 4, "channels_last") == "cuda.direct"
    out = numbaconv.conv2d(numba_cuda.to_device(x), kernel, padding="same", dilation_rate=4,
                           bias=bias)
    np.testing.assert_allclose(out.copy_to_host(),
                               _expected(x, kernel, 1, "same", 4, bias, None, "channels_last"),
                               **F64)


def test_bad_device_and_missing_cuda_are_clear_errors(monkeypatch):
    x = np.zeros((1, 4, 4, 1))
    kernel = np.zeros((3, 3, 1, 1))
    with pytest.raises(ValueError, match=r"device.*'gpu'"):
        numbaconv.conv2d(x, kernel, device="gpu")
    with pytest.raises(ValueError, match="device"):
        numbaconv.Conv2D(2, 3, device="tpu")
    monkeypatch.setattr(cuda_target, "_numba_cuda", lambda: None)
    with pytest.raises(RuntimeError, match="numba-cuda"):
        numbaconv.conv2d(x, kernel, device="cuda")
    assert isinstance(numbaconv.conv2d(x, kernel), np.ndarray)  # host arrays stay on the CPU


def test_layer_weights_stay_on_the_device_until_they_change():
    x, kernel, bias = _data((2, 5, 6, 3), (3, 3, 3, 4), np.float32, 9)
    layer = numbaconv.Conv2D(4, 3, padding="same", activation="relu", device="cuda")
    layer.build(x.shape)
    layer.set_weights([kernel, bias])
    first = layer(numba_cuda.to_device(x))
    resident = _resident_kernel(layer)
    second = layer(x)  # host input: host output, same resident weights
    assert isinstance(second, np.ndarray)
    assert _resident_kernel(layer) is resident
    want = _expected(x.astype(np.float64), kernel.astype(np.float64), 1, "same", 1, bias,
                     "relu", "channels_last")
    np.testing.assert_allclose(first.copy_to_host(), want, **F32)
    np.testing.assert_allclose(second, want, **F32)
    layer.set_weights([-kernel, bias])
    third = layer(x)
    assert _resident_kernel(layer) is not resident
    np.testing.assert_allclose(third, _expected(x.astype(np.float64), -kernel.astype(np.float64),
                                                1, "same", 1, bias, "relu", "channels_last"),
                               **F32)
    clone = pickle.loads(pickle.dumps(layer))  # device copies are not pickled
    np.testing.assert_allclose(clone(x), third, **F32)


def test_layer_follows_its_input_by_default():
    x, kernel, bias = _data((1, 5, 5, 2), (3, 3, 2, 2), np.float64, 10, "channels_first")
    layer = numbaconv.Conv2D(2, 3, data_format="channels_first", dtype="float64",
                             activity_regularizer="l2")
    layer.build(x.shape)
    layer.set_weights([kernel, bias])
    on_gpu = layer(numba_cuda.to_device(x))
    assert cuda_target.is_device_array(on_gpu)
    on_cpu = layer(x)
    assert isinstance(on_cpu, np.ndarray)
    np.testing.assert_allclose(on_gpu.copy_to_host(), on_cpu, **F64)
    assert np.isfinite(layer.losses[0])


_PTX_SCRIPT = """
import numpy as np
from numba import cuda, types
from numbaconv.cuda import backward, kernels
try:  # is there a CUDA compiler at all?
    cuda.compile_ptx(lambda a: None, (types.float32[:],), cc=(8, 0))
except Exception as error:
    print("NO-COMPILER", type(error).__name__, str(error)[:200])
    raise SystemExit(0)
for dtype, nbtype in ((np.float32, types.float32), (np.float64, types.float64)):
    array = types.Array(nbtype, 4, "C")
    signature = (array, array, types.Array(nbtype, 1, "C"), array)
    zero = dtype(0)
    for kernel in (kernels.direct_kernel(3, 3, 2, 1, 1, 1, 1, 1, 2, 3, 4, False, True, zero),
                   kernels.depthwise_kernel(3, 3, 1, 1, 2, 2, 2, 2, True, True, dtype, zero),
                   kernels.tiled_kernel(7, 7, 2, 2, 1, 1, 3, 3, 3, True, False, dtype, zero,
                                        *kernels.TILE.values())):
        cuda.compile_ptx(kernel.py_func, signature, cc=(8, 0))
    vector = types.Array(nbtype, 1, "C")
    geometry = (3, 3, 2, 1, 1, 2, 1, 2, 2, 3, 4)
    for kernel, signature in (
            (backward.input_gradient_kernel(*geometry, True, zero), (array,) * 3),
            (backward.kernel_gradient_kernel(*geometry, True, 8, dtype, zero), (array,) * 3),
            (backward.kernel_gradient_lanes_kernel(*geometry, 8, 4, dtype, zero), (array,) * 3),
            (backward.bias_gradient_kernel(False, 8, dtype, zero), (array, vector))):
        cuda.compile_ptx(kernel.py_func, signature, cc=(8, 0))
print("compiled")
"""


def test_kernels_compile_for_a_real_gpu():
    # The simulator runs the kernels as Python; this compiles them with NVVM to PTX
    # for a real GPU (sm_80), which needs no GPU but the CUDA compiler wheels
    # (pip install "numba-cuda[cu12]"): skipped without them.
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    result = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    if result.stdout.startswith("NO-COMPILER"):
        pytest.skip("no CUDA compiler here: " + result.stdout.strip())
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-2000:]




def _exact_gradients(x, kernel, grad_output, strides, padding, dilation, data_format):
    """Gradients of ``sum(conv(x, kernel) * grad_output)`` from the NumPy reference.

    The convolution is linear in each operand, so the derivative along a unit
    array ``e`` is ``sum(conv(e, kernel) * grad_output)`` exactly (no
    finite-difference error): one reference convolution per element.
    """
    xl = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    gyl = grad_output if data_format == "channels_last" else grad_output.transpose(0, 2, 3, 1)
    pads = reference_pads(padding, xl.shape[1:3], kernel.shape[:2], (strides,) * 2,
                          (dilation,) * 2)

    def along(a, k):
        return np.sum(reference_conv2d(a, k, (strides,) * 2, pads, (dilation,) * 2) * gyl)

    grad_x = np.zeros(xl.shape)
    for index in np.ndindex(xl.shape):
        unit = np.zeros(xl.shape)
        unit[index] = 1
        grad_x[index] = along(unit, kernel)
    grad_w = np.zeros(kernel.shape)
    for index in np.ndindex(kernel.shape):
        unit = np.zeros(kernel.shape)
        unit[index] = 1
        grad_w[index] = along(xl, unit)
    if data_format == "channels_first":
        grad_x = grad_x.transpose(0, 3, 1, 2)
    return grad_x, grad_w, gyl.sum(axis=(0, 1, 2))


# The simulator takes ~2 s per case here: every geometry (in alternating layouts) for the
# dense grouping, and for grouped and depthwise layers the ones that reach every branch.
_GRADIENT_CASES = [
    *[((3, 5, 1), *geometry, ("channels_last", "channels_first")[i % 2])
      for i, geometry in enumerate(GEOMETRIES)],
    ((4, 6, 2), 2, "same", 1, "channels_first"), ((4, 6, 2), 1, "same", 2, "channels_last"),
    ((4, 4, 4), 2, "valid", 1, "channels_last"), ((4, 4, 4), 1, "same", 2, "channels_first"),
]


@pytest.mark.parametrize("grouping, strides, padding, dilation, data_format", _GRADIENT_CASES)
def test_gradients_on_the_device_match_the_reference(grouping, strides, padding, dilation,
                                                     data_format):
    channels, filters, groups = grouping
    x, kernel, _ = _data((1, 5, 4, channels), (3, 3, channels // groups, filters), np.float64,
                         seed=7 * channels + strides + dilation, data_format=data_format)
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, padding, data_format,
                                   dilation, "float64")
    grad_output = np.random.default_rng(groups).standard_normal(spec.output_shape)
    got = numbaconv.conv2d_backward(numba_cuda.to_device(grad_output), numba_cuda.to_device(x),
                                    kernel, strides=strides, padding=padding,
                                    data_format=data_format, dilation_rate=dilation)
    assert all(cuda_target.is_device_array(g) for g in got)  # device in, device out
    want = _exact_gradients(x, kernel, grad_output, strides, padding, dilation, data_format)
    for name, g, w in zip(("inputs", "kernel", "bias"), got, want):
        host = g.copy_to_host()
        assert host.shape == w.shape and host.dtype == np.float64, name
        np.testing.assert_allclose(host, w, **F64, err_msg=name)


@pytest.mark.parametrize("data_format, channels, filters, groups, expected", [
    ("channels_last", 3, 5, 1, "backward.kernel.lanes"),  # 9 * 3 * 2 = 54 blocks of lanes
    ("channels_last", 4, 4, 4, "backward.kernel"),  # depthwise: 9 blocks of lanes, too few
    ("channels_first", 3, 5, 1, "backward.kernel"),  # threads along pixels are coalesced
])
def test_kernel_gradient_kernel_choice(data_format, channels, filters, groups, expected,
                                       monkeypatch):
    built = []
    get = run.kernel_cache.get
    monkeypatch.setattr(run.kernel_cache, "get",
                        lambda key, build: built.append(key[0]) or get(key, build))
    x, kernel, _ = _data((1, 3, 3, channels), (3, 3, channels // groups, filters), np.float64,
                         2, data_format)
    grad_output = np.ones((1, filters, 3, 3) if data_format == "channels_first" else
                          (1, 3, 3, filters))
    numbaconv.conv2d_backward(grad_output, x, kernel, padding="same", data_format=data_format,
                              device="cuda")
    assert [key for key in built if key.startswith("backward.kernel")] == [expected]


def test_gradients_on_the_device_in_float32_and_from_host_arrays():
    x, kernel, _ = _data((1, 4, 5, 4), (2, 3, 2, 6), np.float32, 11)
    grad_output = np.random.default_rng(3).standard_normal((1, 4, 5, 6)).astype(np.float32)
    kwargs = {"padding": "same", "device": "cuda"}
    got = numbaconv.conv2d_backward(grad_output, x, kernel, **kwargs)
    assert all(isinstance(g, np.ndarray) and g.dtype == np.float32 for g in got)  # host out
    want = _exact_gradients(x.astype(np.float64), kernel.astype(np.float64),
                            grad_output.astype(np.float64), 1, "same", 1, "channels_last")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **F32)
    on_cpu = numbaconv.conv2d_backward(grad_output, x, kernel, padding="same", device="cpu")
    for g, c in zip(got, on_cpu):
        np.testing.assert_allclose(g, c, **F32)


def test_gradients_of_an_empty_batch_on_the_device_are_zero():
    x = np.zeros((0, 4, 4, 2))
    kernel = np.ones((3, 3, 2, 3))
    grad_x, grad_w, grad_b = numbaconv.conv2d_backward(np.zeros((0, 2, 2, 3)), x, kernel,
                                                       device="cuda")
    assert grad_x.shape == (0, 4, 4, 2)
    np.testing.assert_array_equal(grad_w, np.zeros(kernel.shape))
    np.testing.assert_array_equal(grad_b, np.zeros(3))


def test_device_gradients_check_the_output_gradient_shape():
    x = numba_cuda.to_device(np.ones((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="grad_output"):
        numbaconv.conv2d_backward(numba_cuda.to_device(np.ones((1, 3, 3, 3))), x,
                                  np.ones((3, 3, 2, 3)))


_DEFAULT_BLOCKS = (dict(kernels.TILE), run.DIRECT_THREADS, run.DEPTHWISE_BLOCK)


@pytest.mark.skipif(bool(numba.config.ENABLE_CUDASIM),
                    reason="full-size layers need a GPU (the simulator runs ~1000 threads/s)")
@pytest.mark.parametrize("case", SUITE, ids=lambda case: case.name)
def test_suite_layers_on_a_real_gpu(case, monkeypatch):
    # The library's own block sizes, at the benchmark's sizes: the shapes that the
    # small-block tests cannot reach (full shared-memory tiles, wide channel counts,
    # the stem's 7x7 window, grids with many blocks).
    tile, threads, block = _DEFAULT_BLOCKS
    for key, value in tile.items():
        monkeypatch.setitem(kernels.TILE, key, value)
    monkeypatch.setattr(run, "DIRECT_THREADS", threads)
    monkeypatch.setattr(run, "DEPTHWISE_BLOCK", block)
    shape = (1, case.size, case.size, case.channels)
    kernel_shape = (case.kernel, case.kernel, case.channels // case.groups, case.filters)
    x, kernel, bias = _data(shape, kernel_shape, np.float32, seed=case.size + case.filters,
                            data_format=case.data_format)
    out = numbaconv.conv2d(numba_cuda.to_device(x), kernel, strides=case.strides,
                           padding="same", dilation_rate=case.dilation, bias=bias,
                           activation="relu", data_format=case.data_format).copy_to_host()
    want = _expected(x.astype(np.float64), kernel.astype(np.float64), case.strides, "same",
                     case.dilation, bias, "relu", case.data_format)
    assert out.shape == want.shape
    assert np.linalg.norm(out - want) <= 1e-5 * np.linalg.norm(want)
    np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.skipif(bool(numba.config.ENABLE_CUDASIM),
                    reason="full-size layers need a GPU (the simulator runs ~1000 threads/s)")
@pytest.mark.parametrize("case", SUITE, ids=lambda case: case.name)
def test_suite_gradients_on_a_real_gpu(case, monkeypatch):
    # Library block sizes at the benchmark's sizes, against the CPU's float64 gradients
    # (themselves checked against finite differences and torch in test_backward.py).
    monkeypatch.setattr(cuda_backward, "INPUT_THREADS", 256)
    monkeypatch.setattr(cuda_backward, "REDUCE_THREADS", 128)
    monkeypatch.setattr(cuda_backward, "REDUCE_BLOCKS", 65535)
    monkeypatch.setattr(cuda_backward, "LANES_BLOCK", (32, 8))
    monkeypatch.setattr(cuda_backward, "LANES_MIN_BLOCKS", 512)
    shape = (1, case.size, case.size, case.channels)
    kernel_shape = (case.kernel, case.kernel, case.channels // case.groups, case.filters)
    x, kernel, _ = _data(shape, kernel_shape, np.float32, seed=case.filters,
                         data_format=case.data_format)
    kwargs = {"strides": case.strides, "padding": "same", "dilation_rate": case.dilation,
              "data_format": case.data_format}
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, case.strides, "same",
                                   case.data_format, case.dilation, "float32")
    grad_output = np.random.default_rng(1).standard_normal(spec.output_shape).astype(np.float32)
    got = numbaconv.conv2d_backward(*(numba_cuda.to_device(a) for a in (grad_output, x, kernel)),
                                    **kwargs)
    want = numbaconv.conv2d_backward(grad_output.astype(np.float64), x.astype(np.float64),
                                     kernel.astype(np.float64), device="cpu", **kwargs)
    for name, g, w in zip(("inputs", "kernel", "bias"), got, want):
        host = g.copy_to_host()
        assert host.shape == w.shape and host.dtype == np.float32, name
        assert np.linalg.norm(host - w) <= 1e-5 * np.linalg.norm(w), name
