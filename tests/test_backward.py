"""``conv2d_backward`` against central finite differences (float64) and, when installed,
PyTorch's autograd."""

from __future__ import annotations

import numpy as np
import pytest
from reference import (
    finite_differences,
    reference_conv2d,
    reference_pads,
    relative_error,
)
from sampling import sample

import numbaconv

# (strides, padding, dilation) and (channels, filters, groups) grids.
GEOMETRIES = [(1, "valid", 1), (1, "same", 1), (2, "same", 1), (2, "valid", 1), (3, "same", 1),
              (1, "same", 2), (2, "same", 2), (1, ((2, 0), (1, 3)), 1)]
GROUPINGS = [(3, 4, 1), (4, 6, 2), (4, 4, 4), (3, 6, 3)]


def _loss_and_weights(x, kernel, strides, padding, dilation, data_format, seed):
    """``L(x, kernel) = Σ R · conv(x, kernel)`` (linear: its gradient w.r.t. the output is R)."""
    xl = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    pads = reference_pads(padding, xl.shape[1:3], kernel.shape[:2], (strides,) * 2,
                          (dilation,) * 2)
    out_shape = reference_conv2d(xl, kernel, (strides,) * 2, pads, (dilation,) * 2).shape
    weights = np.random.default_rng(seed).standard_normal(out_shape)

    def loss(x_, k_):
        xl_ = x_ if data_format == "channels_last" else x_.transpose(0, 2, 3, 1)
        return float(np.sum(weights * reference_conv2d(xl_, k_, (strides,) * 2, pads,
                                                       (dilation,) * 2)))

    grad_output = weights if data_format == "channels_last" else weights.transpose(0, 3, 1, 2)
    return loss, np.ascontiguousarray(grad_output)


@pytest.mark.parametrize("strides, padding, dilation", GEOMETRIES)
@pytest.mark.parametrize("channels, filters, groups", GROUPINGS)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gradients_matchfinite_differences(strides, padding, dilation, channels, filters,
                                            groups, data_format):
    rng = np.random.default_rng(channels * 7 + strides * 3 + dilation)
    x = rng.standard_normal((2, 6, 7, channels))
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kernel = rng.standard_normal((3, 2, channels // groups, filters))
    loss, grad_output = _loss_and_weights(x, kernel, strides, padding, dilation, data_format,
                                          seed=groups)
    gx, gk, gb = numbaconv.conv2d_backward(grad_output, x, kernel, strides=strides,
                                           padding=padding, data_format=data_format,
                                           dilation_rate=dilation)
    assert gx.shape == x.shape and gk.shape == kernel.shape and gb.shape == (filters,)
    assert relative_error(gx, finite_differences(lambda: loss(x, kernel), x)) < 1e-6
    assert relative_error(gk, finite_differences(lambda: loss(x, kernel), kernel)) < 1e-6
    axes = (0, 1, 2) if data_format == "channels_last" else (0, 2, 3)
    np.testing.assert_allclose(gb, grad_output.sum(axis=axes), rtol=1e-12)


def test_float32_and_shapes_checked():
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 2)).astype(np.float32)
    kernel = np.ones((3, 3, 2, 3), np.float32)
    gx, gk, gb = numbaconv.conv2d_backward(np.ones((1, 3, 3, 3), np.float32), x, kernel)
    assert gx.dtype == gk.dtype == gb.dtype == np.float32
    with pytest.raises(ValueError, match=r"grad_output.*\(1, 3, 3, 3\).*\(1, 3, 3, 2\)"):
        numbaconv.conv2d_backward(np.ones((1, 3, 3, 2)), x, kernel)
    with pytest.raises(ValueError, match=r"`device`.*'gpu'"):
        numbaconv.conv2d_backward(np.ones((1, 3, 3, 3)), x, kernel, device="gpu")


def test_empty_batch_has_zero_kernel_gradient():
    gx, gk, gb = numbaconv.conv2d_backward(np.ones((0, 3, 3, 2)), np.ones((0, 5, 5, 1)),
                                           np.ones((3, 3, 1, 2)))
    assert gx.shape == (0, 5, 5, 1) and not gk.any() and not gb.any()


@pytest.mark.parametrize("groups, data_format", [(1, "channels_last"), (2, "channels_first"),
                                                 (4, "channels_last")])
