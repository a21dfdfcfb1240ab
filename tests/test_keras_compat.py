"""Cross-checks of ``numbaconv.Conv2D`` against real Keras 3 (JAX backend).

Skipped when Keras is not importable.  Keras is the oracle here: configs,
output shapes, parameter counts, losses, error messages and outputs (after
copying Keras's weights) must agree.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")

import numbaconv  # noqa: E402
from numbaconv import Conv2D  # noqa: E402


def _without_name(config):
    return {k: v for k, v in config.items() if k != "name"}


# Each argument set is a function of the module family (numbaconv or keras),
# so that objects (initializers, regularizers, ...) come from the right library.
ARG_SETS = {
    "defaults": lambda m: dict(filters=4, kernel_size=3),
    "geometry_channels_first": lambda m: dict(
        filters=8, kernel_size=(3, 5), strides=2, padding="same",
        data_format="channels_first"),
    "dilation_groups_relu": lambda m: dict(
        filters=6, kernel_size=2, dilation_rate=(2, 3), groups=3, activation="relu"),
    "lists_upper_padding_softmax_nobias": lambda m: dict(
        filters=4, kernel_size=[1, 3], strides=[1, 2], padding="SAME", activation="softmax",
        use_bias=False),
    "initializer_strings": lambda m: dict(
        filters=4, kernel_size=3, kernel_initializer="he_normal", bias_initializer="ones"),
    "seeded_glorot_constant": lambda m: dict(
        filters=4, kernel_size=3, kernel_initializer=m.initializers.GlorotUniform(seed=1),
        bias_initializer=m.initializers.Constant(0.5)),
    "random_normal_uniform": lambda m: dict(
        filters=4, kernel_size=3,
        kernel_initializer=m.initializers.RandomNormal(mean=0.1, stddev=0.3, seed=7),
        bias_initializer=m.initializers.RandomUniform(minval=-0.1, maxval=0.2, seed=8)),
    "variance_scaling_truncated": lambda m: dict(
        filters=4, kernel_size=3,
        kernel_initializer=m.initializers.VarianceScaling(
            scale=2.0, mode="fan_out", distribution="truncated_normal", seed=3),
        bias_initializer=m.initializers.TruncatedNormal(stddev=0.02)),
    "regularizer_strings_and_l1l2": lambda m: dict(
        filters=4, kernel_size=3, kernel_regularizer="l2", bias_regularizer="l1",
        activity_regularizer=m.regularizers.L1L2(l1=0.1, l2=0.2)),
    "regularizer_objects": lambda m: dict(
        filters=4, kernel_size=3, kernel_regularizer=m.regularizers.L2(0.3),
        bias_regularizer=m.regularizers.L1(0.05),
        activity_regularizer=m.regularizers.L1(0.01)),
    "orthogonal_regularizer": lambda m: dict(
        filters=4, kernel_size=3,
        kernel_regularizer=m.regularizers.OrthogonalRegularizer(factor=0.02, mode="columns"),
        kernel_initializer="he_uniform", activation="hard_sigmoid"),
    "constraints": lambda m: dict(
        filters=4, kernel_size=3, kernel_constraint="non_neg",
        bias_constraint=m.constraints.MaxNorm(max_value=2.0, axis=0)),
    "constraints_with_args": lambda m: dict(
        filters=4, kernel_size=3,
        kernel_constraint=m.constraints.MinMaxNorm(min_value=0.5, max_value=1.5, rate=0.7,
                                                   axis=[0, 1, 2]),
        bias_constraint="unit_norm"),
    "float64_untrainable_gelu": lambda m: dict(
        filters=4, kernel_size=3, dtype="float64", trainable=False, activation="gelu"),
    "mixed_float16_leaky_orthogonal": lambda m: dict(
        filters=4, kernel_size=3, dtype="mixed_float16", activation="leaky_relu",
        kernel_initializer="orthogonal"),
    "swish_lecun_glorot_normal": lambda m: dict(
        filters=4, kernel_size=3, kernel_initializer="lecun_uniform",
        bias_initializer="glorot_normal", activation="swish"),
    "callable_activation": lambda m: dict(
        filters=4, kernel_size=3, activation=m.activations.tanh, dilation_rate=2),
}


@pytest.fixture(params=sorted(ARG_SETS))
def arg_set(request):
    return ARG_SETS[request.param]


def _pair_of_layers(make):
    return Conv2D(**make(numbaconv)), keras.layers.Conv2D(**make(keras))


def test_config_matches_keras(arg_set):
    ours, theirs = _pair_of_layers(arg_set)
    assert _without_name(ours.get_config()) == _without_name(theirs.get_config())


def test_config_key_order_matches_keras(arg_set):
    ours, theirs = _pair_of_layers(arg_set)
    assert list(ours.get_config()) == list(theirs.get_config())


def test_keras_from_config_accepts_ours(arg_set):
    ours, _ = _pair_of_layers(arg_set)
    config = ours.get_config()
    revived = keras.layers.Conv2D.from_config(config)
    assert revived.get_config() == config


def test_from_config_accepts_keras(arg_set):
    _, theirs = _pair_of_layers(arg_set)
    config = theirs.get_config()
    revived = Conv2D.from_config(config)
    assert revived.get_config() == config


def test_keras_default_name_style():
    ours, theirs = Conv2D(2, 2), keras.layers.Conv2D(2, 2)
    strip = lambda name: name.rsplit("_", 1)[0] if name[-1].isdigit() else name  # noqa: E731
    assert strip(ours.name) == strip(theirs.name) == "conv2d"


# --------------------------------------------------------------------------- numbers
NUMERIC_CONFIGS = [
    ("default", dict(filters=4, kernel_size=3), (2, 7, 8, 3)),
    ("channels_first_same_stride2", dict(filters=5, kernel_size=3, strides=2, padding="same",
                                         data_format="channels_first"), (2, 3, 7, 8)),
    ("same_stride2_even_kernel", dict(filters=3, kernel_size=(2, 4), strides=2,
                                      padding="same"), (2, 8, 9, 2)),
    ("groups_dilation_same", dict(filters=6, kernel_size=2, groups=2, dilation_rate=(2, 1),
                                  padding="same"), (2, 6, 7, 4)),
    ("depthwise_channels_first", dict(filters=8, kernel_size=3, groups=4,
                                      data_format="channels_first"), (1, 4, 6, 6)),
    ("dilation_relu", dict(filters=4, kernel_size=3, dilation_rate=2, activation="relu"),
     (2, 9, 9, 3)),
    ("softmax_channels_first", dict(filters=4, kernel_size=2, activation="softmax",
                                    data_format="channels_first"), (2, 3, 5, 6)),
    ("no_bias_strides_tanh", dict(filters=3, kernel_size=(3, 1), strides=(1, 3),
                                  use_bias=False, activation="tanh"), (2, 6, 8, 2)),
    ("kernel_larger_than_input_same", dict(filters=2, kernel_size=5, padding="same"),
     (1, 3, 4, 2)),
]


@pytest.mark.parametrize("kwargs,shape", [c[1:] for c in NUMERIC_CONFIGS],
                         ids=[c[0] for c in NUMERIC_CONFIGS])
def test_outputs_match_keras(kwargs, shape):
    rng = np.random.default_rng(0)
    theirs = keras.layers.Conv2D(**kwargs)
    theirs.build(shape)
    theirs.set_weights([rng.standard_normal(w.shape).astype("float32")
                        for w in theirs.get_weights()])
    ours = Conv2D.from_config(theirs.get_config())
    ours.build(shape)
    ours.set_weights(theirs.get_weights())
    x = rng.standard_normal(shape).astype("float32")
    expected = np.asarray(theirs(x))
    got = ours(x)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_mixed_float16_matches_keras():
    rng = np.random.default_rng(1)
    shape = (2, 6, 6, 3)
    theirs = keras.layers.Conv2D(4, 3, padding="same", dtype="mixed_float16")
    theirs.build(shape)
    theirs.set_weights([rng.standard_normal(w.shape).astype("float32")
                        for w in theirs.get_weights()])
    ours = Conv2D.from_config(theirs.get_config())
    ours.build(shape)
    ours.set_weights(theirs.get_weights())
    assert [w.numpy().dtype for w in ours.weights] == \
        [np.dtype(str(w.dtype)) for w in theirs.weights]
    assert (ours.dtype, ours.variable_dtype, ours.compute_dtype) == \
        (theirs.dtype, theirs.variable_dtype, theirs.compute_dtype)
    x = rng.standard_normal(shape).astype("float32")
    expected = np.asarray(theirs(x))
    got = ours(x)
    assert got.dtype == expected.dtype == np.float16
    np.testing.assert_allclose(got.astype("float32"), expected.astype("float32"),
                               rtol=1e-2, atol=2e-2)


def test_float64_input_dtype_matches_keras():
    theirs = keras.layers.Conv2D(2, 2)
    ours = Conv2D(2, 2)
    x = np.random.default_rng(2).standard_normal((1, 4, 4, 2))
    assert ours(x).dtype == np.dtype(str(theirs(x).dtype))
    xi = np.ones((1, 4, 4, 2), dtype="int32")
    assert ours(xi).dtype == np.dtype(str(theirs(xi).dtype))


# --------------------------------------------------------------------------- API agreement
SHAPES = [
    (dict(kernel_size=3), (None, 10, 10, 3)),
    (dict(kernel_size=3), (None, None, None, 3)),
    (dict(kernel_size=(3, 2), strides=(2, 3), padding="same"), (4, 7, 9, 3)),
    (dict(kernel_size=3, padding="same", strides=2), (None, None, 9, 3)),
    (dict(kernel_size=3, dilation_rate=(2, 3)), (1, 10, 11, 3)),
    (dict(kernel_size=2, strides=2, data_format="channels_first"), (2, 3, 9, 8)),
    (dict(kernel_size=2, data_format="channels_first", padding="same"), (2, 3, None, 8)),
]


@pytest.mark.parametrize("kwargs,shape", SHAPES)
def test_compute_output_shape_matches_keras(kwargs, shape):
    ours = Conv2D(5, **kwargs)
    theirs = keras.layers.Conv2D(5, **kwargs)
    assert tuple(ours.compute_output_shape(shape)) == tuple(theirs.compute_output_shape(shape))


@pytest.mark.parametrize("kwargs,shape", [
    (dict(filters=8, kernel_size=3), (None, 5, 5, 3)),
    (dict(filters=6, kernel_size=(2, 3), groups=2), (None, 5, 5, 4)),
    (dict(filters=8, kernel_size=3, groups=4, use_bias=False), (None, 5, 5, 4)),
    (dict(filters=4, kernel_size=1, data_format="channels_first"), (None, 6, 5, 5)),
])
def test_count_params_and_weights_match_keras(kwargs, shape):
    ours = Conv2D(**kwargs, name="cp")
    theirs = keras.layers.Conv2D(**kwargs, name="cp")
    ours.build(shape)
    theirs.build(shape)
    assert ours.count_params() == theirs.count_params()
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    assert [w.path for w in ours.weights] == [w.path for w in theirs.weights]
    assert len(ours.trainable_weights) == len(theirs.trainable_weights)
    ours.trainable = theirs.trainable = False
    assert len(ours.trainable_weights) == len(theirs.trainable_weights)
    assert len(ours.non_trainable_weights) == len(theirs.non_trainable_weights)


def test_losses_match_keras():
    rng = np.random.default_rng(3)
    kwargs = dict(filters=3, kernel_size=2, activation="relu")
    shape = (4, 5, 5, 2)
    theirs = keras.layers.Conv2D(
        **kwargs, kernel_regularizer=keras.regularizers.L2(0.3),
        bias_regularizer=keras.regularizers.L1(0.2),
        activity_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02))
    theirs.build(shape)
    theirs.set_weights([rng.standard_normal(w.shape).astype("float32")
                        for w in theirs.get_weights()])
    ours = Conv2D.from_config(theirs.get_config())
    ours.build(shape)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose([float(v) for v in ours.losses],
                               [float(v) for v in theirs.losses], rtol=1e-5)
    x = rng.standard_normal(shape).astype("float32")
    theirs(x)
    ours(x)
    assert len(ours.losses) == len(theirs.losses) == 3
    np.testing.assert_allclose([float(v) for v in ours.losses],
                               [float(v) for v in theirs.losses], rtol=1e-5)


def test_set_weights_messages_match_keras():
    ours = Conv2D(4, 3, name="msg")
    theirs = keras.layers.Conv2D(4, 3, name="msg")
    ours.build((None, 5, 5, 2))
    theirs.build((None, 5, 5, 2))
    for weights in ([np.zeros((3, 3, 2, 4))],
                    [np.zeros((3, 3, 2, 5)), np.zeros(4)],
                    [np.zeros((3, 3, 2, 4)), np.zeros(3)]):
        with pytest.raises(ValueError) as ours_error:
            ours.set_weights(weights)
        with pytest.raises(ValueError) as their_error:
            theirs.set_weights(weights)
        assert str(ours_error.value) == str(their_error.value)


@pytest.mark.parametrize("kwargs", [
    dict(filters=2, kernel_size=(1, 0)),
    dict(filters=2, kernel_size=(2, 2), strides=(1, 0)),
    dict(filters=2, kernel_size=(2, 2), strides=2, dilation_rate=(2, 1)),
    dict(filters=5, kernel_size=(2, 2), groups=0),
    dict(filters=5, kernel_size=(2, 2), groups=2),
    dict(filters=0, kernel_size=2),
])
def test_init_error_messages_match_keras(kwargs):
    with pytest.raises(ValueError) as ours_error:
        Conv2D(**kwargs)
    with pytest.raises(ValueError) as their_error:
        keras.layers.Conv2D(**kwargs)
    assert str(ours_error.value) == str(their_error.value)


def test_build_group_error_matches_keras():
    with pytest.raises(ValueError) as ours_error:
        Conv2D(4, 3, groups=2).build((None, 5, 5, 3))
    with pytest.raises(ValueError) as their_error:
        keras.layers.Conv2D(4, 3, groups=2).build((None, 5, 5, 3))
    assert str(ours_error.value) == str(their_error.value)
