"""A layer's training step on the bench suite's layers: forward, backward and their ratio.

``python docs/scripts/training_step.py``: for each layer (2 threads, float32,
interleaved rounds, medians), the forward of a training call right after a
weight update (the weights are packed again, as in training), ``layer.backward``,
and the stateless ``conv2d`` / ``conv2d_backward`` ops, which
``python -m numbaconv.bench --backward`` times against the layer's static forward.
"""

import time

import numpy as np

import numbaconv
from numbaconv.bench import SUITE

ROWS = [("mbv2 dw 3x3 14^2x576", 1), ("mbv2 dw 3x3 14^2x576", 8), ("resnet 3x3 7^2x512", 1),
        ("mbv2 dw 3x3/2 112^2x96", 1), ("mbv2 dw 3x3 112^2x32", 1), ("resnet 3x3 56^2x64", 1)]


def main():
    for name, batch in ROWS:
        case = next(c for c in SUITE if c.name == name)
        x = np.random.default_rng(0).random(case.input_shape(batch), dtype=np.float32)
        layer = numbaconv.Conv2D(case.filters, case.kernel, strides=case.strides, padding="same",
                                 dilation_rate=case.dilation, groups=case.groups,
                                 data_format=case.data_format, use_bias=False)
        layer.build(x.shape)
        kernel = layer.kernel.numpy().copy()
        grad = np.ones_like(layer(x, training=True))
        options = dict(strides=case.strides, padding="same", dilation_rate=case.dilation,
                       data_format=case.data_format)
        steps = {
            "update": lambda: layer.kernel.assign(kernel * 1.0),
            "update + forward": lambda: (layer.kernel.assign(kernel * 1.0),
                                         layer(x, training=True)),
            "backward": lambda: layer.backward(grad),
            "conv2d": lambda: numbaconv.conv2d(x, kernel, **options),
            "conv2d_backward": lambda: numbaconv.conv2d_backward(grad, x, kernel, **options),
        }
        for step in steps.values():
            step(), step()
        times = {key: [] for key in steps}
        for _ in range(100 if batch == 1 else 25):
            for key, step in steps.items():
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
        ms = {key: 1e3 * float(np.median(value)) for key, value in times.items()}
        forward = ms["update + forward"] - ms["update"]
        print(f"{name:24s} N={batch}  layer: forward {forward:7.3f} ms, backward "
              f"{ms['backward']:7.3f} ms ({ms['backward'] / forward:.1f}x)   ops: conv2d "
              f"{ms['conv2d']:7.3f} ms, conv2d_backward {ms['conv2d_backward']:7.3f} ms "
              f"({ms['conv2d_backward'] / ms['conv2d']:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
