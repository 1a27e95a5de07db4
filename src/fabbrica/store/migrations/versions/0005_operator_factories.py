"""operator factories: operators scoped to the factories they operate

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

Existing operators get the factories their audit trail shows them acting for: calls they
changed or gave reviewers, proposals they decided or assigned reviewers to, allocations
they changed. An operator with no such trace operates no factory until an admin names
some (`PUT /api/v1/users/{id}/factories`). Agent tokens carry no record of who made them,
so they cannot say anything (docs/roles.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_users = sa.table("users", sa.column("id", sa.Integer), sa.column("role", sa.String))
_audit = sa.table(
    "audit_log",
    sa.column("actor_id", sa.Integer),
    sa.column("entity", sa.String),
    sa.column("entity_id", sa.String),
)
_calls = sa.table("calls", sa.column("id", sa.String), sa.column("factory_id", sa.String))
_proposals = sa.table("proposals", sa.column("id", sa.Integer), sa.column("call_id", sa.String))
_allocations = sa.table(
    "allocations", sa.column("id", sa.Integer), sa.column("factory_id", sa.String)
)
_operator_factories = sa.table(
    "operator_factories", sa.column("user_id", sa.Integer), sa.column("factory_id", sa.String)
)


def upgrade() -> None:
    op.create_table(
        "operator_factories",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("factory_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_operator_factories_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "factory_id", name="pk_operator_factories"),
    )
    with op.batch_alter_table("operator_factories", schema=None) as batch_op:
        batch_op.create_index("ix_operator_factories_factory_id", ["factory_id"], unique=False)
    _infer_from_audit_trail(op.get_bind())


def _infer_from_audit_trail(conn: sa.Connection) -> None:
    audit_table = sa.inspect(conn).has_table("audit_log")
    if not audit_table:
        return
    operators = set(conn.scalars(sa.select(_users.c.id).where(_users.c.role == "operator")))
    if not operators:
        return
    call_factory = {c: f for c, f in conn.execute(sa.select(_calls.c.id, _calls.c.factory_id))}
    proposal_call = {
        str(pid): call
        for pid, call in conn.execute(sa.select(_proposals.c.id, _proposals.c.call_id))
    }
    allocation_factory = {
        str(aid): factory
        for aid, factory in conn.execute(sa.select(_allocations.c.id, _allocations.c.factory_id))
    }
    found: set[tuple[int, str]] = set()
    rows = conn.execute(
        sa.select(_audit.c.actor_id, _audit.c.entity, _audit.c.entity_id).where(
            _audit.c.actor_id.in_(operators)
        )
    )
    for actor, entity, entity_id in rows:
        factory = None
        if entity == "call":
            factory = call_factory.get(entity_id)
        elif entity == "proposal":
            factory = call_factory.get(proposal_call.get(entity_id, ""))
        elif entity == "allocation":
            factory = allocation_factory.get(entity_id)
        if factory:
            found.add((actor, factory))
    if found:
        conn.execute(
            sa.insert(_operator_factories),
            [{"user_id": u, "factory_id": f} for u, f in sorted(found)],
        )


def downgrade() -> None:
    with op.batch_alter_table("operator_factories", schema=None) as batch_op:
        batch_op.drop_index("ix_operator_factories_factory_id")
    op.drop_table("operator_factories")
