"""The examples in the public docstrings run and print what they show."""

from __future__ import annotations

import doctest

import pytest

import numbaconv
from numbaconv import functional, layer


@pytest.mark.parametrize("module", [numbaconv, functional, layer], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
