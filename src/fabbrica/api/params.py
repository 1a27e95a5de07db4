"""Path and query parameter types shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from fabbrica.core.jobs import RUN_TAG_PREFIX

MAX_ID = 2**31 - 1  # PostgreSQL integer; larger ids cannot exist, so they are a 422
MAX_OFFSET = 2**40  # byte offsets into logs (1 TiB): beyond, a 422, never an OSError


UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a user id")]
IdentityIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="an identity id")]
TokenIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a token id")]
ProposalIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a proposal id")]
AllocationIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="an allocation id")]
OrgIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="an organisation id")]

# Ids made of letters, digits, dashes and underscores: anything else (a NUL, a slash) is a
# 422 naming the parameter before any lookup.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"


def digits_at_most(limit: int) -> str:
    """A regular expression for the decimal numbers from 0 to `limit`, leading zeros allowed
    up to the length of `limit`: an id a schema can bound without a numeric type."""
    text = str(limit)
    width = len(text)
    options = [f"[0-9]{{1,{width - 1}}}"] if width > 1 else []
    for i, char in enumerate(text):
        digit = int(char)
        rest = width - i - 1
        if digit > 0:
            lower = "0" if digit == 1 else f"[0-{digit - 1}]"
            options.append(text[:i] + lower + (f"[0-9]{{{rest}}}" if rest else ""))
    options.append(text)
    return "(?:" + "|".join(options) + ")"


# A run tag, fab-<job id>, whose id a database integer can hold.
# A run tag (core.jobs.RUN_TAG_PATTERN) whose job id a database integer holds, anchored.
RUN_TAG_IN = rf"^{RUN_TAG_PREFIX}{digits_at_most(MAX_ID)}$"
