"""Hardening: absurd sizes, threads, a damaged disk cache, memory over many calls.

Results are checked against the NumPy reference in ``reference.py``; crashes
of compiled code are caught by running the risky parts in child processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import numbaconv
from reference import reference_conv2d, reference_pads

HERE = os.path.dirname(__file__)
SRC = os.path.join(os.path.dirname(HERE), "src")


def _reference(x, kernel, padding="same", bias=None):
    pads = reference_pads(padding, x.shape[1:3], kernel.shape[:2], (1, 1), (1, 1))
    out = reference_conv2d(x, kernel, (1, 1), pads, (1, 1))
    return out if bias is None else out + bias


# --------------------------------------------------------------------------- absurd sizes


@pytest.mark.parametrize("x_shape, k_shape, what", [
    ((10 ** 4, 10 ** 4, 10 ** 4, 3), (3, 3, 3, 4), "output"),
    ((2 ** 20, 2 ** 12, 2 ** 12, 1), (1, 1, 1, 2 ** 40), "output"),  # 2**76 values
])
def test_absurd_sizes_raise_memory_error_before_allocating(x_shape, k_shape, what):
    # Broadcast views: terabytes of logical size, no memory behind them.
    x = np.broadcast_to(np.float32(1), x_shape)
    kernel = np.broadcast_to(np.float32(1), k_shape)
    with pytest.raises(MemoryError, match=f"The {what} would need .* GiB"):
        numbaconv.conv2d(x, kernel)


def test_absurd_input_copy_raises_memory_error():
    # A tiny output but an input copy beyond memory (padding needs a copy of x).
    x = np.broadcast_to(np.float32(1), (1, 3, 2 ** 40, 1))
    kernel = np.ones((3, 1, 1, 1), np.float32)
    with pytest.raises(MemoryError, match="would need"):
        numbaconv.conv2d(x, kernel, strides=(1, 2 ** 40), padding="same")


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("groups", [1, 6])  # dense and depthwise nests
def test_threads_sharing_one_layer_and_one_configuration(groups, specialized):
    # 8 threads x 12 calls: two layers with the same configuration, each called from
    # several threads at once with different inputs, on a configuration compiled on
    # first use (concurrently).  Every result is correct; the kernel is built once.
    rng = np.random.default_rng(groups)
    shape = (2, 11, 13 + groups, 6)  # a width no other test uses: a new configuration
    layers = [numbaconv.Conv2D(6, 3, padding="same", groups=groups, dtype="float64")
              for _ in range(2)]
    for layer in layers:
        layer.build(shape)
    inputs = [rng.standard_normal(shape) for _ in range(8)]
    before = numbaconv.kernel_cache_info()
    errors, barrier = [], threading.Barrier(8)

    def work(index):
        try:
            barrier.wait()
            layer = layers[index % 2]
            kernel, bias = layer.get_weights()
            for _ in range(12):
                out = layer(inputs[index])
                np.testing.assert_allclose(out, _reference(inputs[index], kernel, bias=bias),
                                           rtol=1e-10, atol=1e-12)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "deadlock"
    assert not errors, errors[0]
    after = numbaconv.kernel_cache_info()
    # Its plan and its kernel (the shared generic kernel may have been built before).
    assert after.entries - before.entries <= 2
    assert after.misses - before.misses == after.entries - before.entries


def test_set_weights_between_calls_from_threads():
    # Documented behaviour: each call uses the weights of one moment (kernel and bias
    # from the same set_weights), never a mix.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 9, 9, 4))
    layer = numbaconv.Conv2D(5, 3, padding="same", dtype="float64")
    layer.build(x.shape)
    weights = [[rng.standard_normal((3, 3, 4, 5)), rng.standard_normal(5) * 10]
               for _ in range(2)]
    wants = [_reference(x, k, bias=b) for k, b in weights]
    errors, stop = [], threading.Event()

    def setter():
        i = 0
        while not stop.is_set():
            layer.set_weights(weights[i % 2])
            i += 1

    def caller():
        try:
            for _ in range(200):
                out = layer(x)
                if not any(np.allclose(out, want, rtol=1e-10, atol=1e-12) for want in wants):
                    raise AssertionError("a call mixed two sets of weights")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    layer.set_weights(weights[0])
    threads = [threading.Thread(target=setter)] + [threading.Thread(target=caller)
                                                   for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join(timeout=300)
    stop.set()
    threads[0].join(timeout=60)
    assert not errors, errors[0]


# --------------------------------------------------------------------------- disk cache faults

_CACHE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, numbaconv
    sys.path.insert(0, sys.argv[1])
    from reference import reference_conv2d
    numbaconv.set_specialization("always")
    x = np.linspace(-1, 1, 2 * 7 * 9 * 3).reshape(2, 7, 9, 3)
    for k_shape, groups in (((3, 3, 3, 4), 1), ((3, 3, 1, 3), 3)):
        k = np.cos(np.arange(np.prod(k_shape))).reshape(k_shape)
        out = numbaconv.conv2d(x, k, padding="valid")
        want = reference_conv2d(x, k, (1, 1), ((0, 0), (0, 0)), (1, 1))
        assert np.allclose(out, want, rtol=1e-10, atol=1e-12), "wrong result"
    print("ok")
""")


