"""Keras 3 weight initializers producing NumPy arrays.

Classes and names match ``keras.initializers`` (Keras 3.15): ``Zeros``,
``Ones``, ``Constant``, ``Identity``, ``STFT``, ``RandomNormal``,
``RandomUniform``, ``TruncatedNormal``, ``VarianceScaling``, ``GlorotUniform``,
``GlorotNormal``, ``HeUniform``, ``HeNormal``, ``LecunUniform``,
``LecunNormal``, ``Orthogonal``, plus every string alias ``keras.initializers
.get`` accepts (``"glorot_uniform"``, ``"zeros"``, ``"zero"``, ``"normal"``,
``"uniform"``, ``"IdentityInitializer"``, ``"OrthogonalInitializer"``, ...).

Fans follow Keras' ``compute_fans``: rank 0 -> (1, 1), rank 1 -> (n, n),
rank 2 -> (rows, cols), rank >= 3 (convolution kernels ``(..., in, out)``)
-> ``(shape[-2] * rf, shape[-1] * rf)`` with ``rf`` the product of the leading
(spatial) dimensions.  For a grouped ``Conv2D`` kernel
``(kh, kw, in_channels // groups, filters)`` this gives Keras' fans exactly.

Randomness
----------
Distributions, parameters (including the truncation at two standard
deviations and VarianceScaling's ``0.87962566103423978`` correction) and seed
semantics are those of Keras, but the random *values* differ: they come from
NumPy's PCG64 generator, not JAX/TensorFlow/PyTorch RNGs, so no library can
reproduce Keras' exact numbers.  Seed semantics match Keras 3:

* ``seed=<int>``: every call (and every instance, in any process) with the
  same seed, shape and dtype returns identical values.
* ``seed=None``: a random seed is drawn when the initializer is created;
  repeated calls of that instance return identical values, a new instance
  returns new values (``get_config()`` still reports ``seed=None``).

Values are drawn in float64 and cast to the requested dtype, so float32 and
float64 results of one seed agree up to rounding.
"""

import math
import numbers

import numpy as np

from ._registry import Serializable, make_registry

__all__ = [
    "Initializer", "Zeros", "Ones", "Constant", "Identity", "STFT",
    "RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling",
    "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
    "LecunNormal", "Orthogonal", "compute_fans", "get", "serialize",
    "deserialize",
    # snake_case function-style aliases exported by Keras
    "zeros", "ones", "constant", "identity", "stft", "random_normal",
    "random_uniform", "truncated_normal", "variance_scaling", "glorot_uniform",
    "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
    "lecun_normal", "orthogonal",
]


def _dtype(dtype):
    # Keras' default float type ("floatx") is float32.
    return np.dtype("float32" if dtype is None else dtype)


def _shape(shape):
    if isinstance(shape, numbers.Integral):
        return (int(shape),)
    return tuple(int(d) for d in shape)


def _float_dtype(dtype):
    dtype = _dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError("Random initializers only produce floating-point "
                         f"arrays. Received: dtype={dtype}")
    return dtype


def compute_fans(shape, input_axes=None, output_axes=None):
    """Compute ``(fan_in, fan_out)`` for a weight shape, as Keras does.

    Parameters
    ----------
    shape : tuple of int
        Weight shape.  For convolution kernels the layout is
        ``(*spatial, input_depth, output_depth)``.
    input_axes, output_axes : sequence of int, optional
        When both are given, the fans are the products of those dimensions.

    Returns
    -------
    tuple of int
        ``(fan_in, fan_out)``.
    """
    shape = _shape(shape)
    if input_axes is not None and output_axes is not None:
        return (int(math.prod(shape[a] for a in input_axes)),
                int(math.prod(shape[a] for a in output_axes)))
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])  # 1 for matrices
    return shape[-2] * receptive_field, shape[-1] * receptive_field


class Initializer(Serializable):
    """Base class: ``__call__(shape, dtype)`` returns a new NumPy array.

    Subclasses implement ``__call__`` and, if they take arguments,
    ``get_config``.
    """

    def __call__(self, shape, dtype="float32"):
        """Return an array of the given shape and dtype.

        Parameters
        ----------
        shape : tuple of int
            Output shape.
        dtype : str or numpy.dtype, optional
            Output dtype (None means float32). Default float32.

        Returns
        -------
        numpy.ndarray
            The initial values.
        """
        raise NotImplementedError(
            "Initializer subclasses must implement the `__call__()` method.")

    def clone(self):
        """Return a new initializer with the same configuration.

        Returns
        -------
        Initializer
            ``type(self).from_config(self.get_config())``.
        """
        return type(self).from_config(self.get_config())


