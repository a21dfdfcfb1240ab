"""R keras-style composition: ``layer_conv_2d(object, filters, kernel_size, ...)``."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from reference import reference_conv2d, reference_pads

import numbaconv
from numbaconv import Conv2D, r_style
from numbaconv.r_style import layer_conv_2d
from numbaconv.training import SGD, Sequential


def _weights(shape, filters, groups=1, seed=0):
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((*shape, filters)).astype("float64")
    return kernel, rng.standard_normal(filters)


def test_none_gives_the_layer():
    layer = layer_conv_2d(None, 8, 3, strides=2, padding="same", activation="relu",
                          name="r_layer")
    assert isinstance(layer, Conv2D) and not layer.built
    assert layer.get_config() == Conv2D(8, 3, strides=2, padding="same", activation="relu",
                                        name="r_layer").get_config()
    assert layer.trainable  # R's trainable = NULL


def test_keras_arguments_pass_through():
    layer = layer_conv_2d(None, 6, (3, 1), data_format="channels_first", dilation_rate=2,
                          groups=3, use_bias=False, kernel_initializer="he_normal",
                          bias_initializer="ones", kernel_regularizer="l2",
                          bias_regularizer="l1", activity_regularizer="l1",
                          kernel_constraint="non_neg", bias_constraint="unit_norm",
                          dtype="float64", trainable=False, device="cpu")
    want = Conv2D(6, (3, 1), data_format="channels_first", dilation_rate=2, groups=3,
                  use_bias=False, kernel_initializer="he_normal", bias_initializer="ones",
                  kernel_regularizer="l2", bias_regularizer="l1", activity_regularizer="l1",
                  kernel_constraint="non_neg", bias_constraint="unit_norm", dtype="float64",
                  trainable=False, name=layer.name)
    assert layer.get_config() == want.get_config()
    assert layer.device == "cpu" and not layer.trainable


@pytest.mark.parametrize("kwargs", [
    {},
    {"strides": 2, "padding": "same", "activation": "relu"},
    {"dilation_rate": (2, 1), "padding": "same", "groups": 2},
    {"data_format": "channels_first", "strides": (1, 2)},
], ids=["valid", "same_strided_relu", "dilated_groups", "channels_first"])
def test_array_gives_the_output(kwargs):
    groups = kwargs.get("groups", 1)
    channels_first = kwargs.get("data_format") == "channels_first"
    shape = (2, 4, 9, 8) if channels_first else (2, 9, 8, 4)
    x = np.random.default_rng(1).standard_normal(shape)
    kernel, bias = _weights((3, 3, 4 // groups), 6, seed=2)
    out = layer_conv_2d(x, 6, 3, weights=[kernel, bias], dtype="float64", **kwargs)
    strides = np.broadcast_to(kwargs.get("strides", 1), 2)
    dilation = np.broadcast_to(kwargs.get("dilation_rate", 1), 2)
    size = shape[2:] if channels_first else shape[1:3]
    pads = reference_pads(kwargs.get("padding", "valid"), size, (3, 3), strides, dilation)
    want = reference_conv2d(x, kernel, strides, pads, dilation,
                            kwargs.get("data_format", "channels_last"), bias)
    if kwargs.get("activation") == "relu":
        want = np.maximum(want, 0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
    # ... and what the functional API computes.
    functional = numbaconv.conv2d(x, kernel, strides=tuple(strides), dilation_rate=tuple(dilation),
                                  padding=kwargs.get("padding", "valid"),
                                  data_format=kwargs.get("data_format", "channels_last"))
    bias_shape = (1, -1, 1, 1) if channels_first else (1, 1, 1, -1)
    np.testing.assert_allclose(out, (want if kwargs.get("activation") else
                                     functional + bias.reshape(bias_shape)),
                               rtol=1e-10, atol=1e-12)


def test_nested_list_input_is_an_array():
    x = np.arange(2 * 4 * 4, dtype="float32").reshape(2, 4, 4, 1)
    kernel = np.ones((2, 2, 1, 1), "float32")
    out = layer_conv_2d(x.tolist(), 1, 2, use_bias=False, weights=[kernel])
    np.testing.assert_allclose(out, reference_conv2d(x, kernel), rtol=1e-6)


def test_sequential_gets_the_layer_appended():
    model = Sequential()
    returned = layer_conv_2d(model, 4, 3, padding="same", activation="relu",
                             input_shape=(6, 6, 2))
    assert returned is model and len(model.layers) == 1
    assert model.layers[0].built and model.layers[0]._build_shape == (None, 6, 6, 2)
    # Composition, R's %>% written out: each call returns the model.
    model = layer_conv_2d(layer_conv_2d(model, 3, 3), 1, 1, use_bias=False)
    assert [layer.filters for layer in model.layers] == [4, 3, 1]
    x = np.random.default_rng(3).standard_normal((5, 6, 6, 2)).astype("float32")
    want = x
    for layer in model.layers:
        want = layer(want)
    np.testing.assert_array_equal(model(x), want)
    history = model.fit(x, np.zeros((5, 4, 4, 1)), loss="mse", optimizer=SGD(0.01),
                        epochs=2, batch_size=5, verbose=0)
    assert len(history["loss"]) == 2


def test_r_numbers_are_accepted():
    # R's 32 is a double and c(3, 3) a list of doubles, through reticulate.
    layer = layer_conv_2d(None, 32.0, [3.0, 3.0], strides=np.float64(2),
                          dilation_rate=[1.0, 1.0], groups=2.0, input_shape=[None, 8.0, 4.0],
                          batch_size=2.0)
    assert layer.filters == 32 and type(layer.filters) is int
    assert layer.kernel_size == (3, 3) and layer.strides == (2, 2) and layer.groups == 2
    assert layer._build_shape == (2, None, 8, 4)
    layer = layer_conv_2d(None, 4, 3, batch_input_shape=[None, 5.0, 5.0, 2.0])
    assert layer._build_shape == (None, 5, 5, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"filters": 2.5}, ValueError, "`filters`.*whole numbers.*filters=2.5"),
    ({"kernel_size": [3, 1.5]}, ValueError, "`kernel_size`.*kernel_size=1.5"),
    ({"filters": "8"}, TypeError, "`filters`.*filters='8'"),
    ({"strides": True}, TypeError, "`strides`.*strides=True"),
    ({"filters": 0}, ValueError, "filters=0"),  # Conv2D's own check
])
def test_bad_numbers(kwargs, error, match):
    arguments = {"filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=match):
        layer_conv_2d(None, **arguments)


@pytest.mark.parametrize("bad", ["image", 3, {"x": 1}, Conv2D(2, 3)], ids=type)
def test_bad_object(bad):
    with pytest.raises(TypeError, match="`object` argument.*Received: object="):
        layer_conv_2d(bad, 4, 3)


def test_docstring_examples():
    result = doctest.testmod(r_style, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
