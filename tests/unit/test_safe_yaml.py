"""The one YAML loader: aliases, depth and size refused before any object is built."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fabbrica.backends.slurm.executor import MapError, read_partition_map
from fabbrica.catalog.loader import CatalogError, parse_catalog
from fabbrica.core.jobspec import SpecError, parse_job_spec
from fabbrica.core.safe_yaml import YamlError, load_yaml


def alias_bomb(levels: int, fanout: int = 9) -> str:
    """The issue's spec: each level an anchored list of `fanout` aliases of the previous."""
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * fanout)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "name: bomb\nrun: 'true'\nenv:\n" + "\n".join("  " + line for line in lines) + "\n"


def test_a_ten_level_alias_bomb_is_refused_at_once_naming_the_field() -> None:
    text = alias_bomb(10)  # 9**10 = 3.5 billion strings if expanded
    began = time.perf_counter()
    with pytest.raises(SpecError) as info:
        parse_job_spec(text)
    elapsed = time.perf_counter() - began
    assert elapsed < 0.1, elapsed
    assert info.value.field == "env.a0"  # the first anchor
    assert "anchors and aliases" in str(info.value) and "line 4" in str(info.value)


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("a: &x 1\nb: 2\n", "a", 1),  # an anchor alone is refused too
        ("a: 1\nb:\n  c: [1, *x]\n", "b.c.1", 3),  # an alias (undefined even)
        ("- {k: v}\n- &y [1]\n", "1", 2),
        ("? &k a\n: 1\n", None, 1),  # an anchored key names its mapping
    ],
)
def test_anchors_and_aliases_are_refused_with_their_place(
    text: str, field: str | None, line: int
) -> None:
    with pytest.raises(YamlError) as info:
        load_yaml(text, max_bytes=1000)
    assert info.value.field == field
    assert info.value.line == line
    assert "anchors and aliases" in info.value.problem


def test_depth_nodes_and_size_are_checked_before_building() -> None:
    deep = "x: " + "[" * 100_000 + "]" * 100_000  # would overflow a recursive builder
    with pytest.raises(YamlError, match="nested deeper than 32") as info:
        load_yaml(deep, max_bytes=10**6)
    assert info.value.field == "x"
    assert load_yaml("x: " + "[" * 31 + "]" * 31, max_bytes=1000) is not None
    with pytest.raises(YamlError, match="more than 100 values"):
        load_yaml("[" + ", ".join(["1"] * 101) + "]", max_bytes=10**6, max_nodes=100)
    with pytest.raises(YamlError, match="2,001 bytes; the limit is 2,000"):
        load_yaml("#" * 2001, max_bytes=2000)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1" + "0" * 5000,  # an int beyond Python's digit limit
        "a: 2001-13-45",  # a timestamp that is no date
        "a: 1\n---\nb: 2\n",
        b"a: \xff",
        "a: [unclosed",
        "a: !!python/object:os.system x",
    ],
)
def test_bad_text_is_a_yaml_error_never_another_exception(text: str | bytes) -> None:
    with pytest.raises(YamlError):
        load_yaml(text, max_bytes=10**6)


def test_plain_yaml_and_json_still_load() -> None:
    assert load_yaml("a: [1, {b: c}]\nd: 'e'\n", max_bytes=1000) == {"a": [1, {"b": "c"}], "d": "e"}
    assert load_yaml('{"a": [1, 2]}', max_bytes=1000) == {"a": [1, 2]}
    assert load_yaml("", max_bytes=1000) is None


def test_catalogs_and_partition_maps_use_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="anchors and aliases"):
        parse_catalog("schema_version: 1\nfactories: &f []\nmore: *f\n")
    path = tmp_path / "map.yaml"
    path.write_text("partitions:\n  booster: &b {slurm_partition: gpu}\n  other: *b\n")
    with pytest.raises(MapError, match="anchors and aliases"):
        read_partition_map(path, [])