def test_matches_torch_autograd(groups, data_format):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((2, 9, 8, 4))
    kernel = rng.standard_normal((3, 3, 4 // groups, 8))
    grad_output = rng.standard_normal((2, 5, 4, 8))  # stride 2, "same": ceil(9/2), ceil(8/2)
    pads = reference_pads("same", (9, 8), (3, 3), (2, 2), (1, 1))
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(kernel.transpose(3, 2, 0, 1), requires_grad=True)
    padded = torch.nn.functional.pad(xt, (*pads[1], *pads[0]))
    yt = torch.nn.functional.conv2d(padded, wt, stride=2, groups=groups)
    yt.backward(torch.tensor(grad_output.transpose(0, 3, 1, 2)))
    if data_format == "channels_first":
        x, grad_output = x.transpose(0, 3, 1, 2), grad_output.transpose(0, 3, 1, 2)
    gx, gk, _ = numbaconv.conv2d_backward(grad_output, x, kernel, strides=2, padding="same",
                                          data_format=data_format)
    want_x = xt.grad.numpy()
    if data_format == "channels_last":
        want_x = want_x.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(gx, want_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gk, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("strides, dilation, padding", [(1, 1, "same"), (2, 1, "same"),
                                                        (1, 2, "valid")])
def test_dense_kernel_gradient_against_sums_per_tap(strides, dilation, padding):
    # Many channels and filters (70), strides or dilation: against NumPy sums per tap.
    rng = np.random.default_rng(strides + dilation)
    x = rng.standard_normal((2, 9, 8, 9))
    kernel = rng.standard_normal((3, 2, 9, 70))
    pads = reference_pads(padding, (9, 8), (3, 2), (strides,) * 2, (dilation,) * 2)
    out = reference_conv2d(x, kernel, (strides,) * 2, pads, (dilation,) * 2)
    grad_output = rng.standard_normal(out.shape)
    _, gk, _ = numbaconv.conv2d_backward(grad_output, x, kernel, strides=strides,
                                         padding=padding, dilation_rate=dilation)
    np.testing.assert_allclose(gk, _kernel_gradient_per_tap(x, grad_output, kernel.shape, strides,
                                                            pads, dilation), rtol=1e-10,
                               atol=1e-10)


def kernel_gradient_case(channels, filters, groups, dtype, height, seed):
    """A 3x3 "same" layer's ``(spec, x, grad_output, want, tolerance)``, ``want`` the
    per-tap sums in float64, for comparing :func:`backward.kernel_gradient` against."""
    from numbaconv.spec import ConvSpec

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, height, 10, channels)).astype(dtype)
    shape = (3, 3, channels // groups, filters)
    spec = ConvSpec.from_arguments(x.shape, shape, 1, "same", "channels_last", 1, dtype)
    grad_output = rng.standard_normal(spec.output_shape).astype(dtype)
    want = _kernel_gradient_per_tap(x.astype(float), grad_output.astype(float), shape, 1,
                                    spec.pads, 1, groups)
    return spec, x, grad_output, want, 1e-4 if dtype == "float32" else 1e-11


def _kernel_gradient_per_tap(x, grad_output, kernel_shape, strides, pads, dilation, groups=1):
    """Kernel gradient by one NumPy contraction per tap and group (channels_last)."""
    kh, kw, cin, filters = kernel_shape
    cout = filters // groups
    padded = np.pad(x, ((0, 0), *pads, (0, 0)))
    oh, ow = grad_output.shape[1:3]
    want = np.empty(kernel_shape)
    for ki in range(kh):
        for kj in range(kw):
            window = padded[:, ki * dilation:ki * dilation + (oh - 1) * strides + 1:strides,
                            kj * dilation:kj * dilation + (ow - 1) * strides + 1:strides]
            for g in range(groups):
                want[ki, kj, :, g * cout:(g + 1) * cout] = np.einsum(
                    "nhwc,nhwf->cf", window[..., g * cin:(g + 1) * cin],
                    grad_output[..., g * cout:(g + 1) * cout])
    return want


# (channels, filters, groups, strides, dilation, padding): dense with filter blocks
# of 64 and a remainder, few filters (split by channels, then pixels), grouped,
# depthwise by whole and overlapping channel blocks, by pixel pairs (16 channels:
# float64 steps of 32 lanes) and one pixel at a time, groups of 4 filters (padded),
# groups of 4 and 2 channels in and out (by shifts).
KERNEL_GRADIENT_CASES = [(9, 70, 1, 1, 1, "same"), (12, 128, 1, 2, 1, "same"),
                         (6, 8, 1, 1, 2, "valid"), (3, 16, 1, 2, 1, "same"),
                         (8, 64, 2, 1, 1, "same"), (128, 128, 128, 1, 1, "same"),
                         (40, 40, 40, 2, 1, "same"), (6, 12, 3, 1, 1, "same"),
                         (16, 16, 16, 1, 2, "same"), (12, 12, 12, 1, 1, "valid"),
                         (64, 64, 16, 2, 1, "same"), (32, 32, 16, 1, 1, "valid")]


@pytest.mark.parametrize("channels, filters, groups, strides, dilation, padding",
                         KERNEL_GRADIENT_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_kernel_gradient_work_splits(channels, filters, groups, strides, dilation, padding,
                                     threads):
    # Every split of the work (filter blocks, channel shares, private copies over
    # pixels) that some thread count produces, on the generic driver.
    from numbaconv.cpu import backward
    from numbaconv.spec import ConvSpec

    rng = np.random.default_rng(channels + threads)
    x = rng.standard_normal((5, 12, 40, channels))  # several chunks of output rows
    shape = (3, 2, channels // groups, filters)
    spec = ConvSpec.from_arguments(x.shape, shape, strides, padding, "channels_last",
                                   dilation, "float64")
    grad_output = rng.standard_normal(spec.output_shape)
    got = backward.kernel_gradient(spec, x, grad_output, specialized=False, threads=threads)
    want = _kernel_gradient_per_tap(x, grad_output, shape, strides, spec.pads, dilation, groups)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels, filters, groups, dtype", sample([
    (8, 64, 1, "float32"), (3, 128, 1, "float64"),
    (96, 96, 96, "float32"), (32, 32, 32, "float32"), (8, 32, 4, "float32"),
    (128, 128, 32, "float32")], lambda case: case[0] in (8, 96)))
def test_specialized_kernel_gradient(channels, filters, groups, dtype):
    # The compiled-in tiles (registers, unrolled) against the per-tap sums; depthwise: two
    # pixels per 64-lane step (32 channels), a whole and an overlapping block (96).
    from numbaconv.cpu import backward

    spec, x, grad_output, want, tolerance = kernel_gradient_case(channels, filters, groups,
                                                                 dtype, 13, seed=filters)
    for threads in (2, 3):
        got = backward.kernel_gradient(spec, x, grad_output, specialized=True, threads=threads)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 10)


