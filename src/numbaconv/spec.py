"""Convolution geometry: argument normalization, padding math, output shapes.

Everything about *where* an output pixel reads its inputs lives here, in plain
Python (no Numba), so that the layer, the functional op, every kernel target
and the tests agree on one set of formulas.  Kernels receive explicit integers
from a :class:`ConvSpec` and never validate anything themselves.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
from dataclasses import dataclass, fields, replace

__all__ = [
    "ConvSpec",
    "standardize_tuple",
    "standardize_padding",
    "standardize_data_format",
    "image_data_format",
    "conv_output_length",
    "same_padding",
    "output_length",
]

_LAYOUTS = ("channels_last", "channels_first")


def _is_int(value) -> bool:
    if type(value) is int:  # the common case, without the slow ABC check
        return True
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def standardize_tuple(value, n, name, allow_zero=False):
    """Turn an int or an iterable of ``n`` ints into a tuple of ``n`` ints.

    Parameters
    ----------
    value : int or iterable of int
        The user's value (``3`` or ``(3, 3)``).
    n : int
        Length of the result.
    name : str
        Argument name, echoed in error messages.
    allow_zero : bool
        Whether 0 is acceptable (it never is for sizes, strides or dilation).

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        If the value is not an int or an iterable of ``n`` ints, or holds a
        negative (or zero, unless allowed) entry.
    """
    message = f"The `{name}` argument must be a tuple of {n} integers. Received {name}={value!r}"
    if _is_int(value):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise ValueError(message) from None
        if len(values) != n or not all(_is_int(v) for v in values):
            raise ValueError(message)
        values = tuple(int(v) for v in values)
    lowest = 0 if allow_zero else 1
    bad = sorted({v for v in values if v < lowest})
    if bad:
        raise ValueError(f"{message}, including values {set(bad)} that do not satisfy "
                         f"`value {'>= 0' if allow_zero else '> 0'}`")
    return values


def standardize_padding(padding, allow_explicit=False):
    """Normalize ``padding`` to ``"valid"``, ``"same"`` or explicit pads.

    Parameters
    ----------
    padding : str or ((int, int), (int, int))
        ``"valid"`` / ``"same"`` in any case; with ``allow_explicit``, also
        ``((top, bottom), (left, right))``, ``(pad_h, pad_w)`` or one int.
    allow_explicit : bool
        The functional op accepts explicit pads as an extension; the Keras
        layer does not.

    Returns
    -------
    str or tuple of tuple of int
    """
    if isinstance(padding, str):
        lowered = padding.lower()
        if lowered in ("valid", "same"):
            return lowered
    elif allow_explicit:
        pads = _explicit_pads(padding)
        if pads is not None:
            return pads
    allowed = "'valid', 'same'" + (
        " or ((top, bottom), (left, right)) non-negative ints" if allow_explicit else ""
    )
    raise ValueError(
        f"The `padding` argument must be one of {allowed}. Received: padding={padding!r}"
    )


def _explicit_pads(padding):
    """``((t, b), (l, r))`` from an int, ``(h, w)`` or a pair of pairs; else None."""
    if _is_int(padding):
        padding = (padding, padding)
    try:
        pair = tuple(padding)
        if len(pair) != 2:
            return None
        pads = tuple((p, p) if _is_int(p) else tuple(p) for p in pair)
    except TypeError:
        return None
    if any(len(p) != 2 or not all(_is_int(v) and v >= 0 for v in p) for p in pads):
        return None
    return tuple(tuple(int(v) for v in p) for p in pads)


_config_cache = {}


@functools.lru_cache(maxsize=8)
def _config_path(keras_home, home):
    """Keras's config file for these ``KERAS_HOME`` and ``HOME`` values (remembered: the
    path arithmetic cost half of building a spec)."""
    keras_home = keras_home or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "keras.json")


def image_data_format():
    """The default layout: ``image_data_format`` from the Keras config file.

    Reads ``$KERAS_HOME/keras.json`` (default ``~/.keras/keras.json``) the way
    Keras does.  The file is parsed again only when its modification time or
    size changes, so edits take effect without re-import at the cost of one
    ``stat`` per call.  A missing or unreadable file means ``"channels_last"``.
    """
    path = _config_path(os.environ.get("KERAS_HOME"), os.environ.get("HOME"))
    try:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in _config_cache:
            with open(path) as f:
                value = json.load(f).get("image_data_format", "channels_last")
            _config_cache.clear()
            _config_cache[key] = value if value in _LAYOUTS else "channels_last"
        return _config_cache[key]
    except (OSError, ValueError, AttributeError):
        return "channels_last"


def standardize_data_format(data_format):
    """``None`` -> the configured default; otherwise validate the layout name."""
    if data_format is None:
        return image_data_format()
    lowered = data_format.lower() if isinstance(data_format, str) else data_format
    if lowered not in _LAYOUTS:
        raise ValueError(
            "The `data_format` argument must be one of {'channels_first', "
            f"'channels_last'}}. Received: data_format={data_format!r}"
        )
    return lowered


def same_padding(size, kernel, stride, dilation):
    """TensorFlow's "same" padding along one axis: ``(before, after)``.

    The output has ``ceil(size / stride)`` positions; the total padding is
    whatever makes the last window fit, with the odd pixel at the end
    (bottom/right), as TensorFlow, XLA and Keras do.
    """
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def conv_output_length(size, kernel, stride, dilation, pads):
    """Output length along one axis for explicit ``pads = (before, after)``.

    ``None`` (unknown) input sizes give ``None``.  The result may be zero or
    negative; callers decide whether that is an error.
    """
    if size is None:
        return None
    effective = (kernel - 1) * dilation + 1
    return (size + pads[0] + pads[1] - effective) // stride + 1


def output_length(size, kernel, stride, dilation, padding):
    """Output length along one axis for ``padding`` "valid" or "same" (``None`` stays ``None``)."""
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return conv_output_length(size, kernel, stride, dilation, (0, 0))


#: How many validated specs :meth:`ConvSpec.from_arguments` remembers (then starts over).
SPEC_CACHE_SIZE = 1024
_SPECS = {}


def _plain(value):
    """Whether ``value`` is an ``int``, ``str``, None, or a tuple of such (exact types: no
    bools, floats or NumPy scalars, whose checks must run every time)."""
    kind = type(value)
    if kind is not tuple:
        return kind is int or kind is str or value is None
    for item in value:  # a loop, recursing into tuples only: ~1 µs a key instead of ~5
        kind = type(item)
        if not (kind is int or kind is str or item is None or (kind is tuple and _plain(item))):
            return False
    return True


@dataclass(frozen=True)
class ConvSpec:
    """The full, validated geometry of one 2-D convolution call.

    Hashable, so it serves as the kernel-cache key.  All sizes are Python ints.

    Attributes
    ----------
    batch, height, width, in_channels : int
        Input sizes (layout-independent).
    filters, groups : int
        Output channels and channel groups (``in_channels // groups`` inputs
        feed each output channel).
    kernel_size, strides, dilation : (int, int)
    pads : ((int, int), (int, int))
        Explicit ``((top, bottom), (left, right))`` zero padding.
    data_format : str
        ``"channels_last"`` or ``"channels_first"``.
    dtype : str
        Compute dtype name, ``"float32"`` or ``"float64"``.
    """

    batch: int
    height: int
    width: int
    in_channels: int
    filters: int
    groups: int
    kernel_size: tuple
    strides: tuple
    dilation: tuple
    pads: tuple
    data_format: str
    dtype: str

    def __hash__(self):
        # Computed once: a spec keys the caches several times a call (~1 us each).
        value = self.__dict__.get("_hash")
        if value is None:
            value = self.__dict__["_hash"] = hash(tuple(getattr(self, field.name)
                                                        for field in fields(self)))
        return value

    def __getstate__(self):
        # Without the cached hash: string hashes differ between processes.
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    @classmethod
    def from_arguments(cls, input_shape, kernel_shape, strides, padding, data_format,
                       dilation_rate, dtype):
        """Build and validate a spec from user-level arguments.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of the 4-D input in ``data_format`` order.
        kernel_shape : tuple of int
            Keras kernel layout ``(kh, kw, in_channels // groups, filters)``.
        strides, dilation_rate : int or (int, int)
        padding : str or explicit pads
        data_format : str or None
        dtype : str

        Raises
        ------
        ValueError
            For any inconsistent or out-of-range argument, naming it.

        Notes
        -----
        Specs of arguments given as plain ints, strings and tuples of them are
        remembered (validating took ~90 µs, a small layer's whole kernel time
        on every ``conv2d`` call); other types of the same values are
        validated again, so that what is accepted never depends on a cache.
        """
        data_format = standardize_data_format(data_format)  # None: the current default
        key = (cls, input_shape, kernel_shape, strides, padding, data_format, dilation_rate,
               dtype)
        if not _plain(key[1:]):
            return cls._validated(*key[1:])
        spec = _SPECS.get(key)
        if spec is None:
            spec = cls._validated(*key[1:])
            if len(_SPECS) >= SPEC_CACHE_SIZE:
                _SPECS.clear()
            _SPECS[key] = spec
        return spec

    @classmethod
    def _validated(cls, input_shape, kernel_shape, strides, padding, data_format, dilation_rate,
                   dtype):
        """:meth:`from_arguments` without the cache (``data_format`` standardized)."""
        strides = standardize_tuple(strides, 2, "strides")
        dilation = standardize_tuple(dilation_rate, 2, "dilation_rate")
        padding = standardize_padding(padding, allow_explicit=True)
        if len(input_shape) != 4:
            raise ValueError(
                "The `inputs` argument must be 4-D (batch, height, width, channels) or "
                f"(batch, channels, height, width). Received inputs.shape={tuple(input_shape)}"
            )
        if len(kernel_shape) != 4:
            raise ValueError(
                "The `kernel` argument must be 4-D (kernel_h, kernel_w, in_channels // groups, "
                f"filters). Received kernel.shape={tuple(kernel_shape)}"
            )
        if data_format == "channels_last":
            batch, height, width, channels = input_shape
        else:
            batch, channels, height, width = input_shape
        kh, kw, kernel_channels, filters = kernel_shape
        if channels <= 0:
            raise ValueError(
                f"The `inputs` argument must have at least one channel. Received inputs.shape="
                f"{tuple(input_shape)} with data_format={data_format!r}"
            )
        if min(kh, kw, kernel_channels, filters) <= 0:
            raise ValueError(
                f"The `kernel` argument must have no zero-size axis. Received kernel.shape="
                f"{tuple(kernel_shape)}"
            )
        if channels % kernel_channels:
            raise ValueError(
                f"The input channel count ({channels}, inputs.shape={tuple(input_shape)} with "
                f"data_format={data_format!r}) must be a multiple of kernel.shape[2] "
                f"({kernel_channels}, kernel.shape={tuple(kernel_shape)})."
            )
        groups = channels // kernel_channels
        if filters % groups:
            raise ValueError(
                f"The number of filters (kernel.shape[3]={filters}) must be divisible by the "
                f"number of groups ({groups} = input channels {channels} // kernel.shape[2] "
                f"{kernel_channels})."
            )
        if padding == "same":
            pads = (same_padding(height, kh, strides[0], dilation[0]),
                    same_padding(width, kw, strides[1], dilation[1]))
        elif padding == "valid":
            pads = ((0, 0), (0, 0))
        else:
            pads = padding
        spec = cls(int(batch), int(height), int(width), int(channels), int(filters),
                   int(groups), (int(kh), int(kw)), strides, dilation, pads, data_format,
                   str(dtype))
        if spec.height == 0 or spec.width == 0:
            raise ValueError(
                "The `inputs` argument must have non-zero height and width. Received "
                f"inputs.shape={tuple(input_shape)} with data_format={data_format!r}"
            )
        out_h, out_w = spec.output_hw
        if out_h <= 0 or out_w <= 0:
            raise ValueError(
                f"The output would have size {(out_h, out_w)} <= 0: the kernel "
                f"{spec.kernel_size} with dilation_rate={dilation} does not fit the input "
                f"(height, width)={(spec.height, spec.width)} with padding={padding!r}."
            )
        return spec

    def padded(self):
        """The same convolution on an explicitly zero-padded input: ``(spec, numpy pad widths)``."""
        (top, bottom), (left, right) = self.pads
        spatial = ((top, bottom), (left, right))
        widths = (((0, 0),) + spatial + ((0, 0),) if self.data_format == "channels_last"
                  else ((0, 0), (0, 0)) + spatial)
        spec = replace(self, height=self.height + top + bottom, width=self.width + left + right,
                       pads=((0, 0), (0, 0)))
        return spec, widths

    def as_channels_last(self):
        """The same convolution on channels_last arrays (the layout every loop nest reads)."""
        return self if self.data_format == "channels_last" else replace(
            self, data_format="channels_last")

    @functools.cached_property
    def output_hw(self):
        """``(out_height, out_width)`` (computed once: kernels ask for it on every call)."""
        return tuple(
            conv_output_length(n, k, s, d, p)
            for n, k, s, d, p in zip((self.height, self.width), self.kernel_size,
                                     self.strides, self.dilation, self.pads)
        )

    @property
    def input_shape(self):
        """Input shape in this spec's layout."""
        if self.data_format == "channels_last":
            return (self.batch, self.height, self.width, self.in_channels)
        return (self.batch, self.in_channels, self.height, self.width)

    @functools.cached_property
    def output_shape(self):
        """Output shape in this spec's layout (computed once, as :attr:`output_hw`)."""
        out_h, out_w = self.output_hw
        if self.data_format == "channels_last":
            return (self.batch, out_h, out_w, self.filters)
        return (self.batch, self.filters, out_h, out_w)

    @property
    def kernel_shape(self):
        """Keras kernel layout ``(kh, kw, in_channels // groups, filters)``."""
        return (*self.kernel_size, self.in_channels // self.groups, self.filters)

    @property
    def flops(self):
        """Multiply-adds counted as 2 FLOPs: ``2 N Ho Wo Cout (Cin/groups) kh kw``."""
        out_h, out_w = self.output_hw
        return (2 * self.batch * out_h * out_w * self.filters
                * (self.in_channels // self.groups) * math.prod(self.kernel_size))

    @property
    def is_depthwise(self):
        """One input channel per group (``groups == in_channels``)."""
        return self.groups == self.in_channels and self.groups > 1

    def geometry(self):
        """The integers every kernel takes, in kernel-argument order.

        ``(kh, kw, sh, sw, dh, dw, pad_top, pad_left, groups)``; padding after
        the input (bottom/right) needs no argument since the output size
        already bounds the windows.
        """
        return (*self.kernel_size, *self.strides, *self.dilation,
                self.pads[0][0], self.pads[1][0], self.groups)

