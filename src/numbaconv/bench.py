"""Side-by-side benchmark: numbaconv against PyTorch and JAX on a standard layer suite.

``python -m numbaconv.bench [--batch 1 8] [--repeats 7] [--json FILE] [--plot FILE]``,
``python -m numbaconv.bench --compile`` (first-call compile seconds),
``python -m numbaconv.bench --device cuda`` (the GPU kernels against cuDNN).

Every layer is timed for each library in turn, interleaved round by round in
one process, and the median is reported, so that a noisy shared machine
affects all libraries alike.  Each sample is steady-state throughput: a burst
of calls lasting a few milliseconds after one untimed call that wakes the
library's threads (see :func:`_steady_time`).  Peers are optional: PyTorch (the better of NCHW
and channels_last memory formats) and JAX (``lax.conv_general_dilated`` under
``jit``) are used when importable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .layer import Conv2D

__all__ = ["SUITE", "Case", "run", "compile_costs", "main", "median_time", "sgemm_gflops"]


@dataclass(frozen=True)
class Case:
    """One suite layer: ``filters`` ``kernel``×``kernel`` conv on ``size``² × ``channels``."""

    name: str
    size: int
    channels: int
    filters: int
    kernel: int
    strides: int = 1
    dilation: int = 1
    groups: int = 1
    data_format: str = "channels_last"

    def input_shape(self, batch):
        if self.data_format == "channels_last":
            return (batch, self.size, self.size, self.channels)
        return (batch, self.channels, self.size, self.size)

    def flops(self, batch):
        out = -(-self.size // self.strides)
        return (2 * batch * out * out * self.filters * (self.channels // self.groups)
                * self.kernel ** 2)

    def bytes_moved(self, batch):
        """Minimum memory traffic (input + output + weights, float32)."""
        out = -(-self.size // self.strides)
        return 4 * (batch * (self.size ** 2 * self.channels + out ** 2 * self.filters)
                    + self.kernel ** 2 * self.channels // self.groups * self.filters)


#: The standard layer suite ("same" padding, float32).
SUITE = (
    Case("resnet50 stem 7x7/2", 224, 3, 64, 7, strides=2),
    Case("resnet 3x3 56^2x64", 56, 64, 64, 3),
    Case("resnet 1x1 56^2x64->256", 56, 64, 256, 1),
    Case("resnet 3x3/2 56^2x128", 56, 128, 128, 3, strides=2),
    Case("resnet 3x3 14^2x256", 14, 256, 256, 3),
    Case("resnet 3x3 7^2x512", 7, 512, 512, 3),
    Case("mbv2 dw 3x3 112^2x32", 112, 32, 32, 3, groups=32),
    Case("mbv2 dw 3x3/2 112^2x96", 112, 96, 96, 3, strides=2, groups=96),
    Case("mbv2 dw 3x3 14^2x576", 14, 576, 576, 3, groups=576),
    Case("resnext 3x3 g32 56^2x128", 56, 128, 128, 3, groups=32),
    Case("deeplab 3x3 d6 32^2x256", 32, 256, 256, 3, dilation=6),
    Case("resnet 3x3 56^2x64 NCHW", 56, 64, 64, 3, data_format="channels_first"),
)


def _numbaconv_runner(case, x, kernel, device="cpu"):
    layer = Conv2D(case.filters, case.kernel, strides=case.strides, padding="same",
                   dilation_rate=case.dilation, groups=case.groups,
                   data_format=case.data_format, use_bias=False, device=device)
    layer.build(x.shape)
    layer.set_weights([kernel])
    if device == "cpu":
        return lambda: layer(x)
    from numba import cuda
    x_device = cuda.to_device(x)

    def run():
        out = layer(x_device)
        cuda.synchronize()
        return out
    return run


def _torch_runner(case, x, kernel, device="cpu"):
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda":
        if not torch.cuda.is_available():
            return None
        # Full float32 arithmetic, as ours: no TensorFloat-32 in cuDNN.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_grad_enabled(False)
    xt = torch.from_numpy(np.ascontiguousarray(
        x if case.data_format == "channels_first" else x.transpose(0, 3, 1, 2))).to(device)
    wt = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    # TF "same" padding can be asymmetric (odd total, extra pixel after), which
    # torch's conv2d cannot express: only then is the input padded explicitly
    # (as Keras's torch backend does); symmetric padding is torch's own.
    (top, bottom), (left, right) = [_same(case.size, case.kernel, case.strides,
                                          case.dilation)] * 2
    symmetric = top == bottom and left == right
    runners = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm, wm = xt.contiguous(memory_format=memory_format), wt.contiguous(
            memory_format=memory_format)

        def run(xm=xm, wm=wm):
            if symmetric:
                out = torch.nn.functional.conv2d(xm, wm, stride=case.strides,
                                                 padding=(top, left), dilation=case.dilation,
                                                 groups=case.groups)
            else:
                padded = torch.nn.functional.pad(xm, (left, right, top, bottom))
                out = torch.nn.functional.conv2d(padded, wm, stride=case.strides,
                                                 dilation=case.dilation, groups=case.groups)
            sync()
            return out
        runners.append(run)
    # Keep the faster memory format (judged on a few calls).
    return min(runners, key=lambda fn: median_time(fn, 3))


def _numbaconv_backward_runner(case, x, kernel, device="cpu"):
    from .functional import conv2d, conv2d_backward
    kwargs = dict(strides=case.strides, padding="same", dilation_rate=case.dilation,
                  data_format=case.data_format)
    grad_output = np.ones_like(conv2d(x, kernel, **kwargs))
    if device == "cpu":
        return lambda: conv2d_backward(grad_output, x, kernel, **kwargs)
    from numba import cuda
    on_device = [cuda.to_device(a) for a in (grad_output, x, kernel)]

    def run():
        gradients = conv2d_backward(*on_device, **kwargs)
        cuda.synchronize()
        return gradients
    return run


def _torch_backward_runner(case, x, kernel, device="cpu"):
    """PyTorch's convolution backward alone (input and weight gradients), as autograd runs it."""
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda":
        if not torch.cuda.is_available():
            return None
        torch.backends.cudnn.allow_tf32 = False  # full float32, as ours
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    xt = torch.from_numpy(np.ascontiguousarray(
        x if case.data_format == "channels_first" else x.transpose(0, 3, 1, 2))).to(device)
    (top, bottom), (left, right) = [_same(case.size, case.kernel, case.strides,
                                          case.dilation)] * 2
    xt = torch.nn.functional.pad(xt, (left, right, top, bottom))  # as the forward ran
    wt = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).to(device)
    stride, dilation = [case.strides] * 2, [case.dilation] * 2
    with torch.no_grad():
        grad = torch.ones_like(torch.nn.functional.conv2d(xt, wt, stride=stride,
                                                          dilation=dilation,
                                                          groups=case.groups))
    runners = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm, wm, gm = (t.contiguous(memory_format=memory_format) for t in (xt, wt, grad))

        def run(xm=xm, wm=wm, gm=gm):
            gradients = torch.ops.aten.convolution_backward(
                gm, xm, wm, None, stride, [0, 0], dilation, False, [0, 0], case.groups,
                [True, True, False])
            sync()
            return gradients
        runners.append(run)
    return min(runners, key=lambda fn: median_time(fn, 3))


