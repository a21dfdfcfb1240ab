"""R keras-style composition: ``layer_conv_2d(object, filters, kernel_size, ...)``.

As in the R package, the first argument says what to compose the new layer
with, and decides what comes back: nothing (``None``) gives the layer, a
:class:`numbaconv.training.Sequential` gives the model with the layer
appended, an array gives the layer's output on it.  Numbers may be given
as R gives them through reticulate (``32`` is a double in R, ``c(3, 3)`` a
list of doubles): whole-valued floats are taken as integers.
"""

from __future__ import annotations

import numpy as np

from .layer import Conv2D
from .training import Sequential

__all__ = ["layer_conv_2d"]


def _as_integer(value, name):
    """``value`` (an integer or whole-valued float, as R's ``as_integer``) as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"The `{name}` argument must hold integers. Received: "
                        f"{name}={value!r} (of type {type(value).__name__})")
    if value != int(value):
        raise ValueError(f"The `{name}` argument must hold whole numbers. Received: "
                         f"{name}={value!r}")
    return int(value)


def _as_integers(value, name):
    """An int, or a tuple of ints for a list/tuple/array; ``None`` (R's NULL) stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_as_integers(item, name) for item in np.asarray(value, dtype=object).ravel())
    return _as_integer(value, name)


def _is_array(value):
    """An array the layer can be called on: NumPy, device or dask arrays, nested lists."""
    return isinstance(value, (list, tuple)) or (hasattr(value, "shape") and
                                                 hasattr(value, "dtype"))


def layer_conv_2d(object, filters, kernel_size, strides=(1, 1), padding="valid",
                  data_format=None, dilation_rate=(1, 1), groups=1, activation=None,
                  use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                  kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                  kernel_constraint=None, bias_constraint=None, input_shape=None,
                  batch_input_shape=None, batch_size=None, dtype=None, name=None,
                  trainable=None, weights=None, **kwargs):
    """2D convolution layer, composed with ``object`` as R keras's ``layer_conv_2d``.

    Parameters
    ----------
    object : None, numbaconv.training.Sequential or array_like
        What to compose the new layer with (R's first argument; the name is
        R's too).
    filters, kernel_size, strides, padding, data_format, dilation_rate, groups
        As :class:`numbaconv.Conv2D`; whole-valued floats are accepted where
        integers are expected.
    activation, use_bias, kernel_initializer, bias_initializer
        As :class:`numbaconv.Conv2D`.
    kernel_regularizer, bias_regularizer, activity_regularizer
        As :class:`numbaconv.Conv2D`.
    kernel_constraint, bias_constraint
        As :class:`numbaconv.Conv2D`.
    input_shape, batch_input_shape, batch_size, dtype, name, weights
        As :class:`numbaconv.Conv2D`.
    trainable : bool, optional
        R's default ``NULL`` (``None``) means ``True``.
    **kwargs
        Further :class:`numbaconv.Conv2D` arguments (``device``).

    Returns
    -------
    Conv2D, Sequential or numpy.ndarray
        ``object`` None: the new layer.  ``object`` a ``Sequential``: that
        model, with the layer appended (changed in place, as in R).  ``object``
        an array: the layer's output on it (the layer is built for it); a
        device or dask array gives the array type ``Conv2D`` returns for it.

    Raises
    ------
    TypeError
        ``object`` of another type, or non-numeric integer arguments.
    ValueError
        Non-whole numbers where integers are expected, and everything
        :class:`numbaconv.Conv2D` rejects.

    Examples
    --------
    >>> import numpy as np
    >>> from numbaconv.r_style import layer_conv_2d
    >>> from numbaconv.training import Sequential
    >>> layer_conv_2d(None, 8, 3).kernel_size
    (3, 3)
    >>> model = layer_conv_2d(Sequential(), 8, 3, activation="relu")
    >>> len(layer_conv_2d(model, 4, 3).layers)
    2
    >>> layer_conv_2d(np.ones((2, 10, 10, 3)), 16.0, [3.0, 3.0], padding="same").shape
    (2, 10, 10, 16)
    """
    if not (object is None or isinstance(object, Sequential) or _is_array(object)):
        raise TypeError("The `object` argument must be None, a numbaconv Sequential model "
                        f"or an array. Received: object={object!r} (of type "
                        f"{type(object).__name__})")
    layer = Conv2D(
        _as_integer(filters, "filters"), _as_integers(kernel_size, "kernel_size"),
        strides=_as_integers(strides, "strides"), padding=padding, data_format=data_format,
        dilation_rate=_as_integers(dilation_rate, "dilation_rate"),
        groups=_as_integer(groups, "groups"), activation=activation, use_bias=use_bias,
        kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
        kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
        activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
        bias_constraint=bias_constraint, input_shape=_as_integers(input_shape, "input_shape"),
        batch_input_shape=_as_integers(batch_input_shape, "batch_input_shape"),
        batch_size=_as_integers(batch_size, "batch_size"),
        dtype=dtype, name=name, trainable=True if trainable is None else trainable,
        weights=weights, **kwargs)
    if object is None:
        return layer
    if isinstance(object, Sequential):
        object.add(layer)
        return object
    return layer(object)
