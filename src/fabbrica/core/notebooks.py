"""Notebooks: interactive jobs that run JupyterLab, reached through Fabbrica's proxy.

A notebook is a job like any other (placed, charged to its project's allocation, listed
with the other jobs) whose spec is made here: its name is `notebook` and its command is the
launcher in `backends.notebook`, which serves JupyterLab on 127.0.0.1 under the proxy's
path `/notebooks/<job id>/` and ends it once idle. Pure: values in, a spec out.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import quote

from fabbrica.core.jobspec import JobSpec, spec_from_data

NOTEBOOK_NAME = "notebook"
PROXY_PREFIX = "/notebooks"
DEFAULT_IDLE_S = 3600
DEFAULT_HOURS = 4.0
LAUNCHER = "fabbrica.backends.notebook"
WARN_S = 600  # the member is warned this long before a notebook ends (idle or time limit)


def proxy_path(job_id: int) -> str:
    """The notebook's address on the Fabbrica server (JupyterLab's `base_url`)."""
    return f"{PROXY_PREFIX}/{job_id}/"


_PATH_SAFE = "/:@!$&'()*+,;=~"


def upstream_path(path: str, query: str, job_id: int) -> str | None:
    """The path and query to ask the notebook of `job_id` for, given the member's request
    (its path as received, decoded): under that notebook's own proxy path, without a `.`
    or `..` segment (an HTTP client would fold those into another notebook's path) or a
    line break; encoded again. None when the request is refused."""
    if not path.startswith(proxy_path(job_id)) or any(c in path for c in "\r\n\0\\"):
        return None
    if any(part in (".", "..") for part in path.split("/")):
        return None
    if any(c in query for c in "\r\n #\0"):
        return None
    encoded = quote(path, safe=_PATH_SAFE)
    return f"{encoded}?{query}" if query else encoded


def notebook_command(idle_s: int, limit_s: int) -> str:
    """The job's command: the launcher, told its idle time and time limit (for the
    warning before it). Its `base_url` comes from the job id the executor gives every job
    (FABBRICA_JOB_ID is `fab-<id>`)."""
    idle, limit = shlex.quote(str(idle_s)), shlex.quote(str(limit_s))
    base = f'{PROXY_PREFIX}/"${{FABBRICA_JOB_ID#fab-}}"/'
    return f"exec python -m {LAUNCHER} --idle {idle} --limit {limit} --base-url {base}"


@dataclass(frozen=True)
class NotebookRequest:
    project: str | None = None
    factory: str | None = None
    gpus: int = 1
    hours: float = DEFAULT_HOURS
    datasets: tuple[str, ...] = ()


def notebook_spec(request: NotebookRequest, idle_s: int) -> JobSpec:
    """The job spec of a notebook; SpecError names the field (gpus, hours, datasets)."""
    seconds = max(1, round(request.hours * 3600))
    data: dict[str, object] = {
        "name": NOTEBOOK_NAME,
        "resources": {"gpus": request.gpus, "time_limit": f"{seconds}s"},
        "run": notebook_command(idle_s, seconds),
        "datasets": list(request.datasets),
    }
    if request.project is not None:
        data["project"] = request.project
    if request.factory is not None:
        data["placement"] = {"factories": [request.factory]}
    return spec_from_data(data)


def is_notebook(spec: JobSpec) -> bool:
    return spec.name == NOTEBOOK_NAME and spec.run.startswith(f"exec python -m {LAUNCHER} ")
