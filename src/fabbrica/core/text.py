"""Checks for text that users type: no control characters, bounded length."""

from __future__ import annotations

import re

from fabbrica.core.errors import InvalidInput

# The ids of factories, systems, partitions, access modes and job names: lower case,
# digits, _ and -, at most 63 characters (as Slurm partition and account names allow).
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_SINGLE_LINE = re.compile(r"[\x00-\x1f\x7f]")


def clean_text(
    value: str, field: str, *, max_len: int, min_len: int = 1, multiline: bool = False
) -> str:
    """`value` stripped; InvalidInput naming `field` if empty, too long or with control chars."""
    value = value.strip()
    pattern = _CONTROL if multiline else _CONTROL_SINGLE_LINE
    if pattern.search(value):
        raise InvalidInput(f"{field} contains control characters", field=field)
    if len(value) < min_len:
        raise InvalidInput(f"{field} is required", field=field)
    if len(value) > max_len:
        raise InvalidInput(
            f"{field} is {len(value):,} characters; the limit is {max_len:,}", field=field
        )
    return value
