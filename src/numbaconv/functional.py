"""The stateless op: check arrays, build the spec, dispatch, run.

This is the one gate between user data and the kernels: every shape, dtype
and value a kernel relies on is checked here (or in :mod:`numbaconv.spec`)
before any compiled code runs.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from . import activations
from . import cuda as cuda_target
from .cache import kernel_cache
from .cpu import backward as cpu_backward
from .cpu import layout
from .cpu.direct import (channel_pads, filter_block, pack_weights, streams_output,
                         vector_tiles_pay)
from .cuda import run as cuda_run
from .dispatch import (checks_input, implementation, prefers_padded_input, select, supports,
                       wants_specialized)
from .spec import ConvSpec
from .variables import Snapshot, Variable

__all__ = [
    "as_float_array",
    "compute_dtypes",
    "conv2d",
    "convolve",
    "is_fused_relu",
    "plan",
    "resolve_device",
]


def as_float_array(value, name):
    """``value`` as a NumPy array of a floating dtype, the way Keras autocasts.

    Integers and booleans become float32 (Keras's default float); floating
    arrays keep their dtype.  Anything else is a ``TypeError`` naming ``name``.

    Parameters
    ----------
    value : array_like
    name : str
        Argument name for error messages.

    Returns
    -------
    numpy.ndarray
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists and the like
        raise TypeError(f"The `{name}` argument must be a numeric array. Received "
                        f"{name}={_short_repr(value)} ({err})") from None
    kind = array.dtype.kind
    if kind in "biu":
        return array.astype(np.float32)
    if kind == "f":
        return array if array.dtype.itemsize <= 8 else array.astype(np.float64)
    raise TypeError(f"The `{name}` argument must hold real numbers (float, int or bool). "
                    f"Received {name} with dtype={array.dtype}")


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


_FLOAT32 = np.dtype(np.float32)


def compute_dtypes(*arrays):
    """``(compute_dtype, result_dtype)`` for floating arrays.

    The result dtype follows NumPy promotion among the floats given; float16
    has no fast kernels, so it is computed in float32 and cast back, as Keras's
    mixed precision does.
    """
    result = arrays[0].dtype
    if any(a.dtype != result for a in arrays[1:]):  # the usual one dtype: no promotion (~3 µs)
        result = np.result_type(*(a.dtype for a in arrays))
    compute = _FLOAT32 if result.itemsize == 2 else result  # float16 (the arrays are floats)
    return compute, result


def dtype_name(dtype):
    """``dtype.name`` of a compute dtype, at a dictionary's cost (NumPy computes the name in
    Python, ~5 µs a call)."""
    return _NAMES.get(dtype) or dtype.name


_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def is_fused_relu(activation):
    """Whether ``activation`` is fused into the kernels: only the plain ``relu``."""
    return activation is activations.relu  # what activations.get("relu") gives, 1 us faster


def _all_finite(kernel):
    """Whether the kernel has no inf/NaN (remembered by a layer's Variable until it changes)."""
    if isinstance(kernel, (Variable, Snapshot)):
        return kernel.derived("all_finite", lambda value: bool(np.isfinite(value).all()))
    return bool(np.isfinite(kernel).all())


def _dense_nest():
    """The nest of one-group layers on this CPU (whose packing :func:`_pack_and_check` and
    :class:`_TransposedKernel` make in one pass with the check)."""
    return "dense_vector" if vector_tiles_pay() else "dense"


def _pack_and_check(kernel, dtype):
    """Pack a large one-group kernel for the dense layers' nest and check it for inf/NaN in
    one pass (:func:`~numbaconv.cpu.layout.filter_blocks_packed`), remembered by ``kernel``
    (a :class:`Snapshot`) as what :func:`convolve` derives otherwise in two: a 3x3 512→512
    kernel took 2.2 ms instead of 3.2 (pack 2.2, check 1.0; with AVX2, 2 threads)."""
    nest = _dense_nest()
    kernel.derived_together(((nest, dtype), "all_finite"), lambda: layout.filter_blocks_packed(
        np.ascontiguousarray(kernel.value, dtype=dtype), filter_block(nest, dtype)))


#: Target size of the per-thread copies of input images (padded, reordered or
#: converted): a call copies this much at a time, at least one image.
SCRATCH_BYTES = 8 << 20


@functools.cache
@functools.cache
def _physical_memory():
    """Bytes of physical memory, or 2**48 where the platform does not say (asked once)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 48


def _check_allocation(what, shape, dtype):
    """A clear ``MemoryError`` before allocating an array larger than physical memory.

    Sizes are Python integers, so the arithmetic cannot overflow.
    """
    nbytes = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
    available = _physical_memory()
    if nbytes > available:
        raise MemoryError(f"The {what} would need {nbytes / 2 ** 30:,.1f} GiB (shape "
                          f"{tuple(shape)}, {np.dtype(dtype).name}), more than this machine's "
                          f"{available / 2 ** 30:,.1f} GiB of memory")


def plan(spec, relu, hot, finite_kernel=True):
    """How :func:`convolve` runs ``spec``: implementation, nest, runner and the spec it runs.

    A spec runs in its own layout when an implementation reads it (dense
    layers, wide channels_first depthwise layers); otherwise channels_first
    data is reordered to channels_last on the way in and back on the way
    out (see :mod:`numbaconv.cpu.layout`).
    Kernels skip taps over padding; the input is padded explicitly instead
    when border pixels would cost more than the copy, and when an inf/NaN
    weight must meet the padded zeros (0 * inf = NaN, as in XLA).

    Parameters
    ----------
    spec : ConvSpec
    relu : bool
        Fuse a rectification into the kernel.
    hot : bool
        The configuration is expected to run again (worth specializing).
    finite_kernel : bool, default True
        The kernel holds no inf/NaN.

    Returns
    -------
    name : str
        Implementation and tier, as :func:`numbaconv.dispatch.select` reports it.
    nest : str
        The loop nest (:func:`~numbaconv.cpu.direct.pack_weights` prepares its weights).
    run : callable
        ``run(x, packed_w, b, out, run_spec, relu)``.
    run_spec : ConvSpec
        The spec the kernel runs: its layout, padded if ``pads`` are not zero.
    pads : ((int, int), (int, int))
        Zeros to add around the input before ``run``.
    """
    call = call_plan(spec, relu, hot, finite_kernel)
    return call.name, call.nest, call.run, call.run_spec, call.pads


class _CallPlan(NamedTuple):
    """What :func:`convolve` decides once for a configuration: :func:`plan`'s choices and
    how the call's arrays are made and passed."""

    name: str
    nest: str
    run: object
    run_spec: ConvSpec
    pads: tuple
    dtype: np.dtype
    aligned: bool  # allocate the output aligned for streamed stores
    channels: tuple  # zero channels around each input pixel's (see channel_pads)
    checked: bool  # the input is copied with a check for inf/NaN
    reorder: bool  # the kernel runs channels_last on channels_first data


def call_plan(spec, relu, hot, finite_kernel=True):
    """The :class:`_CallPlan` behind :func:`plan`, remembered in the kernel cache: a hit
    costs ~1 us, planning ~30 us (when each call derived the call's part, Python between
    calls cost a small layer more than its kernel: 30 us against 27 on 8²×32 depthwise)."""
    key = ("plan", spec, bool(relu), bool(finite_kernel), wants_specialized(spec, hot))
    return kernel_cache.get(key, lambda: _plan(spec, relu, hot, finite_kernel))


def _plan(spec, relu, hot, finite_kernel):
    run_spec = spec if supports(spec) else spec.as_channels_last()
    pads = ((0, 0), (0, 0))
    nest = implementation(run_spec, hot).nest
    if spec.pads != pads and (prefers_padded_input(nest, run_spec) or not finite_kernel):
        pads = spec.pads
        run_spec, _ = run_spec.padded()
    name, nest, run = select(run_spec, relu, hot)
    channels = channel_pads(nest, run_spec)
    return _CallPlan(name, nest, run, run_spec, pads, np.dtype(spec.dtype),
                     streams_output(nest, run_spec), channels,
                     channels != (0, 0) or checks_input(nest),
                     run_spec.data_format != spec.data_format)


def convolve(spec, x, kernel, bias, activation, hot):
    """Run ``activation(conv(x, kernel) + bias)`` for a validated ``spec``.

    Parameters
    ----------
    spec : ConvSpec
        Geometry matching the shapes of ``x`` and ``kernel``.
    x : numpy.ndarray
        Floating array; cast here to ``spec.dtype`` and made C-contiguous.
    kernel : numpy.ndarray, Variable or Snapshot
        Keras layout.  A layer's :class:`~numbaconv.variables.Variable` (or a
        snapshot of it) keeps its packed form between calls until its value
        changes.
    bias : numpy.ndarray or None
        Shape ``(spec.filters,)``, already checked.
    activation : callable
        Applied to the output (the plain ReLU is fused into the kernel).
    hot : bool
        The configuration is expected to run again (worth specializing).

    Returns
    -------
    numpy.ndarray
        In ``spec.dtype`` and ``spec.data_format``.
    """
    relu = is_fused_relu(activation)
    _check_allocation("output", spec.output_shape, spec.dtype)
    if math.prod(spec.output_shape) == 0:
        return np.empty(spec.output_shape, dtype=spec.dtype)
    if isinstance(kernel, Variable):
        kernel = kernel.snapshot()  # one value for the whole call
    padded = spec.pads != ((0, 0), (0, 0))
    if padded and spec.groups == 1 and not isinstance(kernel, _TransposedKernel):
        if not isinstance(kernel, Snapshot) and kernel.size >= layout.SMALL_KERNEL:
            kernel = Snapshot(kernel)  # this call's packed form and check, made together
        if isinstance(kernel, Snapshot) and kernel.value.size >= layout.SMALL_KERNEL:
            _pack_and_check(kernel, np.dtype(spec.dtype))
    finite = not padded or _all_finite(kernel)  # only padding needs it
    _, nest, run, run_spec, pads, dtype, aligned, channels, checked, reorder = call_plan(
        spec, relu, hot, finite)
    b = np.zeros(spec.filters, dtype=dtype) if bias is None else np.array(bias, dtype=dtype)

    def packed_for(nest):
        def pack(value):
            return pack_weights(nest, np.ascontiguousarray(value, dtype=dtype))

        return kernel.derived((nest, dtype), pack) if isinstance(kernel, Snapshot) else pack(kernel)

    packed = packed_for(nest)
    out = (layout.aligned_empty(spec.output_shape, dtype) if aligned
           else np.empty(spec.output_shape, dtype=dtype))
    # Kernels are compiled per array type: they get writable C-contiguous
    # arrays of the compute dtype only, so one compilation serves every call.
    direct = (not reorder and pads == ((0, 0), (0, 0)) and not checked
              and x.dtype == dtype and x.flags.c_contiguous and x.flags.writeable)
    if direct:
        run(x, packed, b, out, run_spec, relu)
    else:
        # Padded, reordered or converted copies are made a few images at a
        # time in a per-thread scratch buffer of about SCRATCH_BYTES, so a
        # call allocates little beyond its output whatever the batch.
        _check_allocation("copy of one input image", replace(run_spec, batch=1).input_shape,
                          dtype)
        image_bytes = (math.prod(run_spec.input_shape[1:3]) * (sum(channels) + spec.in_channels)
                       * dtype.itemsize)
        if reorder:
            image_bytes += math.prod(run_spec.output_shape[1:]) * dtype.itemsize
        step = max(1, SCRATCH_BYTES // image_bytes)
        for first in range(0, spec.batch, step):
            part = slice(first, min(first + step, spec.batch))
            part_spec = (run_spec if step >= spec.batch
                         else replace(run_spec, batch=part.stop - part.start))
            run_part, packed_part, finite = run, packed, True
            if checked:
                xs, finite = layout.pad_channels(x[part], spec.data_format, pads, channels, dtype)
            if not finite:  # an implementation exact on finite inputs only: the next one
                _, safe_nest, run_part = select(run_spec, relu, hot, finite_input=False)
                packed_part = packed_for(safe_nest)
            if not checked or not finite:
                xs = layout.prepare_input(x[part], spec.data_format, run_spec.data_format, pads,
                                          dtype)
            if reorder:
                ys = layout.scratch("output", part_spec.output_shape, dtype)
                run_part(xs, packed_part, b, ys, part_spec, relu)
                layout.to_channels_first(ys, out=out[part])
            else:
                run_part(xs, packed_part, b, out[part], part_spec, relu)
    if relu or activation is activations.linear:
        return out
    return np.asarray(activation(out), dtype=dtype)


class _CallCounter:
    """Remembers which configurations ``conv2d`` has run, to spot repeated ones."""

    LIMIT = 4096

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = set()

    def seen_before(self, spec):
        with self._lock:
            if spec in self._seen:
                return True
            if len(self._seen) >= self.LIMIT:
                self._seen.clear()
            self._seen.add(spec)
            return False


_calls = _CallCounter()


def _operand(value, name, target):
    """``value`` where ``target`` computes: a device array of a compute dtype stays on the GPU
    (read in place), anything else becomes a checked float NumPy array (``name`` in errors)."""
    if target == "cuda" and cuda_target.is_device_array(value) and cuda_target.in_place(value):
        return cuda_target.as_device_array(value)
    return as_float_array(cuda_target.to_host(value), name)


def resolve_device(device, inputs):
    """``"cpu"`` or ``"cuda"``: ``device`` checked, or (``None``) where ``inputs`` live.

    Raises a ``ValueError`` for an unknown device and a ``RuntimeError``
    naming what is missing when CUDA is asked for and cannot run.
    """
    if device not in cuda_target.DEVICES:
        raise ValueError(f"The `device` argument must be one of {cuda_target.DEVICES}. "
                         f"Received: device={device!r}")
    if device is None:
        device = "cuda" if cuda_target.is_device_array(inputs) else "cpu"
    if device == "cuda":
        cuda_target.require()
    return device


def conv2d(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1,
           bias=None, activation=None, device=None):
    """2-D convolution with Keras ``ops.conv`` semantics, plus fused bias and activation.

    Computes ``activation(conv(inputs, kernel) + bias)`` (a cross-correlation,
    as in every deep-learning framework).

    Parameters
    ----------
    inputs : array_like
        4-D: ``(batch, height, width, channels)`` for ``"channels_last"``,
        ``(batch, channels, height, width)`` for ``"channels_first"``.  A
        ``dask.array.Array`` gives a lazy dask array, computed block by block
        with halos where the image is chunked (see :mod:`numbaconv.dask_support`).
    kernel : array_like
        Keras layout ``(kernel_h, kernel_w, in_channels // groups, filters)``;
        the number of groups is inferred as ``in_channels // kernel.shape[2]``.
    strides : int or (int, int), default 1
    padding : {"valid", "same"} or ((int, int), (int, int)), default "valid"
        Case-insensitive.  ``"same"`` follows TensorFlow: output size
        ``ceil(in / stride)``, with the odd padding pixel at the bottom/right.
        Explicit ``((top, bottom), (left, right))`` zero padding is an extension.
    data_format : {"channels_last", "channels_first"}, optional
        Default: ``image_data_format`` from ``$KERAS_HOME/keras.json``
        (``~/.keras/keras.json``), else ``"channels_last"``.
    dilation_rate : int or (int, int), default 1
        May be combined with strides > 1 (as ``keras.ops.conv`` allows).
    bias : array_like, optional
        Shape ``(filters,)``, added to every output pixel.
    activation : str or callable, optional
        Any name or callable accepted by :func:`numbaconv.activations.get`.
    device : {None, "cpu", "cuda"}, default None
        Where to compute.  ``None`` follows ``inputs``: arrays exposing
        ``__cuda_array_interface__`` (Numba device arrays, CuPy arrays,
        PyTorch CUDA tensors) run on the GPU, everything else on the CPU.
        ``"cuda"`` with host inputs copies them over and the result back;
        ``"cpu"`` with device inputs copies them to the host.

    Returns
    -------
    numpy.ndarray, numba device array or dask.array.Array
        A Numba device array when ``inputs`` is a device array and the
        computation ran on the GPU; a lazy dask array for a dask input; a
        NumPy array otherwise.
        float32/float64 inputs compute and return in their own precision
        (the wider of inputs and kernel); integer and bool inputs compute in
        float32; float16 computes in float32 and returns float16.

    Raises
    ------
    ValueError
        Inconsistent shapes or arguments, naming the argument.
    TypeError
        Non-numeric arrays.
    RuntimeError
        ``device="cuda"`` (or a device array) where CUDA cannot run, naming
        what is missing.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.ones((1, 5, 5, 1), np.float32)
    >>> numbaconv.conv2d(x, np.ones((3, 3, 1, 1), np.float32), padding="same")[0, :, :, 0]
    array([[4., 6., 6., 6., 4.],
           [6., 9., 9., 9., 6.],
           [6., 9., 9., 9., 6.],
           [6., 9., 9., 9., 6.],
           [4., 6., 6., 6., 4.]], dtype=float32)
    """
    if type(inputs).__module__.startswith("dask."):  # lazy, block by block (imports dask)
        from .dask_support import conv2d as dask_conv2d
        return dask_conv2d(inputs, kernel, strides, padding, data_format, dilation_rate, bias,
                           activation, device)
    target = resolve_device(device, inputs)
    on_device = cuda_target.is_device_array(inputs)
    x = _operand(inputs, "inputs", target)
    w = as_float_array(cuda_target.to_host(kernel), "kernel")
    arrays = [x, w]
    if bias is not None:
        bias = as_float_array(cuda_target.to_host(bias), "bias")
        arrays.append(bias)
    compute_dtype, result_dtype = compute_dtypes(*arrays)
    spec = ConvSpec.from_arguments(tuple(x.shape), w.shape, strides, padding, data_format,
                                   dilation_rate, dtype_name(compute_dtype))
    if bias is not None and bias.shape != (spec.filters,):
        raise ValueError(f"The `bias` argument must have shape (filters,) = ({spec.filters},). "
                         f"Received bias.shape={bias.shape}")
    activation = activations.get(activation)
    if target == "cuda":
        out = cuda_run.convolve(spec, x, w, bias, activation)
        return cuda_run.deliver(out, result_dtype, on_device)
    out = convolve(spec, x, w, bias, activation, hot=_calls.seen_before(spec))
    return out.astype(result_dtype, copy=False)



def backward(spec, x, kernel, grad_output, hot=True):
    """``(grad_inputs, grad_kernel, grad_bias)`` of the convolution ``spec`` (validated).

    ``x`` and ``grad_output`` are in ``spec.data_format``, ``kernel`` in Keras
    layout; results in ``spec.dtype``, the input gradient in ``spec.data_format``.
    ``hot``: the configuration repeats (worth specializing, as in
    :func:`convolve`).  See :mod:`numbaconv.cpu.backward` for the loop nests.
    """
    dtype = np.dtype(spec.dtype)
    channels_first = spec.data_format == "channels_first"

    def channels_last(array, role):  # parallel reorders: NumPy's transposing copies are slow
        if channels_first:  # into reused buffers: no fresh pages on every call
            return layout.to_channels_last(array, dtype, role=role)
        return np.ascontiguousarray(array, dtype=dtype)

    xl = channels_last(x, "backward_inputs")
    gy = channels_last(grad_output, "backward_grad_output")
    kernel = np.asarray(kernel, dtype=dtype)
    kh, kw = spec.kernel_size
    cin = spec.in_channels // spec.groups
    geometry = (kh, kw, *spec.strides, *spec.dilation, spec.pads[0][0], spec.pads[1][0],
                spec.groups, cin, spec.filters // spec.groups)
    if xl.size and gy.size:
        specialized = wants_specialized(spec, hot)
        together = (cpu_backward.depthwise_gradients(spec, xl, gy, kernel, specialized)
                    if spec.is_depthwise else None)
        grad_kernel = None  # unless computed with the input gradient
        if together is not None:  # all three in one pass
            grad_x, grad_kernel, grad_bias = together
        elif cpu_backward.is_narrow(spec):
            grad_x = np.empty(xl.shape, dtype=dtype)
            cpu_backward.narrow_input_gradient(spec, gy, np.ascontiguousarray(kernel), grad_x,
                                               specialized)
        elif cpu_backward.gathers_depthwise_input_gradient(spec, specialized):
            grad_x = cpu_backward.depthwise_input_gradient(spec, gy, kernel, None, specialized)
        else:
            grad_x = _input_gradient_by_convolution(spec, gy, kernel, hot)
        if grad_x is None:  # the generic gather nest
            grad_x = np.empty(xl.shape, dtype=dtype)
            transposed = np.ascontiguousarray(kernel.transpose(0, 1, 3, 2))
            cpu_backward.input_gradient(gy, transposed, grad_x, *geometry)
        if grad_kernel is None:
            grad_kernel, grad_bias = cpu_backward.kernel_and_bias_gradients(spec, xl, gy,
                                                                            specialized)
    else:
        grad_x = np.zeros(xl.shape, dtype=dtype)
        grad_kernel = np.zeros((kh, kw, cin, spec.filters), dtype=dtype)
        grad_bias = cpu_backward.bias_gradient(gy)
    if channels_first:
        grad_x = layout.to_channels_first(np.ascontiguousarray(grad_x))
    return grad_x, grad_kernel, grad_bias


def _phase_taps(size, kernel, stride, dilation, pad_before, phase):
    """One phase of a transposed convolution along an axis, as a stride-1 correlation.

    Input positions ``phase + stride·m`` (``m < count``) receive the output
    gradient at ``m + start + j·step`` times tap ``taps[j]``.  With stride 1
    there is one phase and every tap, reversed, ``step`` the dilation; with
    stride ``s`` (no dilation) the taps ``≡ phase + pad_before (mod s)``.
    Returns ``(count, taps, start, step)``.
    """
    if stride == 1:
        return size, list(range(kernel))[::-1], pad_before - (kernel - 1) * dilation, dilation
    count = -(-(size - phase) // stride)
    first = (phase + pad_before) % stride
    taps = list(range(first, kernel, stride))[::-1]
    return count, taps, (phase + pad_before - first) // stride - (len(taps) - 1), 1


def _input_gradient_by_convolution(spec, gy, kernel, hot):
    """The input gradient of ``spec`` (channels_last) as forward convolutions.

    The transposed convolution of a stride-1 layer is itself a convolution:
    of the output gradient, padded by the kernel extent minus the forward
    padding, with the kernel flipped in space and its channel axes swapped
    within each group.  With stride ``s`` it splits into one such
    convolution per phase of the input pixels (``ih mod s``, ``iw mod s``),
    with the taps that reach that phase.  So it runs on the fast, specialized
    forward kernels.  Returns None when an axis is both strided and dilated,
    which the generic nest of :mod:`numbaconv.cpu.backward` computes.
    (Depthwise layers have a nest of their own there, strided ones because
    their phases were too small to pay for the calls, 2.5x slower than the
    generic nest on 112²×96 stride 2: see
    :func:`~numbaconv.cpu.backward.gathers_depthwise_input_gradient`.)
    """
    if cpu_backward.strided_and_dilated(spec):
        return None
    # (kh, kw, cout, groups * cin), flipped: tap t of the kernel is tap kh - 1 - t here.
    flipped = _TransposedKernel(kernel, spec.groups)
    # Planned once per configuration: the Python arithmetic cost a small layer's kernel time.
    phases = kernel_cache.get(("input_gradient_phases", spec), lambda: _phase_plans(spec))
    if spec.strides == (1, 1):  # one phase: the convolution's output is the gradient
        return _phase_gradient(phases[0], gy, flipped, hot)
    grad_x = np.empty((spec.batch, spec.height, spec.width, spec.in_channels), dtype=gy.dtype)
    for phase in phases:
        grad_x[phase.target] = _phase_gradient(phase, gy, flipped, hot)
    return grad_x


class _TransposedKernel(Snapshot):
    """The kernel of the input gradient's convolution, made in the forms the convolution reads.

    ``value`` is :func:`~numbaconv.cpu.layout.flipped_transposed_kernel` of
    ``kernel``, made on first use.  A large one-group kernel is packed for
    the dense nest and checked for inf/NaN straight from ``kernel``, in one
    pass (:func:`~numbaconv.cpu.layout.flipped_transposed_packed`; on 7²×512
    at N=1, flipping, packing and checking took three passes over 9.4 MB,
    a quarter of the backward), and ``value`` is then never made.
    """

    __slots__ = ("_flipped", "_groups", "_kernel")

    def __init__(self, kernel, groups):  # no Snapshot.__init__: ``value`` is made on demand
        self._kernel, self._groups, self._flipped = kernel, groups, None
        self._derived = {}

    @property
    def value(self):
        if self._flipped is None:
            self._flipped = layout.flipped_transposed_kernel(self._kernel, self._groups)
        return self._flipped

    def derived(self, key, compute):
        dtype = self._kernel.dtype
        nest = _dense_nest()
        packed = (nest, dtype)
        if (key in ("all_finite", packed) and self._groups == 1
                and self._kernel.size >= layout.SMALL_KERNEL):
            self.derived_together((packed, "all_finite"), lambda: layout.flipped_transposed_packed(
                self._kernel, filter_block(nest, dtype)))
        return super().derived(key, compute)


class _Phase(NamedTuple):
    """One phase of the transposed convolution as a forward convolution (see
    :func:`_phase_plans`): ``grad_x[target] = conv(gy[source], flipped[taps])``
    under ``spec``, or zeros of ``shape`` where ``spec`` is None."""

    target: tuple
    source: tuple
    taps: tuple | None  # (rows, cols) of the flipped kernel; None: all of it
    spec: ConvSpec | None
    shape: tuple


def _phase_plans(spec):
    """The phases of :func:`_input_gradient_by_convolution` for ``spec``, row phase major."""
    kh, kw = spec.kernel_size
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    out_hw = spec.output_hw
    plans = []
    for a in range(sh):
        rows = _phase_taps(spec.height, kh, sh, dh, spec.pads[0][0], a)
        for b in range(sw):
            cols = _phase_taps(spec.width, kw, sw, dw, spec.pads[1][0], b)
            target = (slice(None), slice(a, None, sh), slice(b, None, sw))
            plans.append(_phase_plan(spec, rows, cols, out_hw, target))
    return tuple(plans)


def _phase_plan(spec, rows, cols, out_hw, target):
    """One :class:`_Phase` from the taps of :func:`_phase_taps` along each axis."""
    (count_h, taps_h, start_h, step_h), (count_w, taps_w, start_w, step_w) = rows, cols
    shape = (spec.batch, count_h, count_w, spec.in_channels)
    zeros = _Phase(target, (), None, None, shape)
    if not (taps_h and taps_w and count_h and count_w):
        return zeros
    pads, crops = [], [slice(None)]
    for count, taps, start, step, out in ((count_h, taps_h, start_h, step_h, out_hw[0]),
                                          (count_w, taps_w, start_w, step_w, out_hw[1])):
        before = -start  # zeros before the first output gradient read (or rows skipped)
        after = count - 1 + start + (len(taps) - 1) * step - (out - 1)
        crops.append(slice(max(0, -before), out + min(0, after)))
        pads.append((max(0, before), max(0, after)))
    source_hw = [len(range(out)[crop]) for crop, out in zip(crops[1:], out_hw)]
    spans = ((len(taps_h) - 1) * step_h + 1, (len(taps_w) - 1) * step_w + 1)
    if any(source_hw[i] + sum(pads[i]) < spans[i] for i in (0, 1)):
        return zeros  # outside every window
    kh, kw = spec.kernel_size
    rows_taps = [kh - 1 - t for t in taps_h]
    cols_taps = [kw - 1 - t for t in taps_w]
    everything = rows_taps == list(range(kh)) and cols_taps == list(range(kw))
    taps = None if everything else np.ix_(rows_taps, cols_taps)  # stride 1: every tap, no copy
    filters = spec.filters
    taps_shape = (len(rows_taps), len(cols_taps), filters // spec.groups,
                  spec.in_channels)
    gradient_spec = ConvSpec.from_arguments((spec.batch, *source_hw, filters), taps_shape, 1,
                                            tuple(pads), "channels_last", (step_h, step_w),
                                            spec.dtype)
    return _Phase(target, tuple(crops), taps, gradient_spec, shape)


def _phase_gradient(phase, gy, flipped, hot):
    """The input gradient of one :class:`_Phase` (zeros where no tap reaches it)."""
    if phase.spec is None:
        return np.zeros(phase.shape, dtype=gy.dtype)
    taps = flipped if phase.taps is None else np.ascontiguousarray(flipped.value[phase.taps])
    source = np.ascontiguousarray(gy[phase.source])
    return convolve(phase.spec, source, taps, None, activations.linear, hot)


def conv2d_backward(grad_output, inputs, kernel, strides=1, padding="valid", data_format=None,
                    dilation_rate=1, device=None):
    """Gradients of :func:`conv2d` (before bias and activation) with respect to its operands.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to the convolution's output, shaped
        like that output.
    inputs, kernel, strides, padding, data_format, dilation_rate
        As for :func:`conv2d`.
    device : {None, "cpu", "cuda"}, default None
        As for :func:`conv2d`: ``None`` computes where ``inputs`` live (on the
        GPU for a device array).

    Returns
    -------
    grad_inputs : numpy.ndarray or numba device array
        Shaped like ``inputs``.
    grad_kernel : numpy.ndarray or numba device array
        Shaped like ``kernel``.
    grad_bias : numpy.ndarray or numba device array
        ``(filters,)``: what a bias added to the output would receive.
        The three are device arrays when ``inputs`` is one and the gradients
        were computed on the GPU, NumPy arrays otherwise.

    Raises
    ------
    ValueError
        Inconsistent shapes, naming the argument (``grad_output`` must have the
        output's shape).

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.ones((1, 3, 3, 1)); k = np.ones((2, 2, 1, 1))
    >>> gx, gk, gb = numbaconv.conv2d_backward(np.ones((1, 2, 2, 1)), x, k)
    >>> gx[0, :, :, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gk[:, :, 0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([4.]))
    """
    target = resolve_device(device, inputs)
    on_device = cuda_target.is_device_array(inputs)
    x, w, gy = (_operand(value, name, target) for value, name in (
        (inputs, "inputs"), (kernel, "kernel"), (grad_output, "grad_output")))
    compute_dtype, result_dtype = compute_dtypes(x, w, gy)
    spec = ConvSpec.from_arguments(tuple(x.shape), tuple(w.shape), strides, padding,
                                   data_format, dilation_rate, dtype_name(compute_dtype))
    if tuple(gy.shape) != spec.output_shape:
        raise ValueError(f"The `grad_output` argument must have the convolution's output shape "
                         f"{spec.output_shape}. Received grad_output.shape={tuple(gy.shape)}")
    if target == "cuda":
        gradients = cuda_run.backward(spec, x, w, gy)
        return tuple(cuda_run.deliver(g, result_dtype, on_device) for g in gradients)
    gradients = backward(spec, x, w, gy, hot=_calls.seen_before(("backward", spec)))
    return tuple(g.astype(result_dtype, copy=False) for g in gradients)
