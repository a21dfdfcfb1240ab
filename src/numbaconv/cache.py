"""Thread-safe cache of compiled kernels, keyed by target, implementation and spec.

Like ``functools.lru_cache`` but unbounded and shared by every layer and call:
two layers with the same configuration share one compiled kernel.  Building
an entry holds a per-key lock, so concurrent first calls build it once while
calls for other keys proceed.
"""

from __future__ import annotations

import threading
from collections import namedtuple

__all__ = ["KernelCache", "CacheInfo", "kernel_cache", "kernel_cache_info", "clear_kernel_cache"]

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "entries"])

_MISSING = object()


class KernelCache:
    """Map ``key -> kernel``, building each entry exactly once.

    Attributes
    ----------
    hits, misses : int
        Lookups that found / had to build their entry.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = {}
        self._building = {}
        self.hits = 0
        self.misses = 0

    def get(self, key, build):
        """Return the entry for ``key``, calling ``build()`` if it is missing.

        Parameters
        ----------
        key : hashable
        build : callable
            Zero-argument factory, called at most once per key.
        """
        with self._lock:
            entry = self._entries.get(key, _MISSING)  # one hash of the key (a spec's: ~1 us)
            if entry is not _MISSING:
                self.hits += 1
                return entry
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:  # built by another thread while we waited
                    self.hits += 1
                    return self._entries[key]
            entry = build()
            with self._lock:
                self._entries[key] = entry
                self.misses += 1
                self._building.pop(key, None)
            return entry

    def info(self):
        """``CacheInfo(hits, misses, entries)``."""
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._entries))

    def clear(self):
        """Forget every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


kernel_cache = KernelCache()


def kernel_cache_info():
    """Hits, misses and entries of the process-wide kernel cache.

    Returns
    -------
    CacheInfo
        ``(hits, misses, entries)``: a call whose configuration was compiled
        before counts as a hit and compiles nothing.
    """
    return kernel_cache.info()


def clear_kernel_cache():
    """Drop every cached kernel (they are rebuilt, from Numba's disk cache if present)."""
    kernel_cache.clear()
