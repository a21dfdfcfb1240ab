"""Tests for numbaconv.regularizers (hand formulas + real Keras when present)."""

import itertools
import math
import re

import numpy as np
import pytest

from numbaconv import regularizers as R
from keras_support import x64

RNG = np.random.default_rng(7)
W = RNG.normal(size=(3, 3, 4, 8))
M = RNG.normal(size=(6, 5))


def test_defaults_and_hand_formulas():
    l1_default = float(np.float32(0.01))  # Keras keeps L1's factor in float32
    assert R.L1().l1 == l1_default and R.L2().l2 == 0.01
    assert (R.L1L2().l1, R.L1L2().l2) == (0.0, 0.0)
    assert math.isclose(R.L1()(W), l1_default * sum(abs(v) for v in W.ravel()), rel_tol=1e-12)
    assert math.isclose(R.L2()(W), 0.01 * sum(v * v for v in W.ravel()), rel_tol=1e-12)
    assert math.isclose(R.L2(0.5)(W), 0.5 * float((W ** 2).sum()), rel_tol=1e-12)  # no 1/2
    both = R.L1L2(l1=0.2, l2=0.3)(W)
    assert math.isclose(both, 0.2 * np.abs(W).sum() + 0.3 * (W ** 2).sum(), rel_tol=1e-12)
    assert R.L1L2()(W) == 0.0
    assert R.L1L2(l1=None, l2=None).get_config() == {"l1": 0.0, "l2": 0.0}
    assert R.L1(None).l1 == l1_default and R.L2(None).l2 == 0.01
    assert R.Regularizer()(W) == 0.0


