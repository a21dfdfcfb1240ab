"""Keras interop: ``Conv2D.from_keras`` / ``to_keras`` and ``.weights.h5`` files.

Tests that need real Keras take the ``keras`` fixture (skipped without it);
file tests need h5py (skipped without it); the error paths for a missing
Keras or h5py run everywhere.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
from keras_support import x64

from numbaconv import Conv2D, interop, r_style

# Keras Conv2D arguments covering the geometry, the layouts, bias and activation.
CONFIGS = {
    "valid": {"filters": 4, "kernel_size": 3},
    "same_strided": {"filters": 6, "kernel_size": (3, 2), "strides": 2, "padding": "same"},
    "valid_strided_odd": {"filters": 3, "kernel_size": 5, "strides": (2, 3)},
    "dilated_same_relu": {"filters": 4, "kernel_size": 3, "dilation_rate": (2, 3),
                          "padding": "same", "activation": "relu"},
    "groups_tanh": {"filters": 6, "kernel_size": 3, "groups": 3, "activation": "tanh"},
    "channels_first_same": {"filters": 5, "kernel_size": 3, "padding": "same",
                            "data_format": "channels_first"},
    "channels_first_groups_nobias": {"filters": 4, "kernel_size": (1, 3), "groups": 2,
                                     "data_format": "channels_first", "use_bias": False},
    "nobias_sigmoid": {"filters": 4, "kernel_size": 2, "use_bias": False,
                       "activation": "sigmoid"},
    "softmax_same_strided": {"filters": 7, "kernel_size": 4, "strides": 3, "padding": "same",
                             "activation": "softmax"},
}


def _input(config, dtype="float32", seed=0):
    shape = (2, 6, 11, 13) if config.get("data_format") == "channels_first" else (2, 11, 13, 6)
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _randomize(layer, seed=1):
    """Random kernel and (non-zero) bias, so both are checked."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype(np.asarray(w).dtype)
                       for w in layer.get_weights()])


def _assert_same_weights(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- from/to Keras
def _assert_same_outputs(got, want):
    """rtol 1e-6; in float32 also an atol of 1e-6 x the output scale (summation order).

    Dtypes are checked by the callers: Keras 3.15's tanh returns float32 for
    float64 inputs.
    """
    got, want = np.asarray(got), np.asarray(want)
    single = np.float32 in (got.dtype, want.dtype)
    atol = 1e-6 * np.abs(want).max() if single else 1e-12
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CONFIGS)
def test_from_keras_same_outputs(keras, name, dtype):
    config = {**CONFIGS[name], "dtype": dtype}
    x = _input(config, dtype)
    with x64(keras):
        keras_layer = keras.layers.Conv2D(**config)
        keras_layer.build(x.shape)
        _randomize(keras_layer)
        want = np.asarray(keras_layer(x))
    layer = Conv2D.from_keras(keras_layer)
    assert layer.built
    _assert_same_weights(layer.get_weights(), keras_layer.get_weights())
    assert layer.get_config() == keras_layer.get_config()
    assert layer(x).dtype == dtype
    _assert_same_outputs(layer(x), want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CONFIGS)
def test_to_keras_same_outputs(keras, name, dtype):
    config = {**CONFIGS[name], "dtype": dtype}
    x = _input(config, dtype, seed=2)
    layer = Conv2D(**config)
    layer.build(x.shape)
    _randomize(layer, seed=3)
    with x64(keras):
        keras_layer = layer.to_keras()
        assert isinstance(keras_layer, keras.layers.Conv2D) and keras_layer.built
        _assert_same_weights(keras_layer.get_weights(), layer.get_weights())
        assert keras_layer.get_config() == layer.get_config()
        _assert_same_outputs(np.asarray(keras_layer(x)), layer(x))
        # ... and back: from_keras(to_keras(layer)) is the same layer.
        again = Conv2D.from_keras(keras_layer)
    _assert_same_weights(again.get_weights(), layer.get_weights())
    np.testing.assert_array_equal(again(x), layer(x))


