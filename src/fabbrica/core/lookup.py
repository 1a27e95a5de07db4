"""Forgiving look-ups of what people type: a sector or a GPU model by id, name or part."""

from __future__ import annotations

import re
from collections.abc import Iterable


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def resolve(text: str, choices: Iterable[tuple[str, str]]) -> str | None:
    """The id among `choices` (id, name) that `text` names: the id or the name (any case),
    else the one choice whose id or name starts with it, else the one choice whose id is a
    word of it ("NVIDIA A100" -> a100). None when nothing or several match."""
    wanted = text.strip().lower()
    options = list(choices)
    if not wanted:
        return None
    for ident, name in options:
        if wanted in (ident.lower(), name.lower()):
            return ident
    for matches in (
        [i for i, n in options if i.lower().startswith(wanted) or n.lower().startswith(wanted)],
        [i for i, _ in options if i.lower() in _tokens(wanted)],
    ):
        if len(set(matches)) == 1:
            return matches[0]
    return None
