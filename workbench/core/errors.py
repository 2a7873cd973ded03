"""Errors a user can act on: they name the file, the 1-based line and the field."""

from __future__ import annotations


class InputError(Exception):
    """Bad input. `str()` gives `FILE:LINE: field: message`, the form editors jump to."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path) + (f":{self.line}" if self.line is not None else "") + ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"
