"""numbaconv's standard layer suite under airspeed velocity.

Shapes come from :data:`numbaconv.bench.SUITE` (the side-by-side benchmark's
suite) at batch 1, in both layouts.  ``setup`` builds the layer and compiles
its kernel, so ``time_*`` and ``peakmem_*`` measure steady-state calls
(forward, and the backward of a training call);
``timeraw_first_call`` measures a fresh process's first call (import,
compile or disk-cache load included).
"""

import time

import numpy as np

import numbaconv
from numbaconv.bench import SUITE

CASES = {case.name: case for case in SUITE if case.data_format == "channels_last"}


def _layer(case, data_format):
    return numbaconv.Conv2D(case.filters, case.kernel, strides=case.strides, padding="same",
                            dilation_rate=case.dilation, groups=case.groups,
                            data_format=data_format)


class Conv2DForward:
    params = (list(CASES), ["channels_last", "channels_first"])
    param_names = ["layer", "data_format"]
    timeout = 300

    def setup(self, name, data_format):
        case = CASES[name]
        shape = (1, case.size, case.size, case.channels)
        if data_format == "channels_first":
            shape = (1, case.channels, case.size, case.size)
        self.x = np.random.default_rng(0).random(shape, dtype=np.float32)
        self.layer = _layer(case, data_format)
        self.layer(self.x)  # build and compile outside the measurements
        self.flops = case.flops(1)

    def time_forward(self, name, data_format):
        self.layer(self.x)

    def peakmem_forward(self, name, data_format):
        self.layer(self.x)

    def track_gflops(self, name, data_format):
        times = []
        for _ in range(7):
            start = time.perf_counter()
            self.layer(self.x)
            times.append(time.perf_counter() - start)
        return self.flops / float(np.median(times)) / 1e9

    track_gflops.unit = "GFLOP/s"


class Conv2DBackward:
    """``layer.backward`` (input, kernel and bias gradients) after a training call."""

    params = (list(CASES), ["channels_last"])
    param_names = ["layer", "data_format"]
    timeout = 300

    def setup(self, name, data_format):
        case = CASES[name]
        self.layer = _layer(case, data_format)
        x = np.random.default_rng(0).random((1, case.size, case.size, case.channels),
                                            dtype=np.float32)
        self.grad = np.ones_like(self.layer(x, training=True))
        self.layer.backward(self.grad)  # compile outside the measurements
        self.flops = 2 * case.flops(1)

    def time_backward(self, name, data_format):
        self.layer.backward(self.grad)

    def track_gflops(self, name, data_format):
        times = []
        for _ in range(7):
            start = time.perf_counter()
            self.layer.backward(self.grad)
            times.append(time.perf_counter() - start)
        return self.flops / float(np.median(times)) / 1e9

    track_gflops.unit = "GFLOP/s"


class FirstCall:
    """A fresh process's first call of a dense layer (compile or disk-cache load)."""

    params = ["resnet 3x3 56^2x64", "mbv2 dw 3x3 112^2x32"]
    param_names = ["layer"]
    timeout = 300

    def timeraw_first_call(self, name):
        case = CASES[name]
        return f"""
import numpy as np, numbaconv
layer = numbaconv.Conv2D({case.filters}, {case.kernel}, strides={case.strides},
                         padding="same", groups={case.groups})
layer(np.ones((1, {case.size}, {case.size}, {case.channels}), np.float32))
"""
