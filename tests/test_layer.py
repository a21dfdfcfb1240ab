"""Tests of the ``Conv2D`` layer: its Keras 3 API and its numbers.

Every numeric expectation comes from the independent NumPy reference in
``tests/reference.py`` (or from closed-form values), never from numbaconv
itself.  Shapes are kept small: the generic kernels compile once per
dtype/layout and serve every geometry.
"""

from __future__ import annotations

import inspect
import json
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv import Conv2D, Convolution2D
from reference import reference_conv2d, reference_output_size, reference_same_pads

F32 = dict(rtol=5e-4, atol=1e-6)
F64 = dict(rtol=1e-10, atol=1e-12)

KERAS_CONFIG_KEYS = {
    "name", "trainable", "dtype", "filters", "kernel_size", "strides", "padding",
    "data_format", "dilation_rate", "groups", "activation", "use_bias",
    "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
    "activity_regularizer", "kernel_constraint", "bias_constraint",
}


# --------------------------------------------------------------------------- helpers
def _rng(seed=0):
    return np.random.default_rng(seed)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding, hw, kernel_size, strides, dilation):
    if padding.lower() == "valid":
        return ((0, 0), (0, 0))
    return tuple(reference_same_pads(n, k, s, d)
                 for n, k, s, d in zip(hw, _pair(kernel_size), _pair(strides), _pair(dilation)))


def _spatial(shape, data_format):
    return tuple(shape[1:3]) if data_format == "channels_last" else tuple(shape[2:4])


def _ref(x, kernel, bias, *, strides=1, padding="valid", dilation_rate=1,
         data_format="channels_last", kernel_size=None):
    """Reference conv + bias (float64) for layer-style arguments."""
    kernel = np.asarray(kernel, dtype=np.float64)
    ks = kernel.shape[:2] if kernel_size is None else kernel_size
    pads = _pads(padding, _spatial(x.shape, data_format), ks, strides, dilation_rate)
    return reference_conv2d(x, kernel, _pair(strides), pads, _pair(dilation_rate), data_format,
                            None if bias is None else np.asarray(bias, dtype=np.float64))


def _layer_ref(layer, x):
    """Reference conv + bias for a built layer's current weights (no activation)."""
    return _ref(np.asarray(x, dtype=np.float64), layer.kernel.numpy(),
                None if layer.bias is None else np.asarray(layer.bias),
                strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate,
                data_format=layer.data_format)


def _np_softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


NP_ACTIVATIONS = {
    None: lambda z: z,
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": _np_sigmoid,
    "tanh": np.tanh,
    "softmax": _np_softmax,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
    "swish": lambda z: z * _np_sigmoid(z),
}


def _randomize(layer, seed=1, dtype=np.float32):
    """Random (non-initializer) weights through set_weights; returns them in float64."""
    rng = _rng(seed)
    arrays = [rng.standard_normal(w.shape) for w in layer.weights]
    layer.set_weights([a.astype(dtype) for a in arrays])
    return [a.astype(dtype).astype(np.float64) for a in arrays]


def _input(shape, seed=2, dtype=np.float32):
    return _rng(seed).standard_normal(shape).astype(dtype)


