"""User-facing errors: one line naming the file, line and field, never a traceback."""

from __future__ import annotations

from pathlib import Path


class CogsaeError(Exception):
    """An error caused by the user's input, printed by the CLI as a single line.

    Attributes:
        message: what is wrong, in words.
        path: the offending file, if any.
        line: 1-based line number in ``path``, if known.
        field: the YAML field or CLI option concerned, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "")
        if self.field is not None:
            where = f"{where} [{self.field}]" if where else f"[{self.field}]"
        return f"{where}: {self.message}" if where else self.message
