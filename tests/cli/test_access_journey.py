"""The access journey of the CLI, as the acceptance check drives it, on a real server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest

from tests.cli.server import Server, fabbrica

pytestmark = pytest.mark.slow


class Cli:
    def __init__(self, server: Server) -> None:
        self.server = server

    def run(self, token: str, *args: str, code: int = 0) -> Any:
        result = fabbrica(*args, env=self.server.client_env(token))
        assert result.returncode == code, (args, result.stdout, result.stderr)
        if code == 0 and "--json" in args:
            return json.loads(result.stdout)
        return result

    def user(self, email: str, role: str = "user") -> str:
        made = self.run(
            "t", "user", "add", email, "--name", email.split("@")[0], "--role", role, "--json"
        )
        assert made["role"] == role
        return str(made["token"])


def test_access_journey(server: Server) -> None:
    server.start()
    cli = Cli(server)
    giulia = cli.user("giulia@startup.it")
    org = cli.run(
        giulia,
        "org",
        "add",
        "Startup srl",
        "--country",
        "IT",
        "--type",
        "startup",
        "--sector",
        "manufacturing",
        "--json",
    )
    project = cli.run(giulia, "project", "add", "Italian LLM", "--org", str(org["id"]), "--json")
    assert project["id"].startswith("FAB-AIF-") and "PG" in project["id"]
    open_calls = cli.run(giulia, "calls", "--json")
    assert {"id", "mode", "factory"} <= set(open_calls[0])
    playground = next(
        c for c in open_calls if c["factory"] == "it4lia" and c["mode"] == "playground"
    )

    # Playground on IT4LIA: accepted at once, with an allocation of what was asked
    accepted = cli.run(
        giulia,
        "apply",
        "--project",
        project["id"],
        "--call",
        playground["id"],
        "--gpu-hours",
        "2000",
        "--months",
        "2",
        "--declare-civilian-ai-act",
        "--json",
    )
    assert accepted["state"] == "accepted"
    submitted = dt.datetime.fromisoformat(accepted["submitted_at"])
    decided = dt.datetime.fromisoformat(accepted["decided_at"])
    assert (decided - submitted).total_seconds() < 5
    assert accepted["allocation"]["gpu_hours"] == 2000

    # No declaration and no terminal: refused with exit code 2, nothing stored
    refused = cli.run(
        giulia,
        "apply",
        "--project",
        project["id"],
        "--call",
        playground["id"],
        "--gpu-hours",
        "100",
        "--months",
        "1",
        code=2,
    )
    assert "civilian" in refused.stderr
    assert len(cli.run(giulia, "proposals", "--json")) == 1

    # A company from the US: exit code 2, the rule named, nothing submitted
    acme = cli.user("boss@acme.com")
    acme_org = cli.run(acme, "org", "add", "Acme", "--country", "US", "--type", "startup", "--json")
    acme_project = cli.run(acme, "project", "add", "X", "--org", str(acme_org["id"]), "--json")
    us = cli.run(
        acme,
        "apply",
        "--project",
        acme_project["id"],
        "--call",
        playground["id"],
        "--gpu-hours",
        "100",
        "--months",
        "1",
        "--declare-civilian-ai-act",
        code=2,
    )
    assert "country" in us.stderr and "US" in us.stderr and "eligible" in us.stderr
    assert cli.run(acme, "proposals", "--json") == []
    assert cli.run(acme, "allocations", "--json") == []
    # stored names print as written, never as Rich markup (issue 10, finding 7)
    marked = cli.run(acme, "org", "add", "[bold red]x[/]", "--country", "US", "--type", "sme")
    assert "[bold red]x[/]" in marked.stdout
    assert "[bold red]x[/]" in cli.run(acme, "org", "list").stdout

    # Large Scale: in review until two reviews are in; a conflicted reviewer is refused
    reviewers = [cli.user(f"r{i}@review.eu", "reviewer") for i in range(3)]
    operator = cli.user("op@cineca.it", "operator")
    # an operator acts for the factories it operates, named by an admin (docs/roles.md)
    me = httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {operator}"})
    named = httpx.put(
        f"{server.url}/api/v1/users/{me.json()['id']}/factories",
        headers={"Authorization": "Bearer t"},
        json={"factories": ["it4lia"]},
    )
    assert named.json()["factories"] == ["it4lia"], named.text
    large = cli.run(
        giulia,
        "apply",
        "--project",
        project["id"],
        "--call",
        "it4lia-large-scale",
        "--gpu-hours",
        "80000",
        "--months",
        "6",
        "--declare-civilian-ai-act",
        "--json",
    )
    assert large["state"] == "in_review" and large["allocation"] is None
    pid = str(large["id"])
    cli.run(giulia, "org", "add-member", str(org["id"]), "r2@review.eu")
    # added is not joined: nobody is made conflicted without consent
    assert cli.run(reviewers[2], "org", "list", "--json") == []
    cli.run(reviewers[2], "org", "join", str(org["id"]))
    conflicted = cli.run(reviewers[2], "review", pid, "--score", "5", code=1)
    assert "conflict" in conflicted.stderr
    cli.run(reviewers[0], "review", pid, "--score", "4", "--comment", "solid plan", "--json")
    early = cli.run(operator, "decide", pid, "accept", code=2)
    assert "1 of the 2 reviews" in early.stderr
    assert cli.run(giulia, "proposal", pid, "--json")["state"] == "in_review"
    cli.run(reviewers[1], "review", pid, "--score", "3", "--json")
    decided_large = cli.run(
        operator,
        "decide",
        pid,
        "accept",
        "--gpu-hours",
        "60000",
        "--reason",
        "partial grant",
        "--json",
    )
    assert decided_large["state"] == "accepted"
    assert decided_large["allocation"]["gpu_hours"] == 60000

    # The applicant sees the reviews, never who wrote them
    seen = cli.run(giulia, "proposal", pid, "--json")
    assert sorted(r["score"] for r in seen["reviews"]) == [3, 4]
    assert all("reviewer_id" not in r for r in seen["reviews"])
    text = json.dumps(seen)
    assert "r0@review.eu" not in text and "r1@review.eu" not in text

    allocations = cli.run(giulia, "allocations", "--project", project["id"], "--json")
    assert [a["gpu_hours"] for a in allocations] == [2000, 60000]
    keys = {
        "id",
        "project",
        "factory",
        "gpu_hours",
        "used_gpu_hours",
        "reserved_gpu_hours",
        "valid_from",
        "valid_until",
        "state",
    }
    assert keys <= set(allocations[0])
    table = cli.run(giulia, "allocations").stdout  # into a pipe: ids whole, one row a line
    assert sum(project["id"] in line for line in table.splitlines()) == 2

    report = cli.run("t", "report", "access", "--json")
    assert report["by_mode"] == {"large_scale": 1, "playground": 1}
    assert report["by_country"] == {"IT": 2}
    assert report["decision_time"]["playground"]["decided"] == 1
    # plain users do not read federation reports
    cli.run(giulia, "report", "access", code=1)