@pytest.mark.parametrize("strides, padding, dilation, size, channels", [
    (2, "same", 1, 3, 9), ((2, 3), "valid", 1, 3, 7), ((1, 2), "same", (2, 1), 3, 5),
    (3, "same", 1, 5, 4), (2, ((1, 2), (0, 3)), 1, 2, 3)])
@pytest.mark.parametrize("specialized", [False, True])
def test_strided_depthwise_input_gradient(strides, padding, dilation, size, channels,
                                          specialized):
    # Tap slots past the kernel or the output, clamped and selected away.
    from numbaconv.cpu import backward
    from numbaconv.spec import ConvSpec

    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, 8, 9, channels))
    kernel = rng.standard_normal((size, size, 1, channels))
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, padding, "channels_last",
                                   dilation, "float64")
    assert backward.gathers_depthwise_input_gradient(spec, specialized)
    weights = rng.standard_normal(spec.output_shape)

    def loss():  # linear in x: its gradient is the input gradient of ``weights``
        return float(np.sum(weights * reference_conv2d(x, kernel, spec.strides, spec.pads,
                                                       spec.dilation)))

    got = np.full_like(x, np.nan)
    backward.depthwise_input_gradient(spec, weights, kernel, got, specialized)
    assert relative_error(got, finite_differences(loss, x)) < 1e-6


