"""Which kernel runs a given spec: an ordered table, first applicable entry wins.

The table is the single place that knows every implementation (in the manner
of oneDNN's ``cpu_convolution_list.cpp``).  Each entry says when it applies,
what part of the spec its compiled code depends on (the cache key), and how
to build it.  A runner has the uniform signature ``run(x, w, b, out, spec, relu)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .cache import kernel_cache
from .cpu import direct

__all__ = ["Implementation", "IMPLEMENTATIONS", "select", "set_specialization",
           "get_specialization"]

_POLICIES = ("auto", "always", "never")
_policy = os.environ.get("NUMBACONV_SPECIALIZE", "auto").lower()
if _policy not in _POLICIES:
    _policy = "auto"

#: Under the "auto" policy, problems below this many FLOPs never specialize:
#: ~1 s of compilation cannot pay off on them.
SPECIALIZE_MIN_FLOPS = 20_000_000


def set_specialization(policy):
    """Choose when kernels are specialized (compiled with geometry as constants).

    Parameters
    ----------
    policy : {"auto", "always", "never"}
        ``"auto"`` (default, or ``$NUMBACONV_SPECIALIZE``): layers and repeated
        ``conv2d`` calls of at least :data:`SPECIALIZE_MIN_FLOPS` specialize,
        everything else runs the generic kernel, which costs no compilation per
        configuration.  ``"always"`` / ``"never"`` force one tier.
    """
    global _policy
    if policy not in _POLICIES:
        raise ValueError(f"The `policy` argument must be one of {_POLICIES}. Received: "
                         f"policy={policy!r}")
    _policy = policy


def get_specialization():
    """The current specialization policy (see :func:`set_specialization`)."""
    return _policy


def _wants_specialized(spec, hot):
    if _policy != "auto":
        return _policy == "always"
    return hot and spec.flops >= SPECIALIZE_MIN_FLOPS


@dataclass(frozen=True)
class Implementation:
    """One row of the dispatch table.

    Attributes
    ----------
    name : str
    applies : callable
        ``applies(spec, hot) -> bool``; ``hot`` says the caller expects to run
        this configuration repeatedly (a layer, or a repeated ``conv2d``).
    key : callable
        ``key(spec, relu) -> tuple``: everything the compiled code depends on.
    build : callable
        ``build(spec, relu) -> run(x, w, b, out, spec, relu)``.
    """

    name: str
    applies: Callable
    key: Callable
    build: Callable


def _specialized_key(spec, relu):
    return (spec.data_format, spec.dtype, direct.kernel_arguments(spec, direct.SPECIALIZED_TILE),
            bool(relu))


IMPLEMENTATIONS = (
    Implementation("cpu.direct.specialized", lambda spec, hot: _wants_specialized(spec, hot),
                   _specialized_key, direct.specialized_kernel),
    # Geometry is a run-time argument, so one entry per layout serves every spec.
    Implementation("cpu.direct.generic", lambda spec, hot: True,
                   lambda spec, relu: (spec.data_format,),
                   lambda spec, relu: direct.generic_kernel(spec.data_format)),
)


def select(spec, relu, hot):
    """The runner for ``spec``: the first applicable implementation, from the cache.

    Parameters
    ----------
    spec : ConvSpec
    relu : bool
        Fuse a rectification into the kernel.
    hot : bool
        The caller expects to run this configuration repeatedly.

    Returns
    -------
    name : str
        The implementation chosen.
    run : callable
        ``run(x, w, b, out, spec, relu)``.
    """
    for impl in IMPLEMENTATIONS:
        if impl.applies(spec, hot):
            key = ("cpu", impl.name, impl.key(spec, relu))
            return impl.name, kernel_cache.get(key, lambda: impl.build(spec, relu))
    raise AssertionError("the generic implementation applies to every spec")
