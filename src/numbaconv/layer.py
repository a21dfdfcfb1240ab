"""``Conv2D``: the Keras 3 layer, with the Keras 2 / R keyword arguments on top.

The layer validates its arguments once in ``__init__`` (Keras's conditions and
messages), creates its weights in ``build``, and runs the shared
:func:`numbaconv.functional.convolve` with bias and activation fused.  Being
the repeated-use object, it asks the dispatcher for specialized kernels.
"""

from __future__ import annotations

import threading

import numpy as np

from . import activations, constraints, initializers, regularizers
from . import cuda as cuda_target
from ._registry import to_snake_case
from .cuda import run as cuda_run
from .functional import as_float_array, conv2d, convolve, resolve_device
from .functional import backward as functional_backward
from .spec import (
    ConvSpec,
    output_length,
    standardize_data_format,
    standardize_padding,
    standardize_tuple,
)
from .variables import Variable

__all__ = ["Conv2D", "Convolution2D"]

# Keras's dtype policies that NumPy can run.  "mixed_float16" keeps float32
# weights and computes (here: in float32, returned as float16) in float16.
_POLICIES = {
    "float16": ("float16", "float16"),
    "float32": ("float32", "float32"),
    "float64": ("float64", "float64"),
    "mixed_float16": ("float32", "float16"),
}


def _policy_name(dtype):
    """The policy name from a dtype string, NumPy dtype, Keras dict or policy object."""
    if dtype is None:
        return "float32"
    if isinstance(dtype, dict):  # {"class_name": "DTypePolicy", "config": {"name": ...}}
        name = dtype.get("config", {}).get("name")
    elif isinstance(dtype, str):
        name = dtype
    elif isinstance(getattr(dtype, "name", None), str):
        name = dtype.name  # np.dtype, keras.DTypePolicy
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name not in _POLICIES:
        raise ValueError(f"The `dtype` argument must be one of {sorted(_POLICIES)} (or a "
                         f"Keras DTypePolicy config naming one). Received: dtype={dtype!r}")
    return name


_name_counts = {}
_name_lock = threading.Lock()


def _unique_name(base):
    """Keras-style automatic names: ``conv2d``, ``conv2d_1``, ``conv2d_2``, ..."""
    with _name_lock:
        count = _name_counts.get(base, 0)
        _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def _penalty_gradient(regularizer, value):
    """``d regularizer(value) / d value``."""
    if not hasattr(regularizer, "gradient"):
        raise NotImplementedError(f"{type(regularizer).__name__} has no gradient(): it cannot "
                                  "be trained here")
    return np.asarray(regularizer.gradient(value), dtype=value.dtype)


def _weight_gradient(gradient, regularizer, value, dtype):
    """A weight's gradient in ``dtype``: the convolution's ``gradient`` (a fresh array, handed
    out as it is where it has the dtype) plus the regularizer's, if any."""
    if regularizer is not None:
        gradient = gradient + _penalty_gradient(regularizer, value)
    return gradient.astype(dtype, copy=False)


