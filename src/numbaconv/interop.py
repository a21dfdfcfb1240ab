"""Keras interop: layers to and from ``keras.layers.Conv2D``, weights in ``.weights.h5`` files.

Keras and h5py are optional: each is imported by the function that needs it,
never when numbaconv is imported.  :class:`numbaconv.Conv2D` exposes these
functions as ``Conv2D.from_keras``, ``to_keras``, ``save_weights`` and
``load_weights``.

Keras 3's ``.weights.h5`` layout, as written by Keras 3.15 and read with h5py
(``keras.saving.save_weights(layer, path)`` for a lone layer,
``model.save_weights(path)`` for a model)::

    lone layer                          Sequential([Input, Conv2D(name="a"), Conv2D(name="b")])
    vars            attrs name="myconv" layers                 (group, no attrs)
    vars/0          kernel (kh,kw,c,f)  layers/conv2d/vars     attrs name="a"
    vars/1          bias (f,), if any   layers/conv2d/vars/0   kernel;  .../vars/1 bias
                                        layers/conv2d_1/vars   attrs name="b"; 0, 1 as above
                                        vars                   attrs name="sequential", empty

Datasets hold the variables in their own dtype (bfloat16 as 2-byte opaque
data with the attribute ``dtype="bfloat16"``); the file has no root
attributes.  A model's groups are named after the layer *class*, numbered in
order (``conv2d``, ``conv2d_1``, ...), not after the layers' names, which
newer Keras versions record in the ``name`` attribute of ``vars`` (older
ones write no attributes).  Nested models nest the same way
(``layers/functional/layers/conv2d/vars``); empty ``vars`` groups mark
layers without weights.
"""

from __future__ import annotations

import inspect
import io
import os
import warnings
import zipfile

import numpy as np

__all__ = ["layer_from_keras", "layer_to_keras", "load_weights", "save_weights"]

# LoRA settings: numbaconv has no LoRA, so a LoRA layer's kernel is merged.
_LORA_KEYS = ("lora_rank", "lora_alpha")


# ---------------------------------------------------------------- optional imports
def _import_h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError("Reading and writing .weights.h5 files needs h5py, which is not "
                          "installed: pip install h5py (or pip install numbaconv[h5])") from err
    return h5py


def _import_keras():
    try:
        import keras
    except ImportError as err:
        raise ImportError("to_keras() needs Keras 3, which is not importable: pip install "
                          f"keras (and a backend, e.g. jax) ({err})") from err
    return keras


# ------------------------------------------------------------------------ layers
def _check_keras_conv2d(keras_layer):
    """TypeError unless ``keras_layer`` is a Keras ``Conv2D`` (not a transposed one)."""
    names = [klass.__name__ for klass in type(keras_layer).__mro__]
    # tf.keras 2's Conv2DTranspose subclasses Conv2D but computes something else.
    if "Conv2D" not in names or any("Transpose" in name for name in names) \
            or not hasattr(keras_layer, "get_config"):
        raise TypeError("The `keras_layer` argument must be a keras.layers.Conv2D. "
                        f"Received: keras_layer={keras_layer!r} (of type "
                        f"{type(keras_layer).__name__})")


def _keras_weights(keras_layer):
    """``[kernel, bias]`` (or ``[kernel]``) of a built Keras layer, LoRA merged, as NumPy."""
    if not getattr(keras_layer, "lora_enabled", False):
        return [np.asarray(value) for value in keras_layer.get_weights()]
    # Keras's `kernel` property: kernel + (alpha / rank) * lora_a @ lora_b, in the
    # compute dtype; done in NumPy so that no backend tensor has to be converted.
    kernel = np.asarray(keras_layer._kernel.numpy())
    lora_a = np.asarray(keras_layer.lora_kernel_a.numpy())
    lora_b = np.asarray(keras_layer.lora_kernel_b.numpy())
    scale = np.float32(keras_layer.lora_alpha / keras_layer.lora_rank)
    merged = (kernel + scale * np.matmul(lora_a, lora_b)).astype(keras_layer.compute_dtype)
    weights = [merged]
    if keras_layer.use_bias:
        weights.append(np.asarray(keras_layer.bias.numpy()))
    return weights


def _input_shape(data_format, channels):
    """A build shape with only the channel count known."""
    if data_format == "channels_last":
        return (None, None, None, channels)
    return (None, channels, None, None)


