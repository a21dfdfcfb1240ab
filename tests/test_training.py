"""The layer's backward pass, activation derivatives, optimizers and ``Sequential.fit``."""

from __future__ import annotations

import numpy as np
import pytest
from reference import finite_differences, relative_error

import numbaconv
from numbaconv import activations
from numbaconv.training import (
    SGD,
    Adam,
    Sequential,
    categorical_crossentropy,
    mean_squared_error,
)


@pytest.mark.parametrize("activation", sorted(f.__name__ for f in activations._DERIVATIVES)
                         + ["softmax", "log_softmax"])
def test_activation_gradients_matchfinite_differences(activation):
    function = activations.get(activation)
    rng = np.random.default_rng(0)
    z = rng.uniform(-4, 4, (3, 5))
    z[np.abs(z) < 0.05] += 0.2  # keep off the kinks of relu-like functions
    z[np.abs(np.abs(z) - 3) < 0.05] += 0.2
    z[np.abs(z - 6) < 0.05] += 0.2
    weights = rng.standard_normal(z.shape)
    got = activations.gradient(function, z, function(z), weights)
    want = finite_differences(lambda: float(np.sum(weights * function(z))), z)
    assert relative_error(got, want) < 1e-6


def test_unknown_activation_derivative_is_named():
    with pytest.raises(NotImplementedError, match="mish"):
        activations.gradient(activations.get("mish"), np.ones(2), np.ones(2), np.ones(2))


CASES = [
    dict(filters=3, kernel_size=3, padding="same", activation="tanh"),
    dict(filters=4, kernel_size=(3, 2), strides=2, activation="relu", groups=2,
         kernel_regularizer="l2", bias_regularizer="l1"),
    dict(filters=2, kernel_size=3, dilation_rate=2, activation="sigmoid",
         activity_regularizer="l2", data_format="channels_first"),
    dict(filters=2, kernel_size=2, padding="same", activation="softmax",
         kernel_regularizer="l1_l2"),
]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: kw["activation"])
def test_layer_backward_matches_finite_differences_of_the_whole_loss(kwargs):
    # loss = Σ R · layer(x) + Σ layer.losses (activity and weight regularizers).
    layer = numbaconv.Conv2D(**kwargs, dtype="float64")
    rng = np.random.default_rng(1)
    shape = (2, 7, 6, 2) if kwargs.get("data_format") != "channels_first" else (2, 2, 7, 6)
    x = rng.standard_normal(shape)
    layer.build(x.shape)
    layer.set_weights([rng.standard_normal(w.shape) * 0.5 for w in layer.get_weights()])
    weights = rng.standard_normal(layer.compute_output_shape(x.shape))

    def loss():
        return float(np.sum(weights * layer(x)) + sum(layer.losses))

    value = loss()
    layer(x, training=True)
    grad_x = layer.backward(weights)
    assert np.isclose(loss(), value)
    assert relative_error(grad_x, finite_differences(loss, x)) < 1e-6
    assert len(layer.grads) == len(layer.trainable_weights) == 2
    for grad, variable in zip(layer.grads, layer.trainable_weights):
        value = np.array(variable.value)

        def loss_at(v=value, variable=variable):
            variable.assign(v)
            return loss()
        assert relative_error(grad, finite_differences(loss_at, value)) < 1e-6


def test_frozen_layer_gives_input_gradients_only():
    layer = numbaconv.Conv2D(2, 3, trainable=False, dtype="float64")
    x = np.random.default_rng(2).standard_normal((1, 5, 5, 1))
    y = layer(x, training=True)
    grad_x = layer.backward(np.ones_like(y))
    assert layer.grads == [] and grad_x.shape == x.shape and grad_x.any()


def test_backward_errors():
    layer = numbaconv.Conv2D(2, 3)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((1, 1, 1, 2)))
    y = layer(np.ones((1, 5, 5, 1)), training=True)
    with pytest.raises(ValueError, match="grad_output"):
        layer.backward(np.ones((1, 3, 3, 3)))
    layer.backward(np.ones_like(y))
    mish = numbaconv.Conv2D(2, 3, activation="mish")
    mish(np.ones((1, 5, 5, 1)), training=True)
    with pytest.raises(NotImplementedError, match="mish"):
        mish.backward(np.ones_like(y))


@pytest.mark.parametrize("make", [lambda keras: (SGD(0.1), keras.optimizers.SGD(0.1)),
                                  lambda keras: (SGD(0.1, momentum=0.9, nesterov=True),
                                                 keras.optimizers.SGD(0.1, momentum=0.9,
                                                                      nesterov=True)),
                                  lambda keras: (Adam(0.01), keras.optimizers.Adam(0.01))],
                         ids=["sgd", "nesterov", "adam"])
