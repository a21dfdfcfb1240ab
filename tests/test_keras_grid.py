"""Keras's own ``Conv2D`` test grid, reproduced against numbaconv.

Source: keras-team/keras ``keras/src/layers/convolutional/conv_test.py`` as
shipped with Keras 3.15 (``site-packages/keras/src/layers/convolutional/
conv_test.py``):

* ``ConvBasicTest.test_conv2d_basic`` -- its three parameter sets, run through
  a NumPy re-creation of the parts of ``testing.TestCase.run_layer_test`` that
  apply to a layer without training: config round trip, build asserts, output
  shape (symbolic -> ``compute_output_shape`` with batch ``None``; eager ->
  a real call), number of losses, and the mixed-precision check;
* the shape parts of ``test_enable_lora``'s two ``Conv2D`` cases (LoRA itself
  is not supported by numbaconv) and ``test_lora_rank_argument`` without LoRA;
* ``ConvBasicTest.test_bad_init_args`` (the ``Conv2D`` cases, and the
  ``filters=0`` case that Keras runs on ``Conv1D``), with Keras's messages;
* ``test_conv_symbolic_invalid_configuration`` (the ``Conv2D`` case);
* ``ConvCorrectnessTest.test_conv2d`` -- its six parameter sets, checked
  against ``tests/reference.py`` instead of Keras's ``np_conv2d``, with
  Keras's tolerance (rtol 5e-4, atol 1e-6);
* ``test_conv_constraints`` and ``test_conv_raises_exception_on_zero_dims``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import numbaconv
from numbaconv import Conv2D
from reference import reference_conv2d, reference_same_pads


@pytest.fixture(autouse=True, scope="module")
def _no_user_keras_config(tmp_path_factory):
    """An empty KERAS_HOME, so a user's keras.json cannot change the default layout."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        yield


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _reference(x, kernel, bias, strides, padding, data_format, dilation_rate):
    hw = x.shape[1:3] if data_format == "channels_last" else x.shape[2:4]
    if padding == "same":
        pads = tuple(reference_same_pads(n, k, s, d) for n, k, s, d in
                     zip(hw, kernel.shape[:2], _pair(strides), _pair(dilation_rate)))
    else:
        pads = ((0, 0), (0, 0))
    return reference_conv2d(x, kernel, _pair(strides), pads, _pair(dilation_rate),
                            data_format, bias)


def _json_with_tuples(config):
    """Keras's ``to_json_with_tuples``, simplified: tuples tagged so they survive."""
    def encode(value):
        if isinstance(value, tuple):
            return {"__tuple__": [encode(v) for v in value]}
        if isinstance(value, list):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        return value
    return json.dumps(encode(config), sort_keys=True)


def run_layer_test(init_kwargs, input_shape, expected_output_shape,
                   expected_num_trainable_weights=None,
                   expected_num_non_trainable_weights=None, expected_num_losses=None):
    """The applicable parts of ``keras.src.testing.TestCase.run_layer_test``."""
    rng = np.random.default_rng(0)

    def run_build_asserts(layer):
        assert layer.built
        if expected_num_trainable_weights is not None:
            assert len(layer.trainable_weights) == expected_num_trainable_weights
        if expected_num_non_trainable_weights is not None:
            assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
        if expected_num_trainable_weights is not None and \
                expected_num_non_trainable_weights is not None:
            assert len(layer.weights) == (expected_num_trainable_weights
                                          + expected_num_non_trainable_weights)

    def verify_shape(shape):
        assert len(shape) == len(expected_output_shape), (shape, expected_output_shape)
        for expected, dim in zip(expected_output_shape, shape):
            if expected is not None:
                assert expected == dim, (shape, expected_output_shape)

    # Serialization test (get_config round trip).
    layer = Conv2D(**init_kwargs)
    config = layer.get_config()
    revived = Conv2D.from_config(config)
    assert _json_with_tuples(config) == _json_with_tuples(revived.get_config())
    assert set(dir(layer)) == set(dir(revived))

    # Build test.
    layer = Conv2D(**init_kwargs)
    layer.build(input_shape)
    run_build_asserts(layer)

    # Symbolic call test: shapes only, also with an unknown batch dimension.
    layer = Conv2D(**init_kwargs)
    verify_shape(layer.compute_output_shape(input_shape))
    symbolic_shape = (None, *input_shape[1:])
    assert tuple(layer.compute_output_shape(symbolic_shape)) == \
        (None, *expected_output_shape[1:])
    layer.build(symbolic_shape)
    run_build_asserts(layer)

    # Eager call test.
    layer = Conv2D(**init_kwargs)
    inputs = rng.random(input_shape).astype("float32")
    outputs = layer(inputs)
    run_build_asserts(layer)
    verify_shape(outputs.shape)
    assert outputs.dtype == np.float32
    if expected_num_losses is not None:
        assert len(layer.losses) == expected_num_losses

    # Mixed precision check.
    layer = Conv2D(**{**init_kwargs, "dtype": "mixed_float16"})
    outputs = layer(inputs)
    assert outputs.dtype == np.float16
    for weight in layer.weights:
        assert np.asarray(weight).dtype == np.float32


