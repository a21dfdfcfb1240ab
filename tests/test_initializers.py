"""Tests for numbaconv.initializers (statistics, semantics, Keras parity)."""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from numbaconv import initializers as I
from keras_support import x64

CONV = (3, 3, 16, 32)          # Conv2D kernel, groups=1
GROUPED = (3, 3, 4, 32)        # Conv2D kernel, in_channels=16, groups=4
BIG = (5, 5, 32, 64)           # enough samples for tight moment checks


def _fans(shape):
    # Written out for conv kernels: rf = kh * kw.
    rf = shape[0] * shape[1]
    return shape[2] * rf, shape[3] * rf


def _assert_variance(sample, target, mean=0.0):
    """Sample mean/variance within ~6 standard errors of the targets."""
    n = sample.size
    x = sample.astype(np.float64)
    assert abs(x.mean() - mean) < 6 * math.sqrt(target / n)
    # var of the sample variance <= 2 sigma^4 / n for the (light-tailed)
    # distributions used here (uniform: 0.8 sigma^4 / n).
    assert abs(x.var() - target) < 6 * target * math.sqrt(2.0 / n)


# --------------------------------------------------------------------------
def test_compute_fans():
    assert I.compute_fans(()) == (1, 1)
    assert I.compute_fans((7,)) == (7, 7)
    assert I.compute_fans((3, 5)) == (3, 5)
    assert I.compute_fans(CONV) == (3 * 3 * 16, 3 * 3 * 32) == _fans(CONV)
    assert I.compute_fans(GROUPED) == (3 * 3 * 4, 3 * 3 * 32)
    assert I.compute_fans((2, 3, 5, 4, 6)) == (2 * 3 * 5 * 4, 2 * 3 * 5 * 6)
    assert I.compute_fans((2, 3, 5), input_axes=(0, 2), output_axes=(1,)) == (10, 3)


@pytest.mark.parametrize("shape", [CONV, GROUPED])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_glorot_uniform_conv_kernel(shape, dtype):
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    w = I.GlorotUniform(seed=1)(shape, dtype)
    assert w.shape == shape and w.dtype == dtype
    assert np.all(np.abs(w) <= np.asarray(limit, dtype))
    assert np.abs(w).max() > 0.95 * limit  # actually uses the whole range
    _assert_variance(w, limit ** 2 / 3)


# name -> (scale, mode, distribution)
PRESETS = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


def _target_variance(scale, mode, shape):
    fan_in, fan_out = _fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return scale / n


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_distribution(name):
    scale, mode, dist = PRESETS[name]
    w = I.get(name)(BIG)
    var = _target_variance(scale, mode, BIG)
    if dist == "uniform":
        assert np.abs(w).max() <= math.sqrt(3 * var) * (1 + 1e-7)
    else:
        # truncated at 2 stddev of the *untruncated* normal, whose stddev is
        # sqrt(var) / 0.8796... so that the truncated variance is var
        assert np.abs(w).max() <= 2 * math.sqrt(var) / 0.87962566103423978 * (1 + 1e-7)
    _assert_variance(w, var)
    # identical to the general VarianceScaling with the same parameters
    vs = I.VarianceScaling(scale, mode, dist, seed=3)
    np.testing.assert_array_equal(I.get(name).__class__(seed=3)(CONV), vs(CONV))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("dist", ["truncated_normal", "untruncated_normal", "uniform", "normal"])
def test_variance_scaling(mode, dist):
    init = I.VarianceScaling(scale=1.7, mode=mode, distribution=dist, seed=11)
    w = init(BIG, "float64")
    var = _target_variance(1.7, mode, BIG)
    _assert_variance(w, var)
    if dist in ("truncated_normal", "normal"):
        assert init.distribution == "truncated_normal"  # Keras' alias
        assert np.abs(w).max() <= 2 * math.sqrt(var) / 0.87962566103423978
    elif dist == "uniform":
        assert np.abs(w).max() <= math.sqrt(3 * var)
    else:
        assert np.abs(w).max() > 2.5 * math.sqrt(var)  # not truncated