def layer_from_keras(cls, keras_layer):
    """A numbaconv layer with the config (and, if built, the weights) of a Keras ``Conv2D``.

    Parameters
    ----------
    cls : type
        :class:`numbaconv.Conv2D` or a subclass.
    keras_layer : keras.layers.Conv2D
        Keras 3 (any backend) or tf.keras 2.

    Returns
    -------
    Conv2D
        Built with the Keras layer's input channel count (any spatial size)
        when the Keras layer is built, its weights copied; unbuilt otherwise.

    Raises
    ------
    TypeError
        ``keras_layer`` is not a Keras ``Conv2D``.
    ValueError
        A quantized Keras layer, or a config value numbaconv cannot run (a
        ``bfloat16`` dtype policy, an unknown activation, ...).

    Notes
    -----
    Keras-only config keys are handled this way:

    * ``lora_rank`` / ``lora_alpha`` (LoRA enabled): numbaconv has no LoRA, so
      the low-rank update is merged into the kernel, exactly as Keras merges
      it when it computes or saves; the copy is a plain layer with the same
      outputs.  Its trainable kernel is the merged one.
    * quantized layers (``quantization_mode`` set) are refused.
    * ``autocast`` and the Keras 2 ``input_shape`` family are accepted by
      :class:`~numbaconv.Conv2D` itself.
    * any other key the constructor does not take (a newer Keras's) is
      dropped with a ``UserWarning`` naming it, rather than failing; the
      output comparison in the tests guards the keys Keras has today.
    """
    _check_keras_conv2d(keras_layer)
    mode = getattr(keras_layer, "quantization_mode", None)
    if mode is not None:
        raise ValueError(f"Quantized Keras layers are not supported by numbaconv. Received a "
                         f"layer with quantization_mode={mode!r}")
    config = dict(keras_layer.get_config())
    for key in _LORA_KEYS:
        config.pop(key, None)
    known = {name for name, parameter in inspect.signature(cls.__init__).parameters.items()
             if parameter.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = [key for key in config if key not in known and key != "autocast"]
    if unknown:
        warnings.warn(f"Keras config keys that numbaconv does not have were dropped: "
                      f"{ {key: config[key] for key in unknown} }", UserWarning, stacklevel=3)
        for key in unknown:
            del config[key]
    layer = cls.from_config(config)
    if keras_layer.built:
        weights = _keras_weights(keras_layer)
        layer.build(_input_shape(layer.data_format, weights[0].shape[2] * layer.groups))
        layer.set_weights(weights)
    return layer


def layer_to_keras(layer):
    """A ``keras.layers.Conv2D`` with the config (and, if built, the weights) of ``layer``.

    Parameters
    ----------
    layer : numbaconv.Conv2D

    Returns
    -------
    keras.layers.Conv2D
        Built for the same input shape (batch size left free) with copies of
        the weights when ``layer`` is built; unbuilt otherwise.  numbaconv's
        ``device`` setting has no Keras counterpart and is not carried.

    Raises
    ------
    ImportError
        Keras is not importable (Keras 3 needs ``KERAS_BACKEND`` naming an
        installed backend).
    ValueError
        Keras cannot rebuild the layer from its config (a custom activation
        or initializer Keras does not know).
    """
    keras = _import_keras()
    try:
        keras_layer = keras.layers.Conv2D.from_config(layer.get_config())
    except (TypeError, ValueError) as err:
        raise ValueError(f"Keras cannot rebuild layer '{layer.name}' from its config: "
                         f"{err}") from err
    if layer.built:
        keras_layer.build((None, *layer._build_shape[1:]))
        keras_layer.set_weights(layer.get_weights())
    return keras_layer


# ----------------------------------------------------------------------- weights
_SUFFIX = ".weights.h5"


def _path(filepath):
    """``filepath`` as a string, or a TypeError naming it."""
    if isinstance(filepath, bytes) or not isinstance(filepath, (str, os.PathLike)):
        raise TypeError("The `filepath` argument must be a str or os.PathLike. Received: "
                        f"filepath={filepath!r} (of type {type(filepath).__name__})")
    return os.fspath(filepath)


def save_weights(layer, filepath, overwrite=True):
    """Write ``layer``'s weights to a Keras 3 ``.weights.h5`` file (the lone-layer layout).

    Parameters
    ----------
    layer : numbaconv.Conv2D
        Built.
    filepath : str or os.PathLike
        Must end in ``.weights.h5`` (as Keras requires).
    overwrite : bool, default True
        ``False`` refuses to replace an existing file.

    Raises
    ------
    ImportError
        h5py is not installed.
    ValueError
        Unbuilt layer, wrong suffix, missing directory, a directory at
        ``filepath``, or an existing file with ``overwrite=False``.
    """
    path = _path(filepath)
    if not path.endswith(_SUFFIX):
        raise ValueError(f"The filename must end in `{_SUFFIX}`. Received: filepath={path!r}")
    if not layer.built:
        raise ValueError(f"Layer '{layer.name}' is not built, so it has no weights to save. "
                         "Build it first (`layer.build(input_shape)` or call it on data).")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"Cannot write {path!r}: the directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"Cannot write {path!r}: it is a directory")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path!r} exists and overwrite=False")
    h5py = _import_h5py()
    with h5py.File(path, "w") as file:
        group = file.create_group("vars")
        group.attrs["name"] = layer.name
        for index, value in enumerate(layer.get_weights()):
            group.create_dataset(str(index), data=value)


