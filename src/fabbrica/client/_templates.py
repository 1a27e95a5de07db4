"""Job templates: list, show, render a spec, submit a job made from one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from fabbrica.client._http import Http
from fabbrica.client.types import Job


class TemplatesApi(Http):
    def templates(self) -> list[dict[str, Any]]:
        """The job templates: `name`, `description`, `parameters` (each with `name`,
        `type`, `default`, `required`, limits and a one-line `summary`)."""
        return cast(list[dict[str, Any]], self._get("/templates"))

    def template(self, name: str) -> dict[str, Any]:
        """One template with its parameters."""
        return cast(dict[str, Any], self._get(f"/templates/{name}"))

    def render_template(
        self,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        project: str | None = None,
        datasets: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The job spec the template makes (`spec`) and every parameter's value (`values`);
        nothing is submitted. A refused value raises ApiError naming `parameters.<name>`."""
        body = _body(parameters, project, datasets)
        return cast(dict[str, Any], self._post(f"/templates/{name}/spec", body))

    def submit_template(
        self,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        project: str | None = None,
        datasets: Sequence[str] = (),
    ) -> Job:
        """Submit a job made from the template (its files are the workdir)."""
        body = _body(parameters, project, datasets)
        return cast(Job, self._post(f"/templates/{name}/jobs", body))


def _body(
    parameters: Mapping[str, Any] | None, project: str | None, datasets: Sequence[str]
) -> dict[str, Any]:
    body: dict[str, Any] = {"parameters": dict(parameters or {}), "datasets": list(datasets)}
    if project is not None:
        body["project"] = project
    return body
