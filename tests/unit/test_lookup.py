from __future__ import annotations

import pytest

from fabbrica.catalog.loader import load_catalog
from fabbrica.core.lookup import resolve

SECTORS = [(s.id, s.name) for s in load_catalog().sectors]
MODELS = [("a100", "NVIDIA A100 64GB"), ("h100", "NVIDIA H100"), ("gh200", "NVIDIA GH200")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("manufacturing", "manufacturing"),
        ("Health and life sciences", "health-life-sciences"),
        ("health", "health-life-sciences"),
        ("  Finance ", "finance"),
        ("climate", "climate-environment"),
        ("agri", "agri-food"),
        ("space", "space"),
        ("underwater basket weaving", None),
        ("", None),
    ],
)
def test_sectors(text: str, expected: str | None) -> None:
    assert resolve(text, SECTORS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a100", "a100"), ("A100", "a100"), ("NVIDIA H100", "h100"), ("nvidia a100 64gb", "a100"),
     ("gh", "gh200"), ("nvidia", None), ("mi300x", None)],
)  # fmt: skip
def test_gpu_models(text: str, expected: str | None) -> None:
    assert resolve(text, MODELS) == expected
