"""A minimal Keras-like ``Variable``: a named NumPy array with ``assign``.

Layers hold their weights in variables so that every change goes through
:meth:`Variable.assign`, which validates shape and dtype, bumps a version
counter and drops what was derived from the old value (packed weights).  Variables behave like
arrays in NumPy expressions (``np.asarray(v)``, ``v * 2``, ``v.shape``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["Variable", "Snapshot"]


class Snapshot:
    """One value of a :class:`Variable` and what was derived from it (packed weights).

    A call takes the snapshot once and reads value and packed forms from it,
    so an :meth:`Variable.assign` from another thread meanwhile (which
    installs a new snapshot) cannot make it mix two values.
    """

    __slots__ = ("value", "_derived")

    def __init__(self, value):
        self.value = value
        self._derived = {}

    def __getstate__(self):
        # Derived forms (packed weights, device copies) are rebuilt, not pickled.
        return {"value": self.value}

    def __setstate__(self, state):
        self.value = state["value"]
        self._derived = {}

    def derived(self, key, compute):
        """``compute(value)``, memoized for this value."""
        if key not in self._derived:
            self._derived[key] = compute(self.value)
        return self._derived[key]

    def derived_together(self, keys, compute):
        """``compute()``'s values, one per key of ``keys``, memoized for this value: forms
        made together in one pass (a packed kernel and its inf/NaN check)."""
        if any(key not in self._derived for key in keys):
            self._derived.update(zip(keys, compute()))
        return tuple(self._derived[key] for key in keys)


class Variable(NDArrayOperatorsMixin):
    """A layer weight.

    Parameters
    ----------
    value : numpy.ndarray
        Initial value; its shape and dtype are fixed for the variable's life.
    name : str
        Short name (``"kernel"``, ``"bias"``).
    path : str
        ``"<layer name>/<name>"``, as Keras reports it.
    trainable : bool
    regularizer, constraint : callable or None
        Attached as in Keras, for losses and optimizer updates.
    """

    def __init__(self, value, name, path, trainable=True, regularizer=None, constraint=None):
        value = np.array(value, copy=True)
        value.flags.writeable = False  # all changes go through assign()
        self._snapshot = Snapshot(value)
        self.name = name
        self.path = path
        self.trainable = trainable
        self.regularizer = regularizer
        self.constraint = constraint
        self.version = 0

    @property
    def _value(self):
        return self._snapshot.value

    def snapshot(self):
        """The current :class:`Snapshot`: this value and its derived forms, together."""
        return self._snapshot

    @property
    def value(self):
        """The current value, a read-only NumPy array (no copy)."""
        return self._value

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return self._value.dtype

    @property
    def ndim(self):
        return self._value.ndim

    @property
    def size(self):
        return self._value.size

    def numpy(self):
        """A writable copy of the value."""
        return self._value.copy()

    def assign(self, value):
        """Replace the value, keeping shape and dtype.

        Raises
        ------
        ValueError
            If ``value``'s shape differs from the variable's.
        TypeError
            If ``value`` is not numeric.
        """
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"Cannot assign a value of dtype {array.dtype} to variable "
                            f"'{self.path}' of dtype {self.dtype}.")
        if array.shape != self.shape:
            raise ValueError(f"Cannot assign a value of shape {array.shape} to variable "
                             f"'{self.path}' of shape {self.shape}.")
        value = np.array(array, dtype=self.dtype, copy=True)
        value.flags.writeable = False
        self._snapshot = Snapshot(value)  # one assignment: readers see old or new, whole
        self.version += 1
        return self

    def derived(self, key, compute):
        """``compute(value)``, memoized until the next :meth:`assign`.

        Kernels use it to keep weights packed in the order they read them,
        packing once per weight change rather than once per call.
        """
        return self._snapshot.derived(key, compute)

    def assign_add(self, delta):
        """``self.assign(self + delta)``."""
        return self.assign(self._value + np.asarray(delta))

    def assign_sub(self, delta):
        """``self.assign(self - delta)``."""
        return self.assign(self._value - np.asarray(delta))

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._value, dtype=dtype, copy=True)
        return self._value if dtype is None else self._value.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(x._value if isinstance(x, Variable) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getitem__(self, index):
        return self._value[index]

    def __len__(self):
        return len(self._value)

    def __repr__(self):
        return (f"<Variable path={self.path}, shape={self.shape}, dtype={self.dtype}, "
                f"value={np.array2string(self._value, threshold=6, edgeitems=1)}>")
