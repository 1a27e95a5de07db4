"""`fabbrica run SPEC` of a small workdir, quickly: the standard library alone (no Typer,
Rich, httpx, pydantic nor YAML parser), so the process starts and uploads in a fraction of
the full path's time (issue 17; `bench/cli_startup.py`).

It reads the spec as text (only its `workdir`, when a plain reading can tell it), packs
the workdir as the SDK does (fabbrica.client._upload) and sends the same multipart request
to `POST /api/v1/jobs` with `http.client`; the server validates the spec. What it prints
is what the full path prints: on success the job (`--json`: the same JSON) and, for an
array, the same line on stderr; on a refusal (nothing changed on the server) the spec is
checked here as the full path checks it before sending, so a bad spec is named in the same
words (exit 2), and any other refusal is the server's error as the full path shows it.

It hands the line to the full path (returns) before sending anything whenever it cannot
be sure to do the same: another flag (`--template`, `--wait`, `--follow`, `--help`...), a
spec whose `workdir` needs a YAML parser, any problem it would have to report (a missing
file, a workdir outside the spec's folder, no token, a server that does not answer the
connection), a proxy or a shell completion in the environment, or an upload over one
chunk of the full path's progress bar (256 KiB), which then shows its bar.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from fabbrica.client._config import DEFAULT_TIMEOUT, resolve_target
from fabbrica.client._errors import ClientError, JobSpecError
from fabbrica.client._upload import multipart, pack_workdir, resolve_workdir, workdir_files

if TYPE_CHECKING:
    from fabbrica.cli.quick_http import Refused

#: Uploads up to this size are sent here: the full path's progress bar moves by 256 KiB
#: chunks (fabbrica.client._jobs), so it would be full from its first frame.
MOST_BYTES = 256 * 1024
DEFAULT_WORKDIR = "."  # JobSpec.workdir's default
API_JOBS = "/api/v1/jobs"
PROXIES = frozenset({"http_proxy", "https_proxy", "all_proxy"})  # httpx honours them

# A top-level `workdir: folder` line: the key at column 0, a plain value of path letters
# (not a number, a boolean, a null, an alias, a tag, quoted or flow text), a comment after.
_WORKDIR_LINE = re.compile(
    r"^workdir[ \t]*:[ \t]+(?P<value>[^\s#]+)(?:[ \t]+#[^\n]*|[ \t]*)\r?$", re.M
)
_PLAIN_PATH = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*|\.\.?(?:/[A-Za-z0-9_./-]*)?")
_YAML_WORDS = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null"})


def spec_workdir(text: str) -> str | None:
    """The spec's `workdir` when a plain reading of its text can tell it: the default when
    the word is nowhere in it, the value of its one top-level `workdir: folder` line when
    the word is nowhere else; None when only a YAML parser can say (quoted, flow style,
    JSON, an alias, escapes that could spell it, a value that goes on to the next line)."""
    if re.search(r"\\[xuU]", text):  # an escape in a quoted key could spell `workdir`
        return None
    if "workdir" not in text:
        return DEFAULT_WORKDIR
    found = list(_WORKDIR_LINE.finditer(text))
    if len(found) != 1 or text.count("workdir") != 1:
        return None
    value = found[0]["value"]
    if not _PLAIN_PATH.fullmatch(value) or value.lower() in _YAML_WORDS:
        return None
    following = text[found[0].end() :].lstrip("\r\n").split("\n", 1)[0]
    if following[:1].isspace():  # a plain scalar goes on in an indented line
        return None
    return value


def options(args: list[str]) -> tuple[str, str | None, str | None, bool] | None:
    """`SPEC [--project ID] [--workdir DIR] [--json]` as (spec, project, workdir, json);
    None for anything else (the full path parses it, and says what is wrong)."""
    spec: str | None = None
    given: dict[str, str] = {}
    json_out = False
    words = iter(args)
    for word in words:
        name, equals, value = word.partition("=")
        if word == "--json" and not json_out:
            json_out = True
        elif name in ("--project", "--workdir") and name not in given:
            if not equals:
                value = next(words, "")
            if not value or value.startswith("-"):
                return None
            given[name] = value
        elif word and not word.startswith("-") and spec is None:
            spec = word
        else:
            return None
    if spec is None:
        return None
    return spec, given.get("--project"), given.get("--workdir"), json_out


def run_quickly(args: list[str]) -> None:
    """Submit the job and exit, or return without having sent anything (the full path
    runs the line then)."""
    parsed = options(args)
    if parsed is None or _environment_says_no():
        return
    spec, project, workdir, json_out = parsed
    try:
        target = resolve_target()
    except ClientError:  # a config file that cannot be read: the full path says so
        return
    if target.token is None:  # the full path says where one comes from
        return
    request = _request(Path(spec), project, workdir)
    if request is None:
        return
    from fabbrica.cli.quick_http import Refused, post
    from fabbrica.cli.quick_output import bar_ended, show

    try:
        job = post(target.url, API_JOBS, target.token, request, timeout=DEFAULT_TIMEOUT)
    except Refused as refused:
        bar_ended()
        _refused(Path(spec), refused)
    if job is None:  # no connection: nothing was sent
        return
    bar_ended()
    show(job, json_out)
    sys.exit(0)


def _environment_says_no() -> bool:
    """A proxy (httpx would go through it) or a shell completion (Click answers it)."""
    return any(
        key.lower() in PROXIES or (key.startswith("_") and key.endswith("_COMPLETE"))
        for key in os.environ
    )


def _request(file: Path, project: str | None, workdir: str | None) -> tuple[str, bytes] | None:
    """The content type and body of the submission, or None to leave it to the full path."""
    try:
        text = file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    written = DEFAULT_WORKDIR if workdir is not None else spec_workdir(text)  # --workdir wins
    if written is None:
        return None
    try:
        folder = resolve_workdir(str(file), file.parent, written, workdir, inside=True)
        files = workdir_files(folder)
        if sum(path.stat().st_size for path, _ in files) > MOST_BYTES:
            return None
        archive = pack_workdir(folder, files)
    except (JobSpecError, OSError):
        return None
    fields = {"spec": text}
    if project:
        fields["project"] = project
    content_type, body = multipart(fields, archive)
    return None if len(body) > MOST_BYTES else (content_type, body)


def _refused(file: Path, refused: Refused) -> NoReturn:
    """What the full path prints when the server refuses (or fails): first the spec's own
    problem, which it finds before sending; else the server's error."""
    from fabbrica.cli.client import cli_error
    from fabbrica.cli.errors import report
    from fabbrica.client._jobs import _read_spec

    if refused.error is None:  # a connection that broke once the request was out
        assert refused.connect_error is not None
        report(cli_error(refused.connect_error))
    try:
        _read_spec(file)
    except JobSpecError as exc:
        report(cli_error(exc))
    report(cli_error(refused.error))