def test_keras_input_shape_free_after_from_keras(keras):
    # The copy is built for the channel count only, like a Keras layer built on None dims.
    keras_layer = keras.layers.Conv2D(3, 3, padding="same")
    keras_layer.build((None, None, None, 2))
    layer = Conv2D.from_keras(keras_layer)
    for size in (5, 9):
        x = np.ones((1, size, size + 1, 2), "float32")
        _assert_same_outputs(layer(x), np.asarray(keras_layer(x)))


def test_unbuilt_layers_carry_config_only(keras):
    keras_layer = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="unbuilt_k")
    layer = Conv2D.from_keras(keras_layer)
    assert not layer.built and layer.get_config() == keras_layer.get_config()
    back = Conv2D(5, 2, padding="same", use_bias=False, name="unbuilt_n").to_keras()
    assert not back.built
    assert back.get_config() == Conv2D.from_config(back.get_config()).get_config()
    assert back.name == "unbuilt_n" and back.filters == 5 and not back.use_bias


def test_from_keras_carries_initializers_regularizers_and_dtype(keras):
    keras_layer = keras.layers.Conv2D(
        4, 3, kernel_initializer=keras.initializers.HeNormal(seed=3), bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.1), activity_regularizer="l1",
        kernel_constraint=keras.constraints.NonNeg(), dtype="mixed_float16", trainable=False)
    layer = Conv2D.from_keras(keras_layer)
    assert layer.get_config() == keras_layer.get_config()
    assert layer.dtype_policy == "mixed_float16" and not layer.trainable
    assert layer.to_keras().get_config() == keras_layer.get_config()


def test_from_keras_merges_lora(keras):
    x = _input(CONFIGS["valid"], seed=6)
    keras_layer = keras.layers.Conv2D(4, 3)
    keras_layer.build(x.shape)
    keras_layer.enable_lora(2)
    keras_layer.lora_kernel_b.assign(np.random.default_rng(7).standard_normal((2, 4)))
    want = np.asarray(keras_layer(x))
    layer = Conv2D.from_keras(keras_layer)
    assert "lora_rank" not in layer.get_config()
    _assert_same_outputs(layer(x), want)
    # Keras saves the merged kernel too: the two copies agree.
    np.testing.assert_allclose(layer.kernel.numpy(), np.asarray(keras_layer.kernel), rtol=1e-7)


def test_from_keras_drops_unknown_config_keys_with_a_warning(keras):
    class FutureConv2D(keras.layers.Conv2D):
        def get_config(self):
            return {**super().get_config(), "future_option": 1}

    with pytest.warns(UserWarning, match="future_option"):
        layer = Conv2D.from_keras(FutureConv2D(4, 3))
    assert layer.filters == 4


def test_from_keras_rejects_other_layers(keras):
    for other in (keras.layers.Conv2DTranspose(2, 3), keras.layers.Conv1D(2, 3),
                  keras.layers.DepthwiseConv2D(3), "conv2d"):
        with pytest.raises(TypeError, match="keras_layer"):
            Conv2D.from_keras(other)
    with pytest.raises(ValueError, match="dtype"):
        Conv2D.from_keras(keras.layers.Conv2D(2, 3, dtype="bfloat16"))


def test_from_keras_rejects_non_keras_objects():
    with pytest.raises(TypeError, match="keras_layer=.*object"):
        Conv2D.from_keras(object())


