"""Ahead-of-time compilation and the on-disk kernel cache."""

import os
import subprocess
import sys

import numpy as np
import pytest

import numbaconv
from reference import reference_conv2d


@pytest.fixture
def always_specialize():
    numbaconv.set_specialization("always")
    try:
        yield
    finally:
        numbaconv.set_specialization("auto")


def test_warmup_compiles_what_the_call_then_uses(always_specialize, capsys):
    layer = numbaconv.Conv2D(8, 3, padding="same", input_shape=(9, 10, 4), batch_size=2)
    names = numbaconv.warmup([layer, dict(input_shape=(1, 4, 9, 10), kernel_shape=(3, 3, 2, 8),
                                          strides=2, data_format="channels_first",
                                          activation="relu")], progress=True)
    assert len(names) == 2 and all(name.endswith("/specialized") for name in names)
    assert "[2/2]" in capsys.readouterr().err
    before = numbaconv.kernel_cache_info()
    x = np.random.default_rng(0).standard_normal((2, 9, 10, 4)).astype(np.float32)
    out = layer(x)
    after = numbaconv.kernel_cache_info()
    assert after.entries == before.entries and after.misses == before.misses
    want = reference_conv2d(x, layer.kernel.numpy(), (1, 1), ((1, 1), (1, 1)), (1, 1),
                            "channels_last", layer.bias.numpy())
    np.testing.assert_allclose(out, want, rtol=5e-4, atol=1e-5)


@pytest.mark.parametrize("config, error, match", [
    (numbaconv.Conv2D(4, 3), ValueError, "not built"),
    (dict(kernel_shape=(3, 3, 1, 1)), ValueError, "input_shape"),
    (dict(input_shape=(1, 5, 5, 1), kernel_shape=(3, 3, 1, 1), stride=2), ValueError, "stride"),
    ([1, 2], TypeError, "configuration"),
])
def test_warmup_rejects_bad_configurations(config, error, match):
    with pytest.raises(error, match=match):
        numbaconv.warmup([config])


_SCRIPT = """
import warnings, numpy as np, numbaconv
warnings.simplefilter("always")
x = np.arange(2 * 6 * 5 * 3, dtype=np.float64).reshape(2, 6, 5, 3)
k = np.linspace(-1, 1, 3 * 3 * 3 * 2).reshape(3, 3, 3, 2)
print(repr(float(numbaconv.conv2d(x, k, padding="same").sum())))
print(repr(float(numbaconv.conv2d(x, k).sum())))
"""


def _run(cache_dir):
    env = dict(os.environ, NUMBACONV_CACHE_DIR=cache_dir)
    return subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)


def _want():
    x = np.arange(2 * 6 * 5 * 3, dtype=np.float64).reshape(2, 6, 5, 3)
    k = np.linspace(-1, 1, 3 * 3 * 3 * 2).reshape(3, 3, 3, 2)
    return [reference_conv2d(x, k, (1, 1), ((1, 1), (1, 1)), (1, 1), "channels_last").sum(),
            reference_conv2d(x, k, (1, 1), ((0, 0), (0, 0)), (1, 1), "channels_last").sum()]


def test_cache_directory_is_used(tmp_path):
    result = _run(str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose([float(v) for v in result.stdout.split()], _want(), rtol=1e-12)
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path / "cache")
               for name in files)


@pytest.mark.slow  # a child process compiling: ~15 s
def test_unwritable_cache_directory_warns_once_and_works(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _run(str(blocker / "cache"))  # cannot be created, even by root
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose([float(v) for v in result.stdout.split()], _want(), rtol=1e-12)
    assert result.stderr.count("will not be cached on disk") == 1


def _task_driver(FLAG, SIZE):
    """A parallel driver calling a task with two constants, as numbaconv's drivers do."""
    from numba import njit, prange

    from numbaconv.jit import task_jit

    @task_jit()
    def task(out, item, flag, size):
        if flag:  # typable only when pruned: a string added to a float
            out[item] = size * item
        else:
            out[item] = out[item] + "never typed"

    @njit(parallel=True)
    def drive(out):
        for item in prange(out.shape[0]):
            task(out, np.int64(item), FLAG, SIZE)

    return task, drive


def test_task_jit_makes_literal_arguments_constants():
    task, drive = _task_driver(True, 3)
    out = np.zeros(7)
    drive(out)
    np.testing.assert_array_equal(out, 3.0 * np.arange(7))
    # One specialization: the constants typed as literals, the loop index as int64
    # whether the parfor typed it signed or unsigned.
    assert len(task.signatures) == 1
    flag, size = task.signatures[0][2:]
    assert (flag.literal_value, size.literal_value) == (True, 3)


def test_task_jit_leaves_run_time_arguments_alone():
    from numba.core.errors import TypingError

    from numbaconv.jit import task_jit

    @task_jit()
    def task(out, flag):
        if flag:
            out[0] = 1.0
        else:
            out[0] = out[0] + "typed: the flag is not known"

    with pytest.raises(TypingError):
        task(np.zeros(1), True)  # from Python: a run-time bool, both branches typed
