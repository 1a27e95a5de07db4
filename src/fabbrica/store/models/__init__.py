"""ORM models. Every schema change comes with an Alembic migration in migrations/versions."""

from fabbrica.store.models.access import (
    Allocation,
    AuditEntry,
    Call,
    CallReviewer,
    Invitation,
    Organisation,
    OrganisationMember,
    OutboxEmail,
    Project,
    ProjectMember,
    Proposal,
    Review,
)
from fabbrica.store.models.agents import Agent, SiteUsername
from fabbrica.store.models.alerts import BudgetAlert, OperatorDigest
from fabbrica.store.models.base import Base
from fabbrica.store.models.datasets import (
    Dataset,
    DatasetFile,
    DatasetUpload,
    DatasetVersion,
    JobDataset,
)
from fabbrica.store.models.federated import Identity, OidcLogin
from fabbrica.store.models.identity import ApiToken, OperatorFactory, User
from fabbrica.store.models.jobs import Job, JobLoss, UsageRecord
from fabbrica.store.models.portal import PortalSession, SignInLink
from fabbrica.store.models.tracking import (
    Experiment,
    JobToken,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    Run,
    RunMetric,
    RunParam,
    RunTag,
)

__all__ = [
    "Agent",
    "Allocation",
    "ApiToken",
    "AuditEntry",
    "Base",
    "BudgetAlert",
    "Call",
    "CallReviewer",
    "Dataset",
    "DatasetFile",
    "DatasetUpload",
    "DatasetVersion",
    "Experiment",
    "Identity",
    "Invitation",
    "Job",
    "JobDataset",
    "JobLoss",
    "JobToken",
    "ModelAlias",
    "ModelVersion",
    "OidcLogin",
    "OperatorDigest",
    "OperatorFactory",
    "Organisation",
    "OrganisationMember",
    "OutboxEmail",
    "PortalSession",
    "Project",
    "ProjectMember",
    "Proposal",
    "RegisteredModel",
    "Review",
    "Run",
    "RunMetric",
    "RunParam",
    "RunTag",
    "SignInLink",
    "SiteUsername",
    "UsageRecord",
    "User",
]