@pytest.fixture(autouse=True, scope="module")
def _no_user_keras_config(tmp_path_factory):
    """An empty KERAS_HOME, so a user's keras.json cannot change the default layout."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        yield


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty KERAS_HOME so that the default data_format is channels_last."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def always_specialize():
    numbaconv.set_specialization("always")
    try:
        yield
    finally:
        numbaconv.set_specialization("auto")


# --------------------------------------------------------------------------- constructor
def test_alias():
    assert Convolution2D is Conv2D


def test_signature_matches_keras():
    params = inspect.signature(Conv2D.__init__).parameters
    positional = [n for n, p in params.items()
                  if p.kind == p.POSITIONAL_OR_KEYWORD and n != "self"]
    assert positional == [
        "filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
        "groups", "activation", "use_bias", "kernel_initializer", "bias_initializer",
        "kernel_regularizer", "bias_regularizer", "activity_regularizer",
        "kernel_constraint", "bias_constraint"]
    defaults = {n: p.default for n, p in params.items()}
    assert tuple(defaults["strides"]) == (1, 1)
    assert defaults["padding"] == "valid"
    assert defaults["data_format"] is None
    assert tuple(defaults["dilation_rate"]) == (1, 1)
    assert defaults["groups"] == 1
    assert defaults["activation"] is None
    assert defaults["use_bias"] is True
    assert defaults["kernel_initializer"] == "glorot_uniform"
    assert defaults["bias_initializer"] == "zeros"
    for name in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                 "kernel_constraint", "bias_constraint"):
        assert defaults[name] is None
    keyword_only = {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY}
    assert {"input_shape", "batch_input_shape", "batch_size", "dtype", "name", "trainable",
            "weights"} <= keyword_only
    assert defaults["trainable"] is True


def test_defaults(keras_home):
    layer = Conv2D(4, 3)
    assert layer.filters == 4
    assert layer.kernel_size == (3, 3)
    assert layer.strides == (1, 1)
    assert layer.padding == "valid"
    assert layer.data_format == "channels_last"
    assert layer.dilation_rate == (1, 1)
    assert layer.groups == 1
    assert layer.use_bias is True
    assert layer.trainable is True
    assert layer.built is False
    assert layer.weights == []
    config = layer.get_config()
    assert config["activation"] == "linear"
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert config["bias_initializer"]["class_name"] == "Zeros"
    for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                "kernel_constraint", "bias_constraint"):
        assert config[key] is None
    assert config["dtype"]["config"]["name"] == "float32"


def test_positional_arguments_in_keras_order():
    layer = Conv2D(6, [5, 3], 2, "same", "channels_first", 1, 2, "relu", False)
    assert (layer.filters, layer.kernel_size, layer.strides, layer.padding) == \
        (6, (5, 3), (2, 2), "same")
    assert (layer.data_format, layer.dilation_rate, layer.groups) == \
        ("channels_first", (1, 1), 2)
    assert layer.get_config()["activation"] == "relu"
    assert layer.use_bias is False


def test_tuple_arguments_are_normalized():
    layer = Conv2D(2, [2, 3], strides=[1, 2], dilation_rate=1, padding="SAME",
                   data_format="channels_last")
    assert layer.kernel_size == (2, 3)
    assert layer.strides == (1, 2)
    assert layer.dilation_rate == (1, 1)
    assert layer.padding == "same"
    assert Conv2D(2, 3, padding="Valid").padding == "valid"


def test_default_data_format_from_keras_json(tmp_path, monkeypatch):
    (tmp_path / "keras.json").write_text(json.dumps({"image_data_format": "channels_first"}))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    layer = Conv2D(2, 3)
    assert layer.data_format == "channels_first"
    out = layer(_input((1, 3, 5, 5)))
    assert out.shape == (1, 2, 3, 3)


def test_default_names_are_keras_like():
    a, b = Conv2D(2, 3), Conv2D(2, 3)
    # Keras names Conv2D layers "conv2d", "conv2d_1", "conv2d_2", ...
    assert re.fullmatch(r"conv2d(_\d+)?", a.name), a.name
    assert re.fullmatch(r"conv2d(_\d+)?", b.name), b.name
    assert a.name != b.name
    assert Conv2D(2, 3, name="my_conv").name == "my_conv"


def test_unknown_keyword_argument():
    with pytest.raises(ValueError, match="Unrecognized keyword arguments"):
        Conv2D(2, 3, bogus_argument=1)
    with pytest.raises(ValueError, match="Unrecognized keyword arguments"):
        Conv2D(2, 3, kernel_init="zeros")


BAD_INIT = [
    # (kwargs, name the message must contain, value the message must echo)
    (dict(filters=0), "filters", "0"),
    (dict(filters=-3), "filters", "-3"),
    (dict(filters=2.5), "filters", "2.5"),
    (dict(filters="8"), "filters", "8"),
    (dict(kernel_size=0), "kernel_size", "0"),
    (dict(kernel_size=-2), "kernel_size", "-2"),
    (dict(kernel_size=(1, 0)), "kernel_size", "(1, 0)"),
    (dict(kernel_size=(3, -1)), "kernel_size", "(3, -1)"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size", "(3, 3, 3)"),
    (dict(kernel_size=(3,)), "kernel_size", "(3,)"),
    (dict(kernel_size="3"), "kernel_size", "3"),
    (dict(strides=0), "strides", "0"),
    (dict(strides=(1, 0)), "strides", "(1, 0)"),
    (dict(strides=(-1, 1)), "strides", "(-1, 1)"),
    (dict(strides=(1, 1, 1)), "strides", "(1, 1, 1)"),
    (dict(dilation_rate=0), "dilation_rate", "0"),
    (dict(dilation_rate=(1, -2)), "dilation_rate", "(1, -2)"),
    (dict(dilation_rate=(2, 2, 2)), "dilation_rate", "(2, 2, 2)"),
    (dict(padding="causal"), "padding", "causal"),
    (dict(padding="full"), "padding", "full"),
    (dict(padding=""), "padding", ""),
    (dict(data_format="NHWC"), "data_format", "NHWC"),
    (dict(data_format="channels_middle"), "data_format", "channels_middle"),
    (dict(groups=0), "groups", "0"),
    (dict(groups=-2), "groups", "-2"),
    (dict(filters=5, groups=2), "groups", "2"),
    (dict(filters=6, groups=4), "filters", "6"),
    (dict(strides=2, dilation_rate=2), "dilation_rate", "(2, 2)"),
    (dict(strides=(1, 2), dilation_rate=(3, 1)), "strides", "(1, 2)"),
    (dict(trainable="yes"), "trainable", "yes"),
    (dict(trainable=1), "trainable", "1"),
    (dict(dtype="int32"), "dtype", "int32"),
    (dict(dtype="float8"), "dtype", "float8"),
    (dict(dtype="bogus_policy"), "dtype", "bogus_policy"),
]


@pytest.mark.parametrize("kwargs,name,value", BAD_INIT,
                         ids=[repr(kw) for kw, _, _ in BAD_INIT])
def test_bad_init_arguments(kwargs, name, value):
    kwargs = {"filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError) as info:
        Conv2D(**kwargs)
    message = str(info.value)
    assert name in message, message
    assert value in message, message


BAD_IDENTIFIERS = ["activation", "kernel_initializer", "bias_initializer",
                   "kernel_regularizer", "bias_regularizer", "activity_regularizer",
                   "kernel_constraint", "bias_constraint"]


@pytest.mark.parametrize("argument", BAD_IDENTIFIERS)
def test_unknown_identifier_names(argument):
    with pytest.raises(ValueError, match="no_such_thing_xyz"):
        Conv2D(4, 3, **{argument: "no_such_thing_xyz"})


# --------------------------------------------------------------------------- build
def test_eager_build_with_input_shape():
    layer = Conv2D(8, 3, input_shape=(10, 10, 3))
    assert layer.built
    assert layer.kernel.shape == (3, 3, 3, 8)
    assert layer.bias.shape == (8,)
    assert layer.count_params() == 3 * 3 * 3 * 8 + 8


def test_eager_build_with_batch_input_shape_and_batch_size():
    layer = Conv2D(8, 3, batch_input_shape=(2, 10, 10, 3))
    assert layer.built and layer.kernel.shape == (3, 3, 3, 8)
    layer = Conv2D(8, (3, 2), input_shape=(10, 10, 4), batch_size=5, groups=2)
    assert layer.built and layer.kernel.shape == (3, 2, 2, 8)
    out = layer(_input((5, 10, 10, 4)))
    assert out.shape == (5, 8, 9, 8)


def test_eager_build_channels_first():
    layer = Conv2D(8, 3, input_shape=(3, 10, 10), data_format="channels_first")
    assert layer.kernel.shape == (3, 3, 3, 8)


def test_eager_build_validates_at_construction():
    with pytest.raises(ValueError, match="groups"):
        Conv2D(4, 3, groups=2, input_shape=(10, 10, 3))
    with pytest.raises(ValueError):
        Conv2D(4, 11, input_shape=(10, 10, 3))


def test_call_builds_on_first_call():
    layer = Conv2D(5, 2)
    assert not layer.built
    out = layer(_input((3, 5, 5, 4)))
    assert layer.built
    assert out.shape == (3, 4, 4, 5)
    assert layer.kernel.shape == (2, 2, 4, 5)


def test_build_with_unknown_dims():
    layer = Conv2D(5, 2)
    layer.build((None, None, None, 4))
    assert layer.kernel.shape == (2, 2, 4, 5)
    assert layer(_input((1, 3, 6, 4))).shape == (1, 2, 5, 5)
    assert layer(_input((2, 7, 4, 4))).shape == (2, 6, 3, 5)


def test_build_groups_must_divide_channels():
    layer = Conv2D(4, 3, groups=2)
    with pytest.raises(ValueError, match="groups"):
        layer.build((None, 5, 5, 3))
    with pytest.raises(ValueError, match="groups"):
        Conv2D(4, 3, groups=2)(_input((1, 5, 5, 3)))


def test_build_output_size_not_positive():
    # Keras's test_conv_raises_exception_on_zero_dims
    with pytest.raises(ValueError):
        Conv2D(6, [5, 5], 1, "valid")(np.random.rand(3, 4, 4, 4))
    with pytest.raises(ValueError):
        Conv2D(1, (2, 2), dilation_rate=(10, 10)).build((None, 10, 10, 3))
    with pytest.raises(ValueError):
        Conv2D(1, 3, data_format="channels_first").build((None, 3, 2, 10))


@pytest.mark.parametrize("shape", [(5, 5, 3), (1, 5, 5, 5, 3), (5,)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError):
        Conv2D(2, 2).build(shape)
    with pytest.raises(ValueError):
        Conv2D(2, 2)(np.ones(shape, np.float32))
    layer = Conv2D(2, 2)
    layer.build((None, 5, 5, 3))
    with pytest.raises(ValueError):
        layer(np.ones(shape, np.float32))


def test_wrong_channel_count_after_build():
    layer = Conv2D(2, 2)
    layer(_input((1, 5, 5, 3)))
    with pytest.raises(ValueError):
        layer(_input((1, 5, 5, 4)))
    layer = Conv2D(2, 2, data_format="channels_first", input_shape=(3, 5, 5))
    with pytest.raises(ValueError):
        layer(_input((1, 5, 5, 3)))


# --------------------------------------------------------------------------- shapes
SHAPE_CASES = [
    # input_shape, kwargs
    ((None, 10, 10, 3), dict(kernel_size=3)),
    ((2, 10, 11, 3), dict(kernel_size=(3, 2), strides=(2, 3))),
    ((None, None, None, 3), dict(kernel_size=3)),
    ((None, None, 9, 3), dict(kernel_size=3, padding="same", strides=2)),
    ((4, 7, 9, 3), dict(kernel_size=3, padding="same", strides=2)),
    ((4, 7, 9, 3), dict(kernel_size=(4, 1), padding="same", strides=(3, 4))),
    ((1, 10, 10, 3), dict(kernel_size=3, dilation_rate=(2, 3))),
    ((1, 10, 10, 3), dict(kernel_size=3, dilation_rate=2, padding="same")),
    ((None, 3, 10, 8), dict(kernel_size=3, data_format="channels_first")),
    ((2, 3, 10, 8), dict(kernel_size=2, strides=2, padding="same",
                         data_format="channels_first")),
    ((2, 3, None, 8), dict(kernel_size=2, data_format="channels_first")),
]


def _expected_shape(shape, filters, kw):
    fmt = kw.get("data_format", "channels_last")
    k, s = _pair(kw["kernel_size"]), _pair(kw.get("strides", 1))
    d, padding = _pair(kw.get("dilation_rate", 1)), kw.get("padding", "valid")
    sizes = []
    for n, ki, si, di in zip(_spatial(shape, fmt), k, s, d):
        if n is None:
            sizes.append(None)
        elif padding == "same":
            sizes.append(math.ceil(n / si))
        else:
            sizes.append(reference_output_size(n, ki, si, di, (0, 0)))
    if fmt == "channels_last":
        return (shape[0], *sizes, filters)
    return (shape[0], filters, *sizes)


@pytest.mark.parametrize("shape,kw", SHAPE_CASES)
def test_compute_output_shape(shape, kw):
    layer = Conv2D(7, **kw)
    expected = _expected_shape(shape, 7, kw)
    assert tuple(layer.compute_output_shape(shape)) == expected
    assert not layer.built  # computing a shape builds nothing


@pytest.mark.parametrize("shape,kw", [c for c in SHAPE_CASES if None not in c[0]])
def test_output_shape_matches_compute_output_shape(shape, kw):
    layer = Conv2D(3, **kw)
    out = layer(_input(shape))
    assert out.shape == _expected_shape(shape, 3, kw)
    assert tuple(layer.compute_output_shape(shape)) == out.shape


def test_same_padding_output_is_ceil():
    for n in range(1, 9):
        for s in (1, 2, 3):
            layer = Conv2D(1, 3, strides=s, padding="same")
            assert layer.compute_output_shape((1, n, n + 1, 1)) == \
                (1, -(-n // s), -(-(n + 1) // s), 1)


# --------------------------------------------------------------------------- weights
def test_kernel_before_build():
    layer = Conv2D(2, 3)
    with pytest.raises(AttributeError):
        layer.kernel


def test_kernel_variable_interface():
    layer = Conv2D(4, (3, 2), input_shape=(6, 6, 2))
    kernel = layer.kernel
    assert kernel.shape == (3, 2, 2, 4)
    assert np.asarray(kernel).shape == (3, 2, 2, 4)
    assert np.asarray(kernel).dtype == np.float32
    copy = kernel.numpy()
    assert isinstance(copy, np.ndarray)
    copy[...] = 123.0
    assert not np.any(np.asarray(layer.kernel) == 123.0)  # numpy() is a copy
    new = _rng(3).standard_normal((3, 2, 2, 4))
    layer.kernel.assign(new)
    np.testing.assert_allclose(np.asarray(layer.kernel), new.astype(np.float32))
    assert layer.kernel.numpy().dtype == np.float32
    with pytest.raises(ValueError):
        layer.kernel.assign(np.zeros((3, 3, 2, 4)))


def test_assign_changes_outputs():
    layer = Conv2D(3, 2, input_shape=(5, 5, 2))
    x = _input((2, 5, 5, 2))
    k = _rng(4).standard_normal((2, 2, 2, 3))
    b = _rng(5).standard_normal(3)
    layer(x)
    layer.kernel.assign(k)
    layer.bias.assign(b)
    np.testing.assert_allclose(layer(x), _ref(x, k.astype(np.float32), b.astype(np.float32)),
                               **F32)
    layer.kernel.assign(2 * k)
    np.testing.assert_allclose(layer(x),
                               _ref(x, (2 * k).astype(np.float32), b.astype(np.float32)), **F32)


def test_weights_lists():
    layer = Conv2D(4, 3, input_shape=(5, 5, 2))
    assert len(layer.weights) == 2
    assert layer.weights[0] is layer.kernel
    assert layer.weights[1] is layer.bias
    assert len(layer.trainable_weights) == 2
    assert layer.non_trainable_weights == []
    assert layer.bias.shape == (4,)
    np.testing.assert_array_equal(np.asarray(layer.bias), np.zeros(4, np.float32))


def test_no_bias():
    layer = Conv2D(4, 3, use_bias=False, input_shape=(5, 5, 2))
    assert layer.bias is None
    assert len(layer.weights) == 1
    assert layer.count_params() == 3 * 3 * 2 * 4
    x = _input((2, 5, 5, 2))
    (k,) = _randomize(layer)
    np.testing.assert_allclose(layer(x), _ref(x, k, None), **F32)


def test_trainable_false_moves_weights():
    layer = Conv2D(4, 3, trainable=False, input_shape=(5, 5, 2))
    assert layer.trainable is False
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 2
    layer = Conv2D(4, 3, input_shape=(5, 5, 2))
    layer.trainable = False
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 2
    layer.trainable = True
    assert len(layer.trainable_weights) == 2
    assert layer.non_trainable_weights == []


def test_get_set_weights():
    layer = Conv2D(4, 3, input_shape=(5, 5, 2))
    k = _rng(7).standard_normal((3, 3, 2, 4))
    b = _rng(8).standard_normal(4)
    layer.set_weights([k, b])
    got_k, got_b = layer.get_weights()
    assert isinstance(got_k, np.ndarray) and got_k.dtype == np.float32
    np.testing.assert_array_equal(got_k, k.astype(np.float32))
    np.testing.assert_array_equal(got_b, b.astype(np.float32))
    got_k[...] = 0  # a copy
    assert np.any(layer.get_weights()[0] != 0)


def test_set_weights_errors():
    layer = Conv2D(4, 3, input_shape=(5, 5, 2), name="conv_sw")
    k, b = np.zeros((3, 3, 2, 4)), np.zeros(4)
    with pytest.raises(ValueError, match="with a weight list of length 1"):
        layer.set_weights([k])
    with pytest.raises(ValueError, match="with a weight list of length 3"):
        layer.set_weights([k, b, b])
    with pytest.raises(ValueError, match=r"weight shape \(3, 3, 2, 4\) is not compatible"):
        layer.set_weights([np.zeros((3, 3, 4, 2)), b])
    with pytest.raises(ValueError, match=r"weight shape \(4,\) is not compatible"):
        layer.set_weights([k, np.zeros(5)])
    # nothing was changed by the failed calls
    np.testing.assert_array_equal(layer.get_weights()[1], np.zeros(4))


@pytest.mark.parametrize("filters,k,cin,groups,use_bias", [
    (8, (3, 3), 3, 1, True), (6, (2, 3), 4, 2, True), (8, (3, 3), 4, 4, True),
    (4, (1, 1), 8, 4, False), (12, (5, 1), 6, 3, True),
])
def test_count_params(filters, k, cin, groups, use_bias):
    layer = Conv2D(filters, k, groups=groups, use_bias=use_bias)
    with pytest.raises(ValueError):
        layer.count_params()
    layer.build((None, 9, 9, cin))
    expected = k[0] * k[1] * (cin // groups) * filters + (filters if use_bias else 0)
    assert layer.count_params() == expected


# --------------------------------------------------------------------------- losses
def test_weight_regularization_losses():
    layer = Conv2D(4, 3, kernel_regularizer="l2", bias_regularizer="l1", input_shape=(5, 5, 2))
    k, b = _randomize(layer)
    losses = layer.losses
    assert len(losses) == 2
    np.testing.assert_allclose(float(losses[0]), 0.01 * np.sum(k ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(losses[1]), 0.01 * np.sum(np.abs(b)), rtol=1e-5)


def test_l1l2_regularizer_object():
    reg = numbaconv.regularizers.L1L2(l1=0.1, l2=0.3)
    layer = Conv2D(4, 3, kernel_regularizer=reg, input_shape=(5, 5, 2))
    k, _ = _randomize(layer)
    (loss,) = layer.losses
    np.testing.assert_allclose(float(loss), 0.1 * np.abs(k).sum() + 0.3 * (k ** 2).sum(),
                               rtol=1e-5)


def test_activity_regularizer_divided_by_batch():
    layer = Conv2D(3, 2, activity_regularizer=numbaconv.regularizers.L2(0.1),
                   input_shape=(5, 5, 2))
    k, b = _randomize(layer)
    assert layer.losses == []
    x = _input((4, 5, 5, 2))
    layer(x)
    (loss,) = layer.losses
    out = _ref(x, k, b)
    np.testing.assert_allclose(float(loss), 0.1 * np.sum(out ** 2) / 4, rtol=1e-4)
    # only the last call's activity loss is kept
    x2 = _input((2, 5, 5, 2), seed=9)
    layer(x2)
    (loss,) = layer.losses
    np.testing.assert_allclose(float(loss), 0.1 * np.sum(_ref(x2, k, b) ** 2) / 2, rtol=1e-4)


def test_activity_and_weight_losses_together():
    layer = Conv2D(3, 2, activation="relu", kernel_regularizer=numbaconv.regularizers.L1(0.2),
                   activity_regularizer="l1", input_shape=(5, 5, 2))
    k, b = _randomize(layer)
    x = _input((3, 5, 5, 2))
    layer(x)
    losses = [float(v) for v in layer.losses]
    assert len(losses) == 2
    activity = 0.01 * np.sum(np.maximum(_ref(x, k, b), 0)) / 3
    weight = 0.2 * np.sum(np.abs(k))
    # Keras order: activity losses first, then weight regularization
    np.testing.assert_allclose(losses, [activity, weight], rtol=1e-4)


def test_untrainable_layer_has_no_weight_losses():
    layer = Conv2D(3, 2, kernel_regularizer="l2", bias_regularizer="l2", trainable=False,
                   input_shape=(5, 5, 2))
    _randomize(layer)
    assert layer.losses == []
    layer.trainable = True
    assert len(layer.losses) == 2
    layer = Conv2D(3, 2, kernel_regularizer="l2", activity_regularizer="l2", trainable=False)
    layer(_input((2, 5, 5, 2)))
    assert len(layer.losses) == 1  # the activity loss only


# --------------------------------------------------------------------------- input/output/repr
def test_input_output_of_first_call():
    layer = Conv2D(3, 2)
    with pytest.raises(AttributeError):
        layer.input
    with pytest.raises(AttributeError):
        layer.output
    x1, x2 = _input((2, 4, 4, 2)), _input((1, 4, 4, 2), seed=5)
    y1 = layer(x1)
    layer(x2)
    np.testing.assert_array_equal(np.asarray(layer.input), x1)
    np.testing.assert_array_equal(np.asarray(layer.output), y1)


def test_training_argument_accepted():
    layer = Conv2D(3, 2)
    x = _input((2, 4, 4, 2))
    layer.build(x.shape)
    k, b = _randomize(layer)
    for training in (True, False, None):
        np.testing.assert_allclose(layer(x, training=training), _ref(x, k, b), **F32)


def test_dtype_properties():
    layer = Conv2D(2, 2, dtype="mixed_float16")
    assert (layer.dtype, layer.variable_dtype, layer.compute_dtype) == \
        ("float32", "float32", "float16")
    layer = Conv2D(2, 2, dtype="float64")
    assert (layer.dtype, layer.variable_dtype, layer.compute_dtype) == \
        ("float64", "float64", "float64")
    assert Conv2D(2, 2).dtype == "float32"


def test_repr():
    layer = Conv2D(7, (3, 2), name="rep_layer")
    text = repr(layer)
    assert "rep_layer" in text
    assert "7" in text
    assert "(3, 2)" in text


# --------------------------------------------------------------------------- initial weights
def test_initial_weights_argument():
    k = _rng(11).standard_normal((3, 3, 2, 4))
    b = _rng(12).standard_normal(4)
    layer = Conv2D(4, 3, weights=[k, b])
    x = _input((2, 6, 6, 2))
    out = layer(x)
    np.testing.assert_array_equal(layer.kernel.numpy(), k.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(layer.bias), b.astype(np.float32))
    np.testing.assert_allclose(out, _ref(x, k.astype(np.float32), b.astype(np.float32)), **F32)


def test_initial_weights_with_eager_build_and_no_bias():
    k = _rng(13).standard_normal((2, 2, 3, 2))
    layer = Conv2D(2, 2, use_bias=False, weights=[k], input_shape=(4, 4, 3))
    np.testing.assert_array_equal(layer.kernel.numpy(), k.astype(np.float32))


def test_initial_weights_wrong_length():
    with pytest.raises(ValueError, match="with a weight list of length 1"):
        Conv2D(4, 3, weights=[np.zeros((3, 3, 2, 4))], input_shape=(5, 5, 2))


# --------------------------------------------------------------------------- numbers
NUMERIC_CASES = [
    # kwargs, input shape in channels_last order (N, H, W, C)
    (dict(filters=3, kernel_size=3), (2, 7, 8, 2)),
    (dict(filters=3, kernel_size=(2, 3), padding="same"), (2, 7, 8, 2)),
    (dict(filters=4, kernel_size=3, strides=2, padding="same"), (2, 7, 8, 3)),
    (dict(filters=4, kernel_size=3, strides=(2, 3), padding="valid"), (2, 9, 10, 3)),
    (dict(filters=4, kernel_size=(3, 2), strides=(1, 2), padding="same"), (1, 6, 7, 2)),
    (dict(filters=2, kernel_size=3, dilation_rate=2), (2, 9, 8, 3)),
    (dict(filters=2, kernel_size=3, dilation_rate=(2, 3), padding="same"), (2, 7, 9, 3)),
    (dict(filters=6, kernel_size=2, groups=2), (2, 6, 6, 4)),
    (dict(filters=6, kernel_size=3, groups=3, strides=2, padding="same"), (2, 7, 6, 6)),
    (dict(filters=4, kernel_size=2, groups=2, dilation_rate=(2, 1), padding="same"),
     (1, 6, 6, 4)),
    (dict(filters=4, kernel_size=3, groups=4), (2, 6, 7, 4)),  # depthwise
    (dict(filters=8, kernel_size=3, groups=4, padding="same", strides=2), (2, 6, 7, 4)),
    (dict(filters=5, kernel_size=1), (2, 4, 5, 3)),
    (dict(filters=3, kernel_size=(1, 4), strides=(3, 1)), (2, 7, 6, 2)),
    (dict(filters=2, kernel_size=5, padding="same"), (1, 3, 4, 2)),  # kernel > input
    (dict(filters=3, kernel_size=(6, 7)), (1, 6, 7, 2)),  # 1x1 output
    (dict(filters=2, kernel_size=3, strides=4, padding="same"), (2, 9, 10, 1)),
]


def _to_layout(shape, data_format):
    n, h, w, c = shape
    return (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)


def _case_id(case):
    kw, shape = case
    return "-".join(f"{k}{v}" for k, v in kw.items() if k != "filters").replace(" ", "")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kw,shape", NUMERIC_CASES, ids=[_case_id(c) for c in NUMERIC_CASES])
def test_numbers_float32(kw, shape, data_format):
    layer = Conv2D(**kw, data_format=data_format)
    x = _input(_to_layout(shape, data_format))
    layer.build(x.shape)
    k, b = _randomize(layer)
    out = layer(x)
    assert out.dtype == np.float32
    expected = _ref(x, k, b, strides=layer.strides, padding=layer.padding,
                    dilation_rate=layer.dilation_rate, data_format=data_format)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, **F32)
    # call() computes the same as __call__
    np.testing.assert_allclose(layer.call(x), out, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kw,shape", NUMERIC_CASES[::3], ids=[_case_id(c)
                                                              for c in NUMERIC_CASES[::3]])
def test_numbers_float64(kw, shape, data_format):
    layer = Conv2D(**kw, data_format=data_format, dtype="float64")
    x = _input(_to_layout(shape, data_format), dtype=np.float64)
    layer.build(x.shape)
    assert layer.kernel.numpy().dtype == np.float64
    k, b = _randomize(layer, dtype=np.float64)
    out = layer(x)
    assert out.dtype == np.float64
    expected = _ref(x, k, b, strides=layer.strides, padding=layer.padding,
                    dilation_rate=layer.dilation_rate, data_format=data_format)
    np.testing.assert_allclose(out, expected, **F64)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "softmax", "elu", "swish",
                                        "linear", None])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_activations(activation, data_format):
    layer = Conv2D(4, 3, padding="same", activation=activation, data_format=data_format)
    x = _input(_to_layout((2, 5, 6, 3), data_format))
    layer.build(x.shape)
    k, b = _randomize(layer)
    out = layer(x)
    # Keras applies every activation (softmax included) over the last axis,
    # whatever the data_format.
    expected = NP_ACTIVATIONS[activation](_layer_ref(layer, x))
    np.testing.assert_allclose(out, expected, **F32)


def test_softmax_is_over_last_axis():
    layer = Conv2D(3, 2, activation="softmax", data_format="channels_first")
    out = layer(_input((2, 4, 5, 6)))
    np.testing.assert_allclose(out.sum(axis=-1), np.ones((2, 3, 4)), rtol=1e-5)


def test_callable_activation():
    layer = Conv2D(3, 2, activation=lambda z: 2 * z + 1)
    x = _input((2, 4, 4, 2))
    layer.build(x.shape)
    k, b = _randomize(layer)
    np.testing.assert_allclose(layer(x), 2 * _ref(x, k, b) + 1, **F32)


def test_convolution_op_has_no_bias_or_activation():
    layer = Conv2D(4, 3, strides=2, padding="same", activation="relu")
    x = _input((2, 7, 7, 3))
    layer.build(x.shape)
    k, _ = _randomize(layer)
    out = np.asarray(layer.convolution_op(x, layer.kernel))
    expected = _ref(x, k, None, strides=2, padding="same")
    np.testing.assert_allclose(out, expected, **F32)
    assert np.any(out < 0)  # no relu
    other = _rng(21).standard_normal((3, 3, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(layer.convolution_op(x, other)),
                               _ref(x, other, None, strides=2, padding="same"), **F32)


def test_float64_input_autocast_to_float32():
    layer = Conv2D(3, 3)
    x64 = _rng(5).standard_normal((2, 6, 6, 2))  # float64
    layer.build(x64.shape)
    k, b = _randomize(layer)
    out = layer(x64)
    assert out.dtype == np.float32
    expected = _ref(x64.astype(np.float32), k, b)
    np.testing.assert_allclose(out, expected, **F32)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_input_gives_float32(dtype):
    layer = Conv2D(3, 2)
    x = (_rng(6).integers(0, 5, size=(2, 4, 4, 2))).astype(dtype)
    layer.build(x.shape)
    k, b = _randomize(layer)
    out = layer(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _ref(x.astype(np.float64), k, b), **F32)


def test_list_input():
    layer = Conv2D(1, 1, use_bias=False, kernel_initializer="ones")
    out = layer([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    assert out.shape == (1, 2, 1, 1)
    np.testing.assert_allclose(out[0, :, 0, 0], [3.0, 7.0])


def test_float64_layer_autocasts_float32_input():
    layer = Conv2D(3, 2, dtype="float64")
    x = _input((2, 4, 4, 2))
    layer.build(x.shape)
    k, b = _randomize(layer, dtype=np.float64)
    out = layer(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, _ref(x, k, b), **F64)


def test_mixed_float16():
    layer = Conv2D(4, 3, padding="same", dtype="mixed_float16", activation="relu")
    x = _input((2, 5, 5, 3))
    layer.build(x.shape)
    assert layer.kernel.numpy().dtype == np.float32
    assert layer.bias.numpy().dtype == np.float32
    k, b = _randomize(layer)
    out = layer(x)
    assert out.dtype == np.float16
    expected = np.maximum(_ref(x.astype(np.float16).astype(np.float64), k, b, padding="same"), 0)
    np.testing.assert_allclose(out.astype(np.float64), expected, rtol=5e-3, atol=5e-3)
    assert layer.get_config()["dtype"]["config"]["name"] == "mixed_float16"


def test_float16_policy():
    layer = Conv2D(2, 2, dtype="float16")
    x = _input((1, 4, 4, 2)).astype(np.float16)
    layer.build(x.shape)
    assert layer.kernel.numpy().dtype == np.float16
    k, b = _randomize(layer, dtype=np.float16)
    out = layer(x)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float64), _ref(x, k, b), rtol=1e-2, atol=1e-2)


def test_dtype_policy_dict():
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float64"},
              "registered_name": None}
    layer = Conv2D(2, 2, dtype=policy)
    assert layer.get_config()["dtype"] == policy
    assert layer(_input((1, 3, 3, 1))).dtype == np.float64


def test_keras_seed_example():
    # Seeded, so the test sees the same weights every run; 1152-term float32 sums
    # near zero need an absolute tolerance of a few ulps of the terms' scale.
    layer = Conv2D(32, 3, activation="relu",
                   kernel_initializer=numbaconv.initializers.GlorotUniform(seed=3))
    x = np.random.default_rng(0).random((4, 10, 10, 128))
    out = layer(x)
    assert out.shape == (4, 8, 8, 32)
    assert out.dtype == np.float32
    expected = np.maximum(_ref(x.astype(np.float32), layer.kernel.numpy(),
                               np.asarray(layer.bias)), 0)
    np.testing.assert_allclose(out, expected, rtol=5e-4, atol=1e-5)
    # and with a non-zero bias
    b = np.linspace(-0.5, 0.5, 32)
    layer.bias.assign(b)
    expected = np.maximum(_ref(x.astype(np.float32), layer.kernel.numpy(),
                               b.astype(np.float32)), 0)
    np.testing.assert_allclose(layer(x), expected, rtol=5e-4, atol=1e-5)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_numbers_random_geometry(data):
    data_format = data.draw(st.sampled_from(["channels_last", "channels_first"]))
    groups = data.draw(st.sampled_from([1, 2, 3]))
    cin = groups * data.draw(st.integers(1, 3))
    filters = groups * data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    dilated = data.draw(st.booleans())
    strides = (1, 1) if dilated else (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dilation = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))) if dilated \
        else (1, 1)
    padding = data.draw(st.sampled_from(["valid", "same"]))
    ext_h, ext_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    low_h, low_w = (1, 1) if padding == "same" else (ext_h, ext_w)
    h = data.draw(st.integers(low_h, low_h + 6))
    w = data.draw(st.integers(low_w, low_w + 6))
    n = data.draw(st.integers(1, 2))
    activation = data.draw(st.sampled_from([None, "relu", "tanh"]))
    layer = Conv2D(filters, (kh, kw), strides=strides, padding=padding,
                   data_format=data_format, dilation_rate=dilation, groups=groups,
                   activation=activation)
    x = _input(_to_layout((n, h, w, cin), data_format), seed=data.draw(st.integers(0, 99)))
    layer.build(x.shape)
    k, b = _randomize(layer, seed=data.draw(st.integers(0, 99)))
    expected = NP_ACTIVATIONS[activation](
        _ref(x, k, b, strides=strides, padding=padding, dilation_rate=dilation,
             data_format=data_format))
    out = layer(x)
    assert out.shape == expected.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(out, expected, **F32)


def test_zero_batch():
    layer = Conv2D(3, 2)
    out = layer(np.zeros((0, 4, 4, 2), np.float32))
    assert out.shape == (0, 3, 3, 3)


def test_non_contiguous_input():
    layer = Conv2D(3, 2)
    base = _input((2, 8, 10, 6))
    x = base[:, ::2, 1::2, ::2]  # strided view, (2, 4, 5, 3)
    layer.build(x.shape)
    k, b = _randomize(layer)
    np.testing.assert_allclose(layer(x), _ref(np.ascontiguousarray(x), k, b), **F32)
    xt = np.transpose(_input((2, 3, 5, 4)), (0, 2, 3, 1))  # (2, 5, 4, 3) F-ish view
    np.testing.assert_allclose(layer(xt), _ref(np.ascontiguousarray(xt), k, b), **F32)


# --------------------------------------------------------------------------- initializers
def test_seeded_initializer_reproducible():
    a = Conv2D(4, 3, kernel_initializer=numbaconv.initializers.GlorotUniform(seed=1))
    b = Conv2D(4, 3, kernel_initializer=numbaconv.initializers.GlorotUniform(seed=1))
    c = Conv2D(4, 3, kernel_initializer={"class_name": "GlorotUniform",
                                         "config": {"seed": 1}})
    for layer in (a, b, c):
        layer.build((None, 5, 5, 3))
    np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())
    np.testing.assert_array_equal(a.kernel.numpy(), c.kernel.numpy())
    d = Conv2D(4, 3, kernel_initializer=numbaconv.initializers.GlorotUniform(seed=2))
    d.build((None, 5, 5, 3))
    assert not np.array_equal(a.kernel.numpy(), d.kernel.numpy())


def test_unseeded_initializer_differs():
    a, b = Conv2D(4, 3), Conv2D(4, 3)
    a.build((None, 5, 5, 3))
    b.build((None, 5, 5, 3))
    assert not np.array_equal(a.kernel.numpy(), b.kernel.numpy())


@pytest.mark.parametrize("k,cin,filters,groups", [((3, 3), 8, 8, 4), ((3, 2), 6, 4, 1),
                                                  ((1, 1), 16, 8, 2), ((5, 5), 4, 8, 4)])
def test_glorot_uniform_limit(k, cin, filters, groups):
    layer = Conv2D(filters, k, groups=groups,
                   kernel_initializer=numbaconv.initializers.GlorotUniform(seed=3))
    layer.build((None, 9, 9, cin))
    kernel = layer.kernel.numpy()
    assert kernel.shape == (*k, cin // groups, filters)
    fan_in = k[0] * k[1] * cin // groups
    fan_out = k[0] * k[1] * filters
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(kernel).max() <= limit * (1 + 1e-6)
    assert np.abs(kernel).max() >= 0.85 * limit
    # uniform on [-limit, limit] has std limit / sqrt(3)
    assert abs(kernel.std() - limit / math.sqrt(3)) < 0.25 * limit / math.sqrt(3)


def test_bias_initializer_used():
    layer = Conv2D(3, 2, bias_initializer=numbaconv.initializers.Constant(0.25),
                   kernel_initializer="zeros")
    out = layer(_input((1, 4, 4, 2)))
    np.testing.assert_allclose(out, np.full((1, 3, 3, 3), 0.25), rtol=1e-7)
    layer = Conv2D(3, 2, bias_initializer="ones", kernel_initializer="ones")
    x = _input((1, 4, 4, 2))
    np.testing.assert_allclose(layer(x), _ref(x, np.ones((2, 2, 2, 3)), np.ones(3)), **F32)


def test_constraints_attached():
    layer = Conv2D(4, 3, kernel_constraint="non_neg", bias_constraint="max_norm")
    layer.build((None, 5, 5, 3))
    assert isinstance(layer.kernel.constraint, numbaconv.constraints.NonNeg)
    assert isinstance(layer.bias.constraint, numbaconv.constraints.MaxNorm)
    assert Conv2D(4, 3, input_shape=(5, 5, 3)).kernel.constraint is None


def test_regularizers_attached_to_variables():
    layer = Conv2D(4, 3, kernel_regularizer="l2", input_shape=(5, 5, 3))
    assert isinstance(layer.kernel.regularizer, numbaconv.regularizers.L2)
    assert layer.bias.regularizer is None


# --------------------------------------------------------------------------- config
CONFIG_CASES = [
    dict(filters=4, kernel_size=3),
    dict(filters=6, kernel_size=(3, 5), strides=2, padding="same",
         data_format="channels_first", activation="relu", use_bias=False),
    dict(filters=6, kernel_size=2, dilation_rate=(2, 3), groups=3, activation="softmax",
         name="cfg_named", trainable=False, dtype="float64"),
    dict(filters=2, kernel_size=1, kernel_initializer="he_normal", bias_initializer="ones",
         kernel_regularizer="l2", bias_regularizer="l1", activity_regularizer="l1_l2",
         kernel_constraint="non_neg", bias_constraint="unit_norm"),
    dict(filters=2, kernel_size=1,
         kernel_initializer={"class_name": "RandomNormal",
                             "config": {"mean": 0.5, "stddev": 0.25, "seed": 4}},
         kernel_regularizer={"class_name": "L2", "config": {"l2": 0.5}},
         kernel_constraint={"class_name": "MaxNorm", "config": {"max_value": 3.0,
                                                                 "axis": [0, 1, 2]}},
         dtype="mixed_float16"),
]


@pytest.mark.parametrize("kwargs", CONFIG_CASES)
def test_config_keys_and_round_trip(kwargs):
    layer = Conv2D(**kwargs)
    config = layer.get_config()
    assert set(config) == KERAS_CONFIG_KEYS
    assert config["dtype"] == {"module": "keras", "class_name": "DTypePolicy",
                               "config": {"name": kwargs.get("dtype", "float32")},
                               "registered_name": None}
    assert config["filters"] == kwargs["filters"]
    assert config["kernel_size"] == _pair(kwargs["kernel_size"])
    assert config["strides"] == _pair(kwargs.get("strides", 1))
    assert config["dilation_rate"] == _pair(kwargs.get("dilation_rate", 1))
    assert config["padding"] == kwargs.get("padding", "valid")
    assert config["groups"] == kwargs.get("groups", 1)
    assert config["use_bias"] == kwargs.get("use_bias", True)
    assert config["trainable"] == kwargs.get("trainable", True)
    activation = kwargs.get("activation")
    assert config["activation"] == ("linear" if activation is None else activation)
    if "name" in kwargs:
        assert config["name"] == kwargs["name"]
    json.dumps(config)  # JSON-serializable
    clone = Conv2D.from_config(config)
    assert clone.get_config() == config
    clone2 = Conv2D.from_config(json.loads(json.dumps(config)))
    again = clone2.get_config()
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(config))


def test_config_values_of_objects():
    layer = Conv2D(2, 2, kernel_initializer=numbaconv.initializers.GlorotUniform(seed=5),
                   kernel_regularizer=numbaconv.regularizers.L2(0.25),
                   bias_constraint=numbaconv.constraints.NonNeg())
    config = layer.get_config()
    assert config["kernel_initializer"] == {
        "module": "keras.initializers", "class_name": "GlorotUniform",
        "config": {"seed": 5, "input_axes": None, "output_axes": None},
        "registered_name": None}
    assert config["kernel_regularizer"] == {
        "module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.25},
        "registered_name": None}
    assert config["bias_constraint"] == {
        "module": "keras.constraints", "class_name": "NonNeg", "config": {},
        "registered_name": None}


def test_from_config_gives_same_numbers():
    layer = Conv2D(4, 3, strides=2, padding="same", activation="tanh", groups=2)
    x = _input((2, 7, 7, 4))
    layer.build(x.shape)
    weights = _randomize(layer)
    clone = Conv2D.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), layer(x))
    expected = np.tanh(_ref(x, *weights, strides=2, padding="same"))
    np.testing.assert_allclose(clone(x), expected, **F32)


def test_from_config_accepts_tf_keras2_config():
    config = {
        "name": "conv2d_k2", "trainable": True, "batch_input_shape": (None, 10, 10, 3),
        "dtype": "float32", "filters": 4, "kernel_size": (3, 3), "strides": (1, 1),
        "padding": "valid", "data_format": "channels_last", "dilation_rate": (1, 1),
        "groups": 1, "activation": "relu", "use_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.01}},
        "bias_regularizer": None, "activity_regularizer": None,
        "kernel_constraint": {"class_name": "MaxNorm", "config": {"max_value": 2, "axis": 0}},
        "bias_constraint": None,
    }
    layer = Conv2D.from_config(config)
    assert layer.built and layer.kernel.shape == (3, 3, 3, 4)
    assert isinstance(layer.kernel.regularizer, numbaconv.regularizers.L2)
    assert isinstance(layer.kernel.constraint, numbaconv.constraints.MaxNorm)
    new = layer.get_config()
    assert set(new) == KERAS_CONFIG_KEYS
    assert new["dtype"]["config"]["name"] == "float32"
    assert new["kernel_regularizer"]["config"] == {"l2": 0.01}


def test_from_config_rejects_unknown_keys():
    config = Conv2D(2, 2).get_config()
    config["not_a_keras_key"] = 1
    with pytest.raises(ValueError, match="Unrecognized keyword arguments"):
        Conv2D.from_config(config)


def test_from_config_accepts_unset_lora_keys():
    config = Conv2D(2, 2).get_config()
    config.update(lora_rank=None, lora_alpha=None)
    assert Conv2D.from_config(config).filters == 2


# --------------------------------------------------------------------------- kernel cache
def test_kernel_cache_reuse_generic():
    x = _input((2, 5, 5, 3))
    a = Conv2D(4, 3)
    a(x)
    hits0, misses0, entries0 = numbaconv.kernel_cache_info()
    a(x)
    hits1, misses1, entries1 = numbaconv.kernel_cache_info()
    assert (misses1, entries1) == (misses0, entries0)
    assert hits1 > hits0
    b = Conv2D(4, 3)
    b(x)
    hits2, misses2, entries2 = numbaconv.kernel_cache_info()
    assert (misses2, entries2) == (misses0, entries0)
    assert hits2 > hits1


# --------------------------------------------------------------------------- specialized kernels
SPECIALIZED_CASES = [
    (dict(filters=4, kernel_size=3, strides=2, padding="same", activation="relu"),
     "channels_last", (2, 7, 8, 3), "float32"),
    (dict(filters=4, kernel_size=(3, 2), dilation_rate=(2, 1)), "channels_first",
     (2, 8, 7, 3), "float32"),
    (dict(filters=6, kernel_size=3, groups=2, padding="same"), "channels_last",
     (1, 6, 6, 4), "float32"),
    (dict(filters=8, kernel_size=3, groups=4, strides=(1, 2), padding="same"),
     "channels_first", (2, 6, 7, 4), "float32"),
    (dict(filters=3, kernel_size=2, strides=(2, 3), activation="relu"), "channels_last",
     (2, 7, 9, 2), "float64"),
]


@pytest.mark.parametrize("kw,data_format,shape,dtype", SPECIALIZED_CASES)
def test_specialized_numbers(always_specialize, kw, data_format, shape, dtype):
    assert numbaconv.get_specialization() == "always"
    layer = Conv2D(**kw, data_format=data_format, dtype=dtype)
    x = _input(_to_layout(shape, data_format), dtype=np.dtype(dtype))
    layer.build(x.shape)
    k, b = _randomize(layer, dtype=np.dtype(dtype))
    out = layer(x)
    assert out.dtype == np.dtype(dtype)
    expected = NP_ACTIVATIONS[kw.get("activation")](
        _ref(x, k, b, strides=layer.strides, padding=layer.padding,
             dilation_rate=layer.dilation_rate, data_format=data_format))
    np.testing.assert_allclose(out, expected, **(F32 if dtype == "float32" else F64))


def test_specialized_kernel_cache_reuse(always_specialize):
    x = _input((2, 6, 5, 3))
    a = Conv2D(5, 2, padding="same", strides=(2, 1))
    a.build(x.shape)
    k, b = _randomize(a)
    a(x)
    hits0, misses0, entries0 = numbaconv.kernel_cache_info()
    out = a(x)
    hits1, misses1, entries1 = numbaconv.kernel_cache_info()
    assert (misses1, entries1) == (misses0, entries0)
    assert hits1 > hits0
    twin = Conv2D(5, 2, padding="same", strides=(2, 1))
    twin.build(x.shape)
    twin.set_weights(a.get_weights())
    np.testing.assert_array_equal(twin(x), out)
    hits2, misses2, entries2 = numbaconv.kernel_cache_info()
    assert (misses2, entries2) == (misses0, entries0)
    assert hits2 > hits1
    np.testing.assert_allclose(out, _ref(x, k, b, strides=(2, 1), padding="same"), **F32)


def test_specialization_fixture_restored():
    assert numbaconv.get_specialization() == "auto"


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_weight_changes_between_calls_are_seen(always_specialize, data_format):
    # Kernels keep weights packed between calls; every way of changing the
    # weights must drop the packed copy.
    layer = Conv2D(64, 3, padding="same", data_format=data_format)
    shape = (1, 6, 7, 5) if data_format == "channels_last" else (1, 5, 6, 7)
    x = _input(shape)
    layer.build(shape)
    for change in ("set_weights", "assign", "attribute"):
        k, b = _randomize(layer, seed=len(change))
        layer(x)
        new_kernel = (2 * k - 1).astype(np.float32)
        if change == "set_weights":
            layer.set_weights([new_kernel, b.astype(np.float32)])
        elif change == "assign":
            layer.kernel.assign(new_kernel)
        else:
            layer.kernel = new_kernel
        np.testing.assert_allclose(layer(x), _layer_ref(layer, x), rtol=5e-4, atol=1e-5)
