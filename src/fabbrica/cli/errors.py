"""CLI failures with their exit codes: 1 failure, 2 bad input or usage."""

from __future__ import annotations

FAILURE = 1
BAD_INPUT = 2


class CliError(Exception):
    """Raised by commands; `fabbrica.cli.main.main` prints it and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