class Zeros(Initializer):
    """Initializer producing zeros (any dtype)."""

    def __call__(self, shape, dtype="float32"):
        """Return ``numpy.zeros(shape, dtype)``; see :meth:`Initializer.__call__`."""
        return np.zeros(_shape(shape), _dtype(dtype))


class Ones(Initializer):
    """Initializer producing ones (any dtype)."""

    def __call__(self, shape, dtype="float32"):
        """Return ``numpy.ones(shape, dtype)``; see :meth:`Initializer.__call__`."""
        return np.ones(_shape(shape), _dtype(dtype))


class Constant(Initializer):
    """Initializer filling the array with a constant.

    Parameters
    ----------
    value : scalar, optional
        Fill value (broadcast against ``shape``). Default 0.
    """

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype="float32"):
        """Return ``value`` broadcast to ``shape``; see :meth:`Initializer.__call__`."""
        dtype = _dtype(dtype)
        return np.asarray(self.value, dtype) * np.ones(_shape(shape), dtype)

    def get_config(self):
        """Return ``{"value": value}``."""
        return {"value": self.value}


class Identity(Initializer):
    """Initializer producing ``gain`` times the identity matrix (2-D only).

    Parameters
    ----------
    gain : float, optional
        Multiplier. Default 1.
    """

    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype="float32"):
        """Return ``gain * eye(*shape)``; see :meth:`Initializer.__call__`.

        Raises
        ------
        ValueError
            If ``shape`` is not 2-D.
        """
        shape = _shape(shape)
        if len(shape) != 2:
            raise ValueError(
                "Identity matrix initializer can only be used for 2D matrices. "
                f"Received: shape={shape} of rank {len(shape)}.")
        dtype = _dtype(dtype)
        return (self.gain * np.eye(*shape, dtype=dtype)).astype(dtype)

    def get_config(self):
        """Return ``{}`` for the default gain, as Keras, else ``{"gain": gain}``.

        Keras 3 does not serialize ``gain`` at all (so a non-default gain is
        lost there); emitting it only when it differs keeps the default config
        identical to Keras' and non-default configs lossless.
        """
        return {} if self.gain == 1.0 else {"gain": self.gain}


def _window(name, n, periodic):
    # NumPy versions of the common scipy.signal windows; a periodic window is
    # the symmetric window of length n + 1 without its last sample.
    funcs = {"hann": np.hanning, "hamming": np.hamming,
             "blackman": np.blackman, "bartlett": np.bartlett,
             "boxcar": np.ones}
    if name not in funcs:
        raise ValueError(f"Unsupported STFT window {name!r}; supported: "
                         f"{sorted(funcs)}, an array or None.")
    if n == 1:
        return np.ones(1)
    return funcs[name](n + 1)[:-1] if periodic else funcs[name](n)


class STFT(Initializer):
    """Convolution kernel computing one side of a short-time Fourier transform.

    Parameters
    ----------
    side : {"real", "imag"}, optional
        Whether the kernel yields the real (cosine) or imaginary (sine) part.
    window : str or array_like or None, optional
        ``"hann"`` (default), ``"hamming"``, ``"blackman"``, ``"bartlett"``,
        ``"boxcar"``, explicit window values, or None.  (Keras accepts any
        ``scipy.signal`` window name; only these are implemented here.)
    scaling : {"density", "spectrum", None}, optional
        Divide by the window's L2 norm ("density") or L1 norm ("spectrum").
    periodic : bool, optional
        Use the periodic (DFT-even) window. Default False.
    """

    def __init__(self, side="real", window="hann", scaling="density",
                 periodic=False):
        if side not in ("real", "imag"):
            raise ValueError(f"side should be 'real' or 'imag', not {side}")
        if isinstance(window, str):
            _window(window, 1, periodic)  # validate the name early, as Keras
        if scaling is not None and scaling not in ("density", "spectrum"):
            raise ValueError("Scaling is invalid, it must be `None`, 'density' "
                             f"or 'spectrum'. Received scaling={scaling}")
        self.side, self.window = side, window
        self.scaling, self.periodic = scaling, periodic

    def __call__(self, shape, dtype="float32"):
        """Return the kernel for ``shape = (frame_length, channels, fft_bins)``.

        Parameters
        ----------
        shape : tuple of int
            ``(T, C, F // 2 + 1)``; the kernel is the same for every channel.
        dtype : str or numpy.dtype, optional
            Output dtype. Default float32.

        Returns
        -------
        numpy.ndarray
            ``cos`` or ``sin`` of ``-2 pi t f / F``, times window / scaling.
        """
        frame_length, _, fft_bins = shape = _shape(shape)
        time = np.arange(frame_length, dtype=np.float64).reshape(-1, 1, 1)
        freq = np.arange(fft_bins, dtype=np.float64).reshape(1, 1, -1)
        args = -2 * time * freq / ((fft_bins - 1) * 2) * np.pi
        kernel = np.cos(args) if self.side == "real" else np.sin(args)
        if self.window is not None:
            win = (_window(self.window, frame_length, self.periodic)
                   if isinstance(self.window, str)
                   else np.asarray(self.window, np.float64))
            if win.shape != (frame_length,):
                raise ValueError(
                    "The shape of `window` must be equal to [frame_length]."
                    f"Received: window shape={win.shape}")
            scale = {"density": lambda w: np.sqrt(np.sum(w ** 2)),
                     "spectrum": lambda w: np.sum(np.abs(w)),
                     None: lambda w: 1.0}[self.scaling](win)
            kernel = kernel * win.reshape(-1, 1, 1) / scale
        return np.broadcast_to(kernel, shape).astype(_dtype(dtype))

    def get_config(self):
        """Return ``side``, ``window``, ``periodic`` and ``scaling``."""
        return {"side": self.side, "window": self.window,
                "periodic": self.periodic, "scaling": self.scaling}


