"""Tests for numbaconv.constraints (hand formulas + real Keras when present)."""

import math
import re

import numpy as np
import pytest

from numbaconv import constraints as C
from keras_support import x64

RNG = np.random.default_rng(3)
KERNEL = RNG.normal(size=(3, 3, 4, 8))   # Conv2D kernel: 8 filters
FILTER_AXES = [0, 1, 2]
EPS = 1e-7


def _filter_norms(w):
    return np.array([math.sqrt(sum(v * v for v in w[..., f].ravel()))
                     for f in range(w.shape[-1])])


def test_max_norm_conv_kernel():
    w = KERNEL.copy()
    w[..., :3] *= 0.05  # some filters well below the cap
    out = C.MaxNorm(max_value=1.5, axis=FILTER_AXES)(w)
    n_in, n_out = _filter_norms(w), _filter_norms(out)
    for f in range(w.shape[-1]):
        target = min(n_in[f], 1.5)
        expected = w[..., f] * target / (EPS + n_in[f])
        np.testing.assert_allclose(out[..., f], expected, rtol=1e-12)
        assert math.isclose(n_out[f], target * n_in[f] / (EPS + n_in[f]), rel_tol=1e-12)
    assert np.all(n_out <= 1.5)
    # tuple axes behave like lists
    np.testing.assert_array_equal(C.MaxNorm(1.5, axis=(0, 1, 2))(w), out)


def test_max_norm_default_axis_zero():
    m = RNG.normal(size=(5, 4)) * 2
    out = C.MaxNorm()(m)  # max_value=2, axis=0: norms of columns
    for j in range(4):
        n = math.sqrt(sum(v * v for v in m[:, j]))
        np.testing.assert_allclose(out[:, j], m[:, j] * min(n, 2) / (EPS + n), rtol=1e-12)
    out1 = C.MaxNorm(1.0, axis=1)(m)
    for i in range(5):
        n = math.sqrt(sum(v * v for v in m[i]))
        np.testing.assert_allclose(out1[i], m[i] * min(n, 1) / (EPS + n), rtol=1e-12)


def test_unit_norm():
    out = C.UnitNorm(axis=FILTER_AXES)(KERNEL)
    n = _filter_norms(KERNEL)
    np.testing.assert_allclose(_filter_norms(out), n / (EPS + n), rtol=1e-12)
    # epsilon matters for tiny norms: a norm of 1e-7 is halved, not unitised
    tiny = np.array([[1e-7], [0.0]])
    np.testing.assert_allclose(C.UnitNorm()(tiny), [[0.5], [0.0]], rtol=1e-12)
    assert C.UnitNorm()(np.zeros((3, 2))).tolist() == [[0, 0]] * 3  # no 0/0


@pytest.mark.parametrize("rate", [1.0, 0.5, 0.0])
def test_min_max_norm(rate):
    w = KERNEL * np.linspace(0.01, 2, 8)  # norms spanning below/inside/above
    out = C.MinMaxNorm(min_value=0.5, max_value=1.0, rate=rate, axis=FILTER_AXES)(w)
    n = _filter_norms(w)
    for f in range(8):
        desired = rate * min(max(n[f], 0.5), 1.0) + (1 - rate) * n[f]
        np.testing.assert_allclose(out[..., f], w[..., f] * desired / (EPS + n[f]), rtol=1e-12)
    if rate == 1.0:
        assert np.all((_filter_norms(out) > 0.5 - 1e-6) & (_filter_norms(out) <= 1.0))


def test_non_neg():
    out = C.NonNeg()(KERNEL)
    np.testing.assert_array_equal(out, np.where(KERNEL > 0, KERNEL, 0))
    assert C.NonNeg()(np.array([-1, 2], dtype=np.int32)).dtype == np.int32


@pytest.mark.parametrize("obj", [C.MaxNorm(1.0, FILTER_AXES), C.UnitNorm(FILTER_AXES),
                                 C.MinMaxNorm(0.1, 0.9, 0.7, FILTER_AXES), C.NonNeg(),
                                 C.Constraint()], ids=repr)
