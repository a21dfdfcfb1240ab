"""Tests of the benchmark harness (``python -m numbaconv.bench``): counts and plumbing."""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest
from reference import reference_conv2d, reference_pads

from numbaconv import bench
from numbaconv.spec import ConvSpec


@pytest.mark.parametrize("case", bench.SUITE, ids=lambda case: case.name)
@pytest.mark.parametrize("batch", [1, 8])
def test_suite_flops_follow_the_issue_formula(case, batch):
    # FLOPs = 2 N Ho Wo Cout (Cin / groups) kh kw, with "same" padding.
    kernel_shape = (case.kernel, case.kernel, case.channels // case.groups, case.filters)
    spec = ConvSpec.from_arguments(case.input_shape(batch), kernel_shape, case.strides, "same",
                                   case.data_format, case.dilation, "float32")
    out_h, out_w = spec.output_hw
    assert case.flops(batch) == spec.flops == (2 * batch * out_h * out_w * case.filters
                                               * case.channels // case.groups * case.kernel ** 2)


def test_steady_time_runs_one_untimed_call_then_the_burst():
    calls = []
    seconds = bench._steady_time(lambda: calls.append(1), 5)
    assert len(calls) == 6 and seconds >= 0
    assert bench._burst_length(1.0) == 1
    assert bench._burst_length(1e-6) == 100
    assert bench._burst_length(0.001) == int(bench.BURST_SECONDS / 0.001)


@pytest.mark.slow  # the whole suite at small sizes: ~12 s
def test_run_reports_every_case_and_the_geometric_mean(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "sgemm_gflops", lambda: 100.0)  # skip the child process
    cases = (bench.Case("tiny dense", 9, 4, 8, 3), bench.Case("tiny dw", 9, 6, 6, 3, groups=6))
    text = io.StringIO()
    result = bench.run(cases, batches=(1,), repeats=2, peers=(), out=text)
    assert [row["case"]["name"] for row in result["rows"]] == ["tiny dense", "tiny dw"]
    for row in result["rows"]:
        assert np.isfinite(row["gflops"]["numbaconv"]) and row["gflops"]["numbaconv"] > 0
    assert result["geomean"] == {}
    assert "tiny dw" in text.getvalue() and "GB/s" in text.getvalue()
    json.dumps(result)  # what --json writes


@pytest.mark.parametrize("case", [bench.Case("odd same", 9, 3, 4, 4, strides=2),
                                  bench.Case("even same", 8, 4, 6, 3, dilation=2, groups=2),
                                  bench.Case("nchw", 7, 3, 5, 3, data_format="channels_first")],
                         ids=lambda case: case.name)
def test_torch_peer_computes_the_same_convolution(case):
    # The peer must be timed on the convolution we run: TF "same" padding,
    # asymmetric or not, groups, dilation, layouts.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.input_shape(2)).astype(np.float32)
    kernel = rng.standard_normal((case.kernel, case.kernel, case.channels // case.groups,
                                  case.filters)).astype(np.float32)
    got = bench._torch_runner(case, x, kernel)()
    assert isinstance(got, torch.Tensor)
    got = got.numpy()
    if case.data_format == "channels_last":
        got = got.transpose(0, 2, 3, 1)
    want = reference_conv2d(
        x if case.data_format == "channels_last" else x.transpose(0, 2, 3, 1), kernel,
        (case.strides,) * 2,
        reference_pads("same", (case.size, case.size), (case.kernel,) * 2, (case.strides,) * 2,
                       (case.dilation,) * 2), (case.dilation,) * 2)
    if case.data_format == "channels_first":
        want = want.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_run_on_the_cuda_target():
    # The plumbing of --device cuda (on the simulator here; timings meaningless).
    from numbaconv import cuda as cuda_target

    pytest.importorskip("numba.cuda")
    if not cuda_target.available():
        pytest.skip("CUDA cannot run here")
    text = io.StringIO()
    result = bench.run((bench.Case("tiny", 3, 2, 2, 3),), batches=(1,), repeats=1, peers=(),
                       out=text, device="cuda")
    assert "device: cuda" in text.getvalue()
    assert result["rows"][0]["gflops"]["numbaconv"] > 0


def test_run_backward_times_the_gradients(monkeypatch):
    monkeypatch.setattr(bench, "sgemm_gflops", lambda: 100.0)
    peers = ("torch",) if importlib.util.find_spec("torch") else ()
    text = io.StringIO()
    result = bench.run((bench.Case("tiny", 6, 4, 4, 3, strides=2),
                        bench.Case("tiny g", 6, 4, 4, 3, groups=2,
                                   data_format="channels_first")),
                       batches=(2,), repeats=1, peers=peers, out=text, backward=True)
    for row in result["rows"]:
        assert all(value > 0 for value in row["gflops"].values())
        assert set(row["gflops"]) == {"numbaconv", *peers}
        assert row["backward_over_forward"] > 0
    assert "x forward" in text.getvalue() and "backward / forward time" in text.getvalue()