class Conv2D:
    """2D convolution layer, numerically and API-compatible with ``keras.layers.Conv2D``.

    Computes ``activation(conv2d(inputs, kernel) + bias)``.

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or (int, int)
    strides : int or (int, int), default (1, 1)
        ``strides > 1`` is incompatible with ``dilation_rate > 1`` (as in Keras).
    padding : {"valid", "same"}, default "valid"
        Case-insensitive; "same" follows TensorFlow's rule (odd pixel at the
        bottom/right).
    data_format : {"channels_last", "channels_first"}, optional
        Default: ``image_data_format`` from ``~/.keras/keras.json``, else
        ``"channels_last"``.
    dilation_rate : int or (int, int), default (1, 1)
    groups : int, default 1
        Input channels and ``filters`` must both be divisible by it.
    activation : str, dict or callable, optional
        Default ``None`` (linear).
    use_bias : bool, default True
    kernel_initializer, bias_initializer : str, dict, Initializer or callable
        Defaults ``"glorot_uniform"`` and ``"zeros"``.
    kernel_regularizer, bias_regularizer, activity_regularizer : optional
    kernel_constraint, bias_constraint : optional
    input_shape : tuple, optional
        Keras 2 / R: shape without the batch axis; builds the layer at once.
    batch_input_shape : tuple, optional
        Keras 2 / R: shape with the batch axis; builds the layer at once.
    batch_size : int, optional
        Keras 2 / R: batch size used with ``input_shape``.
    dtype : str or dict, optional
        Dtype policy: ``"float32"`` (default), ``"float64"``, ``"float16"``,
        ``"mixed_float16"``, or a Keras ``DTypePolicy`` config.
    name : str, optional
        Default: ``conv2d``, ``conv2d_1``, ...
    trainable : bool, default True
    weights : list of array_like, optional
        Keras 2 / R: initial ``[kernel, bias]`` (or ``[kernel]`` without bias),
        set when the layer is built.
    device : {None, "cpu", "cuda"}, default None
        numbaconv's own: where calls compute (see :func:`numbaconv.conv2d`).
        ``None`` follows the input (device arrays on the GPU).  On the GPU the
        weights stay resident between calls and are uploaded again only after
        they change.  Not part of :meth:`get_config` (a Keras config has no
        such key).

    Examples
    --------
    >>> import numpy as np
    >>> from numbaconv import Conv2D
    >>> x = np.random.rand(4, 10, 10, 128)
    >>> Conv2D(32, 3, activation="relu")(x).shape
    (4, 8, 8, 32)
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, *, input_shape=None,
                 batch_input_shape=None, batch_size=None, dtype=None, name=None,
                 trainable=True, weights=None, device=None, **kwargs):
        # Keras writes these into configs only when set; anything else is unknown.
        for key in ("lora_rank", "lora_alpha"):
            if kwargs.get(key) is not None:
                raise ValueError(f"LoRA is not supported by numbaconv. Received: {key}="
                                 f"{kwargs[key]!r}")
            kwargs.pop(key, None)
        kwargs.pop("autocast", None)
        if kwargs:
            raise ValueError(f"Unrecognized keyword arguments passed to "
                             f"{type(self).__name__}: {kwargs}")
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) \
                or filters <= 0:
            raise ValueError("Invalid value for argument `filters`. Expected a strictly "
                             f"positive value. Received filters={filters!r}.")
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups <= 0:
            raise ValueError("The number of groups must be a positive integer. "
                             f"Received: groups={groups!r}.")
        if filters % groups:
            raise ValueError("The number of filters must be evenly divisible by the number "
                             f"of groups. Received: groups={groups}, filters={filters}.")
        if not isinstance(trainable, bool):
            raise ValueError(f"Expected `trainable` to be a boolean. Received: trainable="
                             f"{trainable!r} (of type {type(trainable)})")
        if not isinstance(use_bias, (bool, np.bool_)):
            raise ValueError(f"Expected `use_bias` to be a boolean. Received: use_bias="
                             f"{use_bias!r}")
        self.filters = int(filters)
        self.groups = int(groups)
        self.kernel_size = standardize_tuple(kernel_size, 2, "kernel_size")
        self.strides = standardize_tuple(strides, 2, "strides")
        self.dilation_rate = standardize_tuple(dilation_rate, 2, "dilation_rate")
        self.padding = standardize_padding(padding)
        self.data_format = standardize_data_format(data_format)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError("`strides > 1` not supported in conjunction with "
                             f"`dilation_rate > 1`. Received: strides={self.strides} and "
                             f"dilation_rate={self.dilation_rate}")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(
            "glorot_uniform" if kernel_initializer is None else kernel_initializer)
        self.bias_initializer = initializers.get(
            "zeros" if bias_initializer is None else bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        if device not in cuda_target.DEVICES:
            raise ValueError(f"The `device` argument must be one of {cuda_target.DEVICES}. "
                             f"Received: device={device!r}")
        self.device = device
        self._policy = _policy_name(dtype)
        self.name = name if name is not None else _unique_name(to_snake_case(type(self).__name__))
        self._trainable = trainable
        self.built = False
        self._kernel = None
        self._build_shape = None
        self.bias = None
        self._initial_weights = weights
        self._activity_losses = []
        self._first_call = None
        self._tape = None  # what backward() needs, from the last training call
        #: Gradients of the loss w.r.t. ``trainable_weights``, set by :meth:`backward`.
        self.grads = []
        self._specs = {}
        self._weights_lock = threading.Lock()
        if batch_input_shape is None and input_shape is not None:
            batch_input_shape = (batch_size, *tuple(input_shape))
        if batch_input_shape is not None:
            self.build(batch_input_shape)

    def __getstate__(self):
        # Copies and pickles get a lock of their own, and host copies of
        # device arrays (the first call's input and output).
        state = self.__dict__.copy()
        state.pop("_weights_lock", None)
        if state.get("_first_call") is not None:
            state["_first_call"] = tuple(map(cuda_target.to_host, state["_first_call"]))
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._weights_lock = threading.Lock()

    # ----------------------------------------------------------------- dtypes
    @property
    def dtype_policy(self):
        """The policy name (``"float32"``, ``"mixed_float16"``, ...)."""
        return self._policy

    @property
    def variable_dtype(self):
        """Dtype of the weights."""
        return _POLICIES[self._policy][0]

    @property
    def compute_dtype(self):
        """Dtype of the outputs."""
        return _POLICIES[self._policy][1]

    @property
    def dtype(self):
        """Dtype of the weights (as ``keras.layers.Layer.dtype``)."""
        return self.variable_dtype

    # ---------------------------------------------------------------- weights
    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        if not isinstance(value, bool):
            raise ValueError(f"Expected `trainable` to be a boolean. Received: trainable="
                             f"{value!r}")
        self._trainable = value
        for variable in self.weights:
            variable.trainable = value

    @property
    def kernel(self):
        """The kernel :class:`~numbaconv.variables.Variable`, shape ``(kh, kw, in // groups, filters)``."""
        if not self.built:
            raise AttributeError("You must build the layer before accessing `kernel`.")
        return self._kernel

    @kernel.setter
    def kernel(self, value):
        self.kernel.assign(value)

    @property
    def weights(self):
        """``[kernel, bias]`` (``[kernel]`` without bias; ``[]`` before build)."""
        if not self.built:
            return []
        return [self._kernel] + ([self.bias] if self.use_bias else [])

    @property
    def trainable_weights(self):
        return self.weights if self.trainable else []

    @property
    def non_trainable_weights(self):
        return [] if self.trainable else self.weights

    @property
    def variables(self):
        return self.weights

    def get_weights(self):
        """Copies of the weights as NumPy arrays."""
        return [variable.numpy() for variable in self.weights]

    def set_weights(self, weights):
        """Set the weights from a list of arrays (``[kernel, bias]``).

        Raises
        ------
        ValueError
            Wrong number of arrays or a shape mismatch (Keras's messages).
        TypeError
            Non-numeric arrays.
        """
        layer_weights = self.weights
        weights = list(weights)
        if len(layer_weights) != len(weights):
            raise ValueError(f"You called `set_weights(weights)` on layer '{self.name}' with a "
                             f"weight list of length {len(weights)}, but the layer was "
                             f"expecting {len(layer_weights)} weights.")
        arrays = [as_float_array(value, "weights") for value in weights]
        for variable, value in zip(layer_weights, arrays):
            if variable.shape != value.shape:
                raise ValueError(f"Layer {self.name} weight shape {variable.shape} is not "
                                 f"compatible with provided weight shape {value.shape}.")
        with self._weights_lock:  # calls see all old or all new weights
            for variable, value in zip(layer_weights, arrays):
                variable.assign(value)

    def count_params(self):
        """Number of scalars in the weights."""
        if not self.built:
            raise ValueError(f"You tried to call `count_params` on layer '{self.name}', but "
                             "the layer isn't built. You can build it manually via: "
                             "`layer.build(input_shape)`.")
        return int(sum(variable.size for variable in self.weights))

    # ------------------------------------------------------------------ build
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _check_rank(self, shape):
        if len(shape) != 4:
            raise ValueError(f"Input 0 of layer '{self.name}' is incompatible with the layer: "
                             f"expected ndim=4, found ndim={len(shape)}. Full shape received: "
                             f"{tuple(shape)}")

    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (``None`` dims allowed but channels).

        Raises
        ------
        ValueError
            Wrong rank, undefined or indivisible channel count, or an output
            size <= 0.
        """
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        self._check_rank(input_shape)
        channels = input_shape[self._channel_axis()]
        if channels is None:
            raise ValueError("The channel dimension of the inputs should be defined. "
                             f"Received input_shape={input_shape}")
        if channels % self.groups:
            raise ValueError("The number of input channels must be evenly divisible by the "
                             f"number of groups. Received groups={self.groups}, but the input "
                             f"has {channels} channels (full input shape is {input_shape}).")
        self.compute_output_shape(input_shape)
        kernel_shape = (*self.kernel_size, channels // self.groups, self.filters)
        dtype = self.variable_dtype
        self._kernel = Variable(
            np.asarray(self.kernel_initializer(kernel_shape, dtype=dtype), dtype=dtype),
            "kernel", f"{self.name}/kernel", self.trainable, self.kernel_regularizer,
            self.kernel_constraint)
        if self.use_bias:
            self.bias = Variable(
                np.asarray(self.bias_initializer((self.filters,), dtype=dtype), dtype=dtype),
                "bias", f"{self.name}/bias", self.trainable, self.bias_regularizer,
                self.bias_constraint)
        self._input_channels = channels
        self._build_shape = input_shape
        self.built = True
        if self._initial_weights is not None:
            weights, self._initial_weights = self._initial_weights, None
            self.set_weights(weights)

    def compute_output_shape(self, input_shape):
        """Output shape for ``input_shape``; ``None`` dimensions stay ``None``.

        Raises
        ------
        ValueError
            Wrong rank, or a known output size <= 0.
        """
        input_shape = tuple(input_shape)
        self._check_rank(input_shape)
        spatial = input_shape[1:3] if self.data_format == "channels_last" else input_shape[2:]
        sizes = tuple(output_length(n, k, s, d, self.padding)
                      for n, k, s, d in zip(spatial, self.kernel_size, self.strides,
                                            self.dilation_rate))
        if any(n is not None and n <= 0 for n in sizes):
            raise ValueError(
                "Computed output size would be zero or negative. Received `inputs shape="
                f"{input_shape}`, `kernel shape={self.kernel_size}`, `dilation_rate="
                f"{self.dilation_rate}`, `strides={self.strides}`, `padding={self.padding}`.")
        if self.data_format == "channels_last":
            return (input_shape[0], *sizes, self.filters)
        return (input_shape[0], self.filters, *sizes)

    # ------------------------------------------------------------------- call
    def _prepare_inputs(self, inputs, on_device=False):
        """Autocast to the compute dtype, build if needed, check the channel count.

        With ``on_device``, ``inputs`` is a device array of a float dtype, used as is.
        """
        x = inputs if on_device else as_float_array(inputs, "inputs")
        shape = tuple(x.shape)  # a plain tuple, whatever the array library
        if not self.built:
            self.build(shape)
        self._check_rank(shape)
        axis = self._channel_axis()
        if shape[axis] != self._input_channels:
            raise ValueError(f"Input 0 of layer '{self.name}' is incompatible with the layer: "
                             f"expected axis {axis} of input shape to have value "
                             f"{self._input_channels}, but received input with shape "
                             f"{shape}")
        return x

    def _spec(self, input_shape):
        """The (memoized) spec for an input shape; the kernel's compute dtype is float32/64."""
        spec = self._specs.get(input_shape)
        if spec is None:
            compute = "float32" if self.compute_dtype == "float16" else self.compute_dtype
            spec = ConvSpec.from_arguments(input_shape, self._kernel.shape, self.strides,
                                           self.padding, self.data_format, self.dilation_rate,
                                           compute)
            if len(self._specs) > 64:
                self._specs.clear()
            self._specs[input_shape] = spec
        return spec

    def convolution_op(self, inputs, kernel):
        """The convolution alone (no bias, no activation), as Keras's ``convolution_op``."""
        return conv2d(inputs, kernel, strides=self.strides, padding=self.padding,
                      data_format=self.data_format, dilation_rate=self.dilation_rate)

    def call(self, inputs):
        """``activation(conv(inputs, kernel) + bias)`` in the compute dtype.

        On the GPU (``device``, or a device array with ``device=None``) the
        result is a Numba device array for device inputs, a NumPy array for
        host ones.
        """
        on_device = cuda_target.is_device_array(inputs)
        custom = type(self).convolution_op is not Conv2D.convolution_op
        if resolve_device(self.device, inputs) == "cuda" and not custom:
            return self._call_cuda(inputs, on_device)
        x = self._prepare_inputs(cuda_target.to_host(inputs))
        if custom:
            # A subclass changed the convolution: honour it, unfused.
            out = np.asarray(self.convolution_op(x, self.kernel.value))
            if self.use_bias:
                shape = (1, 1, 1, -1) if self.data_format == "channels_last" else (1, -1, 1, 1)
                out = out + self.bias.value.reshape(shape)
            out = self.activation(out)
        else:
            with self._weights_lock:  # a consistent pair against set_weights()
                kernel = self._kernel.snapshot()
                bias = self.bias.value if self.use_bias else None
            out = convolve(self._spec(x.shape), x, kernel, bias, self.activation, hot=True)
        return np.asarray(out).astype(self.compute_dtype, copy=False)

    def _call_cuda(self, inputs, on_device):
        if on_device and cuda_target.in_place(inputs):
            x = self._prepare_inputs(cuda_target.as_device_array(inputs), on_device=True)
        else:
            x = self._prepare_inputs(cuda_target.to_host(inputs))
        with self._weights_lock:  # a consistent pair against set_weights()
            kernel = self._kernel.snapshot()
            bias = self.bias.snapshot() if self.use_bias else None
        spec = self._spec(tuple(x.shape))
        out = cuda_run.convolve(spec, x, kernel, bias, self.activation)
        return cuda_run.deliver(out, self.compute_dtype, on_device)

    def _train_forward(self, inputs):
        """:meth:`call` on the CPU, keeping what :meth:`backward` needs."""
        if type(self).convolution_op is not Conv2D.convolution_op:
            raise NotImplementedError(f"{type(self).__name__} overrides convolution_op: its "
                                      "gradient is unknown, so it cannot be trained here")
        x = self._prepare_inputs(cuda_target.to_host(inputs))
        with self._weights_lock:
            kernel = self._kernel.snapshot()
            bias = self.bias.value if self.use_bias else None
        spec = self._spec(x.shape)
        z = convolve(spec, x, kernel, bias, activations.linear, hot=True)
        y = np.asarray(self.activation(z), dtype=z.dtype)
        self._tape = (spec, np.asarray(x, dtype=spec.dtype), kernel.value, bias, z, y)
        return y.astype(self.compute_dtype, copy=False)

    def backward(self, grad_output):
        """Back-propagate through the last ``layer(x, training=True)`` call.

        Sets :attr:`grads` to the gradients of the loss with respect to
        :attr:`trainable_weights` (kernel, bias), in that order: from the
        convolution, through the activation's derivative, plus the kernel and
        bias regularizers' gradients; the activity regularizer's gradient
        (divided by the batch size, as its loss is) is added to
        ``grad_output``.  A non-trainable layer sets ``grads = []``.

        Parameters
        ----------
        grad_output : array_like
            ``d loss / d output``, shaped like the output of that call.

        Returns
        -------
        numpy.ndarray
            ``d loss / d inputs``, shaped like the inputs of that call.

        Raises
        ------
        RuntimeError
            Without a previous call with ``training=True``.
        NotImplementedError
            For an activation or regularizer without a known derivative.
        """
        if self._tape is None:
            raise RuntimeError(f"{self.name}.backward() needs a call with training=True first")
        spec, x, kernel, bias, z, y = self._tape
        grad = as_float_array(grad_output, "grad_output")
        if grad.shape != y.shape:
            raise ValueError(f"The `grad_output` argument must have the output's shape "
                             f"{y.shape}. Received grad_output.shape={grad.shape}")
        grad = grad.astype(y.dtype, copy=False)
        if self.activity_regularizer is not None and y.shape[0]:
            grad = grad + _penalty_gradient(self.activity_regularizer, y) / y.shape[0]
        grad_z = activations.gradient(self.activation, z, y, grad)
        grad_x, grad_kernel, grad_bias = functional_backward(spec, x, kernel, grad_z)
        self.grads = []
        if self.trainable:
            dtype = np.dtype(self.variable_dtype)
            self.grads.append(_weight_gradient(grad_kernel, self.kernel_regularizer, kernel,
                                               dtype))
            if self.use_bias:
                self.grads.append(_weight_gradient(grad_bias, self.bias_regularizer, bias, dtype))
        return grad_x.astype(self.compute_dtype, copy=False)

    def __call__(self, inputs, training=None):
        """Build if needed, run :meth:`call`, record activity loss and the first input/output.

        ``training=True`` computes on the CPU and keeps the input and the
        pre-activation output for :meth:`backward`; otherwise the layer
        behaves the same either way.  A ``dask.array.Array`` input gives a
        lazy dask array (:mod:`numbaconv.dask_support`; not with ``training=True``).
        """
        if type(inputs).__module__.startswith("dask."):  # lazy, block by block (imports dask)
            from .dask_support import layer_call
            return layer_call(self, inputs, training)
        outputs = self._train_forward(inputs) if training else self.call(inputs)
        self._activity_losses = []
        if self.activity_regularizer is not None:
            loss = self.activity_regularizer(cuda_target.to_host(outputs))
            batch = outputs.shape[0]  # Keras divides by the batch size (0 -> 0)
            self._activity_losses.append(loss / batch if batch else loss * 0)
        if self._first_call is None:
            self._first_call = (inputs, outputs)
        return outputs

    @property
    def losses(self):
        """Activity loss of the last call, then the trainable weights' regularization."""
        losses = list(self._activity_losses)
        for variable in self.trainable_weights:
            if variable.regularizer is not None:
                losses.append(variable.regularizer(variable.value))
        return losses

    @property
    def input(self):
        """The input of the layer's first call."""
        if self._first_call is None:
            raise AttributeError(f"The layer {self.name} has never been called and thus has "
                                 "no defined input.")
        return self._first_call[0]

    @property
    def output(self):
        """The output of the layer's first call."""
        if self._first_call is None:
            raise AttributeError(f"The layer {self.name} has never been called and thus has "
                                 "no defined output.")
        return self._first_call[1]

    # ----------------------------------------------------------------- config
    def get_config(self):
        """The constructor arguments, in exactly Keras 3's keys and value forms."""
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": {"module": "keras", "class_name": "DTypePolicy",
                      "config": {"name": self._policy}, "registered_name": None},
        }
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = None  # Keras's key order; value set below
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
        })
        return config

    @classmethod
    def from_config(cls, config):
        """A new layer from :meth:`get_config` output (ours, Keras 3's or tf.keras 2's)."""
        return cls(**config)

    # ---------------------------------------------------------- Keras interop
    # Implemented in numbaconv.interop, imported on use: Keras and h5py are optional.
    @classmethod
    def from_keras(cls, keras_layer):
        """A layer with a ``keras.layers.Conv2D``'s config and (if built) weights.

        See :func:`numbaconv.interop.layer_from_keras` (Keras-only config keys:
        LoRA merged into the kernel, quantized layers refused, others dropped
        with a warning).
        """
        from .interop import layer_from_keras
        return layer_from_keras(cls, keras_layer)

    def to_keras(self):
        """A ``keras.layers.Conv2D`` with this config and (if built) these weights.

        See :func:`numbaconv.interop.layer_to_keras`; needs Keras 3.
        """
        from .interop import layer_to_keras
        return layer_to_keras(self)

    def save_weights(self, filepath, overwrite=True):
        """Write the weights to a Keras 3 ``.weights.h5`` file (needs h5py).

        See :func:`numbaconv.interop.save_weights`.
        """
        from .interop import save_weights
        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, key=None):
        """Set the weights from a Keras 3 ``.weights.h5`` or ``.keras`` file (needs h5py).

        See :func:`numbaconv.interop.load_weights` (``key`` picks a layer in a
        model's file; an unbuilt layer is built from the stored kernel).
        """
        from .interop import load_weights
        load_weights(self, filepath, key=key)

    def __repr__(self):
        return (f"<{type(self).__name__} name={self.name}, filters={self.filters}, "
                f"kernel_size={self.kernel_size}, strides={self.strides}, "
                f"padding={self.padding!r}, dilation_rate={self.dilation_rate}, "
                f"groups={self.groups}, data_format={self.data_format!r}, "
                f"activation={activations.serialize(self.activation)!r}, built={self.built}>")


#: Keras 2 alias.
Convolution2D = Conv2D
