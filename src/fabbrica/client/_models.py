"""The model registry: versions of your projects' models, one version's lineage, its
model card and its files."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from fabbrica.client._errors import ApiError, JobSpecError
from fabbrica.client._http import Http


def _split(ref: str) -> tuple[str, str]:
    """`NAME@VERSION` or `NAME@ALIAS` (`NAME` alone: the latest version)."""
    name, _, version = ref.partition("@")
    if not name:
        raise JobSpecError("a model is NAME@VERSION (or NAME@ALIAS, or NAME)", "model")
    return name, version or "latest"


class ModelsApi(Http):
    def models(self, project: str | None = None) -> list[dict[str, Any]]:
        """Every version of your projects' registered models (items carry `name` and
        `version`), newest version first."""
        return cast(list[dict[str, Any]], self._get("/models", project=project))

    def _version_path(self, ref: str, project: str | None) -> str:
        name, version = _split(ref)
        if version == "latest":
            found = [m for m in self.models(project) if m["name"] == name]
            if not found:
                raise ApiError(404, "not_found", f"no model {name!r}", "model")
            version = str(found[0]["version"])
        return f"/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"

    def model(self, ref: str, project: str | None = None) -> dict[str, Any]:
        """One version (`NAME@VERSION`, `NAME@ALIAS` or `NAME`: the latest) and its
        lineage: `job`, `factory`, `gpu_model`, `gpu_hours`, `compute`, `datasets`,
        `metrics`, `params`, `spec`, `workdir_sha256`."""
        return cast(dict[str, Any], self._get(self._version_path(ref, project), project=project))

    def model_card(self, ref: str, project: str | None = None) -> str:
        """The version's model card, in Markdown."""
        path = self._version_path(ref, project) + "/card"
        params = {"project": project} if project else {}
        return self._ok("GET", path, params=params).text

    def download_model(
        self, ref: str, folder: str | os.PathLike[str], project: str | None = None
    ) -> Path:
        """Write the version's files under `folder` (a folder is unpacked); returns it."""
        path = self._version_path(ref, project) + "/files"
        params = {"project": project} if project else {}
        response = self._ok("GET", path, params=params)
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        if response.headers.get("content-type", "").startswith("application/gzip"):
            with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
                tar.extractall(root, filter="data")
            return root
        disposition = response.headers.get("content-disposition", "")
        name = disposition.rpartition("filename=")[2].strip('"') or "model"
        target = root / Path(name).name
        target.write_bytes(response.content)
        return root
