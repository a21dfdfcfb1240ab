"""Draw the user guide's geometry figures (and the performance chart) into ``docs/img/``.

Run from the repository root::

    python docs/scripts/make_figures.py

The footprints are not drawn by hand: the padding comes from
:class:`numbaconv.ConvSpec` and the input pixels that feed an output pixel are
the non-zero entries of :func:`numbaconv.conv2d_backward`'s input gradient for a
one-hot output gradient, so the pictures show what the library computes.

``docs/img/bench.png`` is redrawn from ``docs/bench.json`` (written by
``python -m numbaconv.bench --json docs/bench.json``) with the bench's own
plotting code, when that file exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import numbaconv
from numbaconv import bench

DOCS = Path(__file__).resolve().parents[1]
IMG = DOCS / "img"

# Reproducible SVG files: text kept as text, no date, fixed ids.
plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "numbaconv", "font.size": 9})
METADATA = {"Date": None, "Creator": None}

INPUT, PAD, FED, OUTPUT = "#e8eef7", "#f4f4f4", "#f28e2b", "#4e79a7"


def footprint(size, kernel, strides=1, padding="valid", dilation=1, out_pixel=(0, 0)):
    """``(spec, fed)``: the geometry and the input pixels that output ``out_pixel`` reads.

    ``fed`` is a boolean ``(size, size)`` array: where the input gradient of a
    one-hot output gradient is non-zero (all-ones input and kernel).
    """
    x = np.ones((1, size, size, 1))
    k = np.ones((kernel, kernel, 1, 1))
    spec = numbaconv.ConvSpec.from_arguments(x.shape, k.shape, strides, padding,
                                             "channels_last", dilation, "float64")
    grad = np.zeros(spec.output_shape)
    grad[0, out_pixel[0], out_pixel[1], 0] = 1.0
    gx, _, _ = numbaconv.conv2d_backward(grad, x, k, strides, padding, "channels_last",
                                         dilation)
    return spec, gx[0, :, :, 0] != 0


def draw_grid(ax, size, pads, fed, title, color=INPUT, mark=None):
    """Input grid with its padding ring (``pads``), ``fed`` pixels highlighted."""
    (top, bottom), (left, right) = pads
    rows, cols = size + top + bottom, size + left + right
    for r in range(rows):
        for c in range(cols):
            i, j = r - top, c - left
            inside = 0 <= i < size and 0 <= j < size
            face = color if inside else PAD
            hatch = None if inside else "///"
            if mark is not None and inside and mark[i, j]:
                face = FED
            ax.add_patch(Rectangle((c, rows - 1 - r), 1, 1, facecolor=face, edgecolor="#888",
                                   hatch=hatch, linewidth=0.6))
    # Taps that fall on padding: outline them (they read zeros).
    if fed is not None:
        for (r, c) in fed:
            ax.add_patch(Rectangle((c, rows - 1 - r), 1, 1, fill=False, edgecolor=FED,
                                   linewidth=2.0))
    _frame(ax, rows, cols, title)


def _frame(ax, rows, cols, title):
    """Fit ``ax`` to a grid of ``rows`` × ``cols`` cells, without axes, titled."""
    ax.set_xlim(-0.2, cols + 0.2)
    ax.set_ylim(-0.2, rows + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)


def taps(spec, out_pixel):
    """Padded-grid coordinates of every tap of ``out_pixel`` (inside or on the padding)."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_size, spec.strides, spec.dilation
    return [(out_pixel[0] * sh + a * dh, out_pixel[1] * sw + b * dw)
            for a in range(kh) for b in range(kw)]


def draw_output(ax, spec, out_pixel, title):
    oh, ow = spec.output_hw
    mark = np.zeros((oh, ow), bool)
    mark[out_pixel] = True
    for r in range(oh):
        for c in range(ow):
            face = OUTPUT if mark[r, c] else "white"
            ax.add_patch(Rectangle((c, oh - 1 - r), 1, 1, facecolor=face, edgecolor="#888",
                                   linewidth=0.6))
    _frame(ax, oh, ow, title)


