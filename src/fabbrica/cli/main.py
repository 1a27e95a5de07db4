"""The `fabbrica` command's entry point. Exit codes: 0 success, 1 failure, 2 bad input or
usage.

It starts lean: `fabbrica run SPEC` of a small workdir is sent by fabbrica.cli.quick_run
with the standard library alone (the process starts and uploads in a fraction of the
time); every other line, and whatever the quick path cannot do, goes to the Typer app
(fabbrica.cli.app), with the same flags, messages, exit codes and output.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        from fabbrica.cli.quick_run import run_quickly

        try:
            run_quickly(args[1:])  # exits when it sent the job; returns when it cannot
        except KeyboardInterrupt:
            sys.exit(130)  # as the Typer app exits on Ctrl-C
    from fabbrica.cli.app import run

    run(args)
