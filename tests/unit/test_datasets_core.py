"""Data sets, the pure part: residency, classes, references, Croissant, and residency in
the scheduler (production and the simulator share it)."""

from __future__ import annotations

import pytest

from fabbrica.core.datasets import (
    EU_MEMBER_STATES,
    FileEntry,
    VersionFacts,
    check_class,
    check_file_path,
    croissant,
    parse_ref,
    parse_residency,
    residency_countries,
)
from fabbrica.core.errors import InvalidInput
from fabbrica.sched import schedule
from tests.unit.test_sched import job, part, placed, reason, snap


def test_residency_is_eu_or_sorted_country_codes() -> None:
    assert parse_residency("it, fr") == "FR,IT"
    assert parse_residency(["EU"]) == "EU"
    assert parse_residency(None) is None and parse_residency("") is None
    for bad in ("XX", "EU,IT", "ITA"):
        with pytest.raises(InvalidInput) as caught:
            parse_residency(bad)
        assert caught.value.field == "residency"
    assert residency_countries("FR,IT") == frozenset({"FR", "IT"})
    assert residency_countries("GR") == frozenset({"GR", "EL"})  # the catalog writes either
    eu = residency_countries("EU")
    assert eu is not None and len(EU_MEMBER_STATES - {"GR", "EL"}) == 26
    assert {"IT", "DE", "FI", "EL"} <= eu and not {"NO", "CH", "UK"} & eu


def test_personal_data_must_name_a_residency() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_class("personal", None)
    assert caught.value.field == "residency"
    assert check_class("personal", "IT").value == "personal"
    with pytest.raises(InvalidInput):
        check_class("secret", None)


def test_references_and_paths() -> None:
    assert (parse_ref("scans").name, parse_ref("scans").version) == ("scans", None)
    assert parse_ref("scans@3").version == 3
    for bad in ("Scans", "scans@0", "scans@x", "@3", "a b"):
        with pytest.raises(ValueError):
            parse_ref(bad)
    assert check_file_path("a/b.csv") == "a/b.csv"
    for bad in ("/etc/passwd", "../x", "a/../b", "a//b", "./a", ""):
        with pytest.raises(InvalidInput):
            check_file_path(bad)


def test_croissant_lists_every_file_with_its_sha256_and_size() -> None:
    facts = VersionFacts(
        dataset_id=7, name="scans", description="", license="CC-BY-4.0", version=2,
        created="2026-11-30T12:00:00+00:00", residency="IT", data_class="personal",
        files=(FileEntry("a b.csv", "0" * 64, 10), FileEntry("x.bin", "1" * 64, 3)),
        url="https://fab.example/api/v1/datasets/7",
    )  # fmt: skip
    doc = croissant(facts)
    assert doc["@type"] == "sc:Dataset" and doc["version"] == "2.0.0"
    assert doc["description"]  # Croissant requires one: a default when none was given
    assert [d["contentSize"] for d in doc["distribution"]] == ["10 B", "3 B"]
    assert doc["distribution"][0]["contentUrl"].endswith("/versions/2/file?path=a%20b.csv")
    assert {d["@type"] for d in doc["distribution"]} == {"cr:FileObject"}
    assert "residency:IT" in doc["keywords"]


def test_residency_keeps_a_job_waiting_where_its_data_may_go() -> None:
    it, de = part("it4lia", 4, free=0, country="IT"), part("jaif", 4, country="DE")
    reader = job("r", 1, countries=frozenset({"IT"}), residency="data residency of s@1 (IT)")
    decision = schedule(snap([reader], [it, de]))
    assert placed(decision) == {}
    assert "data residency of s@1 (IT) keeps it to it4lia" in reason(decision, "r")
    nowhere = job("n", 1, countries=frozenset({"FR"}), residency="data residency of s@1 (FR)")
    decision = schedule(snap([nowhere], [it, de]))
    assert reason(decision, "n") == (
        "the data residency of s@1 (FR) keeps it to FR: no allowed factory is there"
    )