def test_to_keras_without_keras(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # makes `import keras` fail
    with pytest.raises(ImportError, match="pip install keras"):
        Conv2D(2, 3).to_keras()


def test_to_keras_refuses_what_keras_cannot_express(keras):
    with pytest.raises(ValueError, match="Keras cannot rebuild"):
        Conv2D(2, 3, activation=lambda x: x * 2).to_keras()


def test_modules_import_without_keras_and_h5py(monkeypatch):
    # Re-running the new modules with both imports failing: neither is needed at import
    # time (Conv2D's interop methods import numbaconv.interop only when called).
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.setitem(sys.modules, "h5py", None)
    for module in (interop, r_style):
        importlib.reload(module)
    assert r_style.layer_conv_2d(None, 2, 3).get_config()["filters"] == 2


# ------------------------------------------------------------------ .weights.h5
@pytest.fixture
def h5py():
    return pytest.importorskip("h5py")


def _built(config=None, seed=8, **kwargs):
    layer = Conv2D(**(config or CONFIGS["same_strided"]), **kwargs)
    layer.build(_input(layer.get_config()).shape)
    _randomize(layer, seed)
    return layer


def test_save_writes_keras_layout(h5py, tmp_path):
    path = tmp_path / "layer.weights.h5"
    layer = _built(name="mine")
    layer.save_weights(path)
    with h5py.File(path, "r") as file:
        assert list(file) == ["vars"] and dict(file.attrs) == {}
        assert file["vars"].attrs["name"] == "mine"
        assert sorted(file["vars"]) == ["0", "1"]
        _assert_same_weights([file["vars/0"][()], file["vars/1"][()]], layer.get_weights())
    nobias = _built(CONFIGS["nobias_sigmoid"])
    nobias.save_weights(str(path))  # overwrites, as Keras does by default
    with h5py.File(path, "r") as file:
        assert sorted(file["vars"]) == ["0"]


@pytest.mark.parametrize("name", ["same_strided", "channels_first_groups_nobias"])
def test_save_load_round_trip(h5py, tmp_path, name):
    path = tmp_path / "w.weights.h5"
    layer = _built(CONFIGS[name])
    layer.save_weights(path)
    built = Conv2D(**CONFIGS[name])
    built.build(layer._build_shape)
    built.load_weights(path)
    unbuilt = Conv2D(**CONFIGS[name])
    unbuilt.load_weights(os.fspath(path))  # built from the stored kernel
    x = _input(CONFIGS[name], seed=9)
    for other in (built, unbuilt):
        _assert_same_weights(other.get_weights(), layer.get_weights())
        np.testing.assert_array_equal(other(x), layer(x))


def test_load_float64_file_into_float32_layer(h5py, tmp_path):
    path = tmp_path / "w.weights.h5"
    layer = _built(dtype="float64")
    layer.save_weights(path)
    other = Conv2D(**CONFIGS["same_strided"])
    other.load_weights(path)
    assert other.kernel.dtype == np.float32
    np.testing.assert_array_equal(other.kernel.numpy(), layer.kernel.numpy().astype("float32"))


def _write_model_file(h5py, path, kernels, names=None):
    """A file in Keras's model layout: layers/<group>/vars/{0,1}, root vars empty."""
    with h5py.File(path, "w") as file:
        file.create_group("vars").attrs["name"] = "sequential"
        for index, kernel in enumerate(kernels):
            group = file.create_group(f"layers/conv2d{f'_{index}' if index else ''}/vars")
            if names:
                group.attrs["name"] = names[index]
            group["0"] = kernel
            group["1"] = np.full(kernel.shape[3], index + 1, kernel.dtype)
        file.create_group("layers/flatten/vars").attrs["name"] = "flatten"


def test_load_from_model_layout(h5py, tmp_path):
    rng = np.random.default_rng(10)
    kernels = [rng.standard_normal((3, 3, 2, 4)).astype("float32"),
               rng.standard_normal((3, 3, 4, 4)).astype("float32")]
    path = tmp_path / "model.weights.h5"
    _write_model_file(h5py, path, kernels, names=["first", "second"])
    by_name = Conv2D(4, 3, name="second")
    by_name.load_weights(path)
    np.testing.assert_array_equal(by_name.kernel.numpy(), kernels[1])
    np.testing.assert_array_equal(by_name.bias.numpy(), np.full(4, 2, "float32"))
    for key in ("layers/conv2d", "/layers/conv2d/vars"):
        by_key = Conv2D(4, 3)
        by_key.load_weights(path, key=key)
        np.testing.assert_array_equal(by_key.kernel.numpy(), kernels[0])
    with pytest.raises(ValueError, match="several Conv2D layers.*key="):
        Conv2D(4, 3, name="third").load_weights(path)
    with pytest.raises(ValueError, match="no Conv2D weights at key='layers/dense'"):
        Conv2D(4, 3).load_weights(path, key="layers/dense")
    with pytest.raises(TypeError, match="key"):
        Conv2D(4, 3).load_weights(path, key=1)
    # Older Keras writes no names: a file with a single Conv2D is unambiguous.
    _write_model_file(h5py, path, kernels[:1])
    lone = Conv2D(4, 3, name="anything")
    lone.load_weights(path)
    np.testing.assert_array_equal(lone.kernel.numpy(), kernels[0])


def test_load_bfloat16_dataset(h5py, tmp_path):
    # Keras writes bfloat16 as 2-byte opaque data tagged dtype="bfloat16".
    values = np.array([0.5, -1.25, 3.0, 0.0, 2.0 ** -3, -7.5], "float32")
    kernel = np.resize(values, (1, 1, 2, 3))
    bits = (kernel.view(np.uint32) >> 16).astype(np.uint16)
    path = tmp_path / "bf16.weights.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("vars/0", data=bits.view("V2")).attrs["dtype"] = "bfloat16"
    layer = Conv2D(3, 1, use_bias=False)
    layer.load_weights(path)
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)


