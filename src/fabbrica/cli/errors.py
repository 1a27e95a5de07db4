"""CLI failures with their exit codes: 1 failure, 2 bad input or usage."""

from __future__ import annotations

import sys
from typing import NoReturn

FAILURE = 1
BAD_INPUT = 2


class CliError(Exception):
    """Raised by commands; `report` prints it and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def report(error: CliError) -> NoReturn:
    """Print `error: message` on stderr (the message as written: user text, server errors,
    names, patterns are never markup) and exit with its code."""
    from rich.text import Text

    from fabbrica.cli.output import err_console

    err_console.print(Text.assemble(("error:", "red"), " ", error.message), soft_wrap=True)
    sys.exit(error.exit_code)