def test_optimizer_steps_match_keras(make, keras):
    ours, theirs = make(keras)
    rng = np.random.default_rng(3)
    start = rng.standard_normal((3, 4)).astype(np.float32)
    layer = numbaconv.Conv2D(4, 1, use_bias=False)
    layer.build((1, 2, 2, 3))
    layer.set_weights([start.reshape(1, 1, 3, 4)])
    variable = keras.Variable(start)
    for _ in range(3):
        grad = rng.standard_normal((3, 4)).astype(np.float32)
        ours.apply([grad.reshape(1, 1, 3, 4)], layer.trainable_weights)
        theirs.apply_gradients([(keras.ops.convert_to_tensor(grad), variable)])
    np.testing.assert_allclose(layer.kernel.value.reshape(3, 4), np.asarray(variable.value),
                               rtol=1e-5, atol=1e-6)


def test_optimizer_applies_constraints_after_each_step():
    layer = numbaconv.Conv2D(2, 3, kernel_constraint="non_neg", dtype="float64")
    x = np.random.default_rng(4).standard_normal((2, 5, 5, 1))
    y = layer(x, training=True)
    layer.backward(np.ones_like(y))  # pushes weights down
    SGD(10.0).apply(layer.grads, layer.trainable_weights)
    assert (layer.kernel.value >= 0).all() and (layer.kernel.value == 0).any()


def test_losses_and_their_gradients():
    rng = np.random.default_rng(5)
    target = rng.standard_normal((2, 3, 4))
    prediction = rng.standard_normal((2, 3, 4))
    value, grad = mean_squared_error(target, prediction)
    assert np.isclose(value, np.mean((prediction - target) ** 2))
    want = finite_differences(lambda: mean_squared_error(target, prediction)[0], prediction)
    assert relative_error(grad, want) < 1e-6
    probs = activations.softmax(rng.standard_normal((2, 3, 4)))
    onehot = np.eye(4)[rng.integers(0, 4, (2, 3))]
    value, grad = categorical_crossentropy(onehot, probs)
    assert np.isclose(value, -np.sum(onehot * np.log(probs)) / 6)
    want = finite_differences(lambda: categorical_crossentropy(onehot, probs)[0], probs)
    assert relative_error(grad, want) < 1e-6


def test_fit_learns_a_filter_with_mse(capsys):
    # A student Conv2D learns a teacher's 3x3 filter: loss below 1e-4 in 60 epochs.
    rng = np.random.default_rng(6)
    teacher = rng.standard_normal((3, 3, 1, 1))
    x = rng.standard_normal((32, 8, 8, 1))
    y = numbaconv.conv2d(x, teacher, padding="same")
    model = Sequential([numbaconv.Conv2D(1, 3, padding="same", dtype="float64")])
    history = model.fit(x, y, loss="mse", optimizer=SGD(0.05, momentum=0.9), epochs=60,
                        batch_size=8, seed=0)
    assert history["loss"][-1] < 1e-4 < history["loss"][0]
    assert capsys.readouterr().err.count("Epoch ") == 60
    np.testing.assert_allclose(model.layers[0].kernel.value, teacher, atol=1e-2)


def test_fit_classifies_with_categorical_crossentropy():
    # Four classes of 8x8 images (a bright quadrant each): a relu conv, then a
    # softmax conv over the whole image; loss below 0.01 in 15 epochs.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 64)
    x = rng.standard_normal((64, 8, 8, 1)) * 0.3
    for i, label in enumerate(labels):
        x[i, 4 * (label // 2):4 * (label // 2) + 4, 4 * (label % 2):4 * (label % 2) + 4] += 1
    y = np.eye(4)[labels].reshape(64, 1, 1, 4)
    model = Sequential([
        numbaconv.Conv2D(4, 3, padding="same", activation="relu", dtype="float64"),
        numbaconv.Conv2D(4, 8, activation="softmax", dtype="float64")])
    history = model.fit(x, y, loss="categorical_crossentropy", optimizer=Adam(0.01),
                        epochs=15, batch_size=16, verbose=0, seed=0)
    assert history["loss"][-1] < 0.01 < history["loss"][0]
    assert (model(x).reshape(64, 4).argmax(axis=1) == labels).all()


def test_fit_checks_its_arguments():
    model = Sequential([numbaconv.Conv2D(1, 3)])
    with pytest.raises(ValueError, match="same number of samples"):
        model.fit(np.ones((2, 5, 5, 1)), np.ones((3, 3, 3, 1)))
    with pytest.raises(ValueError, match="Unknown loss"):
        model.fit(np.ones((2, 5, 5, 1)), np.ones((2, 3, 3, 1)), loss="hinge")
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(np.ones((2, 5, 5, 1)), np.ones((2, 3, 3, 1)), batch_size=0)
