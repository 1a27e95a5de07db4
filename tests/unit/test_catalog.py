from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fabbrica.catalog import CatalogError, load_catalog, parse_catalog
from fabbrica.catalog.model import Catalog
from tests.conftest import SHARED, on_ci

SHIPPED = load_catalog()


def shipped_data() -> dict[str, object]:
    from fabbrica.catalog.loader import default_catalog_path

    data = yaml.safe_load(default_catalog_path().read_text())
    assert isinstance(data, dict)
    return data


def test_shipped_catalog_has_the_19_factories_of_the_reference_data() -> None:
    reference = SHARED / "data" / "ai-factories.yaml"
    if not reference.exists():
        if on_ci():
            pytest.fail(f"{reference} is missing")
        pytest.skip(f"{reference} is not beside this checkout")
    ref = yaml.safe_load(reference.read_text())
    assert [f.id for f in SHIPPED.factories] == [f["id"] for f in ref["factories"]]
    assert len(SHIPPED.factories) == 19
    ref_countries = {f["id"]: f["country"] for f in ref["factories"]}
    assert {f.id: f.country for f in SHIPPED.factories} == ref_countries


def test_shipped_catalog_figures() -> None:
    it4lia = SHIPPED.factory("it4lia")
    assert it4lia is not None
    leonardo = next(s for s in it4lia.systems if s.id == "leonardo-booster")
    boost = leonardo.partitions[0]
    assert (boost.id, boost.gpu_model, boost.gpus_per_node, boost.nodes) == (
        "boost_usr_prod",
        "a100",
        4,
        3456,
    )
    assert "nodes" in boost.uncertain  # the reference marks Leonardo's size uncertain
    lumi = SHIPPED.factory("lumi-aif")
    assert lumi is not None
    standard_g = lumi.partitions()[0][1]
    assert standard_g.billing.rule == "whole_node"
    # Norway must survive YAML's "NO" == false trap
    assert "NO" in SHIPPED.eligibility.participating_states
    assert "NO" in lumi.partners


def test_access_modes_carry_their_rules() -> None:
    fast = SHIPPED.access_mode("fast_lane")
    large = SHIPPED.access_mode("large_scale")
    assert fast is not None and large is not None
    assert fast.max_gpu_hours == 50000 and fast.decision == "automatic"
    assert large.min_gpu_hours == 50000 and large.min_reviews >= 1
    assert {m.code for m in SHIPPED.access_modes} >= {"PG", "FL", "LS"}


def _with(path: tuple[object, ...], value: object) -> dict[str, object]:
    data = shipped_data()
    node: object = data
    for part in path[:-1]:
        node = node[part]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            ("factories", 2, "systems", 0, "partitions", 0, "gpus_per_node"),
            "four",
            "factories[2] (id=it4lia) > systems[0] (id=leonardo-booster) > partitions[0] "
            "(id=boost_usr_prod), field 'gpus_per_node'",
        ),
        (
            ("factories", 2, "systems", 0, "partitions", 0, "nodes"),
            -3,
            "field 'nodes': Input should be greater than or equal to 1",
        ),
        (("factories", 0, "country"), "Finland", "factories[0] (id=lumi-aif), field 'country'"),
        (("factories", 0, "colour"), "blue", "field 'colour': unknown field"),
        (("access_modes", 0, "intake"), "sometimes", "access_modes[0] (id=playground)"),
        (("factories", 1, "id"), "lumi-aif", "duplicate id(s) in factories: lumi-aif"),
        (("factories", 0, "uncertain"), ["size"], "uncertain names unknown field(s): size"),
        (
            ("factories", 0, "systems", 0, "partitions", 0, "billing"),
            {"rule": "per_token"},
            "field 'billing'",
        ),
    ],
)
def test_bad_catalog_names_file_entry_and_field(
    tmp_path: Path, path: tuple[object, ...], value: object, expected: str
) -> None:
    file = tmp_path / "mine.yaml"
    file.write_text(yaml.safe_dump(_with(path, value)))
    with pytest.raises(CatalogError) as info:
        load_catalog(file)
    message = str(info.value)
    assert str(file) in message
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("factories: [\n", "line 2"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("", "must hold a mapping"),
    ],
)
def test_unparseable_catalog(text: str, expected: str) -> None:
    with pytest.raises(CatalogError, match=expected):
        parse_catalog(text, "x.yaml")


def test_missing_or_binary_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CatalogError, match="not UTF-8"):
        load_catalog(binary)


def test_with_factory_refuses_a_duplicate_id() -> None:
    extra = SHIPPED.factories[0]
    with pytest.raises(ValueError, match="already"):
        SHIPPED.with_factory(extra)
    renamed = extra.model_copy(update={"id": "elsewhere"})
    assert isinstance(SHIPPED.with_factory(renamed), Catalog)
    assert len(SHIPPED.with_factory(renamed).factories) == 20


def test_gpu_totals_and_uncertainty() -> None:
    jaif = SHIPPED.factory("jaif")
    ai_at = SHIPPED.factory("ai-at")
    assert jaif is not None and ai_at is not None
    assert jaif.gpus == sum(p.gpus_per_node * p.nodes for _, p in jaif.partitions())
    assert jaif.gpus > 0 and jaif.gpus_uncertain
    assert ai_at.gpus == 0 and ai_at.gpus_uncertain  # unknown size is never shown as certain
