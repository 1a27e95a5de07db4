"""schemathesis against a real `fabbrica up`, as a plain user, a site agent and a federation
admin, on SQLite and PostgreSQL: every operation, every default check (server errors, status
codes, content types, response schemas and headers, positive and negative data, unsupported
methods and `Allow`, authentication, stateful links), bounded in examples per operation and
in test phases per role."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cli.fuzz import PHASES, FuzzRun, schemathesis
from tests.cli.server import Server

pytestmark = pytest.mark.slow

ADMIN = "t"  # FABBRICA_BOOTSTRAP_TOKEN of the `server` fixture

# Examples per operation and phase, by database and role. The admin reaches every
# operation's success paths and gets the most; a plain user and an agent are mostly refused
# (their checks are authentication and authorisation), and the embedded SQLite shares all
# the code but the SQL dialect with PostgreSQL, the production database. Ten everywhere
# took about 3 minutes per database on CI, the largest single cost of the suite.
EXAMPLES = {
    "postgresql": {"admin": 10, "user": 5, "agent": 3},
    "sqlite": {"admin": 5, "user": 3, "agent": 3},
}
# Test phases by role. The coverage phase sends every boundary and invalid value of every
# parameter (about 3,000 requests, whatever the examples, some 50 s a run); the admin gets it,
# since only the admin gets past authorisation into the validation it probes. A plain user
# and an agent get the random (fuzzing) and linked (stateful) phases.
PHASES_BY_ROLE = {"admin": PHASES, "user": "fuzzing,stateful", "agent": "fuzzing,stateful"}


def _plain_user(url: str) -> str:
    answer = httpx.post(
        f"{url}/api/v1/users",
        json={"email": "fuzz@example.eu", "name": "Fuzz", "role": "user"},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]
    assert isinstance(token, str)
    return token


def _agent(url: str) -> str:
    answer = httpx.post(
        f"{url}/api/v1/agents/it4lia/token",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]
    assert isinstance(token, str)
    return token


def _check(run: FuzzRun, operations: int, who: str, server: Server) -> None:
    log = server.output()
    report = run.report() + (f"\nserver log:\n{log[-8000:]}" if "Traceback" in log else "")
    print(
        f"schemathesis as {who}: {run.operations} operations, {run.test_cases} test cases, "
        f"{run.failures} failures, {run.seconds:.0f} s"
    )
    assert run.returncode == 0, report
    assert run.failures == 0, report
    assert run.operations == operations, report
    assert run.test_cases > 0, report


def test_the_api_keeps_its_openapi_contract(server: Server, tmp_path: Path) -> None:
    # No local factory: schema-valid specs are random shell commands; they are refused,
    # never run.
    server.env["FABBRICA_LOCAL_GPUS"] = "0"
    server.start()
    paths = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]
    total = sum(len(operations) for operations in paths.values())
    assert total >= 50
    # made before the admin's run: it may revoke the admin's token and remake the agent's
    user, agent = _plain_user(server.url), _agent(server.url)
    database = "postgresql" if "FABBRICA_DATABASE_URL" in server.env else "sqlite"
    for who, token in (("user", user), ("agent", agent), ("admin", ADMIN)):
        work = tmp_path / who
        work.mkdir()
        examples = EXAMPLES[database][who]
        phases = PHASES_BY_ROLE[who]
        run = schemathesis(server.url, token, work, last=False, examples=examples, phases=phases)
        _check(run, total - 1, who, server)
        if who != "agent":  # its own tokens are an admin's to revoke
            run = schemathesis(server.url, token, work, last=True, examples=examples, phases=phases)
            _check(run, 1, who, server)
    log = server.output()
    assert "Traceback" not in log, log[-4000:]
