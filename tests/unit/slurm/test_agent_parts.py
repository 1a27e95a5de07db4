"""Pure parts of the Slurm side of the agent: node capacity, partition maps, account plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabbrica.backends.slurm.accounts import plan_changes
from fabbrica.backends.slurm.executor import MapError, parse_nodes, read_partition_map
from fabbrica.backends.slurm.status import Association
from fabbrica.catalog.loader import load_catalog
from fabbrica.catalog.model import Partition
from fabbrica.core.agent_api import SiteAccount

IDLE = (
    "NodeName=jaifn1 Arch=x86_64 CoresPerSocket=8 CPUAlloc=0 Gres=gpu:gh200:4 "
    "NodeAddr=127.0.0.1 State=IDLE Partitions=gpu CfgTRES=cpu=8,mem=8G,billing=8,"
    "gres/gpu=4,gres/gpu:gh200=4 AllocTRES= CapWatts=n/a"
)
BUSY = (
    "NodeName=n2 State=MIXED Partitions=gpu,debug CfgTRES=cpu=64,gres/gpu=8 "
    "AllocTRES=cpu=4,gres/gpu=3,gres/gpu:h100=3"
)
DOWN = "NodeName=n3 State=DOWN+DRAIN Partitions=gpu CfgTRES=cpu=64,gres/gpu=8 AllocTRES="


def test_nodes_give_their_gpus_in_use_and_whether_they_count() -> None:
    nodes = parse_nodes("\n".join([IDLE, BUSY, DOWN, "", "garbage line"]))
    assert [(n.name, n.gpus, n.gpus_used, n.usable) for n in nodes] == [
        ("jaifn1", 4, 0, True),
        ("n2", 8, 3, True),
        ("n3", 8, 0, False),
    ]
    assert nodes[1].partitions == frozenset({"gpu", "debug"})


def partitions(factory: str) -> list[Partition]:
    entry = load_catalog().factory(factory)
    assert entry is not None
    return entry.operating_partitions()


def test_a_partition_map_names_slurm_partitions_and_gres_types(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("partitions:\n  booster: {slurm_partition: gpu, gres_type: gh200}\n")
    [mapping] = read_partition_map(path, partitions("jaif")).values()
    assert (mapping.partition, mapping.slurm_partition, mapping.gres_type) == (
        "booster",
        "gpu",
        "gh200",
    )
    default = read_partition_map(None, partitions("jaif"))["booster"]
    assert (default.slurm_partition, default.gres_type) == ("booster", "gh200")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("partitions:\n  nope: {slurm_partition: gpu}\n", "nope not among"),
        ("[1, 2]\n", "needs a `partitions` mapping"),
        ("partitions: {booster: 3}\n", "must be a mapping"),
        ("partitions: {booster: [\n", "--partition-map"),
    ],
)
def test_a_bad_partition_map_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(MapError, match=message):
        read_partition_map(path, partitions("jaif"))


ACCOUNT = "fab-aif-2026pg11-0001"


def want(
    state: str = "active", minutes: int = 6000, users: tuple[str, ...] = ("ada",)
) -> SiteAccount:
    return SiteAccount(ACCOUNT, "FAB-AIF-2026PG11-0001", state, minutes, users)


def assoc(
    user: str | None = None, minutes: int | None = 6000, account: str = ACCOUNT
) -> Association:
    limits = (("gres/gpu", minutes),) if minutes is not None and user is None else ()
    return Association("jaif", account, user, limits)


def test_a_new_allocation_makes_an_account_its_limit_and_its_users() -> None:
    changes = plan_changes([want()], [], "jaif")
    assert [(c.action, c.detail) for c in changes] == [
        ("add_account", "project FAB-AIF-2026PG11-0001, 6,000 GPU-minutes"),
        ("set_limit", "GrpTRESMins gres/gpu none -> 6,000"),
        ("add_user", "ada"),
    ]
    assert changes[1].argv[-1] == "GrpTRESMins=gres/gpu=6000"
    assert all(c.argv[:2] == ("sacctmgr", "--immediate") for c in changes)


def test_in_line_means_no_change() -> None:
    assert plan_changes([want()], [assoc(), assoc("ada")], "jaif") == []


def test_top_up_suspension_members_and_expiry() -> None:
    assert [
        c.detail for c in plan_changes([want(minutes=9000)], [assoc(), assoc("ada")], "jaif")
    ] == ["GrpTRESMins gres/gpu 6,000 -> 9,000"]
    suspended = plan_changes([want("suspended")], [assoc(), assoc("ada")], "jaif")
    assert [c.detail for c in suspended] == ["GrpTRESMins gres/gpu 6,000 -> 0 (suspended)"]
    members = plan_changes([want(users=("bob",))], [assoc(), assoc("ada")], "jaif")
    assert [(c.action, c.detail) for c in members] == [("add_user", "bob"), ("remove_user", "ada")]
    gone = plan_changes([], [assoc(), assoc("ada")], "jaif")
    assert [c.action for c in gone] == ["remove_account"]


def test_the_sites_own_accounts_and_other_clusters_are_left_alone() -> None:
    actual = [
        Association("jaif", "root", None),
        Association("jaif", "testbed", "fabuser1"),
        Association("it4lia", ACCOUNT, None, (("gres/gpu", 1),)),
    ]
    changes = plan_changes([], actual, "jaif")
    assert changes == []
    hostile = SiteAccount("root", "P", "active", 1, ("x",))  # not a Fabbrica account name
    assert plan_changes([hostile], actual, "jaif") == []
    odd_user = plan_changes([want(users=("ada; rm -rf /",))], [assoc()], "jaif")
    assert odd_user == []


def test_only_accounts_this_agent_made_are_removed() -> None:
    other = "fab-aif-2026pg11-0002"  # another deployment's project on the same cluster
    actual = [assoc(), assoc("ada"), assoc(account=other)]
    changes = plan_changes([], actual, "jaif", owned={ACCOUNT})
    assert [(c.action, c.account) for c in changes] == [("remove_account", ACCOUNT)]
    assert plan_changes([], actual, "jaif", owned=set()) == []
