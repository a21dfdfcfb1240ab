"""numbaconv: Keras's ``Conv2D`` — its numbers, its API — compiled with Numba.

>>> import numpy as np, numbaconv
>>> numbaconv.Conv2D(32, 3, activation="relu")(np.random.rand(4, 10, 10, 128)).shape
(4, 8, 8, 32)
"""

from . import (
    activations,
    constraints,
    initializers,
    interop,
    r_style,
    regularizers,
    training,
)
from .cache import clear_kernel_cache, kernel_cache_info
from .dispatch import get_specialization, set_specialization
from .functional import conv2d, conv2d_backward
from .layer import Conv2D, Convolution2D
from .r_style import layer_conv_2d
from .spec import ConvSpec
from .training import Sequential
from .warmup import warmup

__version__ = "0.1.0"

__all__ = [
    "Conv2D",
    "ConvSpec",
    "Convolution2D",
    "Sequential",
    "activations",
    "clear_kernel_cache",
    "constraints",
    "conv2d",
    "conv2d_backward",
    "get_specialization",
    "initializers",
    "interop",
    "kernel_cache_info",
    "layer_conv_2d",
    "r_style",
    "regularizers",
    "set_specialization",
    "training",
    "warmup",
]