class _RandomInitializer(Initializer):
    """Shared seed handling (see the module docstring for the semantics)."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, numbers.Integral)):
            raise ValueError("`seed` argument should be an integer or None. "
                             f"Received: seed={seed}")
        self.seed = None if seed is None else int(seed)
        # Unseeded: fix a random seed now, as Keras draws one at construction.
        self._seed = (np.random.SeedSequence().entropy if seed is None
                      else self.seed % (1 << 64))

    def _rng(self):
        # A fresh generator per call makes repeated calls identical.
        return np.random.default_rng(self._seed)

    def get_config(self):
        """Return ``{"seed": seed}`` (None when unseeded)."""
        return {"seed": self.seed}


def _truncated_standard_normal(rng, shape):
    # Standard normal restricted to [-2, 2] by resampling the rejects, i.e. the
    # same distribution as Keras' truncated_normal (truncation at 2 stddev).
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out


class _NormalInitializer(_RandomInitializer):
    """Base of the normal-distribution initializers: ``sample * stddev + mean``."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = mean, stddev
        super().__init__(seed)

    def _standard_sample(self, rng, shape):
        raise NotImplementedError

    def __call__(self, shape, dtype="float32"):
        """Return samples; see :meth:`Initializer.__call__`."""
        dtype = _float_dtype(dtype)
        sample = self._standard_sample(self._rng(), _shape(shape))
        return (sample * self.stddev + self.mean).astype(dtype)

    def get_config(self):
        """Return ``seed``, ``mean`` and ``stddev``."""
        return {**super().get_config(), "mean": self.mean,
                "stddev": self.stddev}


class RandomNormal(_NormalInitializer):
    """Normal distribution ``N(mean, stddev**2)``.

    Parameters
    ----------
    mean : float, optional
        Default 0.
    stddev : float, optional
        Default 0.05.
    seed : int or None, optional
        See the module docstring.
    """

    def _standard_sample(self, rng, shape):
        return rng.standard_normal(shape)


class TruncatedNormal(_NormalInitializer):
    """Normal distribution truncated to ``mean +- 2 * stddev`` (as Keras).

    Parameters
    ----------
    mean : float, optional
        Default 0.
    stddev : float, optional
        Standard deviation *before* truncation. Default 0.05.
    seed : int or None, optional
        See the module docstring.
    """

    def _standard_sample(self, rng, shape):
        return _truncated_standard_normal(rng, shape)


class RandomUniform(_RandomInitializer):
    """Uniform distribution on ``[minval, maxval)``.

    Parameters
    ----------
    minval : float, optional
        Default -0.05.
    maxval : float, optional
        Default 0.05.
    seed : int or None, optional
        See the module docstring.
    """

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval = minval, maxval
        super().__init__(seed)

    def __call__(self, shape, dtype="float32"):
        """Return samples; see :meth:`Initializer.__call__`."""
        dtype = _float_dtype(dtype)
        sample = self._rng().uniform(self.minval, self.maxval, _shape(shape))
        return sample.astype(dtype)

    def get_config(self):
        """Return ``seed``, ``minval`` and ``maxval``."""
        return {**super().get_config(), "minval": self.minval,
                "maxval": self.maxval}


