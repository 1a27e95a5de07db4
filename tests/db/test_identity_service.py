"""The identity service on a real database (SQLite and PostgreSQL): users, tokens, bootstrap."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import func, select

from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from fabbrica.core.identity import Role
from fabbrica.services import identity
from fabbrica.store.db import Database
from fabbrica.store.models import ApiToken, User
from tests.conftest import Clock


def make_user(
    db: Database, clock: Clock, email: str = "ada@example.org", role: Role = Role.USER
) -> tuple[User, str]:
    with db.session() as s:
        return identity.create_user(s, email=email, name="Ada", role=role, now=clock())


def user_count(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(User)) or 0)


def load_token(db: Database, token_id: int) -> ApiToken:
    with db.session() as s:
        token = s.get(ApiToken, token_id)
        assert token is not None
        return token


# --- create_user ----------------------------------------------------------------------------


def test_create_user_normalises_email_and_stores_the_user(db: Database, clock: Clock) -> None:
    with db.session() as s:
        user, secret = identity.create_user(
            s, email="  Ada.Lovelace@Example.ORG ", name="  Ada  ", role=Role.OPERATOR, now=clock()
        )
    with db.session() as s:
        stored = s.get(User, user.id)
        assert stored is not None
        assert stored.email == "ada.lovelace@example.org"
        assert stored.name == "Ada"
        assert stored.role == "operator"
        assert stored.active is True
        assert stored.created_at == clock()
        assert identity.authenticate(s, secret, now=clock()).id == user.id


def test_duplicate_email_is_a_conflict_whatever_the_case(db: Database, clock: Clock) -> None:
    make_user(db, clock, email="ada@example.org")
    with pytest.raises(Conflict) as err, db.session() as s:
        identity.create_user(s, email="ADA@Example.org", name="Other", role=Role.USER, now=clock())
    assert err.value.field == "email"
    assert user_count(db) == 1


@pytest.mark.parametrize(
    ("email", "name", "field"),
    [
        ("not-an-email", "Ada", "email"),
        ("", "Ada", "email"),
        ("a@b@example.org", "Ada", "email"),
        ("ada lovelace@example.org", "Ada", "email"),
        ("ada@example", "Ada", "email"),
        ("x" * 65 + "@example.org", "Ada", "email"),
        ("ada@example.org", "", "name"),
        ("ada@example.org", "   ", "name"),
        ("ada@example.org", "x" * 201, "name"),
        pytest.param(
            "ada@example.org",
            "Ada\x00",
            "name",
        ),
        pytest.param(
            "ad\x00a@example.org",
            "Ada",
            "email",
        ),
    ],
)
def test_create_user_rejects_bad_input(
    db: Database, clock: Clock, email: str, name: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as err, db.session() as s:
        identity.create_user(s, email=email, name=name, role=Role.USER, now=clock())
    assert err.value.field == field
    assert user_count(db) == 0


# --- tokens are stored as hashes -------------------------------------------------------------


def test_token_secrets_are_stored_only_as_hashes(db: Database, clock: Clock) -> None:
    user, first = make_user(db, clock)
    with db.session() as s:
        _, second = identity.create_token(s, user, name="laptop", now=clock())
    secrets = [first, second]
    assert first != second
    with db.engine.connect() as conn:
        tokens = conn.execute(select(ApiToken.__table__)).mappings().all()
        users = conn.execute(select(User.__table__)).mappings().all()
    assert len(tokens) == 2
    for row in [*tokens, *users]:
        for column, value in row.items():
            for secret in secrets:
                assert secret not in str(value), f"secret found in column {column}"
    assert {r["token_hash"] for r in tokens} == {
        hashlib.sha256(x.encode()).hexdigest() for x in secrets
    }
    assert {r["hint"] for r in tokens} == {x[:8] for x in secrets}
    assert all(x.startswith("fab_") and len(x) >= 40 for x in secrets)


# --- authenticate ---------------------------------------------------------------------------


def test_authenticate_a_good_token(db: Database, clock: Clock) -> None:
    user, secret = make_user(db, clock)
    with db.session() as s:
        found = identity.authenticate(s, secret, now=clock())
        assert (found.id, found.email) == (user.id, "ada@example.org")


def test_authenticate_an_unknown_token(db: Database, clock: Clock) -> None:
    _, secret = make_user(db, clock)
    for wrong in ("fab_unknown", secret[:-1], secret + "x", ""):
        with pytest.raises(Unauthenticated), db.session() as s:
            identity.authenticate(s, wrong, now=clock())


def test_authenticate_a_revoked_token(db: Database, clock: Clock) -> None:
    user, secret = make_user(db, clock)
    with db.session() as s:
        token, other = identity.create_token(s, user, name="second", now=clock())
        identity.revoke_token(s, user, token.id, now=clock())
    with pytest.raises(Unauthenticated), db.session() as s:
        identity.authenticate(s, other, now=clock())
    with db.session() as s:  # the user's other token is untouched
        assert identity.authenticate(s, secret, now=clock()).id == user.id


def test_authenticate_an_expired_token(db: Database, clock: Clock) -> None:
    user, _ = make_user(db, clock)
    with db.session() as s:
        token, secret = identity.create_token(s, user, name="ci", now=clock(), expires_in_days=2)
    assert token.expires_at == clock() + dt.timedelta(days=2)
    clock.advance(days=2, seconds=-1)
    with db.session() as s:
        assert identity.authenticate(s, secret, now=clock()).id == user.id
    clock.advance(seconds=1)
    with pytest.raises(Unauthenticated, match="expired"), db.session() as s:
        identity.authenticate(s, secret, now=clock())


def test_authenticate_a_deactivated_user(db: Database, clock: Clock) -> None:
    user, secret = make_user(db, clock)
    with db.session() as s:
        stored = s.get(User, user.id)
        assert stored is not None
        stored.active = False
    with pytest.raises(Unauthenticated, match="deactivated"), db.session() as s:
        identity.authenticate(s, secret, now=clock())


def test_last_used_at_is_updated_at_most_once_a_minute(db: Database, clock: Clock) -> None:
    user, _ = make_user(db, clock)
    with db.session() as s:
        token, secret = identity.create_token(s, user, name="x", now=clock())
    assert load_token(db, token.id).last_used_at is None
    start = clock()

    def use() -> dt.datetime | None:
        with db.session() as s:
            identity.authenticate(s, secret, now=clock())
        return load_token(db, token.id).last_used_at

    assert use() == start
    clock.advance(seconds=59)
    assert use() == start
    clock.advance(seconds=1)
    assert use() == start + dt.timedelta(minutes=1)
    clock.advance(seconds=30)
    assert use() == start + dt.timedelta(minutes=1)


# --- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_creates_the_admin_once_with_the_given_token(db: Database, clock: Clock) -> None:
    with db.session() as s:
        made = identity.bootstrap(s, now=clock(), token="chosen-secret")
    assert made is not None
    admin, secret = made
    assert secret == "chosen-secret"
    assert (admin.role, admin.email) == ("admin", "admin@localhost")
    with db.session() as s:
        assert identity.bootstrap(s, now=clock(), token="another-secret") is None
        assert identity.bootstrap(s, now=clock()) is None
    assert user_count(db) == 1
    with db.session() as s:
        assert identity.authenticate(s, "chosen-secret", now=clock()).id == admin.id
        assert s.scalar(select(func.count()).select_from(ApiToken)) == 1
    with pytest.raises(Unauthenticated), db.session() as s:
        identity.authenticate(s, "another-secret", now=clock())


def test_bootstrap_without_a_token_generates_one(db: Database, clock: Clock) -> None:
    with db.session() as s:
        made = identity.bootstrap(s, now=clock())
    assert made is not None
    admin, secret = made
    assert secret.startswith("fab_") and len(secret) > 20
    with db.session() as s:
        found = identity.authenticate(s, secret, now=clock())
        assert (found.id, found.role) == (admin.id, "admin")


def test_bootstrap_does_nothing_once_any_user_exists(db: Database, clock: Clock) -> None:
    make_user(db, clock)
    with db.session() as s:
        assert identity.bootstrap(s, now=clock(), token="late") is None
    assert user_count(db) == 1


# --- listing and revoking -------------------------------------------------------------------


def test_list_tokens_is_scoped_to_the_actor(db: Database, clock: Clock) -> None:
    with db.session() as s:
        made = identity.bootstrap(s, now=clock(), token="admin-secret")
    assert made is not None
    admin = made[0]
    alice, _ = make_user(db, clock, email="alice@example.org")
    bob, _ = make_user(db, clock, email="bob@example.org")
    with db.session() as s:
        identity.create_token(s, alice, name="second", now=clock())
        identity.create_token(s, bob, name="second", now=clock())
    with db.session() as s:
        by_owner = {
            uid: sorted(t.id for t in s.scalars(select(ApiToken).where(ApiToken.user_id == uid)))
            for uid in (admin.id, alice.id, bob.id)
        }
        assert [len(v) for v in by_owner.values()] == [1, 2, 2]

        def ids(actor: User, user_id: int | None = None) -> list[int]:
            return [t.id for t in identity.list_tokens(s, actor, user_id=user_id)]

        assert ids(alice) == by_owner[alice.id]
        assert ids(alice, alice.id) == by_owner[alice.id]
        assert ids(bob) == by_owner[bob.id]
        assert ids(admin) == by_owner[admin.id]
        assert ids(admin, alice.id) == by_owner[alice.id]
        assert ids(admin, 0) == sorted(i for v in by_owner.values() for i in v)
        for other in (bob.id, admin.id, 0):
            with pytest.raises(Forbidden):
                identity.list_tokens(s, alice, user_id=other)


def test_a_user_cannot_revoke_another_users_token(db: Database, clock: Clock) -> None:
    alice, _ = make_user(db, clock, email="alice@example.org")
    bob, bob_secret = make_user(db, clock, email="bob@example.org")
    with db.session() as s:
        bob_token = identity.list_tokens(s, bob)[0]
    with pytest.raises(NotFound) as err, db.session() as s:
        identity.revoke_token(s, alice, bob_token.id, now=clock())
    assert err.value.field == "token_id"
    assert load_token(db, bob_token.id).revoked_at is None
    with db.session() as s:
        assert identity.authenticate(s, bob_secret, now=clock()).id == bob.id


def test_revoke_own_token_keeps_the_first_revocation_time(db: Database, clock: Clock) -> None:
    alice, _ = make_user(db, clock)
    with db.session() as s:
        token, _ = identity.create_token(s, alice, name="x", now=clock())
        identity.revoke_token(s, alice, token.id, now=clock())
    first = clock()
    clock.advance(hours=1)
    with db.session() as s:
        again = identity.revoke_token(s, alice, token.id, now=clock())
        assert again.revoked_at == first
    assert load_token(db, token.id).revoked_at == first


def test_an_admin_may_revoke_anyones_token(db: Database, clock: Clock) -> None:
    admin, _ = make_user(db, clock, email="root@example.org", role=Role.ADMIN)
    alice, secret = make_user(db, clock, email="alice@example.org")
    with db.session() as s:
        token = identity.list_tokens(s, alice)[0]
        identity.revoke_token(s, admin, token.id, now=clock())
    assert load_token(db, token.id).revoked_at == clock()
    with pytest.raises(Unauthenticated), db.session() as s:
        identity.authenticate(s, secret, now=clock())


def test_only_an_admin_may_create_a_token_for_someone_else(db: Database, clock: Clock) -> None:
    admin, _ = make_user(db, clock, email="root@example.org", role=Role.ADMIN)
    alice, _ = make_user(db, clock, email="alice@example.org")
    bob, _ = make_user(db, clock, email="bob@example.org")
    with pytest.raises(Forbidden), db.session() as s:
        identity.create_token(s, alice, name="x", now=clock(), user_id=bob.id)
    with db.session() as s:
        token, secret = identity.create_token(s, admin, name="x", now=clock(), user_id=bob.id)
    assert token.user_id == bob.id
    with db.session() as s:
        assert identity.authenticate(s, secret, now=clock()).id == bob.id
        assert len(identity.list_tokens(s, bob)) == 2
