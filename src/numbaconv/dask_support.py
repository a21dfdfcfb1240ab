"""Dask arrays in, lazy Dask arrays out: :func:`numbaconv.conv2d` and ``Conv2D`` block by block.

:func:`numbaconv.conv2d` and :class:`numbaconv.Conv2D` hand a ``dask.array.Array``
input to this module, which returns a lazy array equal, bit for bit, to the
in-memory result.  Dask is imported only here, and this module only when an
input's type comes from Dask.

How the blocks are cut, along each spatial axis (:func:`axis_plan`):

* An output pixel belongs to the input chunk that holds its window's centre
  (its first tap ``o * stride - pad_before`` plus half the dilated kernel
  extent).  With ``"same"`` padding and stride 1 the output chunks are then
  the input's; with stride ``s``, about the input's divided by ``s``.
* A block computes whole outputs, so its input starts where its first
  output's window starts: ``first * stride - pad_before``, a multiple of the
  stride shifted by the padding.  Each input chunk boundary moves there (back
  or forward by less than the stride plus half the kernel): the input is
  rechunked to stride-aligned boundaries, a no-op when they already are.  A
  chunk merges into the previous one when it would be empty, shorter than the
  halo, or (along the width) hold fewer outputs than one register tile
  (``cpu.direct.DENSE_TILE``), so that every block runs the loop nest the
  whole array runs.  Windows lying in the padding only (wide explicit
  padding) are computed on zeros.
* The halo is the kernel's dilated extent minus the stride, on the *after*
  side only: a block's last output reads that many rows past its own chunk,
  and no output reads before its chunk.  It comes from
  ``dask.array.overlap.overlap`` with the asymmetric depth ``(0, halo)`` and
  no boundary (chunks are at least the halo long, so one neighbour holds it).
* Each block then runs the in-memory op on its rows with explicit padding:
  the padding before on the first block, the padding after on blocks whose
  windows pass the end, exactly the zeros the whole-array call reads (or
  skips) there.  Every output pixel sums the same taps in the same order as
  in memory, hence the identical bits.

The channel axis is rechunked to one chunk (every output channel reads all
the input channels of its group); batch chunks are kept, so an input chunked
along the batch axis only runs one ``map_blocks`` task per batch chunk.
Output chunks: the batch chunks of the input, the spatial chunks of the plan,
all filters in one chunk.  Activations run per block: Keras's ``softmax``,
``log_softmax``, ``sparsemax`` and ``glu`` act along the last axis (the width
for channels_first), as may any user callable, so with those the last axis
stays one chunk.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass

import numpy as np

from . import activations, functional
from .cpu import direct
from .cuda import run as cuda_run
from .spec import ConvSpec

__all__ = ["AxisPlan", "axis_plan", "conv2d", "is_dask_array", "layer_call"]


def is_dask_array(value):
    """Whether ``value`` is a ``dask.array.Array`` (never imports Dask)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(value, module.Array)


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis is cut into blocks.

    Attributes
    ----------
    in_chunks : tuple of int
        Input chunks (stride-aligned, each at least ``halo`` long).
    out_chunks : tuple of int
        Output chunks, one per input chunk.
    halo : int
        Rows each block reads from the next chunk.
    reads : tuple of (int, int, int)
        Per block ``(keep, pad_before, pad_after)``: the first ``keep`` rows of
        the block (with its halo) are convolved with that much zero padding;
        ``keep == 0`` means the block's windows lie in the padding only.
    """

    in_chunks: tuple
    out_chunks: tuple
    halo: int
    reads: tuple


def axis_plan(chunks, size, kernel, stride, dilation, pads, min_outputs=1):
    """Block plan of one spatial axis (see the module docstring).

    Parameters
    ----------
    chunks : tuple of int
        The input's chunks along the axis.
    size, kernel, stride, dilation : int
        Input length, kernel length, stride and dilation along the axis.
    pads : (int, int)
        Zero padding before and after (the spec's, "same" already resolved).
    min_outputs : int, default 1
        Fewest outputs per block (smaller ones merge into the previous one).

    Returns
    -------
    AxisPlan

    Examples
    --------
    >>> plan = axis_plan((5, 5, 5), 15, 3, 2, 1, (1, 1))  # 'same', stride 2
    >>> plan.in_chunks, plan.out_chunks, plan.halo
    ((5, 4, 6), (3, 2, 3), 1)
    """
    extent = (kernel - 1) * dilation + 1
    before, after = pads
    count = (size + before + after - extent) // stride + 1
    halo = max(extent - stride, 0)
    shortest = max(halo, 1)
    centre = (extent - 1) // 2
    cuts, starts = [0], [0]  # first output and first input row of each block
    for edge in itertools.accumulate(chunks[:-1]):
        cut = -(-(edge + before - centre) // stride)  # first output centred at or past edge
        start = cut * stride - before  # where its window starts: stride-aligned
        if (start - starts[-1] >= shortest and size - start >= shortest
                and cut - cuts[-1] >= min_outputs and count - cut >= min_outputs):
            cuts.append(cut)
            starts.append(start)
    in_chunks = tuple(b - a for a, b in zip(starts, starts[1:] + [size]))
    out_chunks = tuple(b - a for a, b in zip(cuts, cuts[1:] + [count]))
    reads = []
    for index, (rows, outputs) in enumerate(zip(in_chunks, out_chunks)):
        available = rows + (halo if index < len(in_chunks) - 1 else 0)
        pad_before = before if index == 0 else 0
        needed = (outputs - 1) * stride + extent
        keep = max(0, min(available, needed - pad_before))
        if keep == 0:  # every window in the padding: convolve zeros
            pad_before = 0
        reads.append((keep, pad_before, needed - pad_before - keep))
    return AxisPlan(in_chunks, out_chunks, halo, tuple(reads))


def _run_block(block, plans, axes, run, block_id=None):
    """Convolve one overlapped block: crop it to its windows and pad it as planned."""
    index = [slice(None)] * block.ndim
    shape = list(block.shape)
    pads, empty = [], False
    for axis, plan in zip(axes, plans):
        keep, before, after = plan.reads[block_id[axis]]
        index[axis] = slice(0, keep)
        shape[axis] = keep or after
        pads.append((before, after) if keep else (0, 0))
        empty = empty or not keep
    x = np.zeros(shape, dtype=block.dtype) if empty else block[tuple(index)]
    return run(x, tuple(pads))


class _Conv2dBlock:
    """:func:`numbaconv.conv2d` on one block, with the block's explicit padding."""

    def __init__(self, kernel, bias, activation, strides, data_format, dilation, device):
        self.arguments = (kernel, bias, activation, strides, data_format, dilation, device)

    def __call__(self, x, pads):
        kernel, bias, activation, strides, data_format, dilation, device = self.arguments
        return functional.conv2d(x, kernel, strides=strides, padding=pads,
                                 data_format=data_format, dilation_rate=dilation, bias=bias,
                                 activation=activation, device=device)


class _LayerBlock:
    """A layer's computation on one block: its compute dtype, its weights from call time."""

    def __init__(self, kernel, bias, activation, strides, data_format, dilation, compute,
                 dtype, device):
        self.arguments = (kernel, bias, activation, strides, data_format, dilation, compute,
                          dtype, device)

    def __call__(self, x, pads):
        (kernel, bias, activation, strides, data_format, dilation, compute, dtype,
         device) = self.arguments
        x = functional.as_float_array(x, "inputs")
        spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, pads, data_format,
                                       dilation, compute)
        if device == "cuda":
            out = cuda_run.deliver(cuda_run.convolve(spec, x, kernel, bias, activation),
                                   dtype, False)
        else:
            out = functional.convolve(spec, x, kernel, bias, activation, hot=True)
        return np.asarray(out).astype(dtype, copy=False)


