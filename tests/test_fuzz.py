"""Fuzzing ``conv2d`` with hypothesis, in child processes so that a crash is caught.

Each batch of random configurations (valid and invalid shapes, strides,
dilations, groups, paddings, layouts, dtypes, activations) runs in a fresh
Python process: a segmentation fault in compiled code shows up as the
child's exit status instead of killing the test run.  Whenever ``conv2d``
raises nothing, its result must equal the NumPy reference; otherwise it must
raise ``ValueError`` or ``TypeError`` (and only for invalid arguments).

The CI budget is a few hundred examples; ``NUMBACONV_FUZZ_EXAMPLES=5000``
runs a longer campaign.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(__file__)
SRC = os.path.join(os.path.dirname(HERE), "src")
EXAMPLES = int(os.environ.get("NUMBACONV_FUZZ_EXAMPLES", "150"))

_CHILD = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[1])
    from hypothesis import given, settings, HealthCheck, strategies as st
    import numbaconv
    from reference import reference_conv2d, reference_pads

    policy, examples, seed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    numbaconv.set_specialization(policy)
    counts = {"ok": 0, "rejected": 0}

    def pair(v):
        return (v, v) if isinstance(v, int) else v

    @st.composite
    def cases(draw):
        # A valid configuration, then (half of the time) one argument made invalid.
        layout = draw(st.sampled_from(["channels_last", "channels_first"]))
        groups = draw(st.integers(1, 4))
        per_group = draw(st.integers(1, 3))
        channels = groups * per_group
        filters = groups * draw(st.integers(1, 3))
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        kernel_in = per_group
        batch = draw(st.integers(0, 3))
        strides = draw(st.sampled_from([1, 2, 3, (1, 2), (3, 1)]))
        dilation = draw(st.sampled_from([1, 2, (2, 1), (1, 3)]))
        padding = draw(st.sampled_from(["valid", "same", "SAME"]))
        reach = [(k - 1) * d + 1 for k, d in zip((kh, kw), pair(dilation))]
        h = draw(st.integers(reach[0] if padding == "valid" else 1, 12))
        w = draw(st.integers(reach[1] if padding == "valid" else 1, 12))
        dtype = draw(st.sampled_from(["float32", "float64", "int32", "float16"]))
        activation = draw(st.sampled_from([None, "relu", "tanh"]))
        use_bias = draw(st.booleans())
        rank = 4
        flaw = draw(st.sampled_from([None] * 6 + [
            "channels", "filters", "kernel_in", "zero_kernel_in", "zero_h", "strides",
            "dilation", "padding", "activation", "rank", "too_small"]))
        if flaw == "channels":
            channels += 1 if groups == 1 and per_group == 1 else 0
            kernel_in = per_group if groups > 1 or per_group > 1 else 2
        elif flaw == "filters":
            filters += 1 if groups > 1 else 0
            groups = groups if groups > 1 else 1
        elif flaw == "kernel_in":
            kernel_in = channels + 1
        elif flaw == "zero_kernel_in":
            kernel_in = 0
        elif flaw == "zero_h":
            h = 0
        elif flaw == "strides":
            strides = draw(st.sampled_from([0, -1, (1, 0), (1, 2, 3), 1.5]))
        elif flaw == "dilation":
            dilation = draw(st.sampled_from([0, -2, (0, 1)]))
        elif flaw == "padding":
            padding = draw(st.sampled_from(["full", 1, "causal"]))
        elif flaw == "activation":
            activation = "bogus"
        elif flaw == "rank":
            rank = 3
        elif flaw == "too_small":
            padding, h = "valid", max(1, reach[0] - 1)
        return (layout, groups, channels, filters, kh, kw, kernel_in, h, w, batch, strides,
                dilation, padding, dtype, activation, use_bias, rank)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(cases(), st.integers(0, 2 ** 32 - 1))
    def check(case, data_seed):
        (layout, groups, channels, filters, kh, kw, kernel_in, h, w, batch, strides, dilation,
         padding, dtype, activation, use_bias, rank) = case
        rng = np.random.default_rng(data_seed)
        shape = (batch, h, w, channels)
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        if layout == "channels_first":
            x = x.transpose(0, 3, 1, 2)
        if rank == 3:  # a missing batch axis
            x = np.zeros(x.shape[1:], dtype)
        kernel = rng.standard_normal((kh, kw, kernel_in, filters)).astype(dtype)
        bias = rng.standard_normal(filters).astype(dtype) if use_bias else None
        try:
            out = numbaconv.conv2d(x, kernel, strides=strides, padding=padding,
                                   data_format=layout, dilation_rate=dilation, bias=bias,
                                   activation=activation)
        except (ValueError, TypeError):
            counts["rejected"] += 1
            return
        # Accepted: the arguments must have been valid, and the result right.
        assert rank == 4 and kernel_in >= 1 and channels % kernel_in == 0
        assert filters % (channels // kernel_in) == 0 and activation != "bogus"
        xl = x if layout == "channels_last" else x.transpose(0, 2, 3, 1)
        s, d = pair(strides), pair(dilation)
        pads = reference_pads(padding if isinstance(padding, int) else padding.lower(),
                              (h, w), (kh, kw), s, d)
        want = reference_conv2d(xl.astype(np.float64), kernel.astype(np.float64), s, pads, d)
        if bias is not None:
            want = want + bias.astype(np.float64)
        if activation == "relu":
            want = np.maximum(want, 0)
        elif activation == "tanh":
            want = np.tanh(want)
        if layout == "channels_first":
            want = want.transpose(0, 3, 1, 2)
        assert out.shape == want.shape, (out.shape, want.shape)
        tol = 1e-9 if out.dtype == np.float64 else (2e-2 if out.dtype == np.float16 else 1e-4)
        np.testing.assert_allclose(out.astype(np.float64), want, rtol=tol, atol=tol * 10)
        counts["ok"] += 1

    check()
    print(counts["ok"], counts["rejected"])
""")


@pytest.mark.parametrize("policy", ["never", pytest.param("always", marks=pytest.mark.slow)])
def test_fuzz_conv2d_in_child_processes(policy):
    env = dict(os.environ, PYTHONPATH=SRC)
    # Specialized kernels compile per configuration (~1 s each): fewer examples.
    examples = EXAMPLES if policy == "never" else max(10, EXAMPLES // 10)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, HERE, policy, str(examples), "0"], env=env,
        capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, (
        f"child exited with {result.returncode} (negative: killed by a signal, i.e. a crash)\n"
        + result.stdout[-3000:] + result.stderr[-6000:])
    accepted, rejected = map(int, result.stdout.split()[-2:])
    print(f"{policy}: {accepted} accepted and checked, {rejected} rejected")
    assert accepted > 0 and rejected > 0  # both sides of the validation were exercised
