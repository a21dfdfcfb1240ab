"""Training: Keras's SGD and Adam updates, two losses, and a minimal ``Sequential``.

Enough to fit small convolutional models with numbaconv alone.  Gradients
come from :meth:`numbaconv.Conv2D.backward`; each optimizer step applies a
variable's constraint after updating it, as Keras's optimizers do.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .functional import as_float_array

__all__ = [
    "LOSSES",
    "SGD",
    "Adam",
    "Sequential",
    "categorical_crossentropy",
    "mean_squared_error",
]


class _Optimizer:
    """Keeps per-variable slots (keyed by identity) and applies constraints after updates."""

    def __init__(self, learning_rate):
        if not learning_rate > 0:
            raise ValueError(f"The `learning_rate` argument must be positive. Received: "
                             f"learning_rate={learning_rate!r}")
        self.learning_rate = float(learning_rate)
        self.iterations = 0
        self._slots = {}

    def _slot(self, name, variable):
        key = (name, id(variable))
        if key not in self._slots:
            self._slots[key] = np.zeros(variable.shape, dtype=variable.dtype)
        return self._slots[key]

    def apply(self, grads, variables):
        """One step: update each variable from its gradient, then apply its constraint.

        Parameters
        ----------
        grads : list of numpy.ndarray
        variables : list of numbaconv.variables.Variable
            Aligned with ``grads`` (a layer's ``grads`` and ``trainable_weights``).
        """
        if len(grads) != len(variables):
            raise ValueError(f"Got {len(grads)} gradients for {len(variables)} variables")
        self.iterations += 1
        for grad, variable in zip(grads, variables):
            value = self._update(np.asarray(variable.value), np.asarray(grad, variable.dtype),
                                 variable)
            variable.assign(value)
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable.value))


class SGD(_Optimizer):
    """Keras's SGD: ``v = momentum·v − lr·g; w += v`` (Nesterov: ``w += momentum·v − lr·g``)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        if not 0 <= momentum <= 1:
            raise ValueError(f"The `momentum` argument must be in [0, 1]. Received: "
                             f"momentum={momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, value, grad, variable):
        lr = value.dtype.type(self.learning_rate)
        if not self.momentum:
            return value - lr * grad
        velocity = self._slot("velocity", variable)
        velocity *= self.momentum
        velocity -= lr * grad
        if self.nesterov:
            return value + self.momentum * velocity - lr * grad
        return value + velocity


class Adam(_Optimizer):
    """Keras's Adam (bias-corrected learning rate, ``epsilon`` outside the square root)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, value, grad, variable):
        m = self._slot("m", variable)
        v = self._slot("v", variable)
        m += (grad - m) * (1 - self.beta_1)
        v += (grad * grad - v) * (1 - self.beta_2)
        t = self.iterations
        lr = self.learning_rate * np.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        return value - (lr * m / (np.sqrt(v) + self.epsilon)).astype(value.dtype)


def mean_squared_error(y_true, y_pred):
    """Keras's ``MeanSquaredError`` over a batch, and its gradient w.r.t. ``y_pred``.

    Returns
    -------
    loss : float
        Mean of ``(y_pred - y_true)**2`` over every element.
    grad : numpy.ndarray
    """
    diff = y_pred - y_true
    return float(np.mean(diff * diff)), 2 * diff / diff.size


def categorical_crossentropy(y_true, y_pred, epsilon=1e-7):
    """Keras's ``CategoricalCrossentropy`` (probabilities along the last axis) and its gradient.

    As Keras: predictions are renormalized along the last axis and clipped to
    ``[epsilon, 1 - epsilon]``; the loss is ``-Σ y_true log p`` averaged over
    the other axes.
    """
    total = np.sum(y_pred, axis=-1, keepdims=True)
    p = np.clip(y_pred / total, epsilon, 1 - epsilon)
    count = y_pred.size // y_pred.shape[-1]
    loss = float(-np.sum(y_true * np.log(p)) / count)
    # d/dy of -Σ t log(y / Σy): -t / y + Σt / Σy (the clip is treated as inactive).
    grad = (-y_true / np.maximum(y_pred, epsilon)
            + np.sum(y_true, axis=-1, keepdims=True) / total) / count
    return loss, grad


LOSSES = {"mse": mean_squared_error, "mean_squared_error": mean_squared_error,
          "categorical_crossentropy": categorical_crossentropy}


class Sequential:
    """A stack of layers trained by back-propagation (``fit``), Keras-style.

    Parameters
    ----------
    layers : list, optional
        Layers with ``__call__(x, training=...)``, ``backward(grad)``, ``grads``
        and ``trainable_weights`` (:class:`numbaconv.Conv2D`).

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> from numbaconv.training import Sequential, SGD
    >>> model = Sequential([numbaconv.Conv2D(1, 3, padding="same", dtype="float64")])
    >>> x = np.random.default_rng(0).standard_normal((8, 6, 6, 1))
    >>> history = model.fit(x, 2 * x, loss="mse", optimizer=SGD(0.1), epochs=30,
    ...                     batch_size=8, verbose=0)
    >>> history["loss"][-1] < history["loss"][0] / 10
    True
    """

    def __init__(self, layers=None):
        self.layers = list(layers or [])

    def add(self, layer):
        """Append ``layer``."""
        self.layers.append(layer)

    def __call__(self, x, training=False):
        """The layers applied in order."""
        for layer in self.layers:
            x = layer(x, training=training)
        return x

    predict = __call__

    def backward(self, grad):
        """Back-propagate ``d loss / d output`` through every layer (setting their ``grads``)."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    @property
    def trainable_weights(self):
        """Every layer's trainable weights, in order."""
        return [w for layer in self.layers for w in layer.trainable_weights]

    def fit(self, x, y, loss="mse", optimizer=None, epochs=1, batch_size=32, shuffle=True,
            verbose=1, seed=None):
        """Train on ``(x, y)`` by mini-batch gradient descent.

        Parameters
        ----------
        x, y : array_like
            Inputs and targets, batch first.
        loss : {"mse", "mean_squared_error", "categorical_crossentropy"} or callable
            A callable returns ``(loss, d loss / d prediction)``.
        optimizer : SGD or Adam, optional
            Default ``Adam()``.
        epochs, batch_size : int
        shuffle : bool, default True
            Reshuffle the samples every epoch.
        verbose : int, default 1
            1 prints one line per epoch (loss and seconds) to stderr.
        seed : int, optional
            Seed of the shuffling.

        Returns
        -------
        dict
            ``{"loss": [mean training loss per epoch]}``.
        """
        x = as_float_array(x, "x")
        y = as_float_array(y, "y")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must hold the same number of samples. Received "
                             f"x.shape={x.shape}, y.shape={y.shape}")
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"Unknown loss {loss!r}; known: {sorted(LOSSES)}")
            loss = LOSSES[loss]
        optimizer = Adam() if optimizer is None else optimizer
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"The `batch_size` argument must be a positive integer. "
                             f"Received: batch_size={batch_size!r}")
        rng = np.random.default_rng(seed)
        history = {"loss": []}
        for epoch in range(epochs):
            start = time.perf_counter()
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            total, seen = 0.0, 0
            for first in range(0, len(x), batch_size):
                batch = order[first:first + batch_size]
                prediction = self(x[batch], training=True)
                value, grad = loss(y[batch].astype(prediction.dtype), prediction)
                self.backward(grad)
                grads, weights = [], []
                for layer in self.layers:
                    grads += layer.grads
                    weights += layer.trainable_weights if layer.grads else []
                optimizer.apply(grads, weights)
                total += value * len(batch)
                seen += len(batch)
            history["loss"].append(total / max(seen, 1))
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs} - loss: {history['loss'][-1]:.6g} - "
                      f"{time.perf_counter() - start:.2f}s", file=sys.stderr, flush=True)
        return history
