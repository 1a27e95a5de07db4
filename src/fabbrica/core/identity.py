"""Roles and what they may do. Pure: no storage, no clock."""

from __future__ import annotations

import hashlib
from enum import StrEnum


class Role(StrEnum):
    """A user's role in the federation."""

    ADMIN = "admin"  # federation admin (the EuroHPC office running Fabbrica)
    OPERATOR = "operator"  # factory operator
    REVIEWER = "reviewer"
    USER = "user"  # applicant or project member
    AGENT = "agent"  # a factory's site agent: acts for that factory only


TOKEN_PREFIX = "fab_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    """The stored form of an API token: SHA-256 of its text.

    Tokens are random 256-bit strings, so a fast hash is enough; the bootstrap token is an
    operator's choice and is hashed the same way.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_hint(token: str) -> str:
    """A short, safe-to-show hint of a token: its first characters."""
    return token[: len(TOKEN_PREFIX) + 4] if token.startswith(TOKEN_PREFIX) else token[:2] + "…"


def may_manage_users(role: Role) -> bool:
    return role is Role.ADMIN