def _run_cached(cache_dir):
    env = dict(os.environ, NUMBACONV_CACHE_DIR=str(cache_dir), PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-c", _CACHE_SCRIPT, HERE], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process):
    out, err = process.communicate(timeout=900)
    return process.returncode, out, err


@pytest.mark.slow  # two child processes compiling: ~25 s
def test_two_processes_fill_one_cache_at_once(tmp_path):
    processes = [_run_cached(tmp_path) for _ in range(2)]
    for process in processes:
        code, out, err = _finish(process)
        assert code == 0 and out.strip() == "ok", err[-2000:]


@pytest.mark.slow  # child processes compiling: ~35 s
def test_damaged_cache_entries_are_recompiled(tmp_path):
    # One cache, its entries damaged three ways at once (truncated, overwritten with garbage,
    # emptied; a run per kind of damage cost two more processes); the run recompiles what it
    # finds damaged, then a clean run loads what it wrote back.
    damages = ("truncate", "garbage", "empty")
    code, out, err = _finish(_run_cached(tmp_path))
    assert code == 0, err[-2000:]
    entries = sorted(os.path.join(root, name) for root, _, names in os.walk(tmp_path)
                     for name in names if name.endswith((".nbi", ".nbc")))
    assert len(entries) >= len(damages), entries
    for number, path in enumerate(entries):
        damage = damages[number % len(damages)]
        with open(path, "r+b") as f:
            data = f.read()
            f.seek(0)
            f.truncate()
            if damage == "truncate":
                f.write(data[: len(data) // 2])
            elif damage == "garbage":
                f.write(os.urandom(len(data)))
    for run in ("damaged", "rewritten"):
        code, out, err = _finish(_run_cached(tmp_path))
        assert code == 0 and out.strip() == "ok", (run, err[-2000:])
        assert err.count("Warning") <= 1, (run, err[-2000:])


# --------------------------------------------------------------------------- memory


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_no_leak_over_ten_thousand_calls():
    rng = np.random.default_rng(9)
    dense = numbaconv.Conv2D(8, 3, padding="same", activation="relu")
    depthwise = numbaconv.Conv2D(8, 3, padding="same", groups=8, data_format="channels_first")
    x_last = rng.random((1, 10, 10, 8), dtype=np.float32)
    x_first = rng.random((1, 8, 10, 10), dtype=np.float32)
    for _ in range(200):  # compile, fill caches and allocator pools
        dense(x_last)
        depthwise(x_first)
        numbaconv.conv2d(x_last, np.ones((3, 3, 8, 4), np.float32), padding="same")
    start = _rss_bytes()
    for _ in range(10_000):
        dense(x_last)
        depthwise(x_first)
        numbaconv.conv2d(x_last, np.ones((3, 3, 8, 4), np.float32), padding="same")
    growth = _rss_bytes() - start
    # 30,000 calls: a leak of one output per call would be 30,000 * 3.2 kB = 96 MB.
    assert growth < 8 * 2 ** 20, f"RSS grew by {growth / 2 ** 20:.1f} MiB"


# --------------------------------------------------------------------------- bad-input battery

_X = np.zeros((1, 5, 5, 4), np.float32)
_K = np.zeros((3, 3, 4, 2), np.float32)

BAD_CONV2D_CALLS = [
    (dict(inputs=_X[0]), ValueError, "inputs"),                       # rank 3
    (dict(inputs=_X[None]), ValueError, "inputs"),                    # rank 5
    (dict(inputs=np.float32(1)), ValueError, "inputs"),               # scalar
    (dict(inputs=[[1, 2], [3]]), TypeError, "inputs"),                # ragged list
    (dict(inputs=_X.astype(complex)), TypeError, "inputs"),
    (dict(inputs=_X.astype(object)), TypeError, "inputs"),
    (dict(inputs=np.full(_X.shape, "a")), TypeError, "inputs"),
    (dict(kernel=_K.astype(complex)), TypeError, "kernel"),
    (dict(kernel=_K[0]), ValueError, "kernel"),                       # rank 3
    (dict(kernel=np.zeros((3, 3, 3, 2))), ValueError, "channel"),     # 4 % 3 != 0
    (dict(kernel=np.zeros((3, 3, 2, 3))), ValueError, "filters"),     # 3 % 2 groups
    (dict(kernel=np.zeros((3, 3, 0, 2))), ValueError, "kernel"),
    (dict(kernel=np.zeros((9, 9, 4, 2))), ValueError, "output would have size"),
    (dict(inputs=np.zeros((1, 0, 5, 4))), ValueError, "height and width"),
    (dict(strides=0), ValueError, "strides"),
    (dict(strides=(1, 2, 3)), ValueError, "strides"),
    (dict(strides=1.5), ValueError, "strides"),
    (dict(strides="2"), ValueError, "strides"),
    (dict(dilation_rate=-1), ValueError, "dilation_rate"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding=(1, 2, 3)), ValueError, "padding"),
    (dict(padding=((1, 1), (1, -1))), ValueError, "padding"),
    (dict(data_format="NHWC"), ValueError, "data_format"),
    (dict(bias=np.zeros(3)), ValueError, "bias"),
    (dict(bias=np.zeros((2, 1))), ValueError, "bias"),
    (dict(bias=np.zeros(2, complex)), TypeError, "bias"),
    (dict(activation="bogus"), ValueError, "bogus"),
    (dict(activation=3), ValueError, "3"),
]


@pytest.mark.parametrize("arguments, error, match", BAD_CONV2D_CALLS)
def test_bad_conv2d_arguments_raise_clear_errors(arguments, error, match):
    call = dict(inputs=_X, kernel=_K)
    call.update(arguments)
    with pytest.raises(error, match=match):
        numbaconv.conv2d(call.pop("inputs"), call.pop("kernel"), **call)


BAD_WEIGHTS = [
    ([_K.astype(complex), np.zeros(2)], TypeError, "weights"),
    ([_K.astype(object), np.zeros(2)], TypeError, "weights"),
    ([np.full(_K.shape, "a"), np.zeros(2)], TypeError, "weights"),
    ([_K, None], TypeError, "weights"),
    ([_K[..., None], np.zeros(2)], ValueError, "shape"),
    ([np.float32(1), np.zeros(2)], ValueError, "shape"),
    ([_K], ValueError, "weights"),
    ([_K, np.zeros(2), np.zeros(2)], ValueError, "weights"),
    ([_K, np.zeros(3)], ValueError, "shape"),
]


@pytest.mark.parametrize("weights, error, match", BAD_WEIGHTS)
def test_bad_set_weights_raise_clear_errors(weights, error, match):
    layer = numbaconv.Conv2D(2, 3)
    layer.build(_X.shape)
    before = [w.copy() for w in layer.get_weights()]
    with pytest.raises(error, match=match):
        layer.set_weights(weights)
    for old, new in zip(before, layer.get_weights()):  # nothing half-assigned
        np.testing.assert_array_equal(old, new)
    assert layer(_X).shape == (1, 3, 3, 2)


@pytest.mark.parametrize("value, error", [(np.zeros((3, 3, 4, 3)), ValueError), ("x", TypeError),
                                          (np.zeros(_K.shape, complex), TypeError)])
def test_bad_kernel_assignment_raises(value, error):
    layer = numbaconv.Conv2D(2, 3)
    layer.build(_X.shape)
    with pytest.raises(error, match="kernel"):
        layer.kernel.assign(value)


def test_layers_copy_and_pickle_with_their_own_lock():
    import copy
    import pickle

    x = np.random.default_rng(1).standard_normal((1, 6, 6, 3))
    layer = numbaconv.Conv2D(4, 3, dtype="float64")
    want = layer(x)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone._weights_lock is not layer._weights_lock
        np.testing.assert_array_equal(clone(x), want)
        clone.set_weights([np.zeros((3, 3, 3, 4)), np.ones(4)])
        np.testing.assert_array_equal(layer(x), want)  # the original is untouched


@pytest.mark.parametrize("case", ["padded", "reordered", "converted", "fortran", "depthwise_cf",
                                  "planar"])
@pytest.mark.parametrize("scratch_bytes", [1, 3000])  # one image per chunk, a few images
def test_copies_made_a_few_images_at_a_time(case, scratch_bytes, monkeypatch):
    from numbaconv import functional

    monkeypatch.setattr(functional, "SCRATCH_BYTES", scratch_bytes)
    copies = []
    prepare = functional.layout.prepare_input
    monkeypatch.setattr(functional.layout, "prepare_input",
                        lambda x, *args: copies.append(len(x)) or prepare(x, *args))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 6, 7, 4))  # channels_last values
    kernel = rng.standard_normal((3, 3, 4, 3))
    data_format, padding = "channels_last", "same"
    if case == "padded":  # small image, many filters: the dense nest pads explicitly
        kernel = rng.standard_normal((3, 3, 4, 64))
    elif case == "reordered":  # channels_first grouped: reordered to channels_last
        data_format, kernel = "channels_first", rng.standard_normal((3, 3, 2, 4))
    elif case == "converted":  # float32 input, float64 kernel: computed in float64
        padding = "valid"
        x = x.astype(np.float32).astype(np.float64)
    elif case == "fortran":
        padding = "valid"
    elif case == "depthwise_cf":
        data_format, kernel = "channels_first", rng.standard_normal((3, 3, 1, 4))
    elif case == "planar":  # no copy at all
        x = rng.standard_normal((3, 4, 40, 2))
        data_format, kernel = "channels_first", rng.standard_normal((3, 3, 1, 2))
    pads = reference_pads(padding, x.shape[1:3], kernel.shape[:2], (1, 1), (1, 1))
    want = reference_conv2d(x, kernel, (1, 1), pads, (1, 1))
    given = x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)
    if case == "converted":
        given = given.astype(np.float32)
    given = np.asfortranarray(given) if case == "fortran" else np.ascontiguousarray(given)
    out = numbaconv.conv2d(given, kernel, padding=padding, data_format=data_format)
    if data_format == "channels_first":
        out = out.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)
    if case == "planar":
        assert copies == []
    else:  # every image copied once, in chunks of at most the scratch size (>= 1 image)
        assert sum(copies) == len(x)
        assert len(copies) == (len(x) if scratch_bytes == 1 else len(copies)) and len(copies) > 1