def pair(axes, size, kernel, out_pixel, label, **arguments):
    """Input (with the taps of ``out_pixel``) and output side by side."""
    spec, fed = footprint(size, kernel, out_pixel=out_pixel, **arguments)
    draw_grid(axes[0], size, spec.pads, taps(spec, out_pixel), f"input {size}×{size}: {label}",
              mark=fed)
    oh, ow = spec.output_hw
    draw_output(axes[1], spec, out_pixel, f"output {oh}×{ow}, pixel {out_pixel}")
    return spec


def save(fig, name):
    path = IMG / name
    fig.savefig(path, metadata=METADATA, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path.relative_to(DOCS.parent)}")


def padding_figure():
    fig, axes = plt.subplots(3, 2, figsize=(6, 8.4),
                             gridspec_kw={"width_ratios": [1.4, 1]})
    pair(axes[0], 5, 3, (0, 0), '3×3, "valid"', padding="valid")
    pair(axes[1], 5, 3, (0, 0), '3×3, "same" (1 each side)', padding="same")
    pair(axes[2], 6, 3, (2, 2), '3×3 stride 2, "same": 0 before, 1 after',
         padding="same", strides=2)
    fig.suptitle("Padding: hatched cells are zeros; orange cells feed the blue output",
                 fontsize=9)
    save(fig, "padding.svg")


def strides_dilation_figure():
    fig, axes = plt.subplots(2, 2, figsize=(6, 6), gridspec_kw={"width_ratios": [1.4, 1]})
    pair(axes[0], 7, 3, (1, 2), "3×3, stride 2", strides=2)
    pair(axes[1], 7, 3, (1, 1), "3×3, dilation 2", dilation=2)
    fig.suptitle("Output pixel o reads input o·s − pad + k·d for each tap k", fontsize=9)
    save(fig, "strides_dilation.svg")


def groups_figure():
    """Which input channels feed which filters, for groups = 1, 2 and 4 (= depthwise)."""
    channels, filters = 4, 4
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    for ax, groups in zip(axes, (1, 2, 4)):
        kernel_shape = (3, 3, channels // groups, filters)
        spec = numbaconv.ConvSpec.from_arguments((1, 8, 8, channels), kernel_shape, 1,
                                                 "valid", "channels_last", 1, "float32")
        per_in, per_out = channels // spec.groups, filters // spec.groups
        for c in range(channels):
            ax.add_patch(Rectangle((0, channels - 1 - c), 1, 0.8, facecolor=INPUT,
                                   edgecolor="#888"))
            ax.text(0.5, channels - 0.6 - c, f"in {c}", ha="center", va="center", fontsize=8)
        for f in range(filters):
            ax.add_patch(Rectangle((3, filters - 1 - f), 1.6, 0.8, facecolor=OUTPUT,
                                   edgecolor="#888", alpha=0.85))
            ax.text(3.8, filters - 0.6 - f, f"filter {f}", ha="center", va="center",
                    fontsize=8, color="white")
        for f in range(filters):
            g = f // per_out
            for c in range(g * per_in, (g + 1) * per_in):
                ax.plot([1, 3], [channels - 0.6 - c, filters - 0.6 - f], color=FED, lw=1.2)
        name = {1: "groups=1 (dense)", 2: "groups=2", 4: "groups=4 (depthwise)"}[groups]
        ax.set_title(f"{name}\nkernel {kernel_shape}", fontsize=9)
        ax.set_xlim(-0.1, 4.7)
        ax.set_ylim(-0.3, channels + 0.1)
        ax.axis("off")
    save(fig, "groups.svg")


def bench_chart():
    source = DOCS / "bench.json"
    if not source.exists():
        print(f"{source.relative_to(DOCS.parent)} not found: bench.png left as it is")
        return
    with open(source) as f:
        result = json.load(f)
    bench._plot(result, IMG / "bench.png")
    print("wrote docs/img/bench.png")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    IMG.mkdir(exist_ok=True)
    padding_figure()
    strides_dilation_figure()
    groups_figure()
    if "--no-bench" not in argv:
        bench_chart()


if __name__ == "__main__":
    main()
