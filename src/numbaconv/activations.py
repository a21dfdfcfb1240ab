"""Keras 3 activation functions on NumPy arrays.

Every function accepted by ``keras.activations.get`` (Keras 3.15) is provided
under the same name, with the same default arguments and formula:

``celu, elu, exponential, gelu, glu, hard_shrink, hard_sigmoid, hard_silu``
(alias ``hard_swish``), ``hard_tanh, leaky_relu, linear, log_sigmoid,
log_softmax, mish, relu, relu6, selu, sigmoid, silu`` (alias ``swish``),
``soft_shrink, softmax, softplus, softsign, sparse_plus, sparse_sigmoid,
sparsemax, squareplus, tanh, tanh_shrink, threshold``.

Floating inputs keep their dtype (float32 in, float32 out); other inputs are
converted to float32 (Keras' default ``floatx``).  All formulas are written in
an overflow-free form, so large ``|x|`` gives the correct limit without NumPy
floating-point warnings.

Each function's ``__name__`` is its Keras name, so :func:`serialize` returns
the same string as ``keras.activations.serialize``.
"""

import math

import numpy as np

from ._registry import make_registry

__all__ = [
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid",
    "hard_silu", "hard_swish", "hard_tanh", "leaky_relu", "linear",
    "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid",
    "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus",
    "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink",
    "threshold", "get", "gradient", "serialize", "deserialize",
]

# SELU constants (Klambauer et al., 2017), same digits as Keras/JAX.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _float(x):
    """Return ``x`` as a floating NumPy array (float32 for non-float input)."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.inexact) else x.astype(np.float32)


def _axis(axis):
    # NumPy reductions take tuples, not lists.
    return tuple(axis) if isinstance(axis, list) else axis


def _where(cond, a, b, dtype):
    return np.asarray(np.where(cond, a, b), dtype=dtype)


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Rectified linear unit with Keras' optional slope, cap and threshold.

    Parameters
    ----------
    x : array_like
        Input.
    negative_slope : float, optional
        Slope for values below ``threshold``. Default 0.
    max_value : float, optional
        Saturation value (output is clipped to ``[.., max_value]``).
    threshold : float, optional
        Values ``<= threshold`` are damped/zeroed. Default 0.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    dt = x.dtype
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        return leaky_relu(x, negative_slope)
    # Mirrors Keras' composition: positive part, optional clip, minus the
    # slope times the part below the threshold.
    if negative_slope != 0.0:
        negative_part = np.maximum(threshold - x, 0)
    if threshold != 0:
        y = _where(x > threshold, x, 0, dt)
    else:
        y = np.maximum(x, 0)
    if max_value is not None:
        y = np.clip(y, 0, max_value).astype(dt, copy=False)
    if negative_slope != 0.0:
        y = (y - negative_slope * negative_part).astype(dt, copy=False)
    return y


def leaky_relu(x, negative_slope=0.2):
    """Leaky ReLU: ``x`` if ``x >= 0`` else ``negative_slope * x``.

    Parameters
    ----------
    x : array_like
        Input.
    negative_slope : float, optional
        Slope for negative inputs. Default 0.2 (Keras default).

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return _where(x >= 0, x, negative_slope * x, x.dtype)


def relu6(x):
    """ReLU capped at 6: ``min(max(x, 0), 6)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return np.minimum(np.maximum(x, 0), 6)


def elu(x, alpha=1.0):
    """Exponential linear unit: ``x`` if ``x > 0`` else ``alpha*(exp(x)-1)``.

    Parameters
    ----------
    x : array_like
        Input.
    alpha : float, optional
        Scale of the negative part. Default 1.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    # expm1 only on non-positive values: no overflow for large x.
    return _where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)), x.dtype)


def selu(x):
    """Scaled ELU: ``scale * elu(x, alpha)`` with the SELU constants.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return (_SELU_SCALE * elu(x, _SELU_ALPHA)).astype(x.dtype, copy=False)


def celu(x, alpha=1.0):
    """Continuously differentiable ELU: ``max(x,0) + alpha*expm1(min(x,0)/alpha)``.

    Parameters
    ----------
    x : array_like
        Input.
    alpha : float, optional
        Default 1.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    out = np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0) / alpha)
    return out.astype(x.dtype, copy=False)


_erfc_ufunc = None


