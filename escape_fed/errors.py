"""Errors that carry their exit code; the CLI handles them in one place.

Exit codes (documented in ``escape-fed --help``):
0 ok, 1 a check or an operation failed, 2 bad input (the user must change something).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class EscapeFedError(Exception):
    """An error the user should see as one clear message, without a traceback."""

    code: int = EXIT_FAILED

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadInput(EscapeFedError):
    """The user's input (a file, a flag) is wrong; nothing was changed."""

    code = EXIT_BAD_INPUT


class OperationFailed(EscapeFedError):
    """A check or an operation failed."""

    code = EXIT_FAILED


class NotBuiltYet(EscapeFedError):
    """A command that exists in the CLI shell but is not implemented yet."""

    code = EXIT_FAILED
