"""An independent, deliberately simple NumPy reference for 2-D convolution.

Written for clarity, not speed, and sharing no code with ``numbaconv``: the
input is copied into a zero-padded float64 buffer, then every kernel tap of
every channel group adds one strided slice of it, contracted over the group's
input channels, to the output.  Used by the test-suite as ground truth.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reference_conv2d", "reference_same_pads", "reference_output_size"]


def _pair(value):
    if np.ndim(value) == 0:
        return (int(value), int(value))
    a, b = value
    return (int(a), int(b))


def reference_same_pads(size, k, s, d):
    """TensorFlow's "same" padding along one axis, as ``(before, after)``.

    ``out = ceil(size / s)``; the total padding is what lets the last window
    (of extent ``(k - 1) * d + 1``) end on the last padded pixel; the odd pixel
    goes after (bottom / right).
    """
    out = -(-size // s)  # ceil without floats
    extent = (k - 1) * d + 1
    total = max((out - 1) * s + extent - size, 0)
    before = total // 2
    return before, total - before


def reference_output_size(size, k, s, d, pads):
    """Number of windows along one axis for explicit ``pads = (before, after)``.

    Counted by brute force (each start position checked), not by the formula
    the library uses; the result may be 0.
    """
    extent = (k - 1) * d + 1
    padded = size + pads[0] + pads[1]
    count = 0
    start = 0
    while start + extent <= padded:
        count += 1
        start += s
    return count


def reference_pads(padding, size_hw, kernel_hw, strides, dilation):
    """Explicit ``((top, bottom), (left, right))`` for "valid"/"same"/explicit pads."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            return tuple(reference_same_pads(n, k, s, d)
                         for n, k, s, d in zip(size_hw, kernel_hw, strides, dilation))
        raise ValueError(padding)
    if np.ndim(padding) == 0:
        p = int(padding)
        return ((p, p), (p, p))
    return tuple(_pair(p) for p in padding)


def reference_conv2d(x, kernel, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1),
                     data_format="channels_last", bias=None):
    """Grouped, strided, dilated 2-D cross-correlation in float64.

    Parameters
    ----------
    x : array_like
        ``(N, H, W, C)`` for channels_last, ``(N, C, H, W)`` for channels_first.
    kernel : array_like
        Keras layout ``(kh, kw, C // groups, filters)``.
    strides, dilation : int or (int, int)
    pads : ((top, bottom), (left, right))
        Explicit zero padding (use :func:`reference_pads` for "same").
    data_format : str
    bias : array_like of shape (filters,), optional

    Returns
    -------
    numpy.ndarray of float64, in ``data_format`` layout.
    """
    x = np.array(x, dtype=np.float64)
    kernel = np.array(kernel, dtype=np.float64)
    sh, sw = _pair(strides)
    dh, dw = _pair(dilation)
    (pt, pb), (pl, pr) = (_pair(pads[0]), _pair(pads[1]))
    if data_format == "channels_first":
        x = np.transpose(x, (0, 2, 3, 1))
    elif data_format != "channels_last":
        raise ValueError(data_format)
    n, h, w, c = x.shape
    kh, kw, cin_g, filters = kernel.shape
    assert c % cin_g == 0, "input channels must be a multiple of kernel.shape[2]"
    groups = c // cin_g
    assert filters % groups == 0, "filters must be divisible by groups"
    cout_g = filters // groups

    padded = np.zeros((n, h + pt + pb, w + pl + pr, c), dtype=np.float64)
    padded[:, pt:pt + h, pl:pl + w, :] = x
    oh = reference_output_size(h, kh, sh, dh, (pt, pb))
    ow = reference_output_size(w, kw, sw, dw, (pl, pr))
    out = np.zeros((n, oh, ow, filters), dtype=np.float64)
    for g in range(groups if oh > 0 and ow > 0 else 0):
        cin = slice(g * cin_g, (g + 1) * cin_g)
        cout = slice(g * cout_g, (g + 1) * cout_g)
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dh, j * dw
                # window (a, b) reads padded row a*sh + i*dh, column b*sw + j*dw
                patch = padded[:, r0:r0 + (oh - 1) * sh + 1:sh,
                               c0:c0 + (ow - 1) * sw + 1:sw, cin]
                assert patch.shape[1:3] == (oh, ow)
                out[..., cout] += np.einsum("nhwc,cf->nhwf", patch, kernel[i, j, :, cout])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    if data_format == "channels_first":
        out = np.transpose(out, (0, 3, 1, 2))
    return np.ascontiguousarray(out)


def reference_conv2d_naive(x, kernel, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1)):
    """Scalar-loop channels_last version, used only to cross-check the reference itself."""
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    sh, sw = _pair(strides)
    dh, dw = _pair(dilation)
    (pt, pb), (pl, pr) = pads
    n, h, w, c = x.shape
    kh, kw, cin_g, filters = kernel.shape
    groups = c // cin_g
    cout_g = filters // groups
    oh = reference_output_size(h, kh, sh, dh, (pt, pb))
    ow = reference_output_size(w, kw, sw, dw, (pl, pr))
    out = np.zeros((n, oh, ow, filters))
    for b in range(n):
        for a in range(oh):
            for q in range(ow):
                for f in range(filters):
                    g = f // cout_g
                    s = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            r = a * sh + i * dh - pt
                            col = q * sw + j * dw - pl
                            if 0 <= r < h and 0 <= col < w:
                                for ci in range(cin_g):
                                    s += x[b, r, col, g * cin_g + ci] * kernel[i, j, ci, f]
                    out[b, a, q, f] = s
    return out


def finite_differences(f, array, eps=1e-6):
    """Central differences of the scalar ``f()`` with respect to ``array`` (perturbed in place)."""
    grad = np.zeros_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        up = f()
        flat[i] = keep - eps
        down = f()
        flat[i] = keep
        out[i] = (up - down) / (2 * eps)
    return grad


def relative_error(got, want):
    """Largest absolute difference relative to the largest magnitude of ``want``."""
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
