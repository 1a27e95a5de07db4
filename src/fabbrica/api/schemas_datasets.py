"""Bodies of the data sets API."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fabbrica.api.params import MAX_OFFSET


class UploadCreate(BaseModel):
    """Start (or find again, to resume) the upload of a new version: a tar of its files,
    `size` bytes with this `sha256`. A data set's first version sets its terms."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    project: str = Field(max_length=40)
    name: str = Field(max_length=64)
    size: int = Field(ge=0, le=MAX_OFFSET, description="bytes of the tar to be sent")
    sha256: str = Field(max_length=64, description="of the tar to be sent")
    residency: list[str] | str | None = Field(
        default=None,
        max_length=300,
        description="ISO country codes the data may be placed in, or EU; none: anywhere",
    )
    data_class: Literal["public", "internal", "personal"] | None = Field(
        default=None, alias="class", description="personal must name a residency"
    )
    license: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)


class UploadPublic(BaseModel):
    id: str
    project: str
    name: str
    size: int
    received: int = Field(description="the bytes the server has: send from there")


class FilePublic(BaseModel):
    path: str
    sha256: str
    size: int


class VersionPublic(BaseModel):
    version: int
    size: int
    files: int
    created_at: dt.datetime


class DatasetPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    name: str
    project: str
    residency: str | None = Field(description="EU, country codes (FR,IT), or none: anywhere")
    data_class: str = Field(alias="class")
    license: str | None
    description: str
    created_at: dt.datetime
    version: int | None = Field(description="the latest version (or the one shown)")
    versions: list[VersionPublic]
    files: list[FilePublic] | None = Field(
        default=None, description="the files of `version` (shown for one data set)"
    )


class DatasetDeleted(BaseModel):
    deleted: list[str] = Field(description="name@version of each version deleted")