def test_random_geometries_match_torch_autograd():
    # Phases of strided input gradients (taps reaching some phases, none others),
    # tiny images, kernels wider than the image with "same" padding, groups.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(42)
    for _ in range(60):
        stride = int(rng.integers(1, 4))
        dilation = 1 if stride > 1 else int(rng.integers(1, 3))
        kernel_size = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        padding = "same" if rng.random() < 0.6 else "valid"
        groups = int(rng.choice([1, 2]))
        size = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        extent = [(k - 1) * dilation + 1 for k in kernel_size]
        if padding == "valid" and (size[0] < extent[0] or size[1] < extent[1]):
            continue
        x = rng.standard_normal((2, *size, 2 * groups))
        kernel = rng.standard_normal((*kernel_size, 2, 3 * groups))
        pads = reference_pads(padding, size, kernel_size, (stride,) * 2, (dilation,) * 2)
        xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
        wt = torch.tensor(kernel.transpose(3, 2, 0, 1), requires_grad=True)
        yt = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (*pads[1], *pads[0])), wt,
                                        stride=stride, dilation=dilation, groups=groups)
        grad_output = rng.standard_normal(tuple(yt.shape))
        yt.backward(torch.tensor(grad_output))
        gx, gk, _ = numbaconv.conv2d_backward(grad_output.transpose(0, 2, 3, 1), x, kernel,
                                              strides=stride, padding=padding,
                                              dilation_rate=dilation)
        np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10,
                                   atol=1e-10)
        np.testing.assert_allclose(gk, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10,
                                   atol=1e-10)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("small_kernel", [0, 1 << 16], ids=["parallel-nest", "numpy-copy"])
