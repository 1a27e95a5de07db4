"""Reading traces, sizing and loading federations, and the engine's conservation laws.

Traces here are small CSVs written to tmp_path; the real Philly trace is never read.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabbrica.sim import engine
from fabbrica.sim import federation as fed
from fabbrica.sim.federation import Federation, FederationError, Site
from fabbrica.sim.trace import (
    BAD_DURATION,
    BAD_GPUS,
    BAD_TIMESTAMP,
    MISSING,
    NEGATIVE_DURATION,
    NON_POSITIVE_GPUS,
    Trace,
    TraceError,
    TraceJob,
    load,
    shifted_copies,
)

HEADER = "timestamp,duration,num_gpus,cluster"
H = 3600.0
DAY = 86400.0
WEEK = 7 * DAY


def write(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def jobs_of(*specs: tuple[float, float, int, str]) -> tuple[TraceJob, ...]:
    """TraceJobs from (submit, duration, gpus, cluster), sorted by submission."""
    return tuple(sorted((TraceJob(*s) for s in specs), key=lambda j: j.submit))


# --- trace: the header ------------------------------------------------------------------


@pytest.mark.parametrize("column", ["timestamp", "duration", "num_gpus", "cluster"])
def test_a_missing_column_is_named(tmp_path: Path, column: str) -> None:
    header = ",".join(c for c in HEADER.split(",") if c != column)
    path = write(tmp_path, "1,2,3", header=header)
    with pytest.raises(TraceError, match=rf"missing column\(s\) {column}\b"):
        load(path)


def test_header_names_are_trimmed_and_extra_columns_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "100, 60, 2, 11, a",
        header="timestamp, duration, num_gpus, gpu_time, cluster",
    )
    trace = load(path)
    assert trace.jobs == (TraceJob(0.0, 60.0, 2, "a"),)
    assert trace.start == 100.0


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(TraceError, match="missing column"):
        load(path)


def test_a_header_alone_has_no_usable_job(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no usable job"):
        load(write(tmp_path))


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\n100,60,1,a\n".encode())
    assert load(path).jobs == (TraceJob(0.0, 60.0, 1, "a"),)


# --- trace: bad rows --------------------------------------------------------------------

GOOD = "1000,60,1,a"


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        (",60,1,a", MISSING),
        ("1000,,1,a", MISSING),
        ("1000,60,,a", MISSING),
        ("1000,60,1,", MISSING),
        ("1000,60,1", MISSING),  # a short row
        ("1000,  ,1,a", MISSING),  # blank after trimming
        ("yesterday,60,1,a", BAD_TIMESTAMP),
        ("2017-13-45 25:00:00,60,1,a", BAD_TIMESTAMP),
        ("1000,sixty,1,a", BAD_DURATION),
        ("1000,nan,1,a", BAD_DURATION),
        ("1000,inf,1,a", BAD_DURATION),
        ("1000,-inf,1,a", BAD_DURATION),
        ("1000,1e400,1,a", BAD_DURATION),  # overflows to inf
        ("1000,-5,1,a", NEGATIVE_DURATION),
        ("1000,60,one,a", BAD_GPUS),
        ("1000,60,nan,a", BAD_GPUS),
        ("1000,60,inf,a", BAD_GPUS),
        ("1000,60,1.5,a", BAD_GPUS),
        ("1000,60,0,a", NON_POSITIVE_GPUS),
        ("1000,60,-2,a", NON_POSITIVE_GPUS),
    ],
)
def test_each_bad_row_is_skipped_and_counted_by_kind(tmp_path: Path, row: str, kind: str) -> None:
    trace = load(write(tmp_path, GOOD, row, row, GOOD))
    assert trace.skipped == {kind: 2}
    assert trace.rows == 4
    assert [j.gpus for j in trace.jobs] == [1, 1]


def test_skips_of_several_kinds_are_counted_together(tmp_path: Path) -> None:
    trace = load(
        write(
            tmp_path,
            GOOD,
            "1000,60,0,a",
            "1000,-1,1,a",
            "x,60,1,a",
            "1000,60,1.5,a",
            "1000,60,-3,a",
            ",60,1,a",
            "2000,30,2,b",
        )
    )
    assert trace.skipped == {
        BAD_GPUS: 1,
        BAD_TIMESTAMP: 1,
        MISSING: 1,
        NEGATIVE_DURATION: 1,
        NON_POSITIVE_GPUS: 2,
    }
    assert trace.rows == 8
    assert len(trace.jobs) == 2


def test_whole_numbers_written_as_floats_are_gpus(tmp_path: Path) -> None:
    trace = load(write(tmp_path, "1000,60,2.0,a", "1000,60,1e1,a"))
    assert sorted(j.gpus for j in trace.jobs) == [2, 10]
    assert trace.skipped == {}


def test_zero_duration_is_a_job(tmp_path: Path) -> None:
    assert load(write(tmp_path, "1000,0,1,a")).jobs == (TraceJob(0.0, 0.0, 1, "a"),)


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf", "1e400"])
def test_a_non_finite_timestamp_is_a_bad_timestamp(tmp_path: Path, stamp: str) -> None:
    trace = load(write(tmp_path, GOOD, f"{stamp},60,1,a"))
    assert trace.skipped == {BAD_TIMESTAMP: 1}
    assert all(math.isfinite(j.submit) for j in trace.jobs)


def test_a_file_of_only_bad_rows_is_refused_with_the_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "1000,60,0,a", "1000,60,0,a", "x,60,1,a")
    with pytest.raises(TraceError, match="no usable job") as caught:
        load(path)
    assert "1 bad_timestamp" in str(caught.value)
    assert "2 non_positive_gpus" in str(caught.value)


def test_blank_lines_are_ignored_and_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text(f"{HEADER}\n\n1000,60,1,a\n\n   \n\n2000,60,1,a\n\n", encoding="utf-8")
    trace = load(path)
    assert len(trace.jobs) == 2
    assert trace.rows == 2
    assert trace.skipped == {}


def test_unsorted_rows_are_sorted_and_counted(tmp_path: Path) -> None:
    trace = load(
        write(
            tmp_path,
            "1300,1,1,c",
            "1100,2,1,a",  # before the row above
            "1200,3,1,b",
            "1000,4,1,d",  # before the row above
            "1000,5,1,e",  # equal: in order
        )
    )
    assert trace.out_of_order == 2
    assert trace.start == 1000.0
    assert [j.submit for j in trace.jobs] == [0, 0, 100, 200, 300]
    assert [j.cluster for j in trace.jobs][2:] == ["a", "b", "c"]
    assert trace.span == 300
    assert trace.clusters() == ["a", "b", "c", "d", "e"]


def test_numeric_epoch_timestamps(tmp_path: Path) -> None:
    trace = load(write(tmp_path, "1507532515.5,60,1,a", "1507536115.5,60,1,a"))
    assert trace.start == 1507532515.5
    assert [j.submit for j in trace.jobs] == [0.0, 3600.0]


def test_iso_timestamps_naive_are_utc(tmp_path: Path) -> None:
    trace = load(
        write(
            tmp_path,
            "2017-10-09 07:01:55,60,1,a",
            "2017-10-09T08:01:55Z,60,1,a",  # an hour later, explicitly UTC
            "2017-10-09T11:01:55+02:00,60,1,a",  # 09:01:55 UTC
            "1507532515,60,1,a",  # the first one as an epoch number
        )
    )
    assert trace.start == datetime(2017, 10, 9, 7, 1, 55, tzinfo=UTC).timestamp()
    assert [j.submit for j in trace.jobs] == [0.0, 0.0, 3600.0, 7200.0]


def test_a_non_utf8_file_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER}\n1000,60,1,a\n".encode() + b"1000,60,1,caf\xe9\n")
    with pytest.raises(TraceError, match="utf-8"):
        load(path)


def test_a_non_utf8_byte_deep_in_a_file_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    rows = "".join(f"{1000 + i},60,1,a\n" for i in range(2000))
    path.write_bytes(f"{HEADER}\n{rows}".encode() + b"5000,60,1,caf\xe9\n")
    with pytest.raises(TraceError, match="utf-8"):
        load(path)


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace"):
        load(tmp_path / "nope.csv")


def test_a_directory_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace"):
        load(tmp_path)


# --- shifted copies ---------------------------------------------------------------------


def _trace(jobs: tuple[TraceJob, ...]) -> Trace:
    return Trace(jobs=jobs, start=0.0, rows=len(jobs))


def test_one_copy_is_the_trace() -> None:
    trace = _trace(jobs_of((0, 10, 1, "a"), (5, 10, 2, "b")))
    assert shifted_copies(trace, 1, WEEK) == trace.jobs
    assert shifted_copies(trace, 0, WEEK) == trace.jobs


def test_copies_are_shifted_evenly_over_the_spread_and_sorted() -> None:
    trace = _trace(jobs_of((0, 10, 1, "a"), (100, 20, 2, "b"), (500, 30, 4, "a")))
    merged = shifted_copies(trace, 3, 300.0)
    assert len(merged) == 9
    assert [j.submit for j in merged] == sorted(j.submit for j in merged)
    expected = sorted(
        (j.submit + k * 100.0, j.duration, j.gpus, j.cluster) for k in range(3) for j in trace.jobs
    )
    assert sorted((j.submit, j.duration, j.gpus, j.cluster) for j in merged) == expected
    assert trace.jobs == jobs_of((0, 10, 1, "a"), (100, 20, 2, "b"), (500, 30, 4, "a"))


# --- federation sizing ------------------------------------------------------------------


def brute_busiest_week(jobs: tuple[TraceJob, ...]) -> float:
    """The most GPU-hours arriving in any 7-day window [t, t + 7 d)."""
    return max(
        sum(j.gpus * j.duration / H for j in jobs if first.submit <= j.submit < first.submit + WEEK)
        for first in jobs
    )


def three_week_trace() -> tuple[TraceJob, ...]:
    """Three clusters over three weeks; week two is the busiest (about 240 GPUs at load 1).
    Demand a:b:c = 6:3:1."""
    specs = []
    for week, factor in enumerate((1, 3, 2)):
        for i in range(40 * factor):
            at = week * WEEK + i * (WEEK / (40 * factor))
            specs.append((at, 200 * H, 1, "a"))
            if i % 2 == 0:
                specs.append((at + 1, 200 * H, 1, "b"))
            if i % 6 == 0:
                specs.append((at + 2, 200 * H, 1, "c"))
    return jobs_of(*specs)


def test_busiest_week_matches_a_brute_force_search() -> None:
    jobs = three_week_trace()
    start, gpu_hours = fed.busiest_week(jobs)
    assert gpu_hours == pytest.approx(brute_busiest_week(jobs))
    window = [j for j in jobs if start <= j.submit < start + WEEK]
    assert sum(j.gpus * j.duration / H for j in window) == pytest.approx(gpu_hours)


@pytest.mark.parametrize("load", [0.5, 0.9, 1.0, 1.3])
def test_sized_for_load_meets_the_load_within_one_percent(load: float) -> None:
    jobs = three_week_trace()
    federation = fed.sized_for_load(jobs, load)
    offered = brute_busiest_week(jobs) / (federation.gpus * WEEK / H)
    assert offered == pytest.approx(load, rel=0.01)
    assert fed.offered_load(jobs, federation.gpus) == pytest.approx(offered)


def test_sized_for_load_shares_follow_demand() -> None:
    jobs = three_week_trace()
    federation = fed.sized_for_load(jobs, 0.5)
    gpus = {s.id: s.gpus for s in federation.sites}
    demand = fed.demand(jobs)
    total = sum(demand.values())
    for cluster, share in gpus.items():
        assert share == pytest.approx(federation.gpus * demand[cluster] / total, abs=1.0)
    # one factory per cluster, named after it, largest first
    assert [(s.id, s.clusters, s.country) for s in federation.sites] == [
        ("a", ("a",), "a"),
        ("b", ("b",), "b"),
        ("c", ("c",), "c"),
    ]
    assert federation.home() == {"a": "a", "b": "b", "c": "c"}


def test_no_share_is_below_the_largest_job_of_its_cluster() -> None:
    # c asks for a tenth of the work (about 24 GPUs' worth), but has one 64-GPU job
    jobs = (*three_week_trace(), TraceJob(3 * WEEK, 60, 64, "c"))
    federation = fed.sized_for_load(jobs, 1.0)
    gpus = {s.id: s.gpus for s in federation.sites}
    assert gpus["c"] == 64
    largest = fed.largest_job(jobs)
    assert all(gpus[c] >= largest[c] for c in gpus)
    # the others still split the rest in proportion to their demand (2:1)
    assert gpus["a"] == pytest.approx(2 * gpus["b"], abs=2)


def test_a_tiny_load_means_a_large_federation_and_a_bad_load_is_refused() -> None:
    jobs = three_week_trace()
    assert fed.sized_for_load(jobs, 0.1).gpus > 9 * fed.sized_for_load(jobs, 1.0).gpus
    for bad in (0.0, -1.0):
        with pytest.raises(FederationError, match="load must be above 0"):
            fed.sized_for_load(jobs, bad)


@pytest.mark.parametrize(
    ("total", "weights", "floors", "expected"),
    [
        (12, {"a": 1, "b": 1, "c": 1}, {}, {"a": 4, "b": 4, "c": 4}),
        (10, {"a": 3, "b": 1}, {}, {"a": 8, "b": 2}),  # 7.5 and 2.5, rounded
        (100, {"a": 99, "b": 1}, {"b": 8}, {"a": 92, "b": 8}),  # b held at its floor
        # c is held at 4, then b falls below its 6 and is held too; a takes the rest
        (20, {"a": 10, "b": 5, "c": 1}, {"b": 6, "c": 4}, {"a": 10, "b": 6, "c": 4}),
        (5, {"a": 1, "b": 1}, {"a": 4, "b": 4}, {"a": 4, "b": 4}),  # floors beat the total
        (10, {"a": 1, "b": 0}, {}, {"a": 9, "b": 1}),  # no demand: one GPU
        (0.4, {"a": 1}, {}, {"a": 1}),  # never below one GPU
    ],
)
def test_proportional_shares_by_hand(
    total: float, weights: dict[str, float], floors: dict[str, int], expected: dict[str, int]
) -> None:
    assert fed.proportional_shares(total, weights, floors) == expected


def test_scaled_keeps_the_largest_job_floor() -> None:
    federation = Federation((Site("x", 100, ("a",)), Site("y", 10, ("b",))))
    smaller = federation.scaled(0.25, {"y": 8})
    assert [(s.id, s.gpus) for s in smaller.sites] == [("x", 25), ("y", 8)]
    assert federation.scaled(2, {}).gpus == 220


# --- federation files -------------------------------------------------------------------

# demand: b 100 GPU-h, a 20, c 10, d 5; the largest job of each cluster is 2 GPUs
FILE_JOBS = jobs_of(
    (0, 10 * H, 2, "a"),
    (1, 50 * H, 2, "b"),
    (2, 5 * H, 2, "c"),
    (3, 2.5 * H, 2, "d"),
)


def fed_json(tmp_path: Path, data: object, name: str = "fed.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def sites(federation: Federation) -> list[tuple[str, int, tuple[str, ...], str]]:
    return [(s.id, s.gpus, s.clusters, s.country) for s in federation.sites]


def test_a_json_file_with_every_cluster_given(tmp_path: Path) -> None:
    path = fed_json(
        tmp_path,
        {
            "factories": [
                {"id": "it4lia", "gpus": 64, "country": "IT", "clusters": ["b", "a"]},
                {"id": "jupiter", "gpus": 32, "country": "DE", "clusters": ["c", "d"]},
            ]
        },
    )
    federation = fed.load_file(path, FILE_JOBS)
    assert sites(federation) == [
        ("it4lia", 64, ("a", "b"), "IT"),
        ("jupiter", 32, ("c", "d"), "DE"),
    ]
    assert federation.gpus == 96


def test_clusters_left_out_go_to_the_least_loaded_factory_per_gpu(tmp_path: Path) -> None:
    # x starts with a (20 GPU-h on 10 GPUs: 2/GPU); y with nothing.
    # b (100) -> y (0 < 2); c (10) -> x (2 < 10); d (5) -> x (3 < 10)
    path = fed_json(
        tmp_path,
        {"factories": [{"id": "x", "gpus": 10, "clusters": ["a"]}, {"id": "y", "gpus": 10}]},
    )
    federation = fed.load_file(path, FILE_JOBS)
    assert sites(federation) == [("x", 10, ("a", "c", "d"), "x"), ("y", 10, ("b",), "y")]
    assert federation.home() == {"a": "x", "b": "y", "c": "x", "d": "x"}


def test_a_csv_file_is_the_same_federation(tmp_path: Path) -> None:
    path = tmp_path / "fed.csv"
    path.write_text("id,gpus,country,clusters\nit4lia,64,IT,b;a\njupiter,32,,c\n", encoding="utf-8")
    federation = fed.load_file(path, FILE_JOBS)
    # d is left out: it goes to jupiter (10 GPU-h on 32 GPUs < 120 on 64)
    assert sites(federation) == [
        ("it4lia", 64, ("a", "b"), "IT"),
        ("jupiter", 32, ("c", "d"), "jupiter"),  # no country: the id
    ]


def test_a_csv_file_with_only_id_and_gpus(tmp_path: Path) -> None:
    path = tmp_path / "FED.CSV"
    path.write_text("id,gpus\nx,10\ny,10\n", encoding="utf-8")
    federation = fed.load_file(path, FILE_JOBS)
    assert federation.home() == {"b": "x", "a": "y", "c": "y", "d": "y"}


def test_a_csv_header_with_spaces_keeps_its_clusters(tmp_path: Path) -> None:
    path = tmp_path / "fed.csv"
    path.write_text("id, gpus, country, clusters\nx, 10, IT, c\ny, 10, DE, b\n", "utf-8")
    federation = fed.load_file(path, FILE_JOBS)
    # left to the automatic assignment, b (the most demand) would go to x, c to y
    assert federation.home()["b"] == "y"
    assert federation.home()["c"] == "x"


def test_a_cluster_given_twice_is_refused(tmp_path: Path) -> None:
    path = fed_json(
        tmp_path,
        {
            "factories": [
                {"id": "x", "gpus": 10, "clusters": ["a", "b"]},
                {"id": "y", "gpus": 10, "clusters": ["b"]},
            ]
        },
    )
    with pytest.raises(FederationError, match="cluster b is given to both x and y"):
        fed.load_file(path, FILE_JOBS)


def test_repeated_factory_ids_are_refused(tmp_path: Path) -> None:
    path = fed_json(tmp_path, {"factories": [{"id": "x", "gpus": 1}, {"id": "x", "gpus": 2}]})
    with pytest.raises(FederationError, match="factory ids repeat"):
        fed.load_file(path, FILE_JOBS)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"factories": [{"id": "x", "gpus": 0}]}, "factories.0.gpus"),
        ({"factories": [{"id": "x", "gpus": -4}]}, "factories.0.gpus"),
        ({"factories": [{"id": "x", "gpus": 1.5}]}, "factories.0.gpus"),
        ({"factories": [{"id": "x", "gpus": "many"}]}, "factories.0.gpus"),
        ({"factories": [{"id": "x"}]}, "factories.0.gpus"),
        ({"factories": [{"gpus": 4}]}, "factories.0.id"),
        ({"factories": [{"id": "", "gpus": 4}]}, "factories.0.id"),
        ({"factories": [{"id": "x", "gpus": 4, "clusters": "a"}]}, "factories.0.clusters"),
        ({"factories": [{"id": "x", "gpus": 4, "region": "eu"}]}, "factories.0.region"),
        ({"factories": [], "name": "eu"}, "factories"),
        ({"factories": [{"id": "x", "gpus": 4}], "name": "eu"}, "name"),
        ({"sites": []}, "factories"),
    ],
)
def test_bad_fields_and_unknown_keys_are_named(tmp_path: Path, data: object, field: str) -> None:
    with pytest.raises(FederationError, match=re.escape(f"field '{field}'")):
        fed.load_file(fed_json(tmp_path, data), FILE_JOBS)


def test_a_bad_csv_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "fed.csv"
    path.write_text("id,gpus\nx,lots\n", encoding="utf-8")
    with pytest.raises(FederationError, match=re.escape("field 'factories.0.gpus'")):
        fed.load_file(path, FILE_JOBS)
    path.write_text("id,gpus,zone\nx,4,eu\n", encoding="utf-8")
    with pytest.raises(FederationError, match=re.escape("field 'factories.0.zone'")):
        fed.load_file(path, FILE_JOBS)


def test_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fed.json"
    path.write_text("factories:\n  - id: x\n", encoding="utf-8")
    with pytest.raises(FederationError, match="not JSON"):
        fed.load_file(path, FILE_JOBS)


def test_an_unreadable_federation_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="cannot read federation file"):
        fed.load_file(tmp_path / "nope.json", FILE_JOBS)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"factories": [{"id": "caf\xe9", "gpus": 4}]}')
    with pytest.raises(FederationError, match="cannot read federation file"):
        fed.load_file(latin, FILE_JOBS)


def test_clusters_left_out_go_where_their_jobs_fit(tmp_path: Path) -> None:
    # x: 64 GPUs; y: 4 GPUs, with the listed cluster (1 GPU-hour). Left out, by demand:
    # heavy (640 GPU-hours of 1-GPU jobs), wide (an 8-GPU job), small (1 GPU-hour).
    jobs = jobs_of(
        (0, H, 1, "listed"), (1, 640 * H, 1, "heavy"), (2, H, 8, "wide"), (3, H, 1, "small")
    )
    factories = [{"id": "x", "gpus": 64}, {"id": "y", "gpus": 4, "clusters": ["listed"]}]
    federation = fed.load_file(fed_json(tmp_path, {"factories": factories}), jobs)
    assert federation.home() == {
        "listed": "y",  # as the file says
        "heavy": "x",  # the least loaded per GPU (y has 1/4 GPU-hour per GPU, x none)
        "wide": "x",  # y is less loaded, but its 4 GPUs cannot run an 8-GPU job
        "small": "y",  # back to the least loaded: x now has 10 GPU-hours per GPU
    }
    fed.check_fits(federation, jobs, at_home=True)


def test_a_cluster_too_wide_for_every_factory_goes_to_the_largest(tmp_path: Path) -> None:
    jobs = jobs_of((0, 640 * H, 1, "busy"), (1, H, 128, "huge"))
    factories = [{"id": "x", "gpus": 64, "clusters": ["busy"]}, {"id": "y", "gpus": 4}]
    federation = fed.load_file(fed_json(tmp_path, {"factories": factories}), jobs)
    assert federation.home()["huge"] == "x"  # the largest, though y is idle
    with pytest.raises(FederationError, match="cluster huge has a 128-GPU job but its home"):
        fed.check_fits(federation, jobs, at_home=True)


# --- check_fits -------------------------------------------------------------------------


def test_check_fits_at_home_names_the_cluster_and_its_factory() -> None:
    federation = Federation((Site("x", 16, ("a",)), Site("y", 4, ("b",))))
    jobs = jobs_of((0, 60, 16, "a"), (1, 60, 8, "b"))
    with pytest.raises(
        FederationError, match="cluster b has a 8-GPU job but its home factory y has 4 GPUs"
    ):
        fed.check_fits(federation, jobs, at_home=True)
    fed.check_fits(federation, jobs, at_home=False)  # b's job fits on x


def test_check_fits_anywhere_needs_one_factory_large_enough() -> None:
    federation = Federation((Site("x", 16, ("a",)), Site("y", 16, ("b",))))
    jobs = jobs_of((0, 60, 16, "a"), (1, 60, 24, "b"))
    with pytest.raises(
        FederationError, match="cluster b has a 24-GPU job but the largest factory has 16"
    ):
        fed.check_fits(federation, jobs, at_home=False)
    fed.check_fits(federation, jobs_of((0, 60, 16, "a"), (1, 60, 16, "b")), at_home=True)


# --- the engine: conservation on random traces -----------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[tuple[TraceJob, ...], Federation]:
    clusters = [f"c{i}" for i in range(draw(st.integers(1, 4)))]
    submit = st.one_of(
        st.integers(0, 30).map(lambda k: k * 600.0),  # many jobs at the same instant
        st.floats(0, 30 * DAY, allow_nan=False, allow_infinity=False),
    )
    specs = draw(
        st.lists(
            st.tuples(
                submit,
                st.floats(1, 20_000, allow_nan=False, allow_infinity=False),
                st.integers(1, 16),
                st.sampled_from(clusters),
            ),
            min_size=1,
            max_size=60,
        )
    )
    jobs = jobs_of(*specs)
    largest = fed.largest_job(jobs)
    site_count = draw(st.integers(1, len(clusters) + 1))  # possibly a factory with no home
    owner = {c: draw(st.integers(0, site_count - 1)) for c in clusters}
    factories = []
    for index in range(site_count):
        homed = tuple(c for c in clusters if owner[c] == index)
        floor = max([largest.get(c, 1) for c in homed], default=1)
        gpus = draw(st.integers(floor, floor + 16))
        country = draw(st.sampled_from(["IT", "DE", ""]))
        factories.append(Site(f"f{index}", gpus, homed, country))
    return jobs, Federation(tuple(factories))


def check_conservation(jobs: tuple[TraceJob, ...], federation: Federation, run: engine.Run) -> None:
    assert len(run.starts) == len(run.factories) == len(jobs)
    if run.policy == "pooled":
        size = {"pool": federation.gpus}
    else:
        size = {s.id: s.gpus for s in federation.sites}
    home = federation.home()
    events = []
    for start, factory, job in zip(run.starts, run.factories, jobs, strict=True):
        assert math.isfinite(start)
        assert start >= job.submit
        assert factory in size
        if run.policy.startswith("site-"):
            assert factory == home[job.cluster]
        events.append((start, 1, job.gpus, factory))
        events.append((start + job.duration, 0, -job.gpus, factory))
    events.sort()  # at one instant, what ends is released before what starts
    held: dict[str, int] = defaultdict(int)
    for when, _, gpus, factory in events:
        held[factory] += gpus
        assert held[factory] <= size[factory], f"{factory} over its size at {when}"
        assert held[factory] >= 0
    assert all(v == 0 for v in held.values())


@pytest.mark.parametrize("policy", engine.POLICIES)
@settings(max_examples=120, deadline=None)
@given(scenario=scenarios(), limit_factor=st.sampled_from([1.0, 1.5, 3.0]))
def test_runs_conserve_gpus_and_never_start_early(
    policy: str, scenario: tuple[tuple[TraceJob, ...], Federation], limit_factor: float
) -> None:
    jobs, federation = scenario
    run = engine.simulate(jobs, federation, policy, limit_factor=limit_factor)
    assert run.policy == policy
    assert run.capacity == federation.gpus
    assert run.events == 2 * len(jobs)
    check_conservation(jobs, federation, run)
