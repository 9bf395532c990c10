"""User-facing errors: bad configuration values, malformed traces, bad CLI input.

Each one carries a single-line message that names what is wrong and where. The command line
prints it and exits with code 2, without a traceback; anything else that escapes is a bug.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message is one line and says what to change."""


class ConfigError(UserError):
    """A configuration value is invalid: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key = key
        self.value = value
        self.allowed = allowed
        # args rebuild the error (SimPy re-raises a failed process's error as type(e)(*e.args))
        super().__init__(key, value, allowed)

    def __str__(self) -> str:
        return f"{self.key}={_show(self.value)}: {self.allowed}"

    def __reduce__(self):  # picklable, so it crosses process pools intact
        return (type(self), (self.key, self.value, self.allowed))


class TraceError(UserError):
    """A trace file cannot be read: names the file, the line (text files) or row (Parquet, 1-based)
    and the column."""

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
    ):
        self.path = str(path)
        self.problem = problem
        self.line = line
        self.row = row
        self.column = column
        where = self.path
        if line is not None:
            where += f", line {line}"
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        return (_trace_error, (self.path, self.problem, self.line, self.row, self.column))


def _trace_error(path, problem, line, row, column) -> TraceError:
    return TraceError(path, problem, line=line, row=row, column=column)


def _show(value: object) -> str:
    text = repr(str.__str__(value)) if isinstance(value, str) else str(value)  # a closed set's name as text
    return text if len(text) <= 80 else text[:77] + "..."