def test_variance_scaling_small_fans_and_axes():
    # n is max(1, fan): a scalar weight gets variance `scale`.
    w = I.VarianceScaling(scale=4.0, distribution="uniform", seed=0)((), "float64")
    assert w.shape == () and abs(w) <= math.sqrt(12.0)
    init = I.VarianceScaling(distribution="untruncated_normal", seed=0,
                             input_axes=(0,), output_axes=(1, 2))
    _assert_variance(init((400, 20, 30)), 1 / 400)


def test_variance_scaling_validation():
    with pytest.raises(ValueError, match="scale"):
        I.VarianceScaling(scale=0)
    with pytest.raises(ValueError, match="mode"):
        I.VarianceScaling(mode="fan_sum")
    with pytest.raises(ValueError, match="distribution"):
        I.VarianceScaling(distribution="cauchy")


def test_random_normal_uniform_truncated():
    w = I.RandomNormal(mean=1.0, stddev=2.0, seed=0)(BIG)
    _assert_variance(w, 4.0, mean=1.0)
    w = I.RandomUniform(minval=-1.0, maxval=3.0, seed=0)(BIG)
    assert w.min() >= -1.0 and w.max() <= 3.0
    _assert_variance(w, 16.0 / 12, mean=1.0)
    w = I.TruncatedNormal(mean=0.5, stddev=0.1, seed=0)(BIG, "float64")
    assert np.all(np.abs(w - 0.5) <= 0.2)
    _assert_variance(w, (0.1 * 0.87962566103423978) ** 2, mean=0.5)
    # defaults as in Keras
    assert I.RandomNormal().get_config() == {"seed": None, "mean": 0.0, "stddev": 0.05}
    assert I.RandomUniform().get_config() == {"seed": None, "minval": -0.05, "maxval": 0.05}
    assert I.TruncatedNormal().get_config() == {"seed": None, "mean": 0.0, "stddev": 0.05}


@pytest.mark.parametrize("shape", [CONV, (4, 10), (10, 4), (6, 6)])
def test_orthogonal(shape):
    w = I.Orthogonal(gain=1.0, seed=2)(shape, "float64")
    assert w.shape == shape
    flat = w.reshape(-1, shape[-1])
    rows, cols = flat.shape
    gram = flat.T @ flat if rows >= cols else flat @ flat.T
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-12)
    w2 = I.Orthogonal(gain=3.0, seed=2)(shape, "float64")
    np.testing.assert_allclose(w2, 3.0 * w, rtol=1e-12)
    with pytest.raises(ValueError, match="at least two-dimensional"):
        I.Orthogonal()((5,))


