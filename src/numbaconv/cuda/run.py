"""Run a validated convolution on the GPU: choose a kernel, move arrays, launch.

The CUDA counterpart of :func:`numbaconv.functional.convolve`; shapes and
arguments were checked by the caller (:func:`numbaconv.functional.conv2d` or
the layer) exactly as for the CPU.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from .. import activations
from ..cache import kernel_cache
from ..variables import Snapshot
from . import as_device_array, is_device_array, require

__all__ = ["DEPTHWISE_BLOCK", "DIRECT_THREADS", "backward", "convolve", "deliver", "select"]

#: Threads per block of the direct kernel, and of the depthwise kernel
#: ``(channels, pixels)``.  Tests shrink them so that small problems span
#: several blocks.
DIRECT_THREADS = 256
DEPTHWISE_BLOCK = (32, 8)
#: Blocks along one grid axis (the depthwise and direct kernels loop past it).
MAX_BLOCKS = 65535


def _configured(kernel, grid, block):
    """``kernel[grid, block]``, without numba-cuda's low-occupancy warning.

    A small image legitimately fills fewer blocks than the GPU has
    multiprocessors; the warning (meant for a user's own launches) would only
    be noise on every such layer call.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU")
        return kernel[grid, block]


def select(spec, relu):
    """``(name, kernel, launch)`` for ``spec`` on CUDA, the kernel compiled once per geometry.

    ``launch(kernel, x, w, b, out)`` runs it; the first applicable of: the
    shared-memory tiled kernel (one group, input tile within the shared
    memory budget), the depthwise kernel (one filter per channel), the direct
    kernel (anything).
    """
    from . import kernels  # imports numba.cuda: only once CUDA is known to run

    geometry = (*spec.kernel_size, *spec.strides, *spec.dilation, spec.pads[0][0],
                spec.pads[1][0])
    channels_first = spec.data_format == "channels_first"
    dtype = np.dtype(spec.dtype)
    zero = dtype.type(0)
    tile = dict(kernels.TILE)
    out_h, out_w = spec.output_hw
    fblocks = -(-spec.filters // tile["TILE_F"])
    if (spec.groups == 1 and spec.batch * fblocks <= MAX_BLOCKS
            and kernels.tile_footprint(geometry, dtype.itemsize, tile) <= kernels.SHARED_BYTES):
        name = "cuda.tiled"
        build = lambda: kernels.tiled_kernel(  # noqa: E731
            *geometry, spec.in_channels, channels_first, relu, dtype.type, zero, tile["TILE_H"],
            tile["TILE_W"], tile["TILE_F"], tile["CHUNK"])
        extra = tuple(tile.values())

        def launch(kernel, x, w, b, out):
            grid = (-(-out_w // tile["TILE_W"]), -(-out_h // tile["TILE_H"]),
                    spec.batch * fblocks)
            _configured(kernel, grid, (tile["TILE_W"], tile["TILE_H"]))(x, w, b, out)
    elif spec.is_depthwise and spec.filters == spec.groups:
        name = "cuda.depthwise"
        build = lambda: kernels.depthwise_kernel(  # noqa: E731
            *geometry, channels_first, relu, dtype.type, zero)
        block = DEPTHWISE_BLOCK
        extra = block

        def launch(kernel, x, w, b, out):
            pixels = spec.batch * out_h * out_w
            grid = (-(-spec.filters // block[0]), min(MAX_BLOCKS, -(-pixels // block[1])))
            _configured(kernel, grid, block)(x, w, b, out)
    else:
        name = "cuda.direct"
        build = lambda: kernels.direct_kernel(  # noqa: E731
            *geometry, spec.groups, spec.in_channels // spec.groups,
            spec.filters // spec.groups, channels_first, relu, zero)
        threads = DIRECT_THREADS
        extra = (threads,)

        def launch(kernel, x, w, b, out):
            total = math.prod(spec.output_shape)
            _configured(kernel, min(MAX_BLOCKS, -(-total // threads)), threads)(x, w, b, out)
    key = ("cuda", name, geometry, spec.groups, spec.in_channels, channels_first, bool(relu),
           dtype.name, extra)
    return name, kernel_cache.get(key, build), launch


def _to_device(cuda, value, dtype):
    """A C-contiguous device array of ``dtype`` holding ``value`` (host or device)."""
    if is_device_array(value):
        value = as_device_array(value)
        if value.dtype == dtype and value.is_c_contiguous():
            return value
        value = value.copy_to_host()
    return cuda.to_device(np.ascontiguousarray(value, dtype=dtype))


def _resident(cuda, value, dtype):
    """``value`` on the device; a layer's snapshot keeps its copy until the value changes."""
    if isinstance(value, Snapshot):
        return value.derived(("cuda", dtype), lambda v: _to_device(cuda, v, dtype))
    return _to_device(cuda, value, dtype)


@functools.lru_cache(maxsize=32)
def _zero_bias(filters, dtype):
    """A device array of ``filters`` zeros, made once: a copy to the device costs
    more than the launch of a small layer."""
    return require().to_device(np.zeros(filters, dtype=dtype))


def convolve(spec, x, kernel, bias, activation):
    """``activation(conv(x, kernel) + bias)`` on the GPU for a validated ``spec``.

    Parameters
    ----------
    spec : ConvSpec
    x : array
        A device array (used in place when C-contiguous and of ``spec.dtype``)
        or a host array (copied over).
    kernel : numpy.ndarray or Snapshot
        Keras layout; a layer's snapshot keeps its device copy between calls.
    bias : numpy.ndarray, Snapshot or None
    activation : callable
        The plain ReLU is fused; other activations run on the host.

    Returns
    -------
    numba device array
        In ``spec.dtype`` and ``spec.data_format``.
    """
    cuda = require()
    dtype = np.dtype(spec.dtype)
    relu = activation is activations.get("relu")
    x_dev = _to_device(cuda, x, dtype)
    w_dev = _resident(cuda, kernel, dtype)
    b_dev = _zero_bias(spec.filters, dtype.str) if bias is None else _resident(cuda, bias, dtype)
    out = cuda.device_array(spec.output_shape, dtype=dtype)
    if math.prod(spec.output_shape):
        _, compiled, launch = select(spec, relu)
        launch(compiled, x_dev, w_dev, b_dev, out)
    if relu or activation is activations.linear:
        return out
    host = np.asarray(activation(out.copy_to_host()), dtype=dtype)
    return cuda.to_device(host)


def deliver(out, dtype, on_device):
    """A GPU result as the caller gets it: in ``dtype``, on the device for device inputs.

    A ``dtype`` other than the compute dtype (float16, computed in float32) is
    cast on the host; host inputs get a NumPy array.
    """
    if np.dtype(dtype) != out.dtype:
        host = out.copy_to_host().astype(dtype)
        return require().to_device(host) if on_device else host
    return out if on_device else out.copy_to_host()


def backward(spec, x, kernel, grad_output):
    """``(grad_inputs, grad_kernel, grad_bias)`` of the convolution ``spec`` on the GPU.

    Parameters
    ----------
    spec : ConvSpec
        Validated, with ``grad_output`` checked against ``spec.output_shape``.
    x, grad_output : array
        Device arrays (used in place when C-contiguous and of ``spec.dtype``) or
        host arrays, in ``spec.data_format``.
    kernel : array
        Keras layout.

    Returns
    -------
    tuple of numba device arrays
        In ``spec.dtype``; the input gradient in ``spec.data_format``.
    """
    from . import backward as kernels  # imports numba.cuda: only once CUDA is known to run

    cuda = require()
    dtype = np.dtype(spec.dtype)
    zero = dtype.type(0)
    x_dev = _to_device(cuda, x, dtype)
    w_dev = _to_device(cuda, kernel, dtype)
    gy_dev = _to_device(cuda, grad_output, dtype)
    geometry = (*spec.kernel_size, *spec.strides, *spec.dilation, spec.pads[0][0],
                spec.pads[1][0])
    channels_first = spec.data_format == "channels_first"
    cin = spec.in_channels // spec.groups
    grouping = (spec.groups, cin, spec.filters // spec.groups)
    threads, reduce = kernels.INPUT_THREADS, kernels.REDUCE_THREADS
    key = ("cuda", geometry, grouping, channels_first, dtype.name)

    grad_x = cuda.device_array(tuple(x_dev.shape), dtype=dtype)
    if grad_x.size:
        build = lambda: kernels.input_gradient_kernel(*geometry, *grouping, channels_first,
                                                      zero)
        compiled = kernel_cache.get(("backward.input", *key, threads), build)
        blocks = min(MAX_BLOCKS, -(-grad_x.size // threads))
        _configured(compiled, blocks, threads)(gy_dev, w_dev, grad_x)

    # The reductions write every weight and bias (zeros when there are no pixels).
    grad_w = cuda.device_array(tuple(w_dev.shape), dtype=dtype)
    lanes, rows = kernels.LANES_BLOCK
    blocks = grad_w.size // spec.filters * -(-spec.filters // lanes)
    if not channels_first and blocks >= kernels.LANES_MIN_BLOCKS:
        block = (lanes, rows)
        build = lambda: kernels.kernel_gradient_lanes_kernel(*geometry, *grouping, lanes, rows,
                                                             dtype.type, zero)
        compiled = kernel_cache.get(("backward.kernel.lanes", *key, block), build)
    else:
        blocks, block = grad_w.size, reduce
        build = lambda: kernels.kernel_gradient_kernel(*geometry, *grouping, channels_first,
                                                       reduce, dtype.type, zero)
        compiled = kernel_cache.get(("backward.kernel", *key, reduce), build)
    _configured(compiled, min(kernels.REDUCE_BLOCKS, blocks), block)(x_dev, gy_dev, grad_w)

    grad_b = cuda.device_array(spec.filters, dtype=dtype)
    build = lambda: kernels.bias_gradient_kernel(channels_first, reduce, dtype.type, zero)
    compiled = kernel_cache.get(("backward.bias", channels_first, dtype.name, reduce), build)
    _configured(compiled, min(kernels.REDUCE_BLOCKS, spec.filters), reduce)(gy_dev, grad_b)
    return grad_x, grad_w, grad_b
