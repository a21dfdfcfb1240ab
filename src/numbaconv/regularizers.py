"""Keras 3 weight regularizers evaluated on NumPy arrays.

``L1``, ``L2``, ``L1L2`` and ``OrthogonalRegularizer`` with Keras 3 defaults
and formulas (note: ``L2`` is ``l2 * sum(x**2)``, without a factor 1/2).
Calling a regularizer returns the penalty as a NumPy scalar of the weight's
dtype; ``L1``/``L2``/``L1L2`` also provide :meth:`gradient` (the derivative of
the penalty with respect to the weights) for training code.

Accepted names are those of ``keras.regularizers.get``: the class names and
their snake_case forms (``"l1"``, ``"l2"``, ``"l1l2"``,
``"orthogonal_regularizer"``, ``"regularizer"``), plus ``"l1_l2"`` (Keras'
exported alias of ``L1L2``, which its ``get`` does not itself accept).

As in Keras, ``L1`` and ``OrthogonalRegularizer`` keep their factor as a
float32 value (Keras stores it in a float32 tensor), so ``L1(0.01).l1`` is
``0.009999999776482582`` and configs match Keras' exactly; ``L2`` and
``L1L2`` keep Python floats.
"""

import math
import numbers

import numpy as np

from ._registry import Serializable, make_registry

__all__ = ["Regularizer", "L1", "L2", "L1L2", "OrthogonalRegularizer",
           "l1", "l2", "l1_l2", "orthogonal_regularizer",
           "get", "serialize", "deserialize"]

_EPSILON = 1e-7  # keras.config.epsilon() default


def _validate(value, name):
    """Return ``value`` as float; Keras rejects negative/NaN/inf factors."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or math.isinf(value) or math.isnan(value) or value < 0):
        raise ValueError(
            f"Invalid value for argument {name}: expected a non-negative float."
            f"Received: {name}={value}")
    return float(value)


def _float32(value):
    # Keras holds these factors in float32 tensors; mirror the rounding.
    return float(np.float32(value))


def _weights(x):
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.inexact) else x.astype(np.float32)


class Regularizer(Serializable):
    """Base class: ``__call__(x)`` returns a scalar penalty (0 here)."""

    def __call__(self, x):
        """Return the penalty for weights ``x``.

        Parameters
        ----------
        x : array_like
            Weights.

        Returns
        -------
        float
            Always 0.0 for the base class.
        """
        return 0.0

    def get_config(self):
        """Subclasses must return their constructor arguments.

        Raises
        ------
        NotImplementedError
            Always, for the base class (as Keras).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement get_config()")


class _LpPenalty(Regularizer):
    """Shared ``l1 * sum(|x|) + l2 * sum(x**2)`` evaluation and gradient."""

    l1 = l2 = 0.0

    def __call__(self, x):
        """Return the penalty as a scalar of ``x``'s dtype.

        Parameters
        ----------
        x : array_like
            Weights.

        Returns
        -------
        numpy.floating
            The penalty.
        """
        x = _weights(x)
        t = x.dtype.type
        penalty = t(0.0)
        if self.l1 != 0.0:  # a zero factor adds no term at all, as in Keras
            penalty += t(self.l1) * np.sum(np.abs(x))
        if self.l2 != 0.0:
            penalty += t(self.l2) * np.sum(np.square(x))
        return penalty

    def gradient(self, x):
        """Return ``d penalty / d x = l1 * sign(x) + 2 * l2 * x``.

        Parameters
        ----------
        x : array_like
            Weights.

        Returns
        -------
        numpy.ndarray
            Same shape and dtype as ``x`` (``sign(0) = 0``).
        """
        x = _weights(x)
        t = x.dtype.type
        return t(self.l1) * np.sign(x) + t(2.0 * self.l2) * x


class L1L2(_LpPenalty):
    """Penalty ``l1 * sum(|x|) + l2 * sum(x**2)``.

    Parameters
    ----------
    l1 : float, optional
        L1 factor (None means 0). Default 0.
    l2 : float, optional
        L2 factor (None means 0). Default 0.
    """

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _validate(0.0 if l1 is None else l1, "l1")
        self.l2 = _validate(0.0 if l2 is None else l2, "l2")

    def get_config(self):
        """Return ``{"l1": l1, "l2": l2}``."""
        return {"l1": self.l1, "l2": self.l2}


