"""Ahead-of-time compilation: ``numbaconv.warmup(configurations)``."""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np

from . import activations
from .cpu import layout
from .cpu.direct import channel_pads, pack_weights
from .functional import is_fused_relu, plan
from .layer import Conv2D
from .spec import ConvSpec

__all__ = ["warmup"]


def _spec_of(config, dtype):
    """``(spec, relu)`` for a built layer or a dict of ``conv2d`` arguments."""
    if isinstance(config, Conv2D):
        if not config.built or config._build_shape is None:
            raise ValueError(f"warmup needs layers built for a known input shape; layer "
                             f"'{config.name}' is not built (call layer.build(input_shape)).")
        compute = "float32" if config.compute_dtype == "float16" else config.compute_dtype
        spec = ConvSpec.from_arguments(config._build_shape, config.kernel.shape, config.strides,
                                       config.padding, config.data_format,
                                       config.dilation_rate, compute)
        return spec, is_fused_relu(config.activation)
    if not isinstance(config, dict):
        raise TypeError("Each configuration must be a built Conv2D layer or a dict of conv2d "
                        f"arguments with 'input_shape' and 'kernel_shape'. Received {config!r}")
    config = dict(config)
    try:
        input_shape, kernel_shape = config.pop("input_shape"), config.pop("kernel_shape")
    except KeyError as err:
        raise ValueError(f"A warmup configuration needs {err.args[0]!r}. "
                         f"Received {config!r}") from None
    activation = activations.get(config.pop("activation", None))
    dtype = np.dtype(config.pop("dtype", dtype)).name
    spec = ConvSpec.from_arguments(input_shape, kernel_shape, config.pop("strides", 1),
                                   config.pop("padding", "valid"),
                                   config.pop("data_format", None),
                                   config.pop("dilation_rate", 1), dtype)
    if config:
        raise ValueError(f"Unknown warmup configuration keys: {sorted(config)}")
    return spec, is_fused_relu(activation)


def warmup(configurations, dtype="float32", progress=None):
    """Compile the kernels of several configurations now, instead of at their first call.

    Compiled kernels go to the process-wide kernel cache and to the disk
    cache, so this also prepares later processes.

    Parameters
    ----------
    configurations : iterable
        Built :class:`~numbaconv.Conv2D` layers, or dicts of :func:`~numbaconv.conv2d`
        arguments with ``input_shape`` and ``kernel_shape`` (and optionally
        ``strides``, ``padding``, ``data_format``, ``dilation_rate``,
        ``activation``, ``dtype``).
    dtype : str, default "float32"
        Compute dtype of dict configurations that do not name one.
    progress : bool, optional
        Print one line per configuration to stderr.  Default: only once the
        warm-up has taken more than a second.

    Returns
    -------
    list of str
        The implementation chosen for each configuration.
    """
    configurations = list(configurations)
    specs = [_spec_of(config, dtype) for config in configurations]  # validate all first
    start = time.perf_counter()
    chosen = []
    for index, (spec, relu) in enumerate(specs, 1):
        name, nest, run, run_spec, pads = plan(spec, relu, hot=True)
        # Zero-batch calls compile for these array types and run no task.
        dt = np.dtype(spec.dtype)
        x = np.zeros(replace(spec, batch=0).input_shape, dt)
        channels = channel_pads(nest, run_spec)
        if channels != (0, 0):
            x = layout.pad_channels(x, spec.data_format, pads, channels, dt)[0]
        else:
            x = layout.prepare_input(x, spec.data_format, run_spec.data_format, pads, dt)
        empty = replace(run_spec, batch=0)
        out = np.zeros(empty.output_shape, dt)
        run(x, pack_weights(nest, np.zeros(spec.kernel_shape, dt)), np.zeros(spec.filters, dt),
            out, empty, relu)
        if run_spec.data_format != spec.data_format:
            layout.to_channels_first(out)
        chosen.append(name)
        elapsed = time.perf_counter() - start
        if progress or (progress is None and elapsed > 1.0):
            print(f"[{index}/{len(specs)}] {name}: {spec.kernel_size} on "
                  f"{spec.height}x{spec.width}x{spec.in_channels} -> {spec.filters} "
                  f"({elapsed:.1f} s)", file=sys.stderr, flush=True)
    return chosen