def test_flipped_transposed_kernel(groups, small_kernel, monkeypatch):
    from numbaconv.cpu import layout

    monkeypatch.setattr(layout, "SMALL_KERNEL", small_kernel)
    kernel = np.random.default_rng(groups).standard_normal((3, 2, 20, 6 * groups))
    want = np.empty((3, 2, 6, groups * 20))
    for i, j, c, f in np.ndindex(kernel.shape):
        g, o = divmod(f, 6)
        want[2 - i, 1 - j, o, g * 20 + c] = kernel[i, j, c, f]
    np.testing.assert_array_equal(layout.flipped_transposed_kernel(kernel, groups), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flipped_transposed_packed(dtype):
    from numbaconv.cpu import layout
    from numbaconv.cpu.direct import DENSE_BLOCK

    kernel = np.random.default_rng(3).standard_normal((3, 2, 70, 20)).astype(dtype)
    packed, finite = layout.flipped_transposed_packed(kernel, DENSE_BLOCK)
    want = np.zeros((2, 3, 2, 20, DENSE_BLOCK), dtype=dtype)  # 70 channels: 64, then 6 + zeros
    for i, j, c, o in np.ndindex(kernel.shape):
        want[c // DENSE_BLOCK, 2 - i, 1 - j, o, c % DENSE_BLOCK] = kernel[i, j, c, o]
    np.testing.assert_array_equal(packed, want)
    assert finite
    kernel[1, 0, 65, 7] = np.nan
    assert not layout.flipped_transposed_packed(kernel, DENSE_BLOCK)[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("filters", [48, 70])
def test_filter_blocks_packed(dtype, filters):
    from numbaconv.cpu import layout
    from numbaconv.cpu.direct import DENSE_BLOCK

    kernel = np.random.default_rng(filters).standard_normal((3, 2, 5, filters)).astype(dtype)
    packed, finite = layout.filter_blocks_packed(kernel, DENSE_BLOCK)
    blocks = -(-filters // DENSE_BLOCK)  # 70 filters: 64, then 6 + zeros
    want = np.zeros((blocks, 3, 2, 5, DENSE_BLOCK), dtype=dtype)
    for i, j, c, o in np.ndindex(kernel.shape):
        want[o // DENSE_BLOCK, i, j, c, o % DENSE_BLOCK] = kernel[i, j, c, o]
    np.testing.assert_array_equal(packed, want)
    assert finite
    for bad in (np.nan, np.inf, -np.inf):
        broken = kernel.copy()
        broken[2, 1, 4, filters - 1] = bad
        assert not layout.filter_blocks_packed(broken, DENSE_BLOCK)[1]


@pytest.mark.parametrize("small_kernel", [0, 1 << 60], ids=["parallel-nest", "numpy-copy"])
def test_pack_weights_either_way(small_kernel, monkeypatch):
    from numbaconv.cpu import direct, layout

    monkeypatch.setattr(layout, "SMALL_KERNEL", small_kernel)
    kernel = np.random.default_rng(5).standard_normal((3, 3, 7, 70)).astype(np.float32)
    for nest in ("dense", "dense_vector"):
        block = direct.filter_block(nest, kernel.dtype)
        padded = np.zeros((3, 3, 7, -(-70 // block) * block), dtype=kernel.dtype)
        padded[..., :70] = kernel
        want = padded.reshape(3, 3, 7, -1, block).transpose(3, 0, 1, 2, 4)
        np.testing.assert_array_equal(direct.pack_weights(nest, kernel), want)


@pytest.mark.parametrize("strides, padding, dilation", [(1, "same", 1), (1, "valid", 2),
                                                        (2, "same", 1)])
def test_input_gradient_from_the_kernel_packed_in_one_pass(strides, padding, dilation,
                                                           monkeypatch):
    """Every one-group kernel takes the one-pass packing (as large ones do), 70 channels:
    a block and a padded one."""
    from numbaconv.cpu import layout

    monkeypatch.setattr(layout, "SMALL_KERNEL", 0)
    rng = np.random.default_rng(strides + dilation)
    x = rng.standard_normal((2, 7, 6, 5))
    kernel = rng.standard_normal((3, 3, 5, 70))
    loss, grad_output = _loss_and_weights(x, kernel, strides, padding, dilation,
                                          "channels_last", seed=4)
    gx, _, _ = numbaconv.conv2d_backward(grad_output, x, kernel, strides=strides,
                                         padding=padding, dilation_rate=dilation)
    assert relative_error(gx, finite_differences(lambda: loss(x, kernel), x)) < 1e-6
    # An inf weight meets the padding's zeros as it does in the three-pass form (NaN there).
    kernel[0, 1, 2, 3] = np.inf
    fused = numbaconv.conv2d_backward(grad_output, x, kernel, strides=strides,
                                      padding=padding, dilation_rate=dilation)[0]
    monkeypatch.setattr(layout, "SMALL_KERNEL", 1 << 60)
    plain = numbaconv.conv2d_backward(grad_output, x, kernel, strides=strides,
                                      padding=padding, dilation_rate=dilation)[0]
    np.testing.assert_array_equal(np.isnan(fused), np.isnan(plain))
    assert np.isnan(fused).any() or strides > 1  # stride 1: zeros around the output gradient


@pytest.mark.parametrize("strides, padding, dilation", [(2, "same", 1), (1, "valid", 2),
                                                        (3, ((2, 0), (1, 3)), 1)])
@pytest.mark.parametrize("channels, specialized", [(1, False), (3, False), (4, False),
                                                   (3, True)])
def test_narrow_input_gradient(strides, padding, dilation, channels, specialized):
    # Few input channels, whole filter blocks (a stem): the input gradient sums
    # along the filters, against finite differences of the reference.
    from numbaconv.cpu import backward
    from numbaconv.spec import ConvSpec

    rng = np.random.default_rng(channels + strides)
    x = rng.standard_normal((2, 9, 8, channels))
    kernel = rng.standard_normal((3, 4, channels, 64))
    loss, grad_output = _loss_and_weights(x, kernel, strides, padding, dilation,
                                          "channels_last", seed=channels)
    spec = ConvSpec.from_arguments(x.shape, kernel.shape, strides, padding, "channels_last",
                                   dilation, "float64")
    assert backward.is_narrow(spec)
    got = np.full(x.shape, np.nan)
    backward.narrow_input_gradient(spec, grad_output, kernel, got, specialized)
    assert relative_error(got, finite_differences(lambda: loss(x, kernel), x)) < 1e-6


def test_reaching_taps_against_every_tap():
    # The clipped tap ranges of the narrow input gradient, against testing each tap.
    from numbaconv.cpu.backward import _reaching_taps

    for kernel in (1, 2, 3, 7):
        for stride, dilation in ((1, 1), (2, 1), (3, 1), (1, 2), (1, 3)):
            for pad in range(4):
                for count in range(1, 6):
                    for position in range(12):
                        want = [t for t in range(kernel)
                                if (position + pad - t * dilation) % stride == 0
                                and 0 <= (position + pad - t * dilation) // stride < count
                                and position + pad - t * dilation >= 0]
                        lo, hi, step = _reaching_taps.py_func(position, pad, kernel, dilation,
                                                              stride, count)
                        assert list(range(lo, hi, step)) == want, (
                            kernel, stride, dilation, pad, count, position)
