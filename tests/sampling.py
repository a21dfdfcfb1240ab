"""Which cases of a parametrized grid the default test run takes.

The default run (``-m "not slow"``, set in pyproject.toml) takes a sample of the
grids whose cases each compile specialized kernels (seconds each); CI runs the
rest too (``-m slow``, in ``.ci/run``).
"""

from __future__ import annotations

import pytest


def sample(cases, keep, single=False):
    """``cases`` for ``pytest.mark.parametrize``, those where ``keep(case)`` is false marked slow.

    ``single``: each case is the value of one argument (not a tuple of values).
    """
    def slow(case):
        values = (case,) if single else case
        return pytest.param(*values, marks=pytest.mark.slow)

    return [case if keep(case) else slow(case) for case in cases]
