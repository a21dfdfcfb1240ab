"""Which kernel runs a given spec: an ordered table, first applicable entry wins.

The table is the single place that knows every implementation (in the manner
of oneDNN's ``cpu_convolution_list.cpp``): each entry names a loop nest and
says when it applies.  A runner has the uniform signature
``run(x, packed_w, b, out, spec, relu)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .cache import kernel_cache
from .cpu import direct

__all__ = ["Implementation", "IMPLEMENTATIONS", "select", "supports", "prefers_padded_input",
           "wants_specialized", "set_specialization", "get_specialization"]

_POLICIES = ("auto", "always", "never")
_policy = os.environ.get("NUMBACONV_SPECIALIZE", "auto").lower()
if _policy not in _POLICIES:
    _policy = "auto"

#: Under the "auto" policy, problems below this many FLOPs never specialize:
#: ~1 s of compilation cannot pay off on them.
SPECIALIZE_MIN_FLOPS = 2_000_000


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


def wants_specialized(spec, hot):
    """Whether ``spec`` runs specialized kernels under the current policy (``hot``: it repeats)."""
    if _policy != "auto":
        return _policy == "always"
    return hot and spec.flops >= SPECIALIZE_MIN_FLOPS


@dataclass(frozen=True)
class Implementation:
    """One row of the dispatch table: an algorithm and when it applies.

    Attributes
    ----------
    name : str
        Public name, reported by :func:`select`.
    nest : str
        The loop nest in :mod:`numbaconv.cpu.direct` that implements it.
    applies : callable
        ``applies(spec) -> bool``.
    finite_inputs_only : bool, default False
        Exact only on inputs without inf/NaN: the caller checks each input
        (:func:`numbaconv.cpu.layout.pad_channels` does while copying) and
        runs the next applicable implementation on the others.
    specialized_only : bool, default False
        Has no generic tier (:data:`numbaconv.cpu.direct.SPECIALIZED_ONLY`):
        skipped when the policy runs generic kernels.
    """

    name: str
    nest: str
    applies: Callable
    finite_inputs_only: bool = False
    specialized_only: bool = False


def _channels_last(spec):
    return spec.data_format == "channels_last"


def _depthwise(spec):
    """One input channel and one filter per group (depth multipliers go to the grouped nest)."""
    return spec.is_depthwise and spec.filters == spec.groups


def _planar_depthwise(spec):
    # Vectorized along image rows, it pays for rows of 32 pixels or more
    # (measured on 112² images: 1.7-2.2x the reordering path; on 14² images
    # 0.2-0.35x, where per-row overhead dominates).
    return (_depthwise(spec) and not _channels_last(spec)
            and spec.output_hw[1] >= PLANAR_MIN_WIDTH)


#: Output width from which channels_first depthwise layers run planar.
PLANAR_MIN_WIDTH = 32


def _narrow_groups(spec):
    """float32 groups of 2 to 64 channels in and as many filters out, whole groups per block.

    Measured on 56² images, GFLOP/s against the plain grouped nest:
    channels per group 2: 71-79 against 53-87, 4: 115 / 89, 8: 121 / 22,
    16: 149 / 29, 32: 158 / 29, 64: 161 / 105.  In float64 the 4 x 64-filter
    tile no longer fits the registers (22 against 42).  The output must hold
    one full tile of pixels.
    """
    width = spec.in_channels // spec.groups
    return (spec.groups > 1 and spec.filters == spec.in_channels and spec.dtype == "float32"
            and 2 <= width <= direct.DENSE_BLOCK and direct.DENSE_BLOCK % width == 0
            and spec.output_hw[1] >= direct.register_tile("grouped_shifted", spec))


# The dense loop nest reads either layout (its input loads are scalar broadcasts);
# large channels_first depthwise layers have a nest of their own, vectorized
# along rows; the others vectorize along channels and read channels_last only:
# numbaconv.functional.plan reorders channels_first data around them.  Where the
# dense vector nest runs (AVX2), channels_first dense layers are reordered too:
# read in place, its broadcast input values lie a channel plane apart and its
# stores scatter value by value (3x3 56²×64 at N=1 and N=8: 0.92 and 0.95 of
# the time reordered; the input is copied for its padding either way).
IMPLEMENTATIONS = (
    Implementation("cpu.depthwise.vector", "depthwise_vector",
                   lambda spec: (_depthwise(spec) and _channels_last(spec)
                                 and direct.depthwise_vectors(spec)),
                   specialized_only=True),
    Implementation("cpu.depthwise", "depthwise",
                   lambda spec: _depthwise(spec) and _channels_last(spec)),
    Implementation("cpu.depthwise.planar", "depthwise_planar", _planar_depthwise),
    Implementation("cpu.dense.vector", "dense_vector",
                   lambda spec: (spec.groups == 1 and direct.vector_tiles_pay()
                                 and _channels_last(spec)),
                   specialized_only=True),
    Implementation("cpu.dense", "dense",
                   lambda spec: spec.groups == 1 and (_channels_last(spec)
                                                      or not direct.vector_tiles_pay())),
    Implementation("cpu.grouped.lanes", "grouped_lanes",
                   lambda spec: direct.lane_groups(spec) and _channels_last(spec),
                   specialized_only=True),
    Implementation("cpu.grouped.vector", "grouped_vector",
                   lambda spec: direct.vector_groups(spec) and _channels_last(spec),
                   specialized_only=True),
    # Zero weights meet the other groups' channels: 0 * inf would be NaN.
    Implementation("cpu.grouped.shifted", "grouped_shifted",
                   lambda spec: _narrow_groups(spec) and _channels_last(spec),
                   finite_inputs_only=True),
    Implementation("cpu.grouped", "grouped", _channels_last),
)


def checks_input(nest):
    """Whether ``nest`` is exact on finite inputs only (its inputs are checked while copied)."""
    return any(impl.finite_inputs_only for impl in IMPLEMENTATIONS if impl.nest == nest)


def supports(spec):
    """Whether an implementation reads ``spec``'s layout (else reorder to channels_last)."""
    return any(impl.applies(spec) for impl in IMPLEMENTATIONS)