class L1(_LpPenalty):
    """Penalty ``l1 * sum(|x|)``.

    Parameters
    ----------
    l1 : float, optional
        Factor (None means 0.01). Default 0.01.
    """

    def __init__(self, l1=0.01):
        self.l1 = _float32(_validate(0.01 if l1 is None else l1, "l1"))

    def get_config(self):
        """Return ``{"l1": l1}``."""
        return {"l1": self.l1}


class L2(_LpPenalty):
    """Penalty ``l2 * sum(x**2)`` (no factor 1/2, as Keras).

    Parameters
    ----------
    l2 : float, optional
        Factor (None means 0.01). Default 0.01.
    """

    def __init__(self, l2=0.01):
        self.l2 = _validate(0.01 if l2 is None else l2, "l2")

    def get_config(self):
        """Return ``{"l2": l2}``."""
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Penalty pushing the rows (or columns) of a matrix towards orthogonality.

    With ``v_i`` the L2-normalized rows (``mode="rows"``) or columns, the
    penalty is ``factor * 0.5 * sum_{i != j} |v_i . v_j| / (n * (n - 1) / 2)``.
    Normalization is ``v * min(1 / ||v||, 1 / epsilon)`` as Keras does for
    tensors (so zero vectors stay zero).

    Parameters
    ----------
    factor : float, optional
        Default 0.01.
    mode : {"rows", "columns"}, optional
        Default "rows".
    """

    def __init__(self, factor=0.01, mode="rows"):
        self.factor = _float32(_validate(factor, "factor"))
        if mode not in {"rows", "columns"}:
            raise ValueError(
                "Invalid value for argument `mode`. Expected one of "
                f'{{"rows", "columns"}}. Received: mode={mode}')
        self.mode = mode

    def __call__(self, x):
        """Return the penalty for a rank-2 ``x`` as a scalar of its dtype.

        Parameters
        ----------
        x : array_like
            2-D weights.

        Returns
        -------
        numpy.floating
            The penalty.

        Raises
        ------
        ValueError
            If ``x`` is not 2-D.
        """
        x = _weights(x)
        if x.ndim != 2:
            raise ValueError("Inputs to OrthogonalRegularizer must have rank "
                             f"2. Received: inputs.shape={x.shape}")
        if self.mode == "columns":
            x = x.T
        with np.errstate(divide="ignore"):  # zero rows: 1/0 is capped below
            inv_norm = 1 / np.sqrt(np.sum(np.square(x), axis=1, keepdims=True))
        v = x * np.minimum(inv_norm, 1 / _EPSILON)
        size = x.shape[0]
        off_diagonal = (v @ v.T) * (1 - np.eye(size, dtype=x.dtype))
        num_pairs = size * (size - 1.0) / 2.0
        t = x.dtype.type
        return t(self.factor) * t(0.5) * np.sum(np.abs(off_diagonal)) / t(
            num_pairs)

    def get_config(self):
        """Return ``{"factor": factor, "mode": mode}``."""
        return {"factor": self.factor, "mode": self.mode}


_REGISTRY = make_registry("regularizer", "keras.regularizers")
_REGISTRY.add(Regularizer, snake_case=True, module="keras")
for _cls in (L1, L2, OrthogonalRegularizer):
    _REGISTRY.add(_cls, snake_case=True)
_REGISTRY.add(L1L2, "l1_l2", snake_case=True)

# Keras exports the classes under these lowercase names too.
l1, l2, l1_l2, orthogonal_regularizer = L1, L2, L1L2, OrthogonalRegularizer


def get(identifier):
    """Resolve a regularizer identifier like ``keras.regularizers.get``.

    Parameters
    ----------
    identifier : None, str, dict, class or callable
        None gives None; a name or class gives a default instance; a dict is
        deserialized; other callables are returned unchanged.

    Returns
    -------
    callable or None
        The regularizer.

    Raises
    ------
    ValueError
        ``"Could not interpret regularizer identifier: ..."``.
    """
    return _REGISTRY.get(identifier)


def serialize(regularizer):
    """Serialize like ``keras.regularizers.serialize``.

    Parameters
    ----------
    regularizer : Regularizer or None
        Object to serialize.

    Returns
    -------
    dict or None
        Keras 3 config dict; None for None.
    """
    return _REGISTRY.serialize(regularizer)


def deserialize(config, custom_objects=None):
    """Build a regularizer from a name or a (Keras-)serialized dict.

    Parameters
    ----------
    config : str or dict
        Name or serialized dict.
    custom_objects : dict, optional
        Extra ``name -> class`` entries.

    Returns
    -------
    Regularizer
        A new instance.
    """
    return _REGISTRY.deserialize(config, custom_objects)
