from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from fabbrica import __version__
from fabbrica.api.deps import ContextDep
from fabbrica.api.schemas import Health
from fabbrica.store.db import READ_ONLY

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(ctx: ContextDep) -> Health:
    """Liveness and database reachability; needs no token."""
    try:
        # a read-only transaction: on SQLite it never queues for the write lock
        with ctx.db.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # any driver error means "not reachable" to a probe
        database = "unreachable"
    return Health(
        status="ok" if database == "ok" else "degraded",
        version=__version__,
        database=database,
        control_loop=ctx.status.get("control_loop", "unknown"),
    )
