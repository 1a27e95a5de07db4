"""Path and query parameter types shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ID = 2**31 - 1  # PostgreSQL integer; larger ids cannot exist, so they are a 422
MAX_OFFSET = 2**40  # byte offsets into logs (1 TiB): beyond, a 422, never an OSError


UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a user id")]
TokenIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a token id")]
ProposalIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a proposal id")]
AllocationIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="an allocation id")]
OrgIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="an organisation id")]

# Ids made of letters, digits, dashes and underscores: anything else (a NUL, a slash) is a
# 422 naming the parameter before any lookup.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