@pytest.mark.parametrize("reg", [R.L1(0.3), R.L2(0.3), R.L1L2(0.1, 0.2)], ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_result_dtype(reg, dtype):
    out = reg(W.astype(dtype))
    assert np.ndim(out) == 0 and out.dtype == dtype
    assert math.isclose(float(out), float(reg(W)), rel_tol=1e-5)


@pytest.mark.parametrize("reg", [R.L1(0.3), R.L2(0.7), R.L1L2(0.1, 0.2), R.L1L2(0.5, 0.0)], ids=repr)
def test_gradient_matches_finite_differences(reg):
    x = RNG.normal(size=(4, 5))
    grad = reg.gradient(x)
    assert grad.shape == x.shape and grad.dtype == x.dtype
    h = 1e-6
    for idx in itertools.product(range(4), range(5)):
        e = np.zeros_like(x)
        e[idx] = h
        fd = (reg(x + e) - reg(x - e)) / (2 * h)
        assert math.isclose(grad[idx], fd, rel_tol=1e-6, abs_tol=1e-8)
    assert reg.gradient(x.astype(np.float32)).dtype == np.float32
    # subgradient 0 at 0 for the L1 part
    assert R.L1(0.3).gradient(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def _ortho_ref(x, factor, mode):
    vecs = x if mode == "rows" else x.T
    vecs = [v / math.sqrt(sum(t * t for t in v)) for v in vecs]
    n = len(vecs)
    total = sum(abs(float(np.dot(vecs[i], vecs[j])))
                for i in range(n) for j in range(n) if i != j)
    return factor * 0.5 * total / (n * (n - 1) / 2)


@pytest.mark.parametrize("mode", ["rows", "columns"])
def test_orthogonal_regularizer(mode):
    reg = R.OrthogonalRegularizer(factor=0.2, mode=mode)
    assert reg.factor == float(np.float32(0.2))
    assert math.isclose(reg(M), _ortho_ref(M, reg.factor, mode), rel_tol=1e-12)
    q, _ = np.linalg.qr(RNG.normal(size=(6, 6)))
    assert abs(reg(q)) < 1e-12
    assert reg(M.astype(np.float32)).dtype == np.float32
    # zero rows/columns are harmless (normalised with a capped 1/norm)
    z = M.copy()
    z[0] = 0
    z[:, 0] = 0
    assert np.isfinite(reg(z))


def test_validation():
    for bad in (-1.0, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match="expected a non-negative float"):
            R.L1(bad)
        with pytest.raises(ValueError, match="expected a non-negative float"):
            R.L1L2(l2=bad)
    with pytest.raises(ValueError, match="mode"):
        R.OrthogonalRegularizer(mode="diagonal")
    with pytest.raises(ValueError, match="rank 2"):
        R.OrthogonalRegularizer()(W)
    with pytest.raises(NotImplementedError):
        R.Regularizer().get_config()


NAMES = {"L1": "L1", "l1": "L1", "L2": "L2", "l2": "L2", "L1L2": "L1L2",
         "l1l2": "L1L2", "l1_l2": "L1L2", "OrthogonalRegularizer": "OrthogonalRegularizer",
         "orthogonal_regularizer": "OrthogonalRegularizer",
         "Regularizer": "Regularizer", "regularizer": "Regularizer"}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_get_by_name(name):
    assert type(R.get(name)).__name__ == NAMES[name]


def test_get_other_forms():
    assert R.get(None) is None
    inst = R.L2(0.3)
    assert R.get(inst) is inst
    assert isinstance(R.get(R.L1), R.L1)

    def fn(x):
        return 0.0

    assert R.get(fn) is fn
    r = R.get({"module": "keras.regularizers", "class_name": "L1L2",
               "config": {"l1": 0.1, "l2": 0.2}, "registered_name": None})
    assert (r.l1, r.l2) == (0.1, 0.2)
    assert R.get({"class_name": "L2", "config": {"l2": 0.5}}).l2 == 0.5


@pytest.mark.parametrize("bad", ["foo", "L3", 3, [1]])
def test_get_unknown(bad):
    with pytest.raises(ValueError, match="Could not interpret regularizer identifier: "
                                         + re.escape(str(bad))):
        R.get(bad)


CONFIGS = [R.L1(), R.L1(0.3), R.L2(), R.L2(0.25), R.L1L2(), R.L1L2(l1=0.1),
           R.L1L2(0.1, 0.2), R.OrthogonalRegularizer(), R.OrthogonalRegularizer(0.5, "columns")]


@pytest.mark.parametrize("obj", CONFIGS, ids=repr)
def test_serialize_round_trip(obj):
    s = R.serialize(obj)
    assert s == {"module": "keras.regularizers", "class_name": type(obj).__name__,
                 "config": obj.get_config(), "registered_name": None}
    back = R.deserialize(s)
    assert type(back) is type(obj) and back.get_config() == obj.get_config()
    assert R.serialize(None) is None


def test_serialize_known_values():
    assert R.serialize(R.L1())["config"] == {"l1": 0.009999999776482582}
    assert R.serialize(R.L2(0.1))["config"] == {"l2": 0.1}
    assert R.serialize(R.L1L2(l1=0.1))["config"] == {"l1": 0.1, "l2": 0.0}


# --------------------------------------------------------------------------
def _twin(keras, obj):
    return getattr(keras.regularizers, type(obj).__name__)(**obj.get_config())


def test_keras_accepted_names(keras):
    from keras.src.regularizers import ALL_OBJECTS_DICT
    for name, cls in ALL_OBJECTS_DICT.items():
        assert type(R.get(name)).__name__ == cls.__name__
    # "l1_l2" (Keras' exported alias) is our only addition
    assert set(NAMES) - set(ALL_OBJECTS_DICT) == {"l1_l2"}


@pytest.mark.parametrize("obj", CONFIGS, ids=repr)
def test_keras_serialize_equal(keras, obj):
    ks = keras.regularizers.serialize(_twin(keras, obj))
    assert R.serialize(obj) == ks
    assert R.deserialize(ks).get_config() == obj.get_config()
    assert keras.regularizers.serialize(keras.regularizers.deserialize(R.serialize(obj))) == ks


@pytest.mark.parametrize("obj", [R.L1(), R.L2(0.25), R.L1L2(0.1, 0.2), R.OrthogonalRegularizer(),
                                 R.OrthogonalRegularizer(0.5, "columns")], ids=repr)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_values(keras, obj, dtype):
    kobj = _twin(keras, obj)  # built outside x64: factors stored as Keras does
    x = (M if isinstance(obj, R.OrthogonalRegularizer) else W).astype(dtype)
    with x64(keras):
        expected = np.asarray(kobj(keras.ops.convert_to_tensor(x)))
    got = obj(x)
    assert got.dtype == expected.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, expected, rtol=1e-12 if dtype == "float64" else 1e-5)
