"""Data sets: immutable versions of content-addressed files, resumable uploads, and which
job reads which version."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fabbrica.store.models.access import Project
from fabbrica.store.models.base import Base


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_pk", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    name: Mapped[str] = mapped_column(String(64))
    residency: Mapped[str | None] = mapped_column(String(800))  # None, "EU" or "FR,IT"
    data_class: Mapped[str] = mapped_column(String(16))
    license: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime]

    project: Mapped[Project] = relationship()


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int]
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    file_count: Mapped[int]
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime]

    dataset: Mapped[Dataset] = relationship()


class DatasetFile(Base):
    """One file of a version; its bytes are the object named by its sha256."""

    __tablename__ = "dataset_files"
    __table_args__ = (
        UniqueConstraint("version_id", "path"),
        Index("ix_dataset_files_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class DatasetUpload(Base):
    """An upload under way: a tar of the files, received in byte ranges; committed, it
    becomes a new version (and the data set, the first time)."""

    __tablename__ = "dataset_uploads"
    __table_args__ = (Index("ix_dataset_uploads_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    name: Mapped[str] = mapped_column(String(64))
    residency: Mapped[str | None] = mapped_column(String(800))
    data_class: Mapped[str] = mapped_column(String(16))
    license: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the whole tar
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime]


class JobDataset(Base):
    """A job reads this version (resolved at submission)."""

    __tablename__ = "job_datasets"
    __table_args__ = (Index("ix_job_datasets_version_id", "version_id"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64))  # where it is mounted: $FABBRICA_DATA/<name>
