"""One family of errors, so that every caller (the CLI, the book's build, a notebook) can tell what
went wrong from the type, not from the text.

Every message is one line of the form ``'<param>: <problem>; <accepted values or what to do>'``.
Each class carries the exit status the command lines use for it.
"""

from __future__ import annotations


class L2bnError(Exception):
    """Base class of every error this library raises on purpose."""

    exit_code = 1


class ParameterError(L2bnError, ValueError):
    """A parameter outside its accepted values (a ``ValueError`` too, for callers that catch those)."""

    exit_code = 2


class DataError(L2bnError):
    """A dataset that is missing, incomplete or malformed; the message says what to do."""

    exit_code = 2


class DamagedFile(L2bnError):
    """A stored file (result, checkpoint, stamp, download) that fails its checksum or its format."""

    exit_code = 1


class Busy(L2bnError):
    """Another process holds the lock on the same work right now."""

    exit_code = 3
