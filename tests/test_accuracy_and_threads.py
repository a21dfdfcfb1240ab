"""float32 accuracy against PyTorch's, and results independent of the thread count."""

import numba
import numpy as np
import pytest

import numbaconv
from reference import reference_conv2d, reference_same_pads

# Suite-like layers at reduced size: (input NHWC, kernel, strides, dilation, groups)
LAYERS = [
    ((2, 28, 28, 64), 3, 1, 1, 1),
    ((2, 30, 30, 3), 7, 2, 1, 1),
    ((2, 14, 14, 128), 1, 1, 1, 1),
    ((2, 16, 16, 64), 3, 1, 3, 1),
    ((2, 28, 28, 32), 3, 1, 1, 32),
    ((2, 28, 28, 64), 3, 1, 1, 16),
]


def _data(shape, k, groups, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((k, k, shape[3] // groups, shape[3])) / np.sqrt(k * k * shape[3])
    return x, w


def _pads(shape, k, s, d):
    return tuple(reference_same_pads(n, k, s, d) for n in shape[1:3])


@pytest.mark.parametrize("shape, k, s, d, groups", LAYERS)
def test_float32_error_at_most_twice_torch(shape, k, s, d, groups):
    torch = pytest.importorskip("torch")
    x, w = _data(shape, k, groups, seed=k + groups)
    # Both libraries get the same float32 data; the float64 reference is
    # computed on exactly that data, so the error is the arithmetic's alone.
    x, w = x.astype(np.float32).astype(np.float64), w.astype(np.float32).astype(np.float64)
    want = reference_conv2d(x, w, (s, s), _pads(shape, k, s, d), (d, d), "channels_last")
    numbaconv.set_specialization("always")
    try:
        ours = numbaconv.conv2d(x.astype(np.float32), w.astype(np.float32), strides=s,
                                padding="same", dilation_rate=d).astype(np.float64)
    finally:
        numbaconv.set_specialization("auto")
    pads = _pads(shape, k, s, d)
    xt = torch.nn.functional.pad(torch.from_numpy(x.astype(np.float32).transpose(0, 3, 1, 2)),
                                 (*pads[1], *pads[0]))
    wt = torch.from_numpy(w.astype(np.float32).transpose(3, 2, 0, 1).copy())
    theirs = torch.nn.functional.conv2d(xt, wt, stride=s, dilation=d, groups=groups)
    theirs = theirs.numpy().transpose(0, 2, 3, 1).astype(np.float64)
    scale = np.sqrt(np.mean(want ** 2))
    ours_err = np.sqrt(np.mean((ours - want) ** 2)) / scale
    theirs_err = np.sqrt(np.mean((theirs - want) ** 2)) / scale
    assert ours_err <= 2 * theirs_err + 1e-9, (ours_err, theirs_err)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shape, k, s, d, groups", LAYERS[:5:2])
def test_results_do_not_depend_on_thread_count(shape, k, s, d, groups, data_format):
    x, w = _data(shape, k, groups, seed=1)
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    outputs = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            outputs.append(numbaconv.conv2d(x, w, strides=s, padding="same", dilation_rate=d,
                                            data_format=data_format))
    finally:
        numba.set_num_threads(before)
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
