"""Keras 3 weight constraints applied to NumPy arrays.

``MaxNorm``, ``MinMaxNorm``, ``NonNeg`` and ``UnitNorm`` with Keras 3
defaults and formulas, including the ``epsilon = 1e-7`` (Keras' default
``keras.config.epsilon()``) added to norms before dividing.  Accepted names
are those of ``keras.constraints.get``: class names and their snake_case
forms (``"max_norm"``, ``"min_max_norm"``, ``"non_neg"``, ``"unit_norm"``,
``"constraint"``).

Norms are taken over ``axis`` (int, or list/tuple of ints).  For a ``Conv2D``
kernel of shape ``(kh, kw, in, filters)`` pass ``axis=[0, 1, 2]`` to
constrain each filter, as the Keras documentation recommends.
"""

import numpy as np

from ._registry import Serializable, make_registry

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm",
           "max_norm", "min_max_norm", "non_neg", "unit_norm",
           "get", "serialize", "deserialize", "EPSILON"]

EPSILON = 1e-7  # keras.config.epsilon() default


def _norms(w, axis):
    # NumPy reductions take tuples, not lists; keepdims for broadcasting back.
    axis = tuple(axis) if isinstance(axis, list) else axis
    return np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))


def _weights(w):
    w = np.asarray(w)
    return w if np.issubdtype(w.dtype, np.inexact) else w.astype(np.float32)


class Constraint(Serializable):
    """Base class: ``__call__(w)`` returns the projected weights (identity here)."""

    def __call__(self, w):
        """Return the constrained weights.

        Parameters
        ----------
        w : array_like
            Weights.

        Returns
        -------
        array_like
            ``w`` unchanged for the base class.
        """
        return w


class _NormRescaling(Constraint):
    """Base of the constraints that rescale slices to a desired norm: ``w * d / (eps + n)``."""

    def _desired(self, norms):
        raise NotImplementedError

    def __call__(self, w):
        """Return the constrained weights (dtype of ``w``).

        Parameters
        ----------
        w : array_like
            Weights.

        Returns
        -------
        numpy.ndarray
            Constrained weights.
        """
        w = _weights(w)
        norms = _norms(w, self.axis)
        return (w * (self._desired(norms) / (EPSILON + norms))).astype(w.dtype, copy=False)


class MaxNorm(_NormRescaling):
    """Rescale slices whose L2 norm exceeds ``max_value``.

    ``w * clip(n, 0, max_value) / (epsilon + n)`` with ``n`` the norm over
    ``axis``.

    Parameters
    ----------
    max_value : float, optional
        Maximum norm. Default 2.
    axis : int or sequence of int, optional
        Axes the norm is taken over. Default 0.
    """

    def __init__(self, max_value=2, axis=0):
        self.max_value, self.axis = max_value, axis

    def _desired(self, norms):
        return np.clip(norms, 0, self.max_value)

    def get_config(self):
        """Return ``{"max_value": ..., "axis": ...}``."""
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Clamp weights to be non-negative: ``max(w, 0)``."""

    def __call__(self, w):
        """Return ``maximum(w, 0)`` (dtype of ``w``).

        Parameters
        ----------
        w : array_like
            Weights.

        Returns
        -------
        numpy.ndarray
            Constrained weights.
        """
        w = np.asarray(w)
        return np.maximum(w, 0)


class UnitNorm(Constraint):
    """Scale slices to unit L2 norm: ``w / (epsilon + n)``.

    Parameters
    ----------
    axis : int or sequence of int, optional
        Axes the norm is taken over. Default 0.
    """

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        """Return the constrained weights (dtype of ``w``).

        Parameters
        ----------
        w : array_like
            Weights.

        Returns
        -------
        numpy.ndarray
            Constrained weights.
        """
        w = _weights(w)
        return (w / (EPSILON + _norms(w, self.axis))).astype(w.dtype,
                                                              copy=False)

    def get_config(self):
        """Return ``{"axis": ...}``."""
        return {"axis": self.axis}


class MinMaxNorm(_NormRescaling):
    """Move slice norms into ``[min_value, max_value]`` at a given rate.

    ``desired = rate * clip(n, min_value, max_value) + (1 - rate) * n`` and the
    result is ``w * desired / (epsilon + n)``.

    Parameters
    ----------
    min_value : float, optional
        Minimum norm. Default 0.
    max_value : float, optional
        Maximum norm. Default 1.
    rate : float, optional
        1 enforces the bounds strictly; smaller values move part-way.
        Default 1.
    axis : int or sequence of int, optional
        Axes the norm is taken over. Default 0.
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value = min_value, max_value
        self.rate, self.axis = rate, axis

    def _desired(self, norms):
        return (self.rate * np.clip(norms, self.min_value, self.max_value)
                + (1 - self.rate) * norms)

    def get_config(self):
        """Return ``min_value``, ``max_value``, ``rate`` and ``axis``."""
        return {"min_value": self.min_value, "max_value": self.max_value,
                "rate": self.rate, "axis": self.axis}


_REGISTRY = make_registry("constraint", "keras.constraints")
for _cls in (Constraint, MaxNorm, MinMaxNorm, NonNeg, UnitNorm):
    _REGISTRY.add(_cls, snake_case=True)

# Keras exports the classes under these lowercase names too.
max_norm, min_max_norm, non_neg, unit_norm = MaxNorm, MinMaxNorm, NonNeg, UnitNorm


def get(identifier):
    """Resolve a constraint identifier like ``keras.constraints.get``.

    Parameters
    ----------
    identifier : None, str, dict, class or callable
        None gives None; a name or class gives a default instance; a dict is
        deserialized; other callables are returned unchanged.

    Returns
    -------
    callable or None
        The constraint.

    Raises
    ------
    ValueError
        ``"Could not interpret constraint identifier: ..."``.
    """
    return _REGISTRY.get(identifier)


def serialize(constraint):
    """Serialize like ``keras.constraints.serialize``.

    Parameters
    ----------
    constraint : Constraint or None
        Object to serialize.

    Returns
    -------
    dict or None
        Keras 3 config dict; None for None.
    """
    return _REGISTRY.serialize(constraint)


def deserialize(config, custom_objects=None):
    """Build a constraint from a name or a (Keras-)serialized dict.

    Parameters
    ----------
    config : str or dict
        Name or serialized dict.
    custom_objects : dict, optional
        Extra ``name -> class`` entries.

    Returns
    -------
    Constraint
        A new instance.
    """
    return _REGISTRY.deserialize(config, custom_objects)