class VarianceScaling(_RandomInitializer):
    """Samples with variance ``scale / n``, ``n`` a fan chosen by ``mode``.

    Parameters
    ----------
    scale : float, optional
        Positive scaling factor. Default 1.
    mode : {"fan_in", "fan_out", "fan_avg"}, optional
        ``n`` is fan_in, fan_out or their mean (each at least 1).
    distribution : {"truncated_normal", "untruncated_normal", "uniform"}, optional
        ``"normal"`` is accepted as ``"truncated_normal"``.  Truncated normal
        uses stddev ``sqrt(scale / n) / 0.87962566103423978`` (the stddev of a
        standard normal truncated at +-2) so the *truncated* variance is
        ``scale / n``; uniform uses limits ``+-sqrt(3 * scale / n)``.
    seed : int or None, optional
        See the module docstring.
    input_axes, output_axes : sequence of int, optional
        Override the fan computation (see :func:`compute_fans`).
    """

    def __init__(self, scale=1.0, mode="fan_in",
                 distribution="truncated_normal", seed=None, input_axes=None,
                 output_axes=None):
        if scale <= 0.0:
            raise ValueError("Argument `scale` must be positive float. "
                             f"Received: scale={scale}")
        modes = {"fan_in", "fan_out", "fan_avg"}
        if mode not in modes:
            raise ValueError(f"Invalid `mode` argument: {mode}. "
                             f"Please use one of {modes}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        distributions = {"uniform", "truncated_normal", "untruncated_normal"}
        if distribution not in distributions:
            raise ValueError(f"Invalid `distribution` argument: {distribution}."
                             f"Please use one of {distributions}")
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.input_axes, self.output_axes = input_axes, output_axes
        super().__init__(seed)

    def __call__(self, shape, dtype="float32"):
        """Return samples; see :meth:`Initializer.__call__`."""
        dtype = _float_dtype(dtype)
        shape = _shape(shape)
        fan_in, fan_out = compute_fans(shape, self.input_axes,
                                       self.output_axes)
        n = {"fan_in": fan_in, "fan_out": fan_out,
             "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(scale) / 0.87962566103423978
            sample = _truncated_standard_normal(rng, shape) * stddev
        elif self.distribution == "untruncated_normal":
            sample = rng.standard_normal(shape) * math.sqrt(scale)
        else:
            limit = math.sqrt(3.0 * scale)
            sample = rng.uniform(-limit, limit, shape)
        return sample.astype(dtype)

    def get_config(self):
        """Return ``seed``, ``scale``, ``mode``, ``distribution`` and the axes."""
        return {**super().get_config(), "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution,
                "input_axes": self.input_axes, "output_axes": self.output_axes}


def _preset(name, scale, mode, distribution, doc):
    # Glorot/He/Lecun are VarianceScaling with fixed parameters; like Keras
    # their config only holds the seed and the axes.
    def __init__(self, seed=None, input_axes=None, output_axes=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed,
                                 input_axes, output_axes)

    def get_config(self):
        """Return ``seed``, ``input_axes`` and ``output_axes``."""
        return {"seed": self.seed, "input_axes": self.input_axes,
                "output_axes": self.output_axes}

    doc += f"""

    Equivalent to ``VarianceScaling(scale={scale}, mode="{mode}",
    distribution="{distribution}")``.

    Parameters
    ----------
    seed : int or None, optional
        See the module docstring.
    input_axes, output_axes : sequence of int, optional
        Override the fan computation (see :func:`compute_fans`).
    """
    return type(name, (VarianceScaling,), {
        "__init__": __init__, "get_config": get_config, "__doc__": doc,
        "__module__": __name__, "__qualname__": name})


GlorotUniform = _preset(
    "GlorotUniform", 1.0, "fan_avg", "uniform",
    "Glorot (Xavier) uniform: limits ``+-sqrt(6 / (fan_in + fan_out))``.")
GlorotNormal = _preset(
    "GlorotNormal", 1.0, "fan_avg", "truncated_normal",
    "Glorot (Xavier) truncated normal with variance ``2 / (fan_in + fan_out)``.")
HeUniform = _preset(
    "HeUniform", 2.0, "fan_in", "uniform",
    "He uniform: limits ``+-sqrt(6 / fan_in)``.")
HeNormal = _preset(
    "HeNormal", 2.0, "fan_in", "truncated_normal",
    "He truncated normal with variance ``2 / fan_in``.")
LecunUniform = _preset(
    "LecunUniform", 1.0, "fan_in", "uniform",
    "LeCun uniform: limits ``+-sqrt(3 / fan_in)``.")
LecunNormal = _preset(
    "LecunNormal", 1.0, "fan_in", "truncated_normal",
    "LeCun truncated normal with variance ``1 / fan_in``.")


class Orthogonal(_RandomInitializer):
    """Random orthogonal matrix (QR of a Gaussian matrix), times ``gain``.

    The shape is flattened to ``(prod(shape[:-1]), shape[-1])``; the result
    has orthonormal columns if there are more rows than columns, orthonormal
    rows otherwise.

    Parameters
    ----------
    gain : float, optional
        Multiplier. Default 1.
    seed : int or None, optional
        See the module docstring.
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = gain
        super().__init__(seed)

    def __call__(self, shape, dtype="float32"):
        """Return the orthogonal array; see :meth:`Initializer.__call__`.

        Raises
        ------
        ValueError
            If ``shape`` has rank below 2.
        """
        dtype = _float_dtype(dtype)
        shape = _shape(shape)
        if len(shape) < 2:
            raise ValueError("The tensor to initialize must be "
                             "at least two-dimensional. Received: "
                             f"shape={shape} of rank {len(shape)}.")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = self._rng().standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))  # makes the distribution uniform (Haar)
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dtype)

    def get_config(self):
        """Return ``seed`` and ``gain``."""
        return {**super().get_config(), "gain": self.gain}


def _array_initializer(identifier):
    # Keras' get() turns an array into an initializer returning that array.
    if not isinstance(identifier, (np.ndarray, np.generic)):
        return None
    value = np.asarray(identifier)

    def initialize_fn(shape, dtype=None):
        if _shape(shape) != value.shape:
            raise ValueError(f"Expected `shape` to be {value.shape} for direct "
                             f"tensor as initializer. Received shape={shape}")
        return value.astype(_dtype(dtype))

    return initialize_fn


_REGISTRY = make_registry("initializer", "keras.initializers",
                          coerce=_array_initializer)
_REGISTRY.add(Initializer, snake_case=True, module="keras")
for _cls in (Constant, Ones, Zeros, GlorotNormal, GlorotUniform,
             HeNormal, HeUniform, LecunNormal, LecunUniform, RandomNormal,
             RandomUniform, TruncatedNormal, VarianceScaling):
    _REGISTRY.add(_cls, snake_case=True)
_REGISTRY.add(Identity, "IdentityInitializer", snake_case=True)
_REGISTRY.add(Orthogonal, "OrthogonalInitializer", snake_case=True)
_REGISTRY.add(STFT, "STFTInitializer", snake_case=True)
_REGISTRY.add(RandomNormal, "normal")
_REGISTRY.add(RandomUniform, "uniform")
_REGISTRY.add(Ones, "one")
_REGISTRY.add(Zeros, "zero")

# Keras also exports the classes under lowercase names.
zeros, ones, constant, identity, stft = Zeros, Ones, Constant, Identity, STFT
random_normal, random_uniform = RandomNormal, RandomUniform
truncated_normal, variance_scaling = TruncatedNormal, VarianceScaling
glorot_uniform, glorot_normal = GlorotUniform, GlorotNormal
he_uniform, he_normal = HeUniform, HeNormal
lecun_uniform, lecun_normal = LecunUniform, LecunNormal
orthogonal = Orthogonal


def get(identifier):
    """Resolve an initializer identifier like ``keras.initializers.get``.

    Parameters
    ----------
    identifier : None, str, dict, class, numpy.ndarray or callable
        None gives None; a name (``"glorot_uniform"``, ``"GlorotUniform"``,
        ...) or a class gives a new default instance; a serialized dict is
        deserialized; an array gives a function returning that array (for the
        same shape); any other callable is returned unchanged.

    Returns
    -------
    callable or None
        The initializer.

    Raises
    ------
    ValueError
        ``"Could not interpret initializer identifier: ..."``.
    """
    return _REGISTRY.get(identifier)


def serialize(initializer):
    """Serialize like ``keras.initializers.serialize``.

    Parameters
    ----------
    initializer : Initializer or None
        Object to serialize.

    Returns
    -------
    dict or None
        ``{"module": "keras.initializers", "class_name": ..., "config": ...,
        "registered_name": None}``; None for None.
    """
    return _REGISTRY.serialize(initializer)


def deserialize(config, custom_objects=None):
    """Build an initializer from a name or a (Keras-)serialized dict.

    Parameters
    ----------
    config : str or dict
        Name, Keras 3 dict or legacy ``{"class_name", "config"}`` dict.
    custom_objects : dict, optional
        Extra ``name -> class`` entries.

    Returns
    -------
    Initializer
        A new instance.
    """
    return _REGISTRY.deserialize(config, custom_objects)