def prefers_padded_input(nest, spec):
    """Whether running ``spec`` on an explicitly zero-padded input is faster.

    The dense nest computes border pixels (whose window leaves the input) one
    at a time, several times slower than its interior tiles.  On small images
    they are a large share of the row and a padded copy of the input is
    cheap next to the arithmetic; on large, thin ones the copy costs more.
    Estimated: 3x the border share of pixels against the copy at ~10 GB/s
    next to the arithmetic at ~400 GFLOP/s.  The shifted grouped nest and the
    explicit-vector nests have no border code: they always read a padded input.
    """
    if nest == "grouped_shifted" or nest in direct.VECTOR_SHAPES:
        return True
    if nest != "dense":
        return False
    out_w = spec.output_hw[1]
    interior = direct.interior_pixels(spec)
    border_cost = 3 * (out_w - interior) / out_w
    copy_cost = 40 * spec.batch * spec.height * spec.width * spec.in_channels * 4 / spec.flops
    return border_cost > copy_cost


def implementation(spec, hot, finite_input=True):
    """The first :class:`Implementation` of the table that runs ``spec`` (see :func:`select`)."""
    specialized = wants_specialized(spec, hot)
    impl = next((impl for impl in IMPLEMENTATIONS
                 if impl.applies(spec) and (finite_input or not impl.finite_inputs_only)
                 and (specialized or not impl.specialized_only)), None)
    if impl is None:
        raise ValueError(f"No implementation reads data_format={spec.data_format!r} with "
                         f"groups={spec.groups}: reorder to channels_last first")
    return impl


def select(spec, relu, hot, finite_input=True):
    """The runner for ``spec``: the first applicable implementation, from the cache.

    Each implementation comes in two tiers: generic (one compiled kernel per
    loop nest, geometry at run time) and specialized (geometry compiled in),
    chosen by the specialization policy.

    Parameters
    ----------
    spec : ConvSpec
        One that :func:`supports` (:func:`numbaconv.functional.plan` reorders others).
    relu : bool
        Fuse a rectification into the kernel.
    hot : bool
        The caller expects to run this configuration repeatedly.
    finite_input : bool, default True
        False skips the implementations exact on finite inputs only.

    Returns
    -------
    name : str
        The implementation and tier chosen, e.g. ``"cpu.dense/specialized"``.
    nest : str
        The loop nest; :func:`numbaconv.cpu.direct.pack_weights` prepares its weights.
    run : callable
        ``run(x, packed_w, b, out, spec, relu)``.
    """
    impl = implementation(spec, hot, finite_input)
    if wants_specialized(spec, hot):
        key = ("cpu", impl.nest, "specialized",
               direct.specialization_key(impl.nest, spec), bool(relu))
        build = lambda: direct.specialized_kernel(impl.nest, spec, relu)  # noqa: E731
    else:
        key = ("cpu", impl.nest, "generic")
        build = lambda: direct.generic_kernel(impl.nest)  # noqa: E731
    return f"{impl.name}/{key[2]}", impl.nest, kernel_cache.get(key, build)
