"""Dependencies shared by the routers, as `Annotated` aliases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from fabbrica.api.tunnels import TunnelHub
from fabbrica.catalog.model import Catalog
from fabbrica.core.archives import ArchiveLimits
from fabbrica.core.errors import Unauthenticated
from fabbrica.core.executor import Executor
from fabbrica.services import federated, identity
from fabbrica.services.executors import ExecutorRegistry
from fabbrica.services.oidc import Providers
from fabbrica.services.single_user import SingleUser
from fabbrica.services.templates import Templates
from fabbrica.store.db import Database
from fabbrica.store.models import User
from fabbrica.store.types import utcnow


@dataclass
class AppContext:
    """What every request may need: the database, the catalog, a clock, and `executors`:
    the registry of every factory's executor (the `fixed_executors` this process drives,
    and a link to every factory whose site agent is registered in the database)."""

    db: Database
    catalog: Catalog
    clock: Callable[[], dt.datetime] = utcnow
    fixed_executors: InitVar[Mapping[str, Executor] | None] = None  # factory id -> executor
    files: Path | None = None  # where uploads and job files live
    upload_max_bytes: int = 100 * 1024 * 1024
    dataset_quota_bytes: int = 100 * 1024**3  # data sets a project may keep, in bytes
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)  # workdirs, outputs
    agent_lease: dt.timedelta = dt.timedelta(seconds=60)  # how long a site agent's claim holds
    agent_wait_s: float = 20.0  # the longest a site agent's sync is held waiting for work
    status: dict[str, str] = field(default_factory=lambda: {"control_loop": "not running"})
    single_user: SingleUser = field(default_factory=SingleUser)  # factories that cannot isolate
    metrics_token: str | None = field(default=None, repr=False)  # /metrics wants it when set
    metrics_cache_seconds: float = 0.0  # /metrics: serve a collection again for this long
    public_url: str | None = None  # where people reach the portal (links in emails)
    wake: Callable[[], None] = field(default=lambda: None)  # a submission: run the loop now
    oidc: Providers = field(default_factory=Providers)  # OpenID Providers (docs/identity.md)
    templates: Templates = field(default_factory=Templates)  # job templates (templates_dir)
    notebook_idle_s: int = 3600  # a notebook idle this long ends (FABBRICA_NOTEBOOK_IDLE)
    tunnels: TunnelHub = field(default_factory=TunnelHub)  # the site agents' notebook tunnels
    executors: ExecutorRegistry = field(init=False)

    def __post_init__(self, fixed_executors: Mapping[str, Executor] | None) -> None:
        self.executors = ExecutorRegistry(
            self.db,
            self.catalog,
            self.clock,
            files=self.files,
            lease=self.agent_lease,
            fixed=fixed_executors,
        )


# Dependencies that only read what is at hand are `async def`: FastAPI runs a plain `def`
# dependency in a worker thread, one thread hop per dependency and request.
async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    with ctx.db.session() as session:
        yield session


# scope="function": the transaction commits (or rolls back) before the response is sent,
# so a client never hears of a change before it is stored (FastAPI's default for a yield
# dependency ends it after the response).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="an API token: `Authorization: Bearer fab_...`")
# The bearer credentials as sent, unchecked: for a route that signs them in itself
# (`authenticated`), in the worker thread where it does the rest of its work
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_current_user(ctx: ContextDep, session: SessionDep, credentials: BearerDep) -> User:
    return authenticated(ctx, session, credentials)


def authenticated(
    ctx: AppContext, session: Session, credentials: HTTPAuthorizationCredentials | None
) -> User:
    """The user the bearer credentials sign in (Unauthenticated otherwise), under the
    catalog's MFA policy: what `CurrentUser` gives a route."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    secret = credentials.credentials
    try:
        user = identity.authenticate(session, secret, now=ctx.clock())
    except Unauthenticated:
        if not ctx.oidc or secret.count(".") != 2:
            raise
        # not a Fabbrica token: perhaps an OpenID Provider's access token (docs/identity.md)
        user = federated.user_for_access_token(session, ctx.oidc, secret, ctx.clock())
    return identity.apply_mfa_policy(user, ctx.catalog.mfa_factories())


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_catalog(ctx: ContextDep) -> Catalog:
    return ctx.catalog


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