def _check_array(x):
    """``x`` must be a Dask array of known shape; returns its float dtype (Keras autocast)."""
    if not is_dask_array(x):
        raise TypeError("The `inputs` argument must be a dask.array.Array when it comes from "
                        f"Dask. Received inputs of type {type(x).__module__}."
                        f"{type(x).__name__}")
    if any(math.isnan(n) for n in x.shape):
        raise ValueError("The `inputs` argument must have known chunk sizes: call "
                         f"inputs.compute_chunk_sizes() first. Received inputs.shape={x.shape}")
    if x.ndim != 4:
        raise ValueError("The `inputs` argument must be 4-D (batch, height, width, channels) "
                         f"or (batch, channels, height, width). Received inputs.shape={x.shape}")
    return functional.as_float_array(np.empty(0, dtype=x.dtype), "inputs").dtype


#: Activations acting along the last axis (Keras's default ``axis=-1``), not per pixel.
_ALONG_LAST_AXIS = ("softmax", "log_softmax", "sparsemax", "glu")


def _last_axis_size(activation, spec, dtype):
    """Output length along the last axis after ``activation``, or None if it acts per pixel.

    Registered activations other than :data:`_ALONG_LAST_AXIS` act per
    element; others (and any callable of the user's) may mix the last axis,
    the width for channels_first, so it stays one chunk.  A zero probe tells
    its length after the activation (``glu`` halves it).
    """
    if (getattr(activation, "__module__", None) == activations.__name__
            and activation.__name__ not in _ALONG_LAST_AXIS):
        return None
    last = spec.output_shape[-1]
    return np.shape(activation(np.zeros((1, 1, 1, last), dtype=dtype)))[-1]


