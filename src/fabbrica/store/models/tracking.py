"""Experiment tracking (MLflow's experiments, runs, params, metrics, tags), the model
registry (registered models, versions, aliases) and the credentials jobs reach them with.

Everything belongs to a project; a run made by a job names it (`job_id`), and so does a
model version registered from that run: that is the version's lineage."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fabbrica.store.models.base import Base


class Experiment(Base):
    __tablename__ = "tracking_experiments"
    __table_args__ = (UniqueConstraint("project_pk", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    name: Mapped[str] = mapped_column(String(256))
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="active")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Run(Base):
    __tablename__ = "tracking_runs"
    __table_args__ = (Index("ix_tracking_runs_experiment_id", "experiment_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("tracking_experiments.id", ondelete="CASCADE")
    )
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16), default="RUNNING")
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="active")
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int | None] = mapped_column(BigInteger)


class RunParam(Base):
    __tablename__ = "tracking_params"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunTag(Base):
    __tablename__ = "tracking_tags"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunMetric(Base):
    """One logged value; a metric's history is its rows, its value the latest step's."""

    __tablename__ = "tracking_metrics"
    __table_args__ = (Index("ix_tracking_metrics_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tracking_runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(250))
    value: Mapped[float] = mapped_column(Float)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[int] = mapped_column(BigInteger, default=0)


class RegisteredModel(Base):
    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("project_pk", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("projects.pk"))
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class ModelVersion(Base):
    """A version of a registered model: its files (`source`), the run and the job that
    made it (lineage is read from the job, so GPU-hours charged after registration count)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    version: Mapped[int]
    source: Mapped[str] = mapped_column(String(1024), default="")
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("tracking_runs.id", ondelete="SET NULL"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    workdir_sha256: Mapped[str | None] = mapped_column(String(64))  # the job's, when registered
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    description: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)


class ModelAlias(Base):
    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int]


class JobToken(Base):
    """The credential a job's run holds (MLFLOW_TRACKING_TOKEN): it acts for the job's
    owner in the job's project only, and only while the job is queued, dispatched or
    running. The secret is given at launch; only its hash is kept."""

    __tablename__ = "job_tokens"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