def test_save_errors(h5py, tmp_path):
    layer = _built()
    with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`.*w\.h5"):
        layer.save_weights(tmp_path / "w.h5")
    with pytest.raises(ValueError, match="not built"):
        Conv2D(2, 3).save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match="does not exist"):
        layer.save_weights(tmp_path / "missing" / "w.weights.h5")
    (tmp_path / "dir.weights.h5").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        layer.save_weights(tmp_path / "dir.weights.h5")
    layer.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match="overwrite=False"):
        layer.save_weights(tmp_path / "w.weights.h5", overwrite=False)
    with pytest.raises(TypeError, match="filepath=3"):
        layer.save_weights(3)


def test_load_errors(h5py, tmp_path):
    path = tmp_path / "w.weights.h5"
    _built().save_weights(path)  # filters 6, kernel (3, 2), with bias
    with pytest.raises(ValueError, match="no such file"):
        Conv2D(6, (3, 2)).load_weights(tmp_path / "nothing.weights.h5")
    (tmp_path / "text.weights.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        Conv2D(6, (3, 2)).load_weights(tmp_path / "text.weights.h5")
    with pytest.raises(ValueError, match=r"expects 1 variable\(s\) \(kernel\).*\['0', '1'\]"):
        Conv2D(6, (3, 2), use_bias=False).load_weights(path)
    with pytest.raises(ValueError, match=r"kernel of shape \(3, 3, '\?', 6\).*\(3, 2, 6, 6\)"):
        Conv2D(6, 3).load_weights(path)
    with pytest.raises(ValueError, match=r"kernel of shape \(3, 2, '\?', 4\)"):
        Conv2D(4, (3, 2)).load_weights(path)
    built = Conv2D(6, (3, 2))
    built.build((None, 5, 5, 12))  # 12 input channels, the file has 6
    with pytest.raises(ValueError, match=r"kernel has shape \(3, 2, 12, 6\).*\(3, 2, 6, 6\)"):
        built.load_weights(path)
    with h5py.File(tmp_path / "empty.weights.h5", "w") as file:
        file.create_group("layers/dense/vars")["0"] = np.ones((2, 3))
    with pytest.raises(ValueError, match="holds no Conv2D weights"):
        Conv2D(2, 3).load_weights(tmp_path / "empty.weights.h5")


def test_missing_h5py_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    layer = Conv2D(2, 1)
    layer.build((1, 3, 3, 1))
    with pytest.raises(ImportError, match="pip install h5py"):
        layer.save_weights(tmp_path / "w.weights.h5")
    (tmp_path / "w.weights.h5").write_bytes(b"")
    with pytest.raises(ImportError, match="pip install h5py"):
        layer.load_weights(tmp_path / "w.weights.h5")


# ------------------------------------------------- .weights.h5 against real Keras
def test_keras_layer_file_loads_here(keras, h5py, tmp_path):
    config = CONFIGS["dilated_same_relu"]
    x = _input(config, seed=11)
    keras_layer = keras.layers.Conv2D(**config)
    keras_layer.build(x.shape)
    _randomize(keras_layer, seed=12)
    path = tmp_path / "k.weights.h5"
    keras.saving.save_weights(keras_layer, path)
    layer = Conv2D(**config)  # unbuilt: built from the file
    layer.load_weights(path)
    _assert_same_weights(layer.get_weights(), keras_layer.get_weights())
    _assert_same_outputs(layer(x), np.asarray(keras_layer(x)))


@pytest.mark.parametrize("name", ["groups_tanh", "nobias_sigmoid", "channels_first_same"])
def test_file_written_here_loads_in_keras(keras, h5py, tmp_path, name):
    config = CONFIGS[name]
    x = _input(config, seed=13)
    layer = _built(config, seed=14)
    path = tmp_path / "n.weights.h5"
    layer.save_weights(path)
    keras_layer = keras.layers.Conv2D(**config)
    keras_layer.build(x.shape)
    keras.saving.load_weights(keras_layer, path)
    _assert_same_weights(keras_layer.get_weights(), layer.get_weights())
    _assert_same_outputs(np.asarray(keras_layer(x)), layer(x))


def test_keras_model_files_load_here(keras, h5py, tmp_path):
    x = _input(CONFIGS["valid"], seed=15)
    model = keras.Sequential([keras.Input(x.shape[1:]),
                              keras.layers.Conv2D(4, 3, name="a"),
                              keras.layers.Conv2D(2, 3, name="b", activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    for keras_layer in model.layers[:2]:
        _randomize(keras_layer, seed=16)
    model.save_weights(tmp_path / "m.weights.h5")
    model.save(tmp_path / "m.keras")
    for path in (tmp_path / "m.weights.h5", tmp_path / "m.keras"):
        b = Conv2D(2, 3, name="b", activation="relu")
        b.load_weights(path)  # found by the name Keras records
        _assert_same_weights(b.get_weights(), model.layers[1].get_weights())
        first = Conv2D(4, 3)
        first.load_weights(path, key="layers/conv2d")  # by the group Keras names
        _assert_same_weights(first.get_weights(), model.layers[0].get_weights())
        hidden = np.asarray(model.layers[0](x))
        _assert_same_outputs(b(first(x)), np.asarray(model.layers[1](hidden)))


def test_keras_bfloat16_file_loads_here(keras, h5py, tmp_path):
    keras_layer = keras.layers.Conv2D(3, 2, dtype="bfloat16")
    keras_layer.build((None, 4, 4, 2))
    _randomize(keras_layer, seed=17)
    keras.saving.save_weights(keras_layer, tmp_path / "bf.weights.h5")
    layer = Conv2D(3, 2)
    layer.load_weights(tmp_path / "bf.weights.h5")
    want = [np.asarray(w).astype("float32") for w in keras_layer.get_weights()]
    _assert_same_weights(layer.get_weights(), want)


def test_interop_module_exports():
    assert set(interop.__all__) == {"layer_from_keras", "layer_to_keras", "load_weights",
                                    "save_weights"}