# --------------------------------------------------------------------------- test_conv2d_basic
CONV2D_BASIC = [
    {
        "filters": 5, "kernel_size": 2, "strides": 1, "padding": "valid",
        "data_format": "channels_last", "dilation_rate": 1, "groups": 1,
        "input_shape": (3, 5, 5, 4), "output_shape": (3, 4, 4, 5),
    },
    {
        "filters": 6, "kernel_size": 2, "strides": 1, "padding": "same",
        "data_format": "channels_last", "dilation_rate": (2, 2), "groups": 2,
        "input_shape": (3, 4, 4, 4), "output_shape": (3, 4, 4, 6),
    },
    {
        "filters": 6, "kernel_size": (2, 2), "strides": (2, 1), "padding": "valid",
        "data_format": "channels_last", "dilation_rate": (1, 1), "groups": 2,
        "input_shape": (3, 5, 5, 4), "output_shape": (3, 2, 4, 6),
    },
]


@pytest.mark.parametrize("params", CONV2D_BASIC)
def test_conv2d_basic(params):
    params = dict(params)
    input_shape, output_shape = params.pop("input_shape"), params.pop("output_shape")
    run_layer_test(params, input_shape=input_shape, expected_output_shape=output_shape,
                   expected_num_trainable_weights=2, expected_num_non_trainable_weights=0,
                   expected_num_losses=0)


# The Conv2D cases of test_enable_lora (shapes only; no LoRA in numbaconv).
LORA_SHAPE_CASES = [
    {
        "filters": 6, "kernel_size": 3, "strides": 1, "padding": "valid",
        "data_format": "channels_last", "dilation_rate": 1, "groups": 1,
        "input_shape": (None, 5, 5, 4), "output_shape": (None, 3, 3, 6),
    },
    {
        "filters": 6, "kernel_size": 2, "strides": 2, "padding": "valid",
        "data_format": "channels_last", "dilation_rate": 1, "groups": 2,
        "input_shape": (None, 5, 5, 4), "output_shape": (None, 2, 2, 6),
    },
]


@pytest.mark.parametrize("params", LORA_SHAPE_CASES)
def test_lora_grid_shapes(params):
    params = dict(params)
    input_shape, output_shape = params.pop("input_shape"), params.pop("output_shape")
    layer = Conv2D(**params)
    layer.build(input_shape)
    assert len(layer.trainable_weights) == 2
    assert len(layer.non_trainable_weights) == 0
    assert tuple(layer.compute_output_shape(input_shape)) == output_shape
    x = np.random.default_rng(1).random((2, *input_shape[1:]))
    assert layer(x).shape == (2, *output_shape[1:])


def test_lora_rank_argument_without_lora():
    # Keras's test_lora_rank_argument, minus lora_rank: 2 trainable weights and
    # one loss (the kernel regularizer).
    run_layer_test({"filters": 5, "kernel_size": 3, "activation": "sigmoid",
                    "data_format": "channels_last", "kernel_regularizer": "l2"},
                   input_shape=(2, 5, 5, 4), expected_output_shape=(2, 3, 3, 5),
                   expected_num_trainable_weights=2, expected_num_non_trainable_weights=0,
                   expected_num_losses=1)


def test_lora_rank_is_rejected():
    with pytest.raises(ValueError, match="lora_rank"):
        Conv2D(filters=5, kernel_size=3, lora_rank=2)


# --------------------------------------------------------------------------- test_bad_init_args
def test_bad_init_args_filters():
    # Keras runs this case on Conv1D; the check lives in BaseConv.
    with pytest.raises(
        ValueError,
        match="Invalid value for argument `filters`. Expected a "
              "strictly positive value. Received filters=0.",
    ):
        Conv2D(filters=0, kernel_size=1)


def test_bad_init_args_kernel_size():
    with pytest.raises(
        ValueError,
        match=r"The `kernel_size` argument must be a tuple of \d+ "
              r"integers. Received kernel_size=\(1, 0\), including values \{0\} "
              r"that do not satisfy `value > 0`",
    ):
        Conv2D(filters=2, kernel_size=(1, 0))