def _lazy(x, spec, run, dtype, activation):
    """The lazy output of ``run`` over the blocks of ``x`` (see the module docstring)."""
    import dask.array as da

    if spec.data_format == "channels_last":
        axes, channel_axis = (1, 2), 3
    else:
        axes, channel_axis = (2, 3), 1
    last = _last_axis_size(activation, spec, dtype)
    if last is not None:
        x = x.rechunk({3: -1})
    # Blocks at least one register tile wide run the loop nest the whole array
    # runs (the shifted grouped nest needs a full tile), so they sum alike.
    plans = tuple(axis_plan(x.chunks[axis], x.shape[axis], k, s, d, p, least)
                  for axis, k, s, d, p, least in zip(axes, spec.kernel_size, spec.strides,
                                                     spec.dilation, spec.pads,
                                                     (1, direct.DENSE_TILE)))
    chunks = list(x.chunks)
    chunks[channel_axis] = (spec.in_channels,)
    out_chunks = list(x.chunks)
    out_chunks[channel_axis] = (spec.filters,)
    for axis, plan in zip(axes, plans):
        chunks[axis] = plan.in_chunks
        out_chunks[axis] = plan.out_chunks
    if last is not None:
        out_chunks[3] = (last,)
    x = x.rechunk(tuple(chunks))  # a no-op when already aligned
    depth = {axis: (0, plan.halo) for axis, plan in zip(axes, plans)
             if plan.halo and len(plan.in_chunks) > 1}
    if depth:
        x = da.overlap.overlap(x, depth=depth, boundary="none", allow_rechunk=False)
    # Chunked along the batch only, this is one map_blocks task per batch chunk.
    return x.map_blocks(_run_block, plans=plans, axes=axes, run=run, dtype=dtype,
                        chunks=tuple(out_chunks), meta=np.empty((0,) * 4, dtype=dtype),
                        token="numbaconv-conv2d")


def conv2d(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1,
           bias=None, activation=None, device=None):
    """:func:`numbaconv.conv2d` of a Dask array: a lazy Dask array, equal to the in-memory result.

    Parameters are those of :func:`numbaconv.conv2d`; ``kernel`` and ``bias``
    are read now (a Dask kernel is computed).  Each block runs
    :func:`numbaconv.conv2d` on ``device`` (host blocks, host results).

    Returns
    -------
    dask.array.Array
        Batch chunks as the input's, spatial chunks from :func:`axis_plan`,
        one chunk of filters.

    Raises
    ------
    ValueError, TypeError, RuntimeError
        As :func:`numbaconv.conv2d`, and for unknown chunk sizes.
    """
    x_dtype = _check_array(inputs)
    target = functional.resolve_device(device, inputs)
    w = functional.as_float_array(kernel, "kernel")
    arrays = [np.empty(0, dtype=x_dtype), w]
    if bias is not None:
        bias = functional.as_float_array(bias, "bias")
        arrays.append(bias)
    compute_dtype, result_dtype = functional.compute_dtypes(*arrays)
    spec = ConvSpec.from_arguments(tuple(inputs.shape), w.shape, strides, padding, data_format,
                                   dilation_rate, functional.dtype_name(compute_dtype))
    if bias is not None and bias.shape != (spec.filters,):
        raise ValueError(f"The `bias` argument must have shape (filters,) = ({spec.filters},). "
                         f"Received bias.shape={bias.shape}")
    run = _Conv2dBlock(w, bias, activations.get(activation), spec.strides, spec.data_format,
                       spec.dilation, target)
    return _lazy(inputs, spec, run, result_dtype, run.arguments[2])


def layer_call(layer, inputs, training=None):
    """``layer(inputs)`` for a Dask array: lazy, with the weights as they are now.

    Bias and activation are applied per block, in the layer's compute dtype;
    an activity regularizer's loss is a lazy 0-d Dask array.  The weights are
    copied at call time: later ``set_weights`` calls do not change the result.

    Raises
    ------
    NotImplementedError
        ``training=True`` (back-propagation keeps in-memory arrays), or a
        subclass overriding ``convolution_op``.
    """
    import dask
    import dask.array as da

    from .layer import Conv2D

    if training:
        raise NotImplementedError("A Conv2D layer trains on in-memory inputs only: compute the "
                                  "Dask array first. Received training=True with a Dask input")
    if type(layer).convolution_op is not Conv2D.convolution_op:
        raise NotImplementedError(f"{type(layer).__name__} overrides convolution_op: it cannot "
                                  "run block by block on a Dask array")
    _check_array(inputs)
    layer._prepare_inputs(inputs, on_device=True)  # shape checks only: the array stays lazy
    spec = layer._spec(tuple(inputs.shape))
    target = functional.resolve_device(layer.device, inputs)
    with layer._weights_lock:  # a consistent pair against set_weights()
        kernel = layer._kernel.numpy()
        bias = layer.bias.numpy() if layer.use_bias else None
    run = _LayerBlock(kernel, bias, layer.activation, spec.strides, spec.data_format,
                      spec.dilation, spec.dtype, layer.compute_dtype, target)
    outputs = _lazy(inputs, spec, run, np.dtype(layer.compute_dtype), layer.activation)
    layer._activity_losses = []
    if layer.activity_regularizer is not None:
        batch = outputs.shape[0]  # Keras divides by the batch size (0 -> 0)
        loss = dask.delayed(layer.activity_regularizer)(outputs)
        loss = da.from_delayed(loss, shape=(), dtype=outputs.dtype)
        layer._activity_losses.append(loss / batch if batch else loss * 0)
    if layer._first_call is None:
        layer._first_call = (inputs, outputs)
    return outputs