def _erfc(x):
    # NumPy has no erfc and scipy is not a dependency: compile a ufunc over
    # math.erfc with Numba on first use (exact gelu is rarely needed).
    global _erfc_ufunc
    if _erfc_ufunc is None:
        import numba

        _erfc_ufunc = numba.vectorize(
            ["float32(float32)", "float64(float64)"])(lambda v: math.erfc(v))
    if x.dtype in (np.float32, np.float64):
        return _erfc_ufunc(x)
    return _erfc_ufunc(x.astype(np.float32)).astype(x.dtype)


def gelu(x, approximate=False):
    """Gaussian error linear unit.

    Parameters
    ----------
    x : array_like
        Input.
    approximate : bool, optional
        False (Keras 3 default): exact ``0.5*x*erfc(-x/sqrt(2))``.
        True: tanh approximation
        ``0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x**3)))``.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    if approximate:
        # Cube overflows to inf for huge |x|; tanh(+-inf) is the right limit.
        with np.errstate(over="ignore"):
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
        out = x * (0.5 * (1.0 + np.tanh(inner)))
    else:
        out = 0.5 * x * _erfc(-x * math.sqrt(0.5))
    return np.asarray(out, dtype=x.dtype)


def glu(x, axis=-1):
    """Gated linear unit: split ``x`` in halves ``a, b`` along ``axis``; ``a*sigmoid(b)``.

    Parameters
    ----------
    x : array_like
        Input; ``x.shape[axis]`` must be even.
    axis : int, optional
        Split axis. Default -1.

    Returns
    -------
    numpy.ndarray
        Half the size along ``axis``, dtype of ``x``.

    Raises
    ------
    ValueError
        If the axis size is odd.
    """
    x = _float(x)
    if x.shape[axis] % 2 != 0:
        raise ValueError("axis size must be divisible by 2. "
                         f"Received: x.shape={x.shape} with axis={axis}")
    a, b = np.split(x, 2, axis)
    return a * sigmoid(b)


def tanh(x):
    """Hyperbolic tangent.

    Unlike Keras 3.15, whose ``tanh`` returns float32 for float64 input (its
    ``ops.tanh`` promotes with ``float`` taken as ``floatx``), the input dtype
    is preserved.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    return np.tanh(_float(x))


def tanh_shrink(x):
    """Tanh shrink: ``x - tanh(x)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return x - np.tanh(x)


def hard_tanh(x):
    """Hard tanh: ``x`` clipped to ``[-1, 1]``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return np.clip(x, -1, 1).astype(x.dtype, copy=False)


def hard_shrink(x, threshold=0.5):
    """Hard shrink: ``x`` if ``|x| > threshold`` else 0.

    Parameters
    ----------
    x : array_like
        Input.
    threshold : float, optional
        Default 0.5.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return _where(np.abs(x) > threshold, x, 0, x.dtype)


def soft_shrink(x, threshold=0.5):
    """Soft shrink: ``x - t`` if ``x > t``, ``x + t`` if ``x < -t``, else 0.

    Parameters
    ----------
    x : array_like
        Input.
    threshold : float, optional
        ``t``. Default 0.5.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    out = np.where(x > threshold, x - threshold,
                   np.where(x < -threshold, x + threshold, 0))
    return np.asarray(out, dtype=x.dtype)


def threshold(x, threshold, default_value):
    """Threshold: ``x`` if ``x > threshold`` else ``default_value``.

    Parameters
    ----------
    x : array_like
        Input.
    threshold : float
        Values ``<= threshold`` are replaced (no default, as in Keras).
    default_value : float
        Replacement value.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return _where(x > threshold, x, default_value, x.dtype)


def sigmoid(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed without overflow.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Values in ``[0, 1]``, same shape and dtype as ``x``.
    """
    x = _float(x)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return _where(x >= 0, 1 / (1 + e), e / (1 + e), x.dtype)


def sparse_sigmoid(x):
    """Sparse sigmoid: ``0.5 * clip(x + 1, 0, 2)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return (0.5 * np.clip(x + 1, 0, 2)).astype(x.dtype, copy=False)


def hard_sigmoid(x):
    """Hard sigmoid, Keras 3 formula ``relu6(x + 3) / 6``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return relu6(x + 3) / 6


def hard_silu(x):
    """Hard SiLU / hard swish: ``x * hard_sigmoid(x)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return x * hard_sigmoid(x)


def silu(x):
    """SiLU / swish: ``x * sigmoid(x)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return x * sigmoid(x)