def _jax_runner(case, x, kernel, device="cpu"):
    if device != "cpu":
        return None  # the GPU comparison is against cuDNN, through PyTorch
    try:
        import jax
    except ImportError:
        return None
    layout = ("NHWC", "HWIO", "NHWC") if case.data_format == "channels_last" else (
        "NCHW", "HWIO", "NCHW")
    xj, wj = jax.device_put(x), jax.device_put(kernel)
    fn = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, (case.strides,) * 2, "SAME", rhs_dilation=(case.dilation,) * 2,
        dimension_numbers=layout, feature_group_count=case.groups))
    return lambda: fn(xj, wj).block_until_ready()


def _same(size, kernel, stride, dilation):
    from .spec import same_padding
    return same_padding(size, kernel, stride, dilation)


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


#: Each timed sample lasts at least this long (several calls of small layers).
BURST_SECONDS = 0.005


def _burst_length(seconds_per_call):
    return max(1, min(100, int(BURST_SECONDS / max(seconds_per_call, 1e-7))))


def _steady_time(fn, calls):
    """Seconds per call of ``fn()`` in steady state: ``calls`` timed calls after an untimed one.

    The untimed call wakes the library's thread pool, left idle while the
    other libraries ran: on this kind of virtual machine, waking idle
    threads costs 2-8 ms (measured for Numba's OpenMP layer after 50-200 ms
    idle), more than a small layer's whole run.
    """
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


