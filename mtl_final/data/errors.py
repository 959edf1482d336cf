"""The one exception type of the data pipeline, with messages that point at the fix."""
from __future__ import annotations

from pathlib import Path


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DataError(ValueError):
    """Bad input data or a bad dataset schema.

    The message always names what is known of: the file, the column, the 1-based
    line number (the header is line 1, so the first data row is line 2), the
    offending value, and how to fix it. The parts are also kept as attributes.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        column: str | None = None,
        line: int | None = None,
        value: object = None,
        fix: str | None = None,
        has_value: bool | None = None,
    ) -> None:
        self.problem = problem
        self.file = None if file is None else str(file)
        self.column = column
        self.line = line
        self.value = value
        self.fix = fix
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if column is not None:
            where.append(f"column {column!r}")
        if line is not None:
            where.append(f"line {line}")
        if has_value is None:
            has_value = value is not None
        if has_value:
            where.append(f"value {_short(value)}")
        message = problem
        if where:
            message = f"{', '.join(where)}: {problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)
