"""What the quick `fabbrica run` (fabbrica.cli.quick_run) prints, byte for byte what the
full path prints with Rich (fabbrica.cli.output, and its upload's progress bar), without
importing Rich when it can tell what Rich would write: a record's keys in bold on a
terminal (`ESC[1m`...`ESC[0m`), plain elsewhere. Where it cannot tell (a character Rich
drops or expands, an encoding other than UTF-8, Windows), it prints with Rich itself."""

from __future__ import annotations

import os
import sys
from typing import Any

from fabbrica.cli.formats import plain, print_json

# What Rich changes in text it prints: drops BEL, BS, VT, FF and CR; expands tabs
_RICH_CHANGES = frozenset("\a\b\v\f\r\t")
BOLD, RESET = "\x1b[1m", "\x1b[0m"


def show(job: dict[str, Any], json_out: bool) -> None:
    """As `fabbrica.cli.job_cmds._after_submit` shows a job it does not wait for."""
    try:
        array_id = job.get("array_id")
        if array_id is not None:
            _line(
                f"job {job['id']} is the first task of array {array_id}; all of them: "
                f"fabbrica jobs --array {array_id}",
                err=True,
            )
        if json_out:
            print_json(job)
            return
        width = max((len(k) for k in job), default=0)
        lines = [(key.ljust(width), plain(key, value)) for key, value in job.items()]
        how = rendering(sys.stdout, [text for line in lines for text in line])
        if how is None:
            from fabbrica.cli.output import print_record

            print_record(job)
            return
        on, off = (BOLD, RESET) if how == "bold" else ("", "")
        sys.stdout.write("".join(f"{on}{key}{off}  {value}\n" for key, value in lines))
        sys.stdout.flush()
    except BrokenPipeError:  # as Click: a reader that went away ends it quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the flush at exit
        sys.exit(1)


def bar_ended() -> None:
    """What the full path's progress bar leaves on stderr (Rich's `Progress.stop`): an
    empty line where it was not drawn (not an interactive terminal); on a terminal it
    erases itself, and there is nothing to erase here."""
    if not interactive(sys.stderr):
        print(file=sys.stderr)


def _line(text: str, *, err: bool) -> None:
    """One line of text, unstyled, as `fabbrica.cli.output.say` prints it."""
    stream = sys.stderr if err else sys.stdout
    if rendering(stream, [text]) is not None:
        print(text, file=stream)
        return
    from fabbrica.cli.output import say

    say(text, err=err)


def rendering(stream: Any, texts: list[str]) -> str | None:
    """How Rich writes styled text to `stream` (fabbrica.cli.output's consoles): "bold"
    (a terminal with styles), "plain" (a file, a pipe, a dumb terminal), or None when that
    cannot be told here (then Rich prints it)."""
    if sys.platform == "win32":
        return None
    if (getattr(stream, "encoding", "") or "").lower() not in ("utf-8", "utf8"):
        return None
    if any(_RICH_CHANGES.intersection(text) for text in texts):
        return None
    return "bold" if terminal(stream) and not _dumb() else "plain"


def terminal(stream: Any) -> bool:
    """Rich's `Console.is_terminal` for `stream`, from the same environment."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    if "FORCE_COLOR" in os.environ:
        return os.environ["FORCE_COLOR"] != ""
    try:
        return bool(stream.isatty())
    except ValueError:  # closed
        return False


def interactive(stream: Any) -> bool:
    """Rich's `Console.is_interactive` for `stream`, from the same environment."""
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    return terminal(stream) and not _dumb()


def _dumb() -> bool:
    return os.environ.get("TERM", "").lower() in ("dumb", "unknown")
