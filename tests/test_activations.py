"""Tests for numbaconv.activations (independent formulas + real Keras when present)."""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from numbaconv import activations
from keras_support import x64

RNG = np.random.default_rng(1234)
# Ordinary values, the piecewise breakpoints, and large magnitudes.
X = np.concatenate([RNG.normal(0, 3, 204),
                    [-1, 1, 0, -3, 3, 6, -0.5, 0.5, 40, -40, 100, -100]])
X2 = X.reshape(4, 54)

KERAS_NAMES = [
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid",
    "hard_silu", "hard_swish", "hard_tanh", "leaky_relu", "linear",
    "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid",
    "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus",
    "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh",
    "tanh_shrink", "threshold",
]
# threshold has no default arguments (as in Keras)
KWARGS = {"threshold": {"threshold": 0.3, "default_value": -2.0}}


def _call(name, x, **extra):
    return activations.get(name)(x, **{**KWARGS.get(name, {}), **extra})


# --------------------------------------------------------------------------
# Independent reference formulas (plain float64 NumPy / math).
def _sig(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _elementwise(f):
    return lambda x: np.vectorize(f, otypes=[float])(x)


SELU_A, SELU_L = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
REFERENCE = {
    "relu": _elementwise(lambda v: max(v, 0.0)),
    "relu6": _elementwise(lambda v: min(max(v, 0.0), 6.0)),
    "leaky_relu": _elementwise(lambda v: v if v >= 0 else 0.2 * v),
    "elu": _elementwise(lambda v: v if v > 0 else math.expm1(v)),
    "selu": _elementwise(lambda v: SELU_L * (v if v > 0 else SELU_A * math.expm1(v))),
    "celu": _elementwise(lambda v: v if v >= 0 else math.expm1(v)),
    "gelu": _elementwise(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
    "sigmoid": _elementwise(_sig),
    "silu": _elementwise(lambda v: v * _sig(v)),
    "swish": _elementwise(lambda v: v * _sig(v)),
    "hard_sigmoid": _elementwise(lambda v: 0.0 if v <= -3 else 1.0 if v >= 3 else v / 6 + 0.5),
    "hard_silu": _elementwise(lambda v: 0.0 if v <= -3 else v if v >= 3 else v * (v + 3) / 6),
    "hard_swish": _elementwise(lambda v: 0.0 if v <= -3 else v if v >= 3 else v * (v + 3) / 6),
    "sparse_sigmoid": _elementwise(lambda v: 0.0 if v <= -1 else 1.0 if v >= 1 else 0.5 * (v + 1)),
    "tanh": _elementwise(math.tanh),
    "tanh_shrink": _elementwise(lambda v: v - math.tanh(v)),
    "hard_tanh": _elementwise(lambda v: min(max(v, -1.0), 1.0)),
    "softplus": _elementwise(_softplus),
    "log_sigmoid": _elementwise(lambda v: -_softplus(-v)),
    "softsign": _elementwise(lambda v: v / (abs(v) + 1)),
    "soft_shrink": _elementwise(lambda v: v - 0.5 if v > 0.5 else v + 0.5 if v < -0.5 else 0.0),
    "hard_shrink": _elementwise(lambda v: v if abs(v) > 0.5 else 0.0),
    "sparse_plus": _elementwise(lambda v: 0.0 if v <= -1 else v if v >= 1 else (v + 1) ** 2 / 4),
    "squareplus": _elementwise(lambda v: (v + math.sqrt(v * v + 4)) / 2),
    "mish": _elementwise(lambda v: v * math.tanh(_softplus(v))),
    "exponential": _elementwise(math.exp),
    "linear": lambda x: x,
    "threshold": _elementwise(lambda v: v if v > 0.3 else -2.0),
}


def _ref_softmax(x):
    rows = x.reshape(-1, x.shape[-1])
    out = [[math.exp(v - max(r)) / sum(math.exp(u - max(r)) for u in r) for v in r] for r in rows]
    return np.array(out).reshape(x.shape)


def _ref_log_softmax(x):
    rows = x.reshape(-1, x.shape[-1])
    out = [[v - max(r) - math.log(sum(math.exp(u - max(r)) for u in r)) for v in r] for r in rows]
    return np.array(out).reshape(x.shape)


def _ref_sparsemax(x):
    # Bisection for tau with sum(max(z - tau, 0)) == 1: independent of the
    # sort-based algorithm used by the implementation.
    out = []
    for r in x.reshape(-1, x.shape[-1]):
        lo, hi = r.max() - 1.0, r.max()
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.maximum(r - mid, 0).sum() > 1 else (lo, mid)
        out.append(np.maximum(r - (lo + hi) / 2, 0))
    return np.array(out).reshape(x.shape)


def _ref_glu(x):
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return a * REFERENCE["sigmoid"](b)


REFERENCE.update(softmax=_ref_softmax, log_softmax=_ref_log_softmax,
                 sparsemax=_ref_sparsemax, glu=_ref_glu)


# --------------------------------------------------------------------------
def test_every_keras_name_is_provided():
    for name in KERAS_NAMES:
        fn = activations.get(name)
        assert callable(fn)
        assert getattr(activations, name) is fn
    assert set(REFERENCE) == set(KERAS_NAMES)


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_matches_reference_formula(name):
    got = _call(name, X2)
    np.testing.assert_allclose(got, REFERENCE[name](X2), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", KERAS_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_dtype_and_shape_preserved(name, dtype):
    x = X2.astype(dtype)
    out = _call(name, x)
    assert out.dtype == dtype
    expected_shape = (4, 27) if name == "glu" else x.shape
    assert out.shape == expected_shape


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_float32_close_to_float64(name):
    x = np.clip(X2, -20, 20)  # float32 is only compared where it is meaningful
    np.testing.assert_allclose(_call(name, x.astype(np.float32)), _call(name, x),
                               rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", KERAS_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_inputs_no_overflow_warnings(name, dtype):
    # pytest turns any RuntimeWarning (overflow/invalid) into an error.
    big = np.finfo(dtype).max / 4
    x = np.array([[-big, -1e4, -1000.0, -100.0, 0.0, 100.0, 1000.0, 1e4, big, 1.0]],
                 dtype=dtype)
    out = _call(name, x)
    assert not np.any(np.isnan(out)), out
    if name != "exponential":  # exp(big) = inf is the correct answer
        assert np.all(np.isfinite(out)), out


def test_stable_limits():
    x = np.array([-1e4, -1000.0, 1000.0, 1e4])
    np.testing.assert_array_equal(activations.sigmoid(x), [0, 0, 1, 1])
    np.testing.assert_allclose(activations.softplus(x), [0, 0, 1000, 1e4])
    np.testing.assert_allclose(activations.log_sigmoid(x), [-1e4, -1000, 0, 0])
    np.testing.assert_allclose(activations.softmax(np.array([1000.0, 0.0, -1000.0])),
                               [1, 0, 0])
    np.testing.assert_allclose(activations.log_softmax(np.array([1000.0, 0.0])),
                               [0, -1000])
    x32 = np.array([-200.0, 200.0], dtype=np.float32)
    np.testing.assert_allclose(activations.silu(x32), [0, 200])
    np.testing.assert_allclose(activations.mish(x32), [0, 200])
    np.testing.assert_allclose(activations.squareplus(np.array([-1e10])), [1e-10], rtol=1e-9)
    np.testing.assert_allclose(activations.gelu(np.array([-40.0, 40.0]), approximate=True),
                               [0, 40])


def test_softmax_axes():
    x = RNG.normal(size=(2, 3, 4))
    np.testing.assert_allclose(activations.softmax(x).sum(axis=-1), 1.0)
    s0 = activations.softmax(x, axis=0)
    np.testing.assert_allclose(s0.sum(axis=0), 1.0)
    np.testing.assert_allclose(s0, np.exp(x) / np.exp(x).sum(axis=0))
    s12 = activations.softmax(x, axis=(1, 2))
    np.testing.assert_allclose(s12.sum(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(activations.log_softmax(x, axis=1),
                               np.log(np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)))
    np.testing.assert_allclose(activations.sparsemax(x, axis=1).sum(axis=1), 1.0)
    np.testing.assert_allclose(
        activations.glu(x[:, :2], axis=1),
        x[:, :1] * REFERENCE["sigmoid"](x[:, 1:2]))
    with pytest.raises(ValueError, match="divisible by 2"):
        activations.glu(x, axis=1)


@pytest.mark.parametrize("kw", [
    {"negative_slope": 0.1}, {"max_value": 5.0}, {"max_value": 6},
    {"threshold": 1.0}, {"negative_slope": 0.1, "threshold": 1.0},
    {"negative_slope": 0.3, "max_value": 4.0, "threshold": -1.0},
])
def test_relu_keyword_arguments(kw):
    a, m, t = kw.get("negative_slope", 0.0), kw.get("max_value"), kw.get("threshold", 0.0)

    def ref(v):
        # Keras semantics: x if x > threshold (capped), slope * (x - threshold) below.
        if m is None and t == 0:
            return v if v >= 0 else a * v
        y = v if v > t else 0.0
        if m is not None:
            y = min(max(y, 0.0), m)
        return y - a * max(t - v, 0.0)

    np.testing.assert_allclose(activations.relu(X, **kw), _elementwise(ref)(X), rtol=1e-14)


def test_parametrised_variants():
    np.testing.assert_allclose(activations.elu(X, alpha=0.5),
                               _elementwise(lambda v: v if v > 0 else 0.5 * math.expm1(v))(X))
    np.testing.assert_allclose(activations.celu(X, alpha=2.0),
                               _elementwise(lambda v: v if v >= 0 else 2 * math.expm1(v / 2))(X))
    np.testing.assert_allclose(activations.leaky_relu(X, negative_slope=0.01),
                               np.where(X >= 0, X, 0.01 * X))
    np.testing.assert_allclose(activations.squareplus(X, b=1.0), (X + np.sqrt(X * X + 1)) / 2,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(activations.soft_shrink(X, threshold=1.0),
                               np.sign(X) * np.maximum(np.abs(X) - 1, 0))
    np.testing.assert_allclose(activations.hard_shrink(X, threshold=2.0),
                               np.where(np.abs(X) > 2, X, 0))
    approx = _elementwise(lambda v: 0.5 * v * (1 + math.tanh(
        math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))))
    # atol: 1 + tanh(v) cancels for very negative v, in any implementation
    np.testing.assert_allclose(activations.gelu(X, approximate=True), approx(X),
                               rtol=1e-12, atol=1e-15)


def test_lists_and_ints_become_float32():
    assert activations.relu([-1, 2]).dtype == np.float32
    np.testing.assert_array_equal(activations.relu([-1, 2]), [0, 2])
    assert activations.linear([1, 2]) == [1, 2]  # pass-through, like Keras


# --------------------------------------------------------------------------
# get / serialize / deserialize
def test_get_forms():
    assert activations.get(None) is activations.linear
    assert activations.get("relu") is activations.relu
    assert activations.get("swish") is activations.silu
    assert activations.get("hard_swish") is activations.hard_silu

    def custom(x):
        return x * 2

    assert activations.get(custom) is custom
    assert activations.get(activations.tanh) is activations.tanh
    assert activations.get({"module": "builtins", "class_name": "function",
                            "config": "elu", "registered_name": "function"}) is activations.elu
    assert activations.get({"module": "keras.activations", "class_name": "function",
                            "config": "gelu", "registered_name": "gelu"}) is activations.gelu
    assert activations.get({"class_name": "function", "config": "selu"}) is activations.selu
    assert activations.get({"class_name": "sigmoid", "config": {}}) is activations.sigmoid


@pytest.mark.parametrize("bad", ["foo", "Relu", 3, [1], 1.5])
def test_get_unknown_raises(bad):
    with pytest.raises(ValueError, match="Could not interpret activation function "
                                         "identifier: " + re.escape(str(bad))):
        activations.get(bad)


def test_get_unknown_dict_raises():
    with pytest.raises(ValueError, match="Could not interpret activation function identifier"):
        activations.get({"class_name": "function", "config": "nope"})
    with pytest.raises(ValueError, match="Could not interpret"):
        activations.deserialize("nope")


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_serialize_round_trip(name):
    fn = activations.get(name)
    s = activations.serialize(fn)
    assert s == {"swish": "silu", "hard_swish": "hard_silu"}.get(name, name)
    assert fn.__name__ == s
    assert activations.deserialize(s) is fn
    assert activations.get(s) is fn


def test_serialize_none_and_custom():
    assert activations.serialize(None) == "linear"

    def my_act(x):
        return x

    assert activations.serialize(my_act) == {
        "module": "builtins", "class_name": "function", "config": "my_act",
        "registered_name": "function"}
    assert activations.deserialize(activations.serialize(my_act),
                                   custom_objects={"my_act": my_act}) is my_act


def test_library_does_not_import_keras():
    code = ("import sys, numpy as np\n"
            "import numbaconv.activations as a, numbaconv.initializers as i\n"
            "import numbaconv.regularizers as r, numbaconv.constraints as c\n"
            "a.softmax(np.ones(3)); i.get('glorot_uniform')((3, 3, 4, 8))\n"
            "bad = [m for m in ('keras', 'jax', 'torch', 'tensorflow') if m in sys.modules]\n"
            "assert not bad, bad\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --------------------------------------------------------------------------
# Comparison with real Keras (skipped when keras is not importable)
def _for_keras(keras, name, x, axis=-1):
    """Input for a Keras comparison of activation ``name``.

    Keras <= 3.15's sparsemax is wrong whenever more than one logit is in the
    support (keras-team/keras#23425; we implement the correct projection).
    With such a Keras, give every slice a clear winner (support of size one),
    where its result is right, so the comparison still checks the rest.
    """
    if name != "sparsemax":
        return x
    probe = np.asarray(keras.activations.sparsemax(np.array([[0.0, 0.5, 1.0]])))
    if np.allclose(probe, [[0.0, 0.25, 0.75]]):
        return x
    xm = np.moveaxis(x.copy(), axis, 0)
    xm[0] = xm.max(axis=0) + 2
    return np.moveaxis(xm, 0, axis)


def test_keras_name_set(keras):
    from keras.src.activations import ALL_OBJECTS_DICT
    assert set(ALL_OBJECTS_DICT) == set(KERAS_NAMES)


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_numbers_float64(keras, name):
    x = _for_keras(keras, name, X2)
    with x64(keras):
        expected = np.asarray(keras.activations.get(name)(x, **KWARGS.get(name, {})))
    got = _call(name, x)
    assert got.dtype == np.float64
    if name == "tanh":
        # Keras 3.15's tanh returns float32 for float64 input (we keep float64)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        return
    assert expected.dtype == np.float64
    # atol only matters for results ~1e-13 that cancel (1 + tanh(v), v << 0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_numbers_float32(keras, name):
    x = _for_keras(keras, name, X2).astype(np.float32)
    expected = np.asarray(keras.activations.get(name)(x, **KWARGS.get(name, {})))
    got = _call(name, x)
    assert got.dtype == expected.dtype == np.float32
    # float32 rounding (and XLA's flush-to-zero of subnormals) differ slightly;
    # squareplus is more accurate here than Keras' cancelling x + sqrt(x^2+b).
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,kw", [
    ("relu", {"negative_slope": 0.1}), ("relu", {"max_value": 5.0}),
    ("relu", {"max_value": 6.0}), ("relu", {"threshold": 1.0}),
    ("relu", {"negative_slope": 0.1, "threshold": 1.0}),
    ("relu", {"negative_slope": 0.3, "max_value": 4.0, "threshold": -1.0}),
    ("gelu", {"approximate": True}), ("gelu", {"approximate": False}),
    ("elu", {"alpha": 0.5}), ("celu", {"alpha": 2.0}),
    ("leaky_relu", {"negative_slope": 0.01}), ("squareplus", {"b": 1.0}),
    ("soft_shrink", {"threshold": 1.0}), ("hard_shrink", {"threshold": 2.0}),
    ("softmax", {"axis": 0}), ("log_softmax", {"axis": 0}),
    ("sparsemax", {"axis": 0}), ("glu", {"axis": 0}),
    ("threshold", {"threshold": -1.0, "default_value": 5.0}),
])
def test_keras_numbers_with_arguments(keras, name, kw):
    x = _for_keras(keras, name, X2, kw.get("axis", -1))
    with x64(keras):
        expected = np.asarray(getattr(keras.activations, name)(x, **kw))
    np.testing.assert_allclose(getattr(activations, name)(x, **kw), expected,
                               rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_serialize_equal(keras, name):
    assert activations.serialize(activations.get(name)) == \
        keras.activations.serialize(keras.activations.get(name))


def test_keras_serialize_none_and_custom(keras):
    def my_act(x):
        return x

    assert activations.serialize(activations.get(None)) == \
        keras.activations.serialize(keras.activations.get(None))
    assert activations.serialize(my_act) == keras.activations.serialize(my_act)


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_deserialize_keras_forms(keras, name):
    fn = keras.activations.get(name)
    ours = activations.get(name)
    assert activations.deserialize(keras.activations.serialize(fn)) is ours
    assert activations.get(keras.saving.serialize_keras_object(fn)) is ours
    # and Keras understands what we write
    assert keras.activations.deserialize(activations.serialize(ours)) is fn