def softplus(x):
    """Softplus ``log(1 + exp(x))``, as the overflow-free ``logaddexp(x, 0)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    return np.logaddexp(_float(x), 0)


def log_sigmoid(x):
    """Log of the sigmoid: ``-softplus(-x)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    return -softplus(-_float(x))


def softsign(x):
    """Softsign: ``x / (|x| + 1)``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return x / (np.abs(x) + 1)


def sparse_plus(x):
    """SparsePlus: 0 for ``x <= -1``, ``(x+1)**2/4`` for ``|x| < 1``, ``x`` for ``x >= 1``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    mid = np.clip(x + 1, 0, 2) ** 2 / 4  # clipped: no overflow off the middle
    return _where(x <= -1, 0, np.where(x >= 1, x, mid), x.dtype)


def squareplus(x, b=4):
    """Squareplus: ``(x + sqrt(x**2 + b)) / 2``.

    Parameters
    ----------
    x : array_like
        Input.
    b : float, optional
        Smoothness. Default 4.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    s = np.hypot(x, math.sqrt(b))  # sqrt(x**2 + b) without overflow
    # For x < 0 use the algebraically equal b / (2 (s - x)) to avoid the
    # cancellation in x + s.
    with np.errstate(divide="ignore", invalid="ignore"):
        neg = b / (2 * (s - x))
    return _where(x >= 0, (x + s) / 2, neg, x.dtype)


def mish(x):
    """Mish: ``x * tanh(softplus(x))``.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    return x * np.tanh(softplus(x))


