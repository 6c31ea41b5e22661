"""Errors the user can fix, as one family.

``UserError`` marks a problem with what the user gave (a file, a folder, a setting), as opposed to a bug. The
``sslalm`` command prints such an error as one line (what is wrong, which file or field, what to do) and
exits with status 2; any other exception is a bug and keeps its traceback. Servers answer a ``UserError``
with a 4xx status. It subclasses ``ValueError`` so that code which caught ``ValueError`` still does.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input, explained by its message; see the module docstring."""
