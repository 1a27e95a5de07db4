"""Notebooks: start a JupyterLab as a job, list yours, follow one until it is ready."""

from __future__ import annotations

import time
from typing import Any, cast

from fabbrica.client._http import Http
from fabbrica.client.types import Notebook

#: The states a notebook shows before it ends: `starting`, then `ready`.
LIVE_NOTEBOOK_STATES = frozenset({"starting", "ready"})


class NotebooksApi(Http):
    def start_notebook(
        self,
        *,
        project: str | None = None,
        factory: str | None = None,
        gpus: int = 1,
        hours: float = 4.0,
        datasets: list[str] | None = None,
    ) -> Notebook:
        """Start a JupyterLab on `gpus` GPUs as a job of `project` (charged like any job);
        it ends after the server's idle time or `hours`. Its `url` is a path on this server
        (see `notebook_url`)."""
        body: dict[str, Any] = {"gpus": gpus, "hours": hours, "datasets": list(datasets or [])}
        if project is not None:
            body["project"] = project
        if factory is not None:
            body["factory"] = factory
        return cast(Notebook, self._post("/notebooks", body))

    def notebooks(self) -> list[Notebook]:
        """Your notebooks, newest first."""
        return cast(list[Notebook], self._get("/notebooks"))

    def notebook(self, job_id: int) -> Notebook:
        """One of your notebooks: `state` is `starting`, `ready`, or how its job ended."""
        return cast(Notebook, self._get(f"/notebooks/{job_id}"))

    def wait_notebook(
        self, job_id: int, *, timeout: float | None = None, poll: float = 0.5
    ) -> Notebook:
        """Poll a notebook until it is `ready` or has ended; TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.notebook(job_id)
            if found["state"] not in LIVE_NOTEBOOK_STATES or found["state"] == "ready":
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"notebook {job_id} is still {found['state']}")
            time.sleep(poll)

    def notebook_url(self, notebook: Notebook) -> str:
        """The notebook's absolute address on this server."""
        return f"{self.url.rstrip('/')}{notebook['url']}"