def exponential(x):
    """Exponential ``exp(x)`` (``inf`` beyond the dtype's range, silently).

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    with np.errstate(over="ignore"):
        return np.exp(_float(x))


def linear(x):
    """Identity (pass-through); returns ``x`` unmodified, as Keras does.

    Parameters
    ----------
    x : array_like
        Input.

    Returns
    -------
    array_like
        ``x`` itself.
    """
    return x


def softmax(x, axis=-1):
    """Softmax ``exp(x) / sum(exp(x))`` along ``axis`` (max-shifted, stable).

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int or tuple of int, optional
        Normalization axis/axes. Default -1 (last), as in Keras.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``; sums to 1 along ``axis``.
    """
    x = _float(x)
    axis = _axis(axis)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """Log-softmax ``x - logsumexp(x)`` along ``axis`` (max-shifted, stable).

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int or tuple of int, optional
        Default -1 (last), as in Keras.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.
    """
    x = _float(x)
    axis = _axis(axis)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def sparsemax(x, axis=-1):
    """Sparsemax (Martins & Astudillo, 2016): Euclidean projection onto the simplex.

    Note: Keras 3.15 computes a wrong threshold when more than one element is
    in the support (keras-team/keras#23425, fixed upstream in #23469); this
    function returns the correct projection (as fixed Keras does), so results
    differ from Keras 3.15 exactly in those cases.

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int, optional
        Default -1.

    Returns
    -------
    numpy.ndarray
        ``max(x - tau, 0)``, same shape and dtype as ``x``; sums to 1 along
        ``axis``.
    """
    x = _float(x)
    # Shift by the max (sparsemax is shift-invariant) so the top logit is 0
    # and tau >= -1.  Logits <= -1 then never reach the support, so clipping
    # them to -1 leaves tau unchanged and keeps the cumsum from overflowing.
    x = x - np.max(x, axis=axis, keepdims=True)
    z = -np.sort(-np.maximum(x, -1), axis=axis)  # descending
    cumsum = np.cumsum(z, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    k = np.arange(1, x.shape[axis] + 1, dtype=x.dtype).reshape(shape)
    support = z - (cumsum - 1) / k > 0  # a prefix of the sorted values
    k_z = np.sum(support, axis=axis, keepdims=True)
    # tau = (sum of the supported sorted logits - 1) / |support|, as in the
    # paper.  Keras <= 3.15 sums the *cumulative* sums here (keras-team/keras
    # #23425, fixed upstream by #23469), which is wrong whenever the support
    # has more than one element; we implement the correct projection.
    tau = (np.sum(np.where(support, z, 0), axis=axis, keepdims=True) - 1) / k_z
    return np.maximum(x - tau, 0).astype(x.dtype, copy=False)


swish = silu
hard_swish = hard_silu

_REGISTRY = make_registry("activation function", "keras.activations",
                          default=linear, instantiate_classes=False,
                          names_as_strings=True)
for _fn in (relu, leaky_relu, relu6, softmax, celu, elu, selu, softplus,
            softsign, squareplus, soft_shrink, sparse_plus, gelu, glu, tanh,
            tanh_shrink, threshold, sigmoid, sparse_sigmoid, exponential,
            hard_sigmoid, hard_tanh, hard_shrink, linear, mish, log_softmax,
            log_sigmoid, sparsemax):
    _REGISTRY.add(_fn)
_REGISTRY.add(silu, "swish")
_REGISTRY.add(hard_silu, "hard_swish")


def _sigmoid_of(z):
    return sigmoid(z)


#: ``d activation(z) / dz`` as functions of the pre-activation ``z`` and the
#: output ``y = activation(z)`` (elementwise activations, default arguments).
_DERIVATIVES = {
    linear: lambda z, y: np.ones_like(z),
    relu: lambda z, y: (z > 0).astype(z.dtype),
    leaky_relu: lambda z, y: np.where(z > 0, 1.0, 0.2).astype(z.dtype),
    relu6: lambda z, y: ((z > 0) & (z < 6)).astype(z.dtype),
    elu: lambda z, y: np.where(z > 0, 1.0, y + 1.0).astype(z.dtype),
    selu: lambda z, y: np.where(z > 0, _SELU_SCALE, y + _SELU_SCALE * _SELU_ALPHA).astype(
        z.dtype),
    tanh: lambda z, y: 1 - y * y,
    sigmoid: lambda z, y: y * (1 - y),
    softplus: lambda z, y: _sigmoid_of(z),
    softsign: lambda z, y: 1 / np.square(1 + np.abs(z)),
    silu: lambda z, y: _sigmoid_of(z) * (1 + z * (1 - _sigmoid_of(z))),
    exponential: lambda z, y: y,
    hard_sigmoid: lambda z, y: ((z > -3) & (z < 3)).astype(z.dtype) / 6,
}


def gradient(activation, z, y, grad):
    """``d loss / dz`` for ``y = activation(z)`` given ``grad = d loss / dy``.

    Covers the elementwise activations of :data:`_DERIVATIVES` (with their
    default arguments, as the layer uses them) and ``softmax`` /
    ``log_softmax`` along the last axis.

    Raises
    ------
    NotImplementedError
        For other activations, naming them.
    """
    if activation is linear:  # no multiply by ones: a pass over the output saved
        return grad
    if activation is softmax:
        return y * (grad - np.sum(grad * y, axis=-1, keepdims=True))
    if activation is log_softmax:
        return grad - np.exp(y) * np.sum(grad, axis=-1, keepdims=True)
    derivative = _DERIVATIVES.get(activation)
    if derivative is None:
        name = getattr(activation, "__name__", repr(activation))
        raise NotImplementedError(
            f"The derivative of activation {name!r} is not implemented; supported: "
            f"{sorted(f.__name__ for f in _DERIVATIVES)} and softmax, log_softmax")
    return grad * derivative(z, y)


def get(identifier):
    """Resolve an activation identifier like ``keras.activations.get``.

    Parameters
    ----------
    identifier : None, str, dict or callable
        None gives :func:`linear`; a name (e.g. ``"relu"``, ``"swish"``); a
        serialized dict; any callable is returned unchanged.

    Returns
    -------
    callable
        The activation function.

    Raises
    ------
    ValueError
        ``"Could not interpret activation function identifier: ..."``.
    """
    return _REGISTRY.get(identifier)


def serialize(activation):
    """Serialize an activation like ``keras.activations.serialize``.

    Parameters
    ----------
    activation : callable or None
        Built-in activation (None means :func:`linear`) or custom callable.

    Returns
    -------
    str or dict
        The Keras name (e.g. ``"relu"``; ``"silu"`` for ``swish``) for
        built-ins, else a config dict.
    """
    return _REGISTRY.serialize(activation)


def deserialize(config, custom_objects=None):
    """Return the activation described by a name or a serialized dict.

    Parameters
    ----------
    config : str or dict
        E.g. ``"relu"`` or ``{"module": "builtins", "class_name": "function",
        "config": "relu", "registered_name": "function"}``.
    custom_objects : dict, optional
        Extra ``name -> callable`` entries.

    Returns
    -------
    callable
        The activation function.
    """
    return _REGISTRY.deserialize(config, custom_objects)