def test_dtype_and_shape(obj):
    for dtype in (np.float32, np.float64):
        out = obj(KERNEL.astype(dtype))
        assert out.dtype == dtype and out.shape == KERNEL.shape


def test_base_constraint_is_identity():
    assert C.Constraint()(KERNEL) is KERNEL
    assert C.EPSILON == 1e-7


NAMES = {"MaxNorm": "MaxNorm", "max_norm": "MaxNorm", "MinMaxNorm": "MinMaxNorm",
         "min_max_norm": "MinMaxNorm", "NonNeg": "NonNeg", "non_neg": "NonNeg",
         "UnitNorm": "UnitNorm", "unit_norm": "UnitNorm", "Constraint": "Constraint",
         "constraint": "Constraint"}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_get_by_name(name):
    assert type(C.get(name)).__name__ == NAMES[name]


def test_get_other_forms():
    assert C.get(None) is None
    inst = C.MaxNorm(3)
    assert C.get(inst) is inst
    assert isinstance(C.get(C.NonNeg), C.NonNeg)

    def fn(w):
        return w

    assert C.get(fn) is fn
    c = C.get({"module": "keras.constraints", "class_name": "MaxNorm",
               "config": {"max_value": 3, "axis": [0, 1, 2]}, "registered_name": None})
    assert (c.max_value, c.axis) == (3, [0, 1, 2])
    assert C.get({"class_name": "UnitNorm", "config": {"axis": 1}}).axis == 1


@pytest.mark.parametrize("bad", ["foo", "nonneg", "maxnorm", 3, [1]])
def test_get_unknown(bad):
    with pytest.raises(ValueError, match="Could not interpret constraint identifier: "
                                         + re.escape(str(bad))):
        C.get(bad)


CONFIGS = [C.MaxNorm(), C.MaxNorm(3.0, [0, 1, 2]), C.MaxNorm(1.0, (0, 1, 2)), C.NonNeg(),
           C.UnitNorm(), C.UnitNorm([0, 1, 2]), C.MinMaxNorm(), C.MinMaxNorm(0.2, 2.0, 0.5, 1)]


@pytest.mark.parametrize("obj", CONFIGS, ids=repr)
def test_serialize_round_trip(obj):
    s = C.serialize(obj)
    assert s == {"module": "keras.constraints", "class_name": type(obj).__name__,
                 "config": obj.get_config(), "registered_name": None}
    back = C.deserialize(s)
    assert type(back) is type(obj) and back.get_config() == obj.get_config()
    np.testing.assert_array_equal(back(KERNEL), obj(KERNEL))
    assert C.serialize(None) is None


# --------------------------------------------------------------------------
def _twin(keras, obj):
    return getattr(keras.constraints, type(obj).__name__)(**obj.get_config())


def test_keras_accepted_names(keras):
    from keras.src.constraints import ALL_OBJECTS_DICT
    assert set(ALL_OBJECTS_DICT) == set(NAMES)
    for name, cls in ALL_OBJECTS_DICT.items():
        assert type(C.get(name)).__name__ == cls.__name__


@pytest.mark.parametrize("obj", CONFIGS, ids=repr)
def test_keras_serialize_equal(keras, obj):
    ks = keras.constraints.serialize(_twin(keras, obj))
    assert C.serialize(obj) == ks
    assert C.deserialize(ks).get_config() == obj.get_config()
    assert keras.constraints.serialize(keras.constraints.deserialize(C.serialize(obj))) == ks


@pytest.mark.parametrize("obj", [C.MaxNorm(), C.MaxNorm(3.0, [0, 1, 2]), C.NonNeg(),
                                 C.UnitNorm([0, 1, 2]), C.MinMaxNorm(0.2, 2.0, 0.5, 1)],
                         ids=repr)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_values(keras, obj, dtype):
    w = KERNEL * np.linspace(0.01, 2, 8)
    w = w.astype(dtype)
    with x64(keras):
        expected = np.asarray(_twin(keras, obj)(keras.ops.convert_to_tensor(w)))
    got = obj(w)
    assert got.dtype == expected.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, expected, rtol=1e-12 if dtype == "float64" else 1e-6)
