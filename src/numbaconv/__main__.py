"""``python -m numbaconv``: a short tour — the Keras example, a few configurations, timings."""

from __future__ import annotations

import time

import numpy as np

from . import Conv2D, __version__, conv2d, kernel_cache_info
from .bench import SUITE, median_time, run

_TOUR_CASES = ("resnet 3x3 56^2x64", "mbv2 dw 3x3 112^2x32", "resnext 3x3 g32 56^2x128")


def main():
    """Print the tour."""
    import numba

    print(f"numbaconv {__version__} (numba {numba.__version__}, "
          f"{numba.get_num_threads()} threads)\n")
    rng = np.random.default_rng(0)
    x = rng.random((4, 10, 10, 128))
    start = time.perf_counter()
    y = Conv2D(32, 3, activation="relu")(x)
    print(">>> x = np.random.rand(4, 10, 10, 128)")
    print('>>> Conv2D(32, 3, activation="relu")(x).shape')
    print(f"{y.shape}    # first call, compile included: {time.perf_counter() - start:.2f} s\n")

    configs = [
        ("3x3 same, 56x56x64 -> 64", (1, 56, 56, 64), dict(filters=64, kernel_size=3,
                                                           padding="same")),
        ("3x3 stride 2, 28x28x32 -> 64", (1, 28, 28, 32), dict(filters=64, kernel_size=3,
                                                               strides=2, padding="same")),
        ("3x3 dilation 2, 32x32x32 -> 32", (1, 32, 32, 32), dict(filters=32, kernel_size=3,
                                                                 dilation_rate=2)),
        ("depthwise 3x3, 56x56x64", (1, 56, 56, 64), dict(filters=64, kernel_size=3,
                                                          groups=64, padding="same")),
        ("1x1, channels_first 64x28x28 -> 128", (1, 64, 28, 28),
         dict(filters=128, kernel_size=1, data_format="channels_first")),
    ]
    print(f"{'configuration':40s} {'output shape':>20s} {'first call':>11s} "
          f"{'then':>9s} {'GFLOP/s':>8s}")
    for label, shape, kwargs in configs:
        layer = Conv2D(**kwargs)
        data = rng.random(shape, dtype=np.float32)
        start = time.perf_counter()
        out = layer(data)
        first = time.perf_counter() - start
        seconds = median_time(lambda layer=layer, data=data: layer(data), 5)
        flops = layer._spec(data.shape).flops
        print(f"{label:40s} {str(out.shape):>20s} {first:10.2f}s {seconds * 1e3:7.2f}ms "
              f"{flops / seconds / 1e9:8.1f}")
    kernel = rng.random((3, 3, 8, 8))
    out = conv2d(rng.random((2, 16, 16, 8)), kernel, padding="same")
    print(f"\nconv2d(x, kernel, padding='same') -> {out.shape} {out.dtype}")
    print(f"kernel cache: {kernel_cache_info()}")
    print("\nSide by side with the frameworks installed here (full suite: "
          "python -m numbaconv.bench):")
    run(cases=[case for case in SUITE if case.name in _TOUR_CASES], batches=(1,), repeats=3)


if __name__ == "__main__":
    main()
