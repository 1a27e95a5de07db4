"""Checks for text that users type: no control characters, no invisible format characters
(bidirectional overrides and isolates among them), bounded length."""

from __future__ import annotations

import re
import unicodedata

from fabbrica.core.errors import InvalidInput

# The ids of factories, systems, partitions, access modes and job names: lower case,
# digits, _ and -, at most 63 characters (as Slurm partition and account names allow).
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_SINGLE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidirectional controls: marks (LRM, RLM, ALM), embeddings and overrides (LRE, RLE, PDF,
# LRO, RLO) and isolates (LRI, RLI, FSI, PDI). They make stored text read differently
# from what it holds ("Trojan Source"), so no name or text may carry one.
BIDI_CONTROLS = frozenset(
    "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def invisible_character(value: str) -> str | None:
    """The first bidirectional control or other invisible format character (Unicode
    category Cf: zero-width spaces and joiners, word joiners, soft hyphens, the BOM,
    interlinear annotations, tag characters) in `value`, or None."""
    for char in value:
        if char in BIDI_CONTROLS or unicodedata.category(char) == "Cf":
            return char
    return None


def clean_text(
    value: str, field: str, *, max_len: int, min_len: int = 1, multiline: bool = False
) -> str:
    """`value` stripped; InvalidInput naming `field` if empty, too long, or with control
    characters, bidirectional controls or invisible format characters."""
    value = value.strip()
    pattern = _CONTROL if multiline else _CONTROL_SINGLE_LINE
    if pattern.search(value):
        raise InvalidInput(f"{field} contains control characters", field=field)
    hidden = invisible_character(value)
    if hidden is not None:
        kind = "a bidirectional control" if hidden in BIDI_CONTROLS else "an invisible character"
        raise InvalidInput(
            f"{field} contains {kind} (U+{ord(hidden):04X} {unicodedata.name(hidden, '')}); "
            "type the text without it",
            field=field,
        )
    if len(value) < min_len:
        raise InvalidInput(f"{field} is required", field=field)
    if len(value) > max_len:
        raise InvalidInput(
            f"{field} is {len(value):,} characters; the limit is {max_len:,}", field=field
        )
    return value