def test_constant_zeros_ones_identity():
    np.testing.assert_array_equal(I.Zeros()((2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(I.Ones()((2, 3), "int32"), np.ones((2, 3)))
    assert I.Ones()((2, 3), "int32").dtype == np.int32
    c = I.Constant(2.5)((3, 2), "float64")
    assert c.dtype == np.float64 and np.all(c == 2.5)
    assert I.Constant(7)((2,), "int64").tolist() == [7, 7]
    assert I.Constant().get_config() == {"value": 0.0}
    np.testing.assert_array_equal(I.Identity(gain=2.0)((3, 4)), 2 * np.eye(3, 4))
    with pytest.raises(ValueError, match="2D"):
        I.Identity()((3, 3, 3))
    # Keras omits gain from the config; we keep the default config identical
    assert I.Identity().get_config() == {}
    assert I.Identity.from_config(I.Identity(gain=2.0).get_config()).gain == 2.0


def _ref_hann(n, periodic):
    m = n if periodic else n - 1
    return np.array([0.5 - 0.5 * math.cos(2 * math.pi * k / m) for k in range(n)])


@pytest.mark.parametrize("side", ["real", "imag"])
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("scaling", ["density", "spectrum", None])
def test_stft(side, periodic, scaling):
    t, f = 16, 9  # fft length 16 -> 9 bins
    k = I.STFT(side, "hann", scaling, periodic)((t, 1, f), "float64")
    win = _ref_hann(t, periodic)
    norm = {"density": math.sqrt((win ** 2).sum()), "spectrum": win.sum(), None: 1.0}[scaling]
    trig = math.cos if side == "real" else math.sin
    ref = np.array([[[trig(-2 * math.pi * n * j / 16) * win[n] / norm for j in range(f)]]
                    for n in range(t)])
    np.testing.assert_allclose(k, ref, atol=1e-12)
    np.testing.assert_allclose(I.STFT(side, None, scaling)((4, 1, 3)),
                               np.array([[[trig(-2 * math.pi * n * j / 4) for j in range(3)]]
                                         for n in range(4)]), atol=1e-6)
    with pytest.raises(ValueError):
        I.STFT(window="not-a-window")
    with pytest.raises(ValueError):
        I.STFT(side="both")


# --------------------------------------------------------------------------
# seeds and dtypes
RANDOM = ["RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling",
          "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal",
          "LecunUniform", "LecunNormal", "Orthogonal"]


@pytest.mark.parametrize("name", RANDOM)
def test_seed_semantics(name):
    cls = getattr(I, name)
    seeded = cls(seed=42)
    a = seeded(CONV)
    np.testing.assert_array_equal(a, seeded(CONV))          # same call twice
    np.testing.assert_array_equal(a, cls(seed=42)(CONV))    # new instance
    assert not np.array_equal(a, cls(seed=43)(CONV))
    unseeded = cls()
    b = unseeded(CONV)
    # Keras 3: the seed is drawn once at construction
    np.testing.assert_array_equal(b, unseeded(CONV))
    assert not np.array_equal(b, cls()(CONV))
    assert unseeded.get_config()["seed"] is None
    # clone keeps seeded values but re-draws an unseeded one
    np.testing.assert_array_equal(seeded.clone()(CONV), a)
    assert not np.array_equal(unseeded.clone()(CONV), b)


def test_seed_reproducible_across_processes():
    code = ("import numpy as np; from numbaconv.initializers import GlorotUniform\n"
            "print(repr(GlorotUniform(seed=7)((2, 3)).tolist()))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env,
                         capture_output=True, text=True).stdout
    assert eval(out) == I.GlorotUniform(seed=7)((2, 3)).tolist()


@pytest.mark.parametrize("name", RANDOM)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", np.float32, None])
def test_dtype_honoured(name, dtype):
    w = getattr(I, name)(seed=0)((4, 6), dtype)
    assert w.dtype == np.dtype(dtype or "float32")
    assert w.shape == (4, 6)


@pytest.mark.parametrize("name", RANDOM)
def test_random_rejects_integer_dtype(name):
    with pytest.raises(ValueError, match="floating"):
        getattr(I, name)(seed=0)((4, 6), "int32")


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        I.RandomNormal(seed="abc")
    with pytest.raises(ValueError, match="seed"):
        I.GlorotUniform(seed=1.5)


# --------------------------------------------------------------------------
# get / serialize / deserialize
ALL_CLASSES = ["Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform",
               "Identity", "Initializer", "LecunNormal", "LecunUniform", "Ones",
               "Orthogonal", "RandomNormal", "RandomUniform", "STFT",
               "TruncatedNormal", "VarianceScaling", "Zeros"]
ALIASES = {
    "constant": "Constant", "glorot_normal": "GlorotNormal", "glorot_uniform": "GlorotUniform",
    "he_normal": "HeNormal", "he_uniform": "HeUniform", "identity": "Identity",
    "IdentityInitializer": "Identity", "initializer": "Initializer",
    "lecun_normal": "LecunNormal", "lecun_uniform": "LecunUniform", "ones": "Ones",
    "one": "Ones", "orthogonal": "Orthogonal", "OrthogonalInitializer": "Orthogonal",
    "random_normal": "RandomNormal", "normal": "RandomNormal",
    "random_uniform": "RandomUniform", "uniform": "RandomUniform", "stft": "STFT",
    "STFTInitializer": "STFT", "truncated_normal": "TruncatedNormal",
    "variance_scaling": "VarianceScaling", "zeros": "Zeros", "zero": "Zeros",
}


@pytest.mark.parametrize("name", ALL_CLASSES + sorted(ALIASES))
def test_get_by_name(name):
    obj = I.get(name)
    assert type(obj).__name__ == ALIASES.get(name, name)
    assert isinstance(obj, I.Initializer)


def test_get_other_forms():
    assert I.get(None) is None
    inst = I.HeNormal(seed=3)
    assert I.get(inst) is inst
    assert isinstance(I.get(I.Zeros), I.Zeros)  # classes are instantiated

    def fn(shape, dtype=None):
        return np.full(shape, 3.0, dtype)

    assert I.get(fn) is fn
    new = I.get({"module": "keras.initializers", "class_name": "GlorotUniform",
                 "config": {"seed": 5}, "registered_name": None})
    assert isinstance(new, I.GlorotUniform) and new.seed == 5
    old = I.get({"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 2.0}})
    assert (old.mean, old.stddev) == (1.0, 2.0)
    assert isinstance(I.get({"class_name": "GlorotUniform", "config": {"seed": None}}),
                      I.GlorotUniform)
    arr = np.arange(6.0).reshape(2, 3)
    init = I.get(arr)
    np.testing.assert_array_equal(init((2, 3)), arr)
    assert init((2, 3), "float64").dtype == np.float64
    with pytest.raises(ValueError, match="Expected `shape`"):
        init((3, 2))


@pytest.mark.parametrize("bad", ["foo", "glorotuniform", 3, [1]])
def test_get_unknown(bad):
    with pytest.raises(ValueError, match="Could not interpret initializer identifier: "
                                         + re.escape(str(bad))):
        I.get(bad)


def test_get_unknown_dict():
    with pytest.raises(ValueError, match="Could not interpret initializer identifier"):
        I.get({"class_name": "Nope", "config": {}})


CONFIGS = [
    I.Zeros(), I.Ones(), I.Constant(3.0), I.Constant(np.float32(2.0)), I.Identity(),
    I.RandomNormal(1.0, 2.0, seed=3), I.RandomUniform(-2.0, 1.0), I.TruncatedNormal(stddev=0.3, seed=9),
    I.VarianceScaling(2.0, "fan_out", "uniform", seed=5), I.VarianceScaling(),
    I.VarianceScaling(input_axes=[0], output_axes=[1]),
    I.GlorotUniform(), I.GlorotUniform(seed=1), I.GlorotNormal(seed=2), I.HeUniform(),
    I.HeNormal(seed=4), I.LecunUniform(), I.LecunNormal(), I.Orthogonal(gain=2.0, seed=4),
    I.STFT("imag", "hamming", "spectrum", True), I.STFT(), I.Initializer(),
]


@pytest.mark.parametrize("obj", CONFIGS, ids=lambda o: repr(o))
def test_serialize_round_trip(obj):
    s = I.serialize(obj)
    assert set(s) == {"module", "class_name", "config", "registered_name"}
    assert s["class_name"] == type(obj).__name__ and s["registered_name"] is None
    back = I.deserialize(s)
    assert type(back) is type(obj) and back.get_config() == obj.get_config()
    assert type(I.get(s)) is type(obj)


def test_serialize_values():
    assert I.serialize(None) is None
    assert I.serialize(I.GlorotUniform()) == {
        "module": "keras.initializers", "class_name": "GlorotUniform",
        "config": {"seed": None, "input_axes": None, "output_axes": None},
        "registered_name": None}
    assert I.serialize(I.Constant(np.float32(2.0)))["config"] == {"value": 2.0}
    s = I.serialize(I.Constant(np.array([1.0, 2.0])))
    assert s["config"]["value"] == {"class_name": "__numpy__",
                                    "config": {"value": [1.0, 2.0], "dtype": "float64"}}
    np.testing.assert_array_equal(I.deserialize(s)((2,), "float64"), [1.0, 2.0])
    assert I.serialize(I.Initializer())["module"] == "keras"


# --------------------------------------------------------------------------
# Comparison with real Keras
def _keras_twin(keras, obj):
    """The Keras initializer with the same configuration (via Keras' own API)."""
    cls = getattr(keras.initializers, type(obj).__name__)
    cfg = obj.get_config()
    return cls(**cfg) if not isinstance(obj, I.Constant) else cls(cfg["value"])


def test_keras_accepted_names(keras):
    from keras.src.initializers import ALL_OBJECTS_DICT
    for name, cls in ALL_OBJECTS_DICT.items():
        assert type(I.get(name)).__name__ == cls.__name__
    assert set(ALL_OBJECTS_DICT) == set(ALL_CLASSES) | set(ALIASES)


@pytest.mark.parametrize("obj", CONFIGS, ids=lambda o: repr(o))
def test_keras_serialize_equal(keras, obj):
    kobj = _keras_twin(keras, obj)
    assert I.serialize(obj) == keras.initializers.serialize(kobj)
    # both directions of deserialization
    back = I.deserialize(keras.initializers.serialize(kobj))
    assert type(back) is type(obj) and back.get_config() == obj.get_config()
    kback = keras.initializers.deserialize(I.serialize(obj))
    assert keras.initializers.serialize(kback) == I.serialize(obj)


# keras.initializers.get("Constant") raises in Keras 3.15 (from_config needs
# "value"); ours returns Constant(0.0).
@pytest.mark.parametrize("name", [n for n in ALL_CLASSES + sorted(ALIASES)
                                  if n.lower() != "constant"])
def test_keras_get_by_name_serializes_equal(keras, name):
    assert I.serialize(I.get(name)) == keras.initializers.serialize(keras.initializers.get(name))


@pytest.mark.parametrize("name", RANDOM)
def test_keras_same_seed_semantics(keras, name):
    kcls, cls = getattr(keras.initializers, name), getattr(I, name)
    shape = (6, 4) if name == "Orthogonal" else BIG  # BIG: reuses JAX compiles
    for seed in (None, 5):
        k, o = kcls(seed=seed), cls(seed=seed)
        k_same = np.array_equal(np.asarray(k(shape)), np.asarray(k(shape)))
        assert k_same == np.array_equal(o(shape), o(shape))
        k_new = np.array_equal(np.asarray(k(shape)), np.asarray(kcls(seed=seed)(shape)))
        assert k_new == np.array_equal(o(shape), cls(seed=seed)(shape))


@pytest.mark.parametrize("name", [n for n in RANDOM if n != "Orthogonal"])
def test_keras_same_distribution(keras, name):
    # Different RNGs, same distribution: compare moments and, for bounded
    # distributions, the range.  (Orthogonal is checked for orthonormality.)
    k = np.asarray(getattr(keras.initializers, name)(seed=1)(BIG), dtype=np.float64)
    o = getattr(I, name)(seed=1)(BIG).astype(np.float64)
    assert abs(o.std() / k.std() - 1) < 0.03
    assert abs(o.mean() - k.mean()) < 0.03 * k.std()
    if name not in ("RandomNormal",):
        assert abs(np.abs(o).max() / np.abs(k).max() - 1) < 0.02


@pytest.mark.parametrize("obj,shape", [
    (I.Zeros(), (3, 4)), (I.Ones(), (3, 4)), (I.Constant(1.5), (2, 5)),
    (I.Identity(), (3, 5)), (I.Identity(gain=0.5), (4, 4)),
    (I.STFT(), (16, 1, 9)), (I.STFT("imag", "blackman", "spectrum", True), (16, 1, 9)),
])
def test_keras_deterministic_values(keras, obj, shape):
    kobj = _keras_twin(keras, obj)
    if isinstance(obj, I.Identity):
        kobj = keras.initializers.Identity(gain=obj.gain)
    with x64(keras):
        expected = np.asarray(kobj(shape, dtype="float64"))
    # Keras' STFT takes pi from ops.arccos, which returns float32 even for
    # float64 input in Keras 3.15, so its float64 kernel is float32-accurate.
    atol = 1e-6 if isinstance(obj, I.STFT) else 1e-12
    np.testing.assert_allclose(obj(shape, "float64"), expected, rtol=1e-6, atol=atol)
    expected32 = np.asarray(kobj(shape, dtype="float32"))
    got32 = obj(shape, "float32")
    assert got32.dtype == expected32.dtype
    np.testing.assert_allclose(got32, expected32, rtol=1e-5, atol=1e-6)