def _read_dataset(dataset):
    value = dataset[()]
    if dataset.attrs.get("dtype") == "bfloat16":
        # Keras stores bfloat16 as opaque 2-byte data; its bits are a float32's top half.
        value = (np.asarray(value).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(value)


def _conv_groups(h5py, file):
    """Every ``vars`` group of ``file`` holding a rank-4 ``0`` dataset (a kernel), by path."""
    found = {}

    def visit(name, node):
        if name.rsplit("/", 1)[-1] == "vars" and isinstance(node, h5py.Group):
            kernel = node.get("0")
            if isinstance(kernel, h5py.Dataset) and kernel.ndim == 4:
                found[name] = node

    file.visititems(visit)
    return found


def _select_group(h5py, file, layer, key, path):
    """The ``vars`` group to load: ``key``'s, the lone layer's, or the one unambiguous match."""
    groups = _conv_groups(h5py, file)
    if key is not None:
        if not isinstance(key, str):
            raise TypeError(f"The `key` argument must be a str. Received: key={key!r}")
        name = key.strip("/")
        name = name if name.endswith("vars") else f"{name}/vars"
        if name not in groups:
            raise ValueError(f"{path!r} has no Conv2D weights at key={key!r}. Found: "
                             f"{sorted(groups) or 'none'}")
        return groups[name]
    if "vars" in groups:  # the lone-layer layout
        return groups["vars"]
    named = [g for g in groups if groups[g].attrs.get("name") == layer.name]
    if len(named) == 1:
        return groups[named[0]]
    if len(groups) == 1:
        return next(iter(groups.values()))
    if not groups:
        raise ValueError(f"{path!r} holds no Conv2D weights in Keras 3's .weights.h5 layout "
                         "(no `vars` group with a 4-D kernel)")
    listing = {g: groups[g].attrs.get("name") for g in sorted(groups)}
    raise ValueError(f"{path!r} holds the weights of several Conv2D layers ({listing}) and "
                     f"none is named '{layer.name}': pass key=<one of those group paths>")


def _open(h5py, path):
    """The HDF5 file at ``path`` (inside it, for a ``.keras`` archive), read-only."""
    if zipfile.is_zipfile(path):  # a .keras archive keeps its weights in model.weights.h5
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise ValueError(f"{path!r} is a zip archive without model.weights.h5")
            return h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path!r} is not an HDF5 file")
    return h5py.File(path, "r")


def load_weights(layer, filepath, key=None):
    """Set ``layer``'s weights from a Keras 3 ``.weights.h5`` file (or ``.keras`` archive).

    Parameters
    ----------
    layer : numbaconv.Conv2D
        If unbuilt, it is built for the input channel count the stored kernel
        implies (any spatial size).
    filepath : str or os.PathLike
        A lone layer's file (ours, or ``keras.saving.save_weights(layer,
        ...)``), or a model's (``model.save_weights(...)``).
    key : str, optional
        In a model's file, the group holding the layer's weights, e.g.
        ``"layers/conv2d_1"`` (see the module docstring).  Default: the lone
        layer's group; else the group whose ``name`` attribute is the layer's
        name; else the file's only Conv2D group.

    Raises
    ------
    ImportError
        h5py is not installed.
    ValueError
        Missing or non-HDF5 file, no (or no unambiguous) Conv2D group, a
        variable count or shape that does not match the layer.
    """
    path = _path(filepath)
    if not os.path.isfile(path):
        raise ValueError(f"Cannot read weights from {path!r}: no such file")
    h5py = _import_h5py()
    with _open(h5py, path) as file:
        group = _select_group(h5py, file, layer, key, path)
        where = f"{path!r} (group {group.name!r})"
        count = 2 if layer.use_bias else 1
        stored = sorted(group.keys())
        if stored != [str(i) for i in range(count)]:
            raise ValueError(f"Layer '{layer.name}' expects {count} variable(s) "
                             f"({'kernel, bias' if layer.use_bias else 'kernel'}), but "
                             f"{where} holds {stored}")
        arrays = [_read_dataset(group[str(i)]) for i in range(count)]
    kernel = arrays[0]
    expected = (*layer.kernel_size, "?", layer.filters)
    if kernel.shape[:2] != layer.kernel_size or kernel.shape[3] != layer.filters:
        raise ValueError(f"Layer '{layer.name}' expects a kernel of shape {expected}, but "
                         f"{where} holds one of shape {kernel.shape}")
    if not layer.built:
        layer.build(_input_shape(layer.data_format, kernel.shape[2] * layer.groups))
    for variable, value in zip(layer.weights, arrays):
        if variable.shape != value.shape:
            raise ValueError(f"Layer '{layer.name}' {variable.name} has shape "
                             f"{variable.shape}, but {where} holds shape {value.shape}")
    layer.set_weights(arrays)
