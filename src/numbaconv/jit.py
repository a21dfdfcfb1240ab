"""How numbaconv compiles: one ``kernel_jit`` decorator and the on-disk cache.

Compiled kernels are cached on disk by Numba so that a configuration compiled
once costs well under a second in later processes.  The location is
``$NUMBACONV_CACHE_DIR`` when set, else Numba's own choice (``__pycache__``
beside the sources, or a per-user directory).  ``NUMBACONV_CACHE_DIR=""``
turns the disk cache off.  When no writable location exists, kernels still
work, compiled in memory, and one warning says so.
"""

from __future__ import annotations

import os
import threading
import warnings

from numba import njit
from numba.core import caching, ir, types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.ir_utils import build_definitions
from numba.core.untyped_passes import IRProcessing

__all__ = ["kernel_jit", "task_jit", "cache_dir"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_warned = threading.Event()


def cache_dir():
    """The directory kernels are cached in: ``$NUMBACONV_CACHE_DIR``, or None for Numba's default."""
    return os.environ.get("NUMBACONV_CACHE_DIR")


class _NumbaconvCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for numbaconv's own sources when ``$NUMBACONV_CACHE_DIR`` is set."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(cache_dir(), self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        if not cache_dir() or not os.path.abspath(py_file).startswith(_PACKAGE_DIR):
            return None
        return super().from_function(py_func, py_file)


# Numba consults its locators in order; ours goes first and answers only for
# numbaconv's files (the class was renamed from _CacheImpl in Numba 0.61).
_LOCATORS = getattr(caching, "CacheImpl", getattr(caching, "_CacheImpl", None))._locator_classes
if _NumbaconvCacheLocator not in _LOCATORS:
    _LOCATORS.insert(0, _NumbaconvCacheLocator)


class _ResilientFunctionCache(caching.FunctionCache):
    """Numba's per-function disk cache, treating a damaged entry as a miss.

    Numba raises when an index or data file is truncated or garbled (an
    ``UnpicklingError`` on the next load, found by tests/test_hardening.py);
    here the kernel is compiled again, the damaged index replaced, and one
    warning says so.
    """

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as err:  # noqa: BLE001 - any damage means: compile again
            _warn_damaged(err)
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as err:  # noqa: BLE001 - saving reads the (damaged) index first
            _warn_damaged(err)
            try:
                os.unlink(self._cache_file._index_path)
                super().save_overload(sig, data)
            except Exception:  # noqa: BLE001 - the kernel works uncached
                pass


_warned_damaged = threading.Event()


def _warn_damaged(err):
    if not _warned_damaged.is_set():
        _warned_damaged.set()
        warnings.warn(f"numbaconv: a damaged disk cache entry was ignored and its kernel "
                      f"compiled again ({type(err).__name__}: {err})", RuntimeWarning,
                      stacklevel=2)


def _warn_once(reason):
    if not _warned.is_set():
        _warned.set()
        warnings.warn(f"numbaconv: compiled kernels will not be cached on disk ({reason}); "
                      "each new process compiles them again.", RuntimeWarning, stacklevel=3)


def _enable_disk_cache(dispatcher):
    directory = cache_dir()
    if directory == "":
        return  # explicitly off: no warning
    if directory is not None:
        try:
            os.makedirs(directory, exist_ok=True)
            writable = os.access(directory, os.W_OK | os.X_OK)
        except OSError:
            writable = False
        if not writable:
            _warn_once(f"NUMBACONV_CACHE_DIR={directory!r} is not writable")
            return
    try:
        # What Dispatcher.enable_caching() does, with the resilient cache class.
        dispatcher._cache = _ResilientFunctionCache(dispatcher.py_func)
    except RuntimeError as err:  # Numba found no writable location
        _warn_once(str(err))


def kernel_jit(**options):
    """``numba.njit(**options)`` with numbaconv's disk cache (see the module notes).

    Jit options are not part of Numba's cache key: a function must always be
    compiled with the same options, which holds as long as they are written
    here, next to the function, and never varied at run time.
    """

    def decorate(function):
        dispatcher = njit(**options)(function)
        _enable_disk_cache(dispatcher)
        return dispatcher

    return decorate


@register_pass(mutates_CFG=True, analysis_only=False)
class _LiteralArgumentsAsConstants(FunctionPass):
    """Turn arguments typed as integer or boolean literals into constants of the IR.

    Numba types a literal argument as a constant but prunes no branch on it;
    as a constant of the IR it does (its ``DeadBranchPrune`` passes, which
    also run after inlining), so a task compiles only the code of its own
    configuration: fewer statements to type and lower, and intrinsics in the
    branches not taken are never typed with sizes they reject.
    """

    _name = "numbaconv_literal_arguments_as_constants"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        changed = False
        for block in state.func_ir.blocks.values():
            for statement in block.body:
                if isinstance(statement, ir.Assign) and isinstance(statement.value, ir.Arg):
                    argument = state.args[statement.value.index]
                    if isinstance(argument, (types.IntegerLiteral, types.BooleanLiteral)):
                        statement.value = ir.Const(argument.literal_value, statement.value.loc)
                        changed = True
        if changed:
            state.func_ir._definitions = build_definitions(state.func_ir.blocks)
        return changed


class _TaskCompiler(CompilerBase):
    """Numba's nopython pipeline plus :class:`_LiteralArgumentsAsConstants`."""

    def define_pipelines(self):
        pipeline = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pipeline.add_pass_after(_LiteralArgumentsAsConstants, IRProcessing)
        pipeline.finalize()
        return [pipeline]


def task_jit(**options):
    """``numba.njit(**options)`` for a parallel task: the body a driver's ``prange`` calls.

    A task is its own compiled function, not inlined into the driver, and the
    driver passes it its geometry; from a specialized driver, whose geometry
    is closure constants, Numba types those arguments as literals
    (``Literal[int](3)``) and compiles one specialization of the task per
    configuration, in which they are constants of the IR
    (:class:`_LiteralArgumentsAsConstants`), as if inlined: dead branches
    pruned, trip counts known to LLVM, tile sizes usable as types.  Inlining
    a large task into the driver cost twice the compilation (measured on the
    depthwise vector nest, 14²×576: 9.5 s inlined against 5.3 as a call, the
    same speed): Numba's inliner copies the callee's whole scope once per
    block, and the parallel passes analyse the whole body again.  The driver
    passes the loop index as ``np.int64``: the parallel lowering types it
    unsigned, which would compile the task a second time.  Tasks are not
    cached on disk themselves: the drivers' cache entries hold their code.
    """
    return njit(no_cpython_wrapper=True, pipeline_class=_TaskCompiler, **options)
