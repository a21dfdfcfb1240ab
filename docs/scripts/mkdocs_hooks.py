"""MkDocs hooks: the docstrings' Sphinx roles as plain code.

The docstrings follow numpydoc, whose cross-references (``:func:`conv2d```)
mkdocstrings prints literally; here they become code spans, with Sphinx's
``~`` (show the last name only) honoured.
"""

import re

_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|obj|exc):<code>(~?)([^<]*)</code>")


def _code(match):
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html, **kwargs):
    return _ROLE.sub(_code, html)
