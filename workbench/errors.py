"""Errors shared across workbench.

`InputError` carries where bad input sits (file, 1-based line, field) so the CLI and the
TUI can point the user at the exact spot instead of showing a traceback.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """A user-supplied file is malformed; `str()` reads `FILE:LINE: field: message`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = os.fspath(path)
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"
