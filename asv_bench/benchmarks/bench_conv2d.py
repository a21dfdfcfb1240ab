"""Layer forward time, peak memory and throughput on a few representative shapes."""

import numpy as np

import numbaconv

# (label, input shape NHWC, Conv2D kwargs)
LAYERS = {
    "resnet_3x3_56": ((1, 56, 56, 64), dict(filters=64, kernel_size=3, padding="same")),
    "resnet_1x1_56": ((1, 56, 56, 64), dict(filters=256, kernel_size=1)),
    "depthwise_3x3_112": ((1, 112, 112, 32), dict(filters=32, kernel_size=3, groups=32,
                                                  padding="same")),
}


class Conv2DForward:
    params = (list(LAYERS), ["channels_last", "channels_first"])
    param_names = ["layer", "data_format"]

    def setup(self, name, data_format):
        shape, kwargs = LAYERS[name]
        if data_format == "channels_first":
            shape = (shape[0], shape[3], shape[1], shape[2])
        self.x = np.random.default_rng(0).random(shape, dtype=np.float32)
        self.layer = numbaconv.Conv2D(data_format=data_format, **kwargs)
        self.layer(self.x)  # build and compile outside the timing

    def time_forward(self, name, data_format):
        self.layer(self.x)

    def peakmem_forward(self, name, data_format):
        self.layer(self.x)

    def track_gflops(self, name, data_format):
        import time

        times = []
        for _ in range(5):
            start = time.perf_counter()
            self.layer(self.x)
            times.append(time.perf_counter() - start)
        return self.layer._spec(self.x.shape).flops / float(np.median(times)) / 1e9

    track_gflops.unit = "GFLOP/s"