_SGEMM_SCRIPT = """
import time, numpy as np
n = {n}
a = np.random.rand(n, n).astype(np.float32)
b = np.random.rand(n, n).astype(np.float32)
a @ b
times = []
for _ in range({repeats}):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
print(2 * n ** 3 / sorted(times)[len(times) // 2] / 1e9)
"""


def sgemm_gflops(n=2048, repeats=5):
    """The machine's practical float32 ceiling: NumPy's (OpenBLAS) square matrix product.

    Measured in a child process with ``OPENBLAS_CORETYPE`` and
    ``OPENBLAS_L2_SIZE`` removed, which some machines set to work around old
    OpenBLAS bugs and which slow a current OpenBLAS down — this process's
    environment is left as it is.
    """
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    try:
        result = subprocess.run([sys.executable, "-c",
                                 _SGEMM_SCRIPT.format(n=n, repeats=repeats)],
                                env=env, capture_output=True, text=True, timeout=300)
        return float(result.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return float("nan")


PEERS = {"numbaconv": _numbaconv_runner, "torch": _torch_runner, "jax": _jax_runner}
#: Key of numbaconv's forward among the runners of a ``--backward`` row.
_FORWARD = "numbaconv forward"

#: ``--backward``: input and kernel gradients (JAX is not timed there).
BACKWARD_PEERS = {"numbaconv": _numbaconv_backward_runner, "torch": _torch_backward_runner,
                  "jax": lambda *args: None}


def run(cases=SUITE, batches=(1, 8), repeats=7, peers=("torch", "jax"), out=sys.stdout,
        device="cpu", backward=False):
    """Time every case for numbaconv and each available peer; print a table.

    ``device="cuda"`` times the GPU kernels (device-resident input and weights,
    synchronized after each call) against PyTorch's CUDA convolution (cuDNN,
    TensorFloat-32 off); JAX and the sgemm ceiling are CPU-only.
    ``backward=True`` times the input and kernel gradients instead
    (:func:`numbaconv.conv2d_backward` against PyTorch's convolution backward),
    with FLOPs counted as twice the forward's, and the backward's time over
    numbaconv's forward time (timed in the same rounds) per row.

    Returns
    -------
    dict
        ``{"sgemm_gflops": float, "rows": [...], "geomean": {peer: ratio}}``; each
        row holds the case, batch, and GFLOP/s (and GB/s) per library.
    """
    rng = np.random.default_rng(0)
    libraries = ("numbaconv",) + tuple(peers)
    if device == "cpu":
        ceiling = sgemm_gflops()
        print(f"sgemm ceiling: {ceiling:.0f} GFLOP/s", file=out)
    else:
        ceiling = float("nan")
        print(f"device: {device}", file=out)
    header = f"{'layer':28s} {'N':>2s} " + " ".join(f"{name:>10s}" for name in libraries)
    header += "".join(f" {'vs ' + p:>9s}" for p in peers)
    print(header + "   (GFLOP/s)", file=out)
    rows = []
    for case in cases:
        for batch in batches:
            x = rng.random(case.input_shape(batch), dtype=np.float32)
            kernel = rng.standard_normal(
                (case.kernel, case.kernel, case.channels // case.groups, case.filters),
                dtype=np.float32) * 0.1
            runners, bursts = {}, {}
            for name in libraries:
                runner = (BACKWARD_PEERS if backward else PEERS)[name](case, x, kernel, device)
                if runner is not None:
                    runner()  # compile / warm up
                    runners[name] = runner
                    bursts[name] = _burst_length(median_time(runner, 3))
            if backward and "numbaconv" in runners:  # the forward, for the cost ratio
                runners[_FORWARD] = PEERS["numbaconv"](case, x, kernel, device)
                runners[_FORWARD]()
                bursts[_FORWARD] = _burst_length(median_time(runners[_FORWARD], 3))
            times = {name: [] for name in runners}
            for _ in range(repeats):  # interleaved rounds
                for name, runner in runners.items():
                    times[name].append(_steady_time(runner, bursts[name]))
            flops = case.flops(batch) * (2 if backward else 1)
            gflops = {name: flops / float(np.median(t)) / 1e9 for name, t in times.items()
                      if name != _FORWARD}
            row = {"case": asdict(case), "batch": batch, "gflops": gflops,
                   "numbaconv_gbs": case.bytes_moved(batch) / float(
                       np.median(times["numbaconv"])) / 1e9}
            if _FORWARD in times:
                row["backward_over_forward"] = float(np.median(times["numbaconv"])
                                                     / np.median(times[_FORWARD]))
            rows.append(row)
            line = f"{case.name:28s} {batch:2d} " + " ".join(
                f"{gflops[name]:10.1f}" if name in gflops else f"{'-':>10s}"
                for name in libraries)
            line += "".join(
                f" {gflops['numbaconv'] / gflops[p]:8.2f}x" if p in gflops else f" {'-':>9s}"
                for p in peers)
            if "backward_over_forward" in row:
                line += f"   {row['backward_over_forward']:.1f}x forward"
            elif case.groups == case.channels:
                line += f"   ({row['numbaconv_gbs']:.1f} GB/s)"
            print(line, file=out, flush=True)
    dense = [r for r in rows if r["batch"] == 8 and r["case"]["kernel"] == 3
             and r["case"]["groups"] == 1]
    if dense and math.isfinite(ceiling):
        shares = ", ".join(f"{r['gflops']['numbaconv'] / ceiling:.0%}" for r in dense)
        print(f"dense 3x3 layers at N=8, share of the sgemm ceiling: {shares}", file=out)
    costs = [r["backward_over_forward"] for r in rows if "backward_over_forward" in r]
    if costs:
        print(f"backward / forward time: at most {max(costs):.1f}x "
              f"(median {float(np.median(costs)):.1f}x)", file=out)
    geomean = {}
    for peer in peers:
        ratios = [r["gflops"]["numbaconv"] / r["gflops"][peer] for r in rows
                  if peer in r["gflops"]]
        if ratios:
            geomean[peer] = math.exp(sum(map(math.log, ratios)) / len(ratios))
            print(f"geometric mean vs {peer}: {geomean[peer]:.2f}x "
                  f"(lowest {min(ratios):.2f}x)", file=out)
    return {"sgemm_gflops": ceiling, "rows": rows, "geomean": geomean}


_FIRST_CALL_SCRIPT = """
import sys, time, numpy as np, numbaconv
from numbaconv.bench import SUITE, Case
if sys.argv[1] == "--shared":
    # Layers unlike the suite's, one per nest, padded and not, both layouts, a kernel
    # large enough for the parallel packing: they compile the kernels every configuration
    # shares (the parallel loop that runs the specialized tasks, per argument types too).
    cases = [Case("", 9, 5, 7, 3), Case("", 6, 64, 64, 3), Case("", 5, 128, 128, 3),
             Case("", 9, 6, 6, 3, groups=6), Case("", 32, 128, 128, 3, groups=128),
             Case("", 9, 8, 8, 3, groups=2), Case("", 9, 5, 7, 3, data_format="channels_first"),
             Case("", 6, 64, 64, 3, data_format="channels_first"),
             Case("", 9, 6, 6, 3, groups=6, data_format="channels_first")]
else:
    cases = [c for c in SUITE if c.name == sys.argv[1]]
# Numba's own start-up, paid once per process by the first compiled or cached function of
# any library (its typing and lowering registries; with SciPy installed, scipy.linalg too).
from numba.core.registry import cpu_target
start = time.perf_counter()
cpu_target.target_context.refresh()
print(time.perf_counter() - start)
for case in cases:
    x = np.random.rand(*case.input_shape(1)).astype(np.float32)
    layer = numbaconv.Conv2D(case.filters, case.kernel, strides=case.strides, padding="same",
                             dilation_rate=case.dilation, groups=case.groups,
                             data_format=case.data_format)
    layer.build(x.shape)
    start = time.perf_counter()
    layer(x)
    first = time.perf_counter() - start
    start = time.perf_counter()
    layer(x)
    print(first - (time.perf_counter() - start))
"""


def compile_costs(cases=SUITE, out=sys.stdout):
    """First-call compile seconds of each case in fresh processes: new, then cached.

    Each case runs in a new Python process over a temporary disk cache that
    first receives the kernels shared by every configuration (layout copies,
    border kernels, generic tier: compiled once per machine), so "new" is
    what a new configuration costs, and "cached" what the same configuration
    costs in the next process.  Numba's own start-up, which the first
    compiled function of any library pays once per process, is timed before
    the call and reported apart (``numba_start_s``, of the cached run).

    Returns
    -------
    list of dict
        ``{"case": name, "new_s": float, "cached_s": float, "numba_start_s": float}``.
    """
    import os
    import subprocess
    import tempfile

    def first_call(argument, env):
        """``(Numba's start-up, the first call's extra seconds)`` in a new process."""
        result = subprocess.run([sys.executable, "-c", _FIRST_CALL_SCRIPT, argument], env=env,
                                capture_output=True, text=True, timeout=600, check=True)
        numbers = [float(word) for word in result.stdout.split()]
        return (numbers + [float("nan")] * 2)[:2]

    rows = []
    print(f"{'layer':28s} {'new config':>11s} {'cached':>8s} {'numba start':>12s}   "
          "(first-call seconds)", file=out)
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, NUMBACONV_CACHE_DIR=directory)
        first_call("--shared", env)
        for case in cases:
            new, (start, cached) = first_call(case.name, env)[1], first_call(case.name, env)
            rows.append({"case": case.name, "new_s": new, "cached_s": cached,
                         "numba_start_s": start})
            print(f"{case.name:28s} {new:10.2f}s {cached:7.2f}s {start:11.2f}s", file=out,
                  flush=True)
    return rows


def _plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    libraries = sorted({name for row in rows for name in row["gflops"]},
                       key=lambda n: n != "numbaconv")
    labels = [f"{row['case']['name']} N={row['batch']}" for row in rows]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    height = 0.8 / len(libraries)
    for i, name in enumerate(libraries):
        ax.barh([j + i * height for j in range(len(rows))],
                [row["gflops"].get(name, 0) for row in rows], height, label=name)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(rows))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("GFLOP/s (float32)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m numbaconv.bench", description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", help="run the cases whose name contains this text")
    parser.add_argument("--peers", nargs="*", default=["torch", "jax"])
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--plot", help="save a bar chart to this file (needs matplotlib)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: the GPU kernels against PyTorch's cuDNN")
    parser.add_argument("--backward", action="store_true",
                        help="time input and kernel gradients instead of the forward")
    parser.add_argument("--compile", action="store_true",
                        help="measure first-call compile seconds instead (fresh processes)")
    args = parser.parse_args(argv)
    cases = [c for c in SUITE if args.only is None or args.only in c.name]
    if args.compile:
        result = {"compile": compile_costs(cases)}
    else:
        result = run(cases, tuple(args.batch), args.repeats, tuple(args.peers),
                     device=args.device, backward=args.backward)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot and "rows" in result:
        _plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