def test_bad_init_args_strides():
    with pytest.raises(
        ValueError,
        match=r"The `strides` argument must be a tuple of \d+ "
              r"integers. Received strides=\(1, 0\), including values \{0\} that "
              r"do not satisfy `value > 0`",
    ):
        Conv2D(filters=2, kernel_size=(2, 2), strides=(1, 0))


def test_bad_init_args_strides_with_dilation():
    with pytest.raises(
        ValueError,
        match=r"`strides > 1` not supported in conjunction with "
              r"`dilation_rate > 1`. Received: strides=\(2, 2\) and "
              r"dilation_rate=\(2, 1\)",
    ):
        Conv2D(filters=2, kernel_size=(2, 2), strides=2, dilation_rate=(2, 1))


def test_bad_init_args_groups():
    with pytest.raises(
        ValueError,
        match="The number of groups must be a positive integer. Received: groups=0.",
    ):
        Conv2D(filters=5, kernel_size=(2, 2), groups=0)


def test_bad_init_args_filters_groups():
    with pytest.raises(
        ValueError,
        match="The number of filters must be evenly divisible by the"
              " number of groups. Received: groups=2, filters=5.",
    ):
        Conv2D(filters=5, kernel_size=(2, 2), groups=2)


def test_conv_symbolic_invalid_configuration():
    layer = Conv2D(filters=1, kernel_size=(2, 2), dilation_rate=(10, 10))
    with pytest.raises(ValueError):
        layer.build((None, 10, 10, 3))
    with pytest.raises(ValueError):
        layer.compute_output_shape((None, 10, 10, 3))


# --------------------------------------------------------------------------- test_conv2d
CONV2D_CORRECTNESS = [
    {"filters": 5, "kernel_size": 2, "strides": 1, "padding": "valid",
     "data_format": "channels_last", "dilation_rate": 1, "groups": 1},
    {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same",
     "data_format": "channels_last", "dilation_rate": 1, "groups": 1},
    {"filters": 6, "kernel_size": 2, "strides": 1, "padding": "same",
     "data_format": "channels_last", "dilation_rate": (2, 2), "groups": 2},
    {"filters": 6, "kernel_size": 2, "strides": 1, "padding": "same",
     "data_format": "channels_last", "dilation_rate": (2, 3), "groups": 2},
    {"filters": 6, "kernel_size": (4, 3), "strides": (2, 1), "padding": "valid",
     "data_format": "channels_last", "dilation_rate": (1, 1), "groups": 2},
    {"filters": 6, "kernel_size": (4, 3), "strides": (2, 1), "padding": "valid",
     "data_format": "channels_first", "dilation_rate": (1, 1), "groups": 2},
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("params", CONV2D_CORRECTNESS)
def test_conv2d(params, seed):
    rng = np.random.default_rng(seed)
    layer = Conv2D(**params)
    inputs = rng.normal(size=[2, 8, 8, 4])
    layer.build(input_shape=inputs.shape)

    kernel_weights = rng.normal(size=layer.kernel.shape)
    bias_weights = rng.normal(size=(params["filters"],))
    layer.kernel.assign(kernel_weights)
    layer.bias.assign(bias_weights)

    outputs = layer(inputs)
    expected = _reference(inputs, kernel_weights, bias_weights, params["strides"],
                          params["padding"], params["data_format"], params["dilation_rate"])
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=5e-4, atol=1e-6)


# --------------------------------------------------------------------------- misc
def test_conv_constraints():
    layer = Conv2D(filters=4, kernel_size=3, kernel_constraint="non_neg")
    layer.build((None, 5, 5, 3))
    assert isinstance(layer.kernel.constraint, numbaconv.constraints.NonNeg)
    layer = Conv2D(filters=4, kernel_size=3, bias_constraint="non_neg")
    layer.build((None, 5, 5, 3))
    assert isinstance(layer.bias.constraint, numbaconv.constraints.NonNeg)


def test_conv_raises_exception_on_zero_dims():
    x = np.random.rand(3, 4, 4, 4)
    layer = Conv2D(6, [5, 5], 1, "valid")
    # Keras raises a ValueError ("Computed output size would be zero or negative").
    with pytest.raises(ValueError, match="output size"):
        layer(x)


def test_docstring_example():
    # keras.layers.Conv2D's docstring example
    x = np.random.rand(4, 10, 10, 128)
    y = Conv2D(32, 3, activation="relu")(x)
    assert y.shape == (4, 8, 8, 32)
    assert np.all(y >= 0)
