"""How numbaconv compiles: ``kernel_jit``, parallel tasks, and the on-disk cache.

A loop nest is a *task* (:func:`task_jit`), the body of a parallel loop: the
generic drivers call it with the geometry at run time, a
:class:`ParallelTask` compiles it with the geometry as constants and runs it
through a parallel loop shared by all tasks.  The small integer functions
tasks call (:func:`helper_jit`) compile once, for every configuration, and
LLVM inlines them; a task compiles with LLVM's module passes only (see
:func:`_module_passes_only`).

Compiled kernels and tasks are cached on disk by Numba so that a
configuration compiled once costs well under a second in later processes.
The location is ``$NUMBACONV_CACHE_DIR`` when set, else Numba's own choice
(``__pycache__`` beside the sources, or a per-user directory).
``NUMBACONV_CACHE_DIR=""`` turns the disk cache off.  When no writable
location exists, kernels still work, compiled in memory, and one warning
says so.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np
from numba import njit, prange, typeof
from numba.core import caching, cgutils, ir, types
from numba.core.codegen import CPUCodeLibrary
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import cpu_target
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.ir_utils import build_definitions
from numba.core.untyped_passes import IRProcessing
from numba.extending import intrinsic

__all__ = ["kernel_jit", "task_jit", "helper_jit", "ParallelTask", "cache_dir"]

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


#: Helpers not yet compiled: (dispatcher, signature).
_HELPERS = []


def helper_jit(results, arguments):
    """A small function of integers that tasks call: one compiled version for all.

    Compiled for ``arguments`` int64 values returning a tuple of ``results``,
    before the first task compiles (:func:`_compile_helpers`), then closed to other
    types: a task passes its constants, typed as literals, which would
    otherwise compile a version per configuration.  LLVM inlines the call
    and folds the constants all the same.  Inlined by Numba instead
    (``inline="always"``), three of them took 0.9 s of a depthwise
    configuration's 2.3 s, at the same speed.
    """

    def decorate(function):
        dispatcher = njit(function)
        _enable_disk_cache(dispatcher)
        _HELPERS.append((dispatcher, types.UniTuple(types.int64, results)(
            *(types.int64,) * arguments)))
        return dispatcher

    return decorate


def _compile_helpers():
    """Compile every :func:`helper_jit` function for its signature, and for no other."""
    with global_compiler_lock:
        while _HELPERS:
            dispatcher, signature = _HELPERS.pop()
            dispatcher.compile(signature.args)
            dispatcher.disable_compile()


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
        # Here, not before each task: a task loaded from the disk cache needs no helper
        # (loading them cost a cached call 0.02-0.03 s).
        _compile_helpers()
        pipeline = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pipeline.add_pass_after(_LiteralArgumentsAsConstants, IRProcessing)
        pipeline.finalize()
        return [pipeline]


def task_jit(**options):
    """``numba.njit(**options)`` for a parallel task: the body of a parallel loop.

    A task is its own compiled function, never inlined into the loop that
    calls it: inlining a large task cost twice the compilation (measured on
    the depthwise vector nest, 14²×576: 9.5 s inlined against 5.3 as a call,
    the same speed), as Numba's inliner copies the callee's whole scope once
    per block and the parallel passes analyse the whole body again.

    A task runs two ways.  The generic drivers call it with their run-time
    geometry.  A :class:`ParallelTask` compiles it with its geometry typed as
    literals (``Literal[int](3)``), which become constants of the IR
    (:class:`_LiteralArgumentsAsConstants`): dead branches pruned, trip
    counts known to LLVM, tile sizes usable as types.  Tasks are cached on
    disk like :func:`kernel_jit`'s functions, one entry per specialization.
    """

    def decorate(function):
        dispatcher = njit(no_cpython_wrapper=True, pipeline_class=_TaskCompiler,
                          **options)(function)
        _enable_disk_cache(dispatcher)
        return dispatcher

    return decorate


@contextlib.contextmanager
def _module_passes_only():
    """Compile without LLVM's function passes, which Numba runs on each function as it is
    lowered, before the library's module passes (the full -O3 pipeline) run on all of it.

    Those first passes took about half of a depthwise task's LLVM time (0.54 of 1.0 s on
    14²×576); without them a task compiled 0.25–0.33 s sooner (14²×576 2.22 → 1.90 s,
    112²×32 2.33 → 2.06) and ran at the same speed.  The class's method is swapped while holding Numba's compiler lock,
    so no other compilation sees it; a Numba without that method compiles as usual.
    """
    with global_compiler_lock:
        optimize = CPUCodeLibrary.__dict__.get("_optimize_functions")
        if optimize is None:
            yield
            return
        CPUCodeLibrary._optimize_functions = _set_data_layout
        try:
            yield
        finally:
            CPUCodeLibrary._optimize_functions = optimize


def _set_data_layout(library, module):
    """What ``_optimize_functions`` does besides optimizing (the module passes rely on it)."""
    module.data_layout = library._codegen._data_layout


@intrinsic
def _call_task(typingctx, address, arrays, item, arguments):
    """Call the compiled task at ``address`` with ``(*arrays, item, *arguments)``.

    The call goes through a pointer, in Numba's own calling convention; the
    callee's constants are typed as literals there, whose data model is that
    of their run-time type here (checked by :meth:`ParallelTask._compile`).
    """
    parameters = (*arrays.types, item, *arguments.types)

    def codegen(context, builder, signature, values):
        address_value, array_values, item_value, argument_values = values
        flat = ([builder.extract_value(array_values, i) for i in range(len(arrays.types))]
                + [item_value]
                + [builder.extract_value(argument_values, i) for i in range(len(arguments))])
        function_type = context.call_conv.get_function_type(types.none, parameters)
        callee = builder.inttoptr(address_value, function_type.as_pointer())
        status, _ = context.call_conv.call_function(builder, callee, types.none, parameters, flat)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(address, arrays, item, arguments), codegen


@kernel_jit(parallel=True)
def _run_tasks(address, arrays, items, arguments):
    """The parallel loop of a :class:`ParallelTask`: task ``address`` for each item."""
    for item in prange(items):
        _call_task(address, arrays, np.int64(item), arguments)


class ParallelTask:
    """A task compiled with constant arguments, run over a parallel loop.

    The task (a :func:`task_jit` function) is called as
    ``task(*arrays, item, *run_time, *constants)`` for each ``item`` in
    ``range(items)``, by a parallel driver shared by every task and
    configuration (compiled once per argument types and cached on disk): a
    new configuration compiles its task alone.  A driver of its own, linking
    the task in, compiled the task's code twice more (LLVM optimizes and
    emits a linked function again in the parallel loop's module and in the
    driver's): measured on 3x3 14²×256, 1.95 s against 1.07 s a
    configuration, on the depthwise 14²×576 3.9 s against 2.7 s, the same
    speed.

    Parameters
    ----------
    task : numba dispatcher
        Made by :func:`task_jit`; returns nothing.
    constants : tuple of int or bool
        The task's last arguments, compiled in as literals.
    """

    def __init__(self, task, constants):
        for value in constants:
            if not isinstance(value, (bool, int, np.bool_, np.integer)):
                raise TypeError(f"A task constant must be an int or a bool. Received: "
                                f"{value!r} of type {type(value).__name__}")
        self._task = task
        self._constants = tuple(_scalar(value) for value in constants)
        self._addresses = {}
        self._last = None  # (key, compiled) of the last call on C-contiguous arrays

    def __call__(self, items, arrays, run_time=()):
        """Run the task for ``item`` in ``range(items)`` on ``arrays`` and ``run_time`` scalars."""
        arguments = tuple(run_time) + self._constants
        compiled = self._last_compiled(arrays, run_time)
        if compiled is None:
            # The run-time scalars' Python types are in the key: an np.int32 compiles a task
            # taking an int32 (passing it where an int64 is read would be wrong).
            key = (tuple([(array.dtype, array.ndim, array.flags.c_contiguous)
                          for array in arrays]), tuple(map(type, run_time)))
            compiled = self._addresses.get(key)
            if compiled is None:
                compiled = self._addresses[key] = self._compile(arrays, run_time, arguments)
            if all(contiguous for _, _, contiguous in key[0]):
                self._last = key, compiled
        address, entry_point = compiled
        entry_point(address, tuple(arrays), items, arguments)

    def _last_compiled(self, arrays, run_time):
        """The last call's compiled task if these arguments have its types, else None.

        The usual call, checked without building and hashing a key (2 µs more).
        """
        if self._last is None:
            return None
        (kinds, scalar_types), compiled = self._last
        if len(arrays) != len(kinds) or len(run_time) != len(scalar_types):
            return None
        for array, (dtype, ndim, _) in zip(arrays, kinds):
            if array.dtype is not dtype or array.ndim != ndim or not array.flags.c_contiguous:
                return None
        for value, scalar_type in zip(run_time, scalar_types):
            if type(value) is not scalar_type:
                return None
        return compiled

    def _compile(self, arrays, run_time, arguments):
        """``(address, driver)``: the task compiled for these arguments, constants as literals,
        and the shared driver's compiled entry point for their types (called directly: it
        skips the dispatcher's typing of two tuples, ~1 µs a call)."""
        # The types the key tells apart: C-contiguous or any layout ('A'), readonly or not alike.
        array_types = tuple(types.Array(typeof(array).dtype, array.ndim,
                                        "C" if array.flags.c_contiguous else "A")
                            for array in arrays)
        head = array_types + (types.int64,)
        passed = head + tuple(map(typeof, arguments))
        signature = head + tuple(map(typeof, run_time)) + tuple(map(types.literal,
                                                                     self._constants))
        call_conv = cpu_target.target_context.call_conv
        if (str(call_conv.get_function_type(types.none, signature))
                != str(call_conv.get_function_type(types.none, passed))):
            raise TypeError(f"Task {self._task.py_func.__name__}: its literal arguments do not "
                            f"pass as their run-time types ({signature} against {passed})")
        with _module_passes_only():
            self._task.compile(signature)
        result = self._task.overloads[signature]
        if result.signature.return_type != types.none:
            raise TypeError(f"Task {self._task.py_func.__name__} returns "
                            f"{result.signature.return_type}: tasks return nothing")
        address = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
        driver_types = (types.int64, types.Tuple(array_types), types.int64,
                        types.Tuple(tuple(map(typeof, arguments))))
        _run_tasks.compile(driver_types)
        return address, _run_tasks.overloads[driver_types].entry_point


def _scalar(value):
    """``value`` as the Python bool or int the shared driver types as boolean or int64."""
    return bool(value) if isinstance(value, (bool, np.bool_)) else int(value)
