"""The NVIDIA GPU target, through the ``numba-cuda`` package (extra ``cuda``).

Nothing here imports ``numba.cuda`` until a CUDA call needs it, so importing
numbaconv never requires CUDA.  Without a GPU, ``NUMBA_ENABLE_CUDASIM=1``
(set before Numba is first imported) runs the same kernels in Numba's CUDA
simulator, which is how the test suite exercises them.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["available", "require", "is_device_array", "as_device_array", "in_place",
           "to_host", "DEVICES"]

#: Accepted values of the ``device`` arguments.
DEVICES = (None, "cpu", "cuda")


def _numba_cuda():
    """``numba.cuda``, or ``None`` when the package is not installed."""
    try:
        from numba import cuda
    except ImportError:
        return None
    return cuda


def _missing():
    """Why CUDA cannot run here, or ``None`` when it can."""
    cuda = _numba_cuda()
    if cuda is None:
        return ("the numba-cuda package is not installed (pip install 'numbaconv[cuda]'; "
                "Numba's built-in CUDA target is deprecated)")
    try:
        if cuda.is_available():
            return None
    except Exception as error:  # noqa: BLE001 - a broken driver reports itself here
        return f"numba.cuda could not initialize the CUDA driver ({error})"
    return ("no usable CUDA GPU or driver was found (numba.cuda.is_available() is False; "
            "set NUMBA_ENABLE_CUDASIM=1 before importing numba to use the simulator)")


def available():
    """Whether CUDA kernels can run here (a GPU and driver, or Numba's simulator)."""
    return _missing() is None


def require():
    """``numba.cuda``, or a ``RuntimeError`` naming what is missing."""
    reason = _missing()
    if reason is not None:
        raise RuntimeError(f"device='cuda' cannot run: {reason}.")
    return _numba_cuda()


def _is_simulated(x):
    cuda = sys.modules.get("numba.cuda")
    if cuda is None or not hasattr(cuda, "simulator"):
        return False
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    return isinstance(x, FakeCUDAArray)


def is_device_array(x):
    """Whether ``x`` lives in GPU memory: ``__cuda_array_interface__`` (Numba, CuPy, PyTorch
    CUDA tensors) or a device array of Numba's simulator."""
    if type(x) is np.ndarray:  # the usual case, answered at once (~1 µs a call saved)
        return False
    return hasattr(x, "__cuda_array_interface__") or _is_simulated(x)


def as_device_array(x):
    """``x`` as a Numba device array, without copying (it must be :func:`is_device_array`)."""
    if _is_simulated(x):
        return x
    cuda = require()
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    if isinstance(x, DeviceNDArray):
        return x  # already Numba's: wrapping it again costs ~20 us per call
    return cuda.as_cuda_array(x)


def in_place(x):
    """Whether device array ``x`` has a dtype the kernels compute in (float32, float64).

    Others (float16) go through the host; so do non-contiguous arrays (see
    :func:`numbaconv.cuda.run.convolve`).
    """
    return np.dtype(x.dtype) in (np.float32, np.float64)


def to_host(value):
    """A device array's contents as a NumPy array; anything else unchanged."""
    if is_device_array(value):
        return as_device_array(value).copy_to_host()
    return value
