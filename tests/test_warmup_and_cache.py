"""Ahead-of-time compilation and the on-disk kernel cache."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numba.core import types

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


def _flagged_task():
    """A task whose untaken branch cannot be typed, with one run-time and two constant arguments."""
    from numbaconv.jit import task_jit

    @task_jit()
    def task(out, item, offset, flag, size):
        if flag:
            out[item] = size * item + offset
        else:
            out[item] = out[item] + "never typed"

    return task


def test_parallel_task_compiles_its_constants_as_literals():
    from numbaconv.jit import ParallelTask

    task = _flagged_task()
    run = ParallelTask(task, (True, np.int64(3)))
    out = np.zeros(7)
    run(7, (out,), (0.5 > 0,))  # a bool run-time argument: typed as such, not as a literal
    np.testing.assert_array_equal(out, 3.0 * np.arange(7) + 1)
    run(5, (out,), (False,))  # a new run-time value, the same compiled task
    np.testing.assert_array_equal(out, [0, 3, 6, 9, 12, 16, 19])
    assert len(task.signatures) == 1
    offset, flag, size = task.signatures[0][2:]
    assert offset == types.boolean
    assert (flag.literal_value, size.literal_value) == (True, 3)


def test_parallel_task_compiles_again_for_other_array_types():
    from numbaconv.jit import ParallelTask

    task = _flagged_task()
    run = ParallelTask(task, (True, 2))
    contiguous = np.zeros(6)
    run(6, (contiguous,), (True,))
    strided = np.zeros(12)[::2]  # not contiguous: a task of its own, not the last call's
    run(6, (strided,), (True,))
    single = np.zeros(3, np.float32)
    run(3, (single,), (True,))
    run(3, (single,), (np.int32(2),))  # an int32 offset: another task, reading an int32
    for out in (contiguous, strided):
        np.testing.assert_array_equal(out, 2.0 * np.arange(6) + 1)
    np.testing.assert_array_equal(single, 2.0 * np.arange(3) + 2)
    assert sorted((str(signature[0]), str(signature[2])) for signature in task.signatures) == [
        ("array(float32, 1d, C)", "bool"), ("array(float32, 1d, C)", "int32"),
        ("array(float64, 1d, A)", "bool"), ("array(float64, 1d, C)", "bool")]


def test_helpers_compile_once_for_every_configuration():
    # A task passes its constants (literals) to a helper: one int64 version serves all
    # configurations, the constants still folded into each task's results.
    from numbaconv.jit import ParallelTask, helper_jit, task_jit

    @helper_jit(2, 3)
    def span(start, count, step):
        return start * step, (start + count) * step

    @task_jit()
    def task(out, item, step, count):
        lo, hi = span(item, count, step)
        out[item] = hi - lo + 0.5 * (step > 2)  # a branch on the constant

    for step, count in ((2, 3), (3, 4), (5, 1)):
        out = np.zeros(4)
        ParallelTask(task, (step, count))(4, (out,))
        np.testing.assert_array_equal(out, np.full(4, count * step + 0.5 * (step > 2)))
    assert [tuple(map(str, signature)) for signature in span.signatures] == [("int64",) * 3]
    assert len(task.signatures) == 3  # the task itself, per configuration


def test_tasks_compile_without_function_passes_and_restore_them():
    # The function passes are skipped only while a task compiles, exceptions included.
    from numba.core.codegen import CPUCodeLibrary

    from numbaconv import jit

    optimize = CPUCodeLibrary._optimize_functions
    with jit._module_passes_only():
        assert CPUCodeLibrary._optimize_functions is jit._set_data_layout
    assert CPUCodeLibrary._optimize_functions is optimize
    with pytest.raises(ZeroDivisionError), jit._module_passes_only():
        1 / 0
    assert CPUCodeLibrary._optimize_functions is optimize


@pytest.mark.parametrize("constant", [1.5, "3", None])
def test_parallel_task_rejects_constants_other_than_ints_and_bools(constant):
    from numbaconv.jit import ParallelTask

    with pytest.raises(TypeError, match="int or a bool"):
        ParallelTask(_flagged_task(), (True, constant))



_SPECIALIZED_SCRIPT = """
import numpy as np, numbaconv
from numba.core.registry import CPUDispatcher
from numbaconv.cpu import direct
x = np.arange(2 * 9 * 10 * 8, dtype=np.float32).reshape(2, 9, 10, 8) / 100
k = np.linspace(-1, 1, 3 * 3 * 8 * 8, dtype=np.float32).reshape(3, 3, 8, 8)
y = numbaconv.conv2d(x, k, padding="same")
z = numbaconv.conv2d(x, k[:, :, :1], padding="same")  # depthwise: 8 groups
from numbaconv.jit import _TaskCompiler
functions = [value for value in vars(direct).values() if isinstance(value, CPUDispatcher)]
tasks = [task for task in functions if task._compiler.pipeline_class is _TaskCompiler]
print(sum(sum(task.stats.cache_hits.values()) for task in tasks),
      sum(sum(task.stats.cache_misses.values()) for task in tasks),
      sum(sum(function.stats.cache_misses.values()) for function in functions))
print(*y.ravel()[::37], *z.ravel()[::37])
"""


@pytest.mark.slow  # two child processes compiling: ~30 s
def test_specialized_tasks_load_from_the_disk_cache(tmp_path):
    env = dict(os.environ, NUMBACONV_CACHE_DIR=str(tmp_path), NUMBACONV_SPECIALIZE="always")
    runs = [subprocess.run([sys.executable, "-c", _SPECIALIZED_SCRIPT], env=env,
                           capture_output=True, text=True, timeout=600) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr
    (hits, misses, _), (cached_hits, cached_misses, compiled) = (
        map(int, run.stdout.split()[:3]) for run in runs)
    assert hits == 0 and misses >= 2
    assert cached_misses == 0 and cached_hits == misses  # every task from the cache
    assert compiled == 0  # nor any helper compiled (a cached task needs none)
    x = np.arange(2 * 9 * 10 * 8, dtype=np.float32).reshape(2, 9, 10, 8) / 100
    k = np.linspace(-1, 1, 3 * 3 * 8 * 8, dtype=np.float32).reshape(3, 3, 8, 8)
    pads = ((1, 1), (1, 1))
    y = reference_conv2d(x, k, (1, 1), pads, (1, 1), "channels_last")
    z = reference_conv2d(x, k[:, :, :1], (1, 1), pads, (1, 1), "channels_last")
    want = np.concatenate([y.ravel()[::37], z.ravel()[::37]])
    for run in runs:
        np.testing.assert_allclose([float(v) for v in run.stdout.split()[3:]], want,
                                   rtol=1e-5, atol=1e-5)
