"""The vector registers of the CPU that Numba compiles for, and the register tiles they allow.

The register-tiled nests (:mod:`numbaconv.cpu.direct`'s dense and shifted
grouped nests, :mod:`numbaconv.cpu.backward`'s kernel gradients) keep a
tile of sums in vector registers.  How large a tile fits depends on the
instruction set: AVX-512 has 32 registers of 64 bytes, AVX and AVX2 have 16
of 32 bytes.  A tile that does not fit is spilled to memory on every step:
the 4-pixel × 64-filter tile tuned on an AVX-512 machine (16 accumulators)
needs 32 AVX2 registers, and ran at 19 GFLOP/s against 55 for one pixel ×
64 filters on a 2-core AVX2 machine (AMD EPYC, first generation, 3x3
56²×64→64).

The filter block itself stays 256 bytes (64 float32) whatever the
registers: LLVM vectorizes the innermost loop over the filters only at
that trip count.  Blocks of 32 float32 ran unvectorized on AVX-512 (two
vectors, 7 GFLOP/s against 160) and on AVX2 too, where they are four
vectors (6 GFLOP/s against 55); 32-lane depthwise kernel-gradient steps
likewise (1-2 GFLOP/s against 5-11).

The features are those Numba compiles for (``NUMBA_CPU_FEATURES`` when
set, else the host's), which are also part of the key of Numba's disk
cache, so cached kernels always match the tile sizes chosen here.
"""

from __future__ import annotations

from numba.core import config
from numba.core.codegen import get_host_cpu_features

__all__ = [
    "ACCUMULATORS",
    "FILTER_BLOCK_BYTES",
    "VECTOR_BYTES",
    "block_vectors",
    "register_limits",
]

#: Bytes of filters per block of the register-tiled nests (see the module notes).
FILTER_BLOCK_BYTES = 256


def register_limits(features):
    """``(vector_bytes, accumulators)`` for an LLVM feature string (``"+avx2,-avx512f,..."``).

    ``accumulators`` is the number of vector registers a tile of sums may
    take: half the register file, the rest holding the weights and the
    broadcast input values that the sums share.
    """
    enabled = {feature[1:] for feature in features.split(",") if feature.startswith("+")}
    if "avx512f" in enabled:
        return 64, 16
    if "avx" in enabled:
        return 32, 8
    return 16, 8


def _compile_features():
    # What Numba's CPU codegen targets (CPUCodegen._get_host_cpu_features).
    if config.CPU_FEATURES is not None:
        return config.CPU_FEATURES
    return get_host_cpu_features()


#: Bytes per vector register, and the vector registers a tile of sums may take,
#: on the CPU that Numba compiles for.
VECTOR_BYTES, ACCUMULATORS = register_limits(_compile_features())


def block_vectors():
    """Vector registers that one filter block's sums take (4 with AVX-512, 8 with AVX2)."""
    return max(1, FILTER_BLOCK_BYTES // VECTOR_BYTES)