@pytest.mark.parametrize("data_format, groups", [("channels_last", 1), ("channels_first", 8)])
def test_peak_allocation_is_output_plus_small_scratch(data_format, groups):
    # 24 MB of input that needs a copy (explicit padding of small images, or a reorder
    # for a channels_first grouped layer): the call allocates its output and at most
    # about SCRATCH_BYTES more, not a copy of the whole input.
    import tracemalloc

    from numbaconv import functional

    rng = np.random.default_rng(2)
    shape = (96, 16, 16, 256) if data_format == "channels_last" else (96, 256, 16, 16)
    x = rng.random(shape, dtype=np.float32)
    layer = numbaconv.Conv2D(64, 3, padding="same", groups=groups, data_format=data_format)
    layer(x)  # compile and pack the weights
    results = []
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        # A new thread starts with no scratch buffers: its allocations are all counted.
        thread = threading.Thread(target=lambda: results.append(layer(x)))
        thread.start()
        thread.join()
        extra = tracemalloc.get_traced_memory()[1] - base - results[0].nbytes
    finally:
        tracemalloc.stop()
    assert x.nbytes >= 3 * functional.SCRATCH_BYTES
    assert extra < functional.SCRATCH_BYTES + 2 ** 20, f"{extra / 2 ** 20:.1f} MiB beyond output"
