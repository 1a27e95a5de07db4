"""The LLM templates' rank setup (`_shared/llm/ranks.py`): the torchrun variables a job's
process is given, to its rank, world size and master; bad ones refused naming the variable.
The module is the shipped file itself, loaded as the job loads it (no PyTorch needed)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from fabbrica.services.templates import SHARED, SHIPPED


def _load() -> ModuleType:
    path = SHIPPED / SHARED / "llm" / "ranks.py"
    spec = importlib.util.spec_from_file_location("fabbrica_template_ranks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ranks = _load()
NODE_1 = {"MASTER_ADDR": "lumiaifn1", "MASTER_PORT": "15042", "WORLD_SIZE": "2",
          "RANK": "1", "LOCAL_RANK": "0"}  # fmt: skip


def test_no_variables_is_one_process_that_does_everything() -> None:
    for env, nodes in (({}, None), ({}, 1), ({"WORLD_SIZE": "1"}, 1), ({"RANK": "0"}, None)):
        got = ranks.ranks_from_env(env, nodes)
        assert (got.rank, got.world_size, got.local_rank) == (0, 1, 0), env
        assert got.main and not got.distributed
        assert got.shard(4) == slice(0, 4)  # a single process takes the whole draw


def test_the_executors_variables_make_this_nodes_rank() -> None:
    got = ranks.ranks_from_env(NODE_1, 2)
    assert (got.rank, got.world_size, got.local_rank) == (1, 2, 0)
    assert (got.master_addr, got.master_port) == ("lumiaifn1", 15042)
    assert got.distributed and not got.main
    assert got.shard(4) == slice(4, 8)
    main = ranks.ranks_from_env({**NODE_1, "RANK": "0"}, 2)
    assert main.main and main.shard(4) == slice(0, 4)
    # torchrun's several processes per node, when the script is run by hand (no NODES)
    many = ranks.ranks_from_env({**NODE_1, "WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"})
    assert (many.rank, many.world_size, many.local_rank) == (5, 8, 1)


def test_every_rank_takes_a_different_part_of_the_same_draw() -> None:
    parts = [ranks.ranks_from_env({**NODE_1, "WORLD_SIZE": "3", "RANK": str(r)}, 3).shard(5)
             for r in range(3)]  # fmt: skip
    drawn = list(range(15))
    assert sorted(i for part in parts for i in drawn[part]) == drawn


@pytest.mark.parametrize(
    ("change", "nodes", "variable"),
    [
        ({"WORLD_SIZE": None}, 2, "WORLD_SIZE"),  # two nodes asked, no process group given
        ({"WORLD_SIZE": "3"}, 2, "WORLD_SIZE"),
        ({"WORLD_SIZE": "0"}, None, "WORLD_SIZE"),
        ({"WORLD_SIZE": "two"}, 2, "WORLD_SIZE"),
        ({"RANK": None}, 2, "RANK"),
        ({"RANK": "2"}, 2, "RANK"),
        ({"RANK": "-1"}, 2, "RANK"),
        ({"LOCAL_RANK": None}, 2, "LOCAL_RANK"),
        ({"LOCAL_RANK": "2"}, 2, "LOCAL_RANK"),
        ({"MASTER_ADDR": None}, 2, "MASTER_ADDR"),
        ({"MASTER_ADDR": "a host"}, 2, "MASTER_ADDR"),
        ({"MASTER_PORT": None}, 2, "MASTER_PORT"),
        ({"MASTER_PORT": "0"}, 2, "MASTER_PORT"),
        ({"MASTER_PORT": "70000"}, 2, "MASTER_PORT"),
        ({}, 0, "NODES"),
    ],
)
def test_bad_variables_are_refused_naming_the_variable(
    change: dict[str, Any], nodes: int | None, variable: str
) -> None:
    env = {k: v for k, v in {**NODE_1, **change}.items() if v is not None}
    with pytest.raises(ranks.RanksError) as caught:
        ranks.ranks_from_env(env, nodes)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_gloo_on_cpus_nccl_on_gpus() -> None:
    assert ranks.backend(False) == "gloo"
    assert ranks.backend(True) == "nccl"
