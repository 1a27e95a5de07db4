"""Slurm's accounts and limits kept in line with Fabbrica's allocations.

Desired state (from the API): one account per project with an allocation at the factory,
its members' site usernames as users, and `GrpTRESMins=gres/gpu=<grant in GPU-minutes>`
(0 while the allocation is suspended), so that Slurm enforces the grant too: with
`AccountingStorageEnforce=limits,safe` a job starts only if its GPU-minutes fit. Actual
state: `sacctmgr show associations`. `plan` is a pure difference (shown by `fabbrica
agent check` before anything changes); `apply` runs it. Only accounts named like
Fabbrica's projects (`fab-...`) are touched, and an account is removed only if this agent
made it (it keeps their names in `<work dir>/accounts.json`): another Fabbrica
deployment's accounts on the same cluster are left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fabbrica.backends.slurm import status as slurm
from fabbrica.backends.slurm.runner import SlurmCommandError, SlurmRunner
from fabbrica.core.agent_api import SiteAccount

MANAGED = re.compile(r"^fab-[a-z0-9-]{1,60}$")
SAFE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


class AccountSource(Protocol):
    def accounts(self) -> list[SiteAccount]: ...


@dataclass(frozen=True, slots=True)
class AccountChange:
    account: str
    action: str  # add_account | add_user | remove_user | set_limit | remove_account
    detail: str
    argv: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "action": self.action,
            "detail": self.detail,
            "command": " ".join(self.argv),
        }


def plan_changes(
    desired: Sequence[SiteAccount],
    actual: Iterable[slurm.Association],
    cluster: str,
    owned: Collection[str] | None = None,
) -> list[AccountChange]:
    """What to run so that `actual` (this cluster's associations) matches `desired`;
    accounts no allocation wants are removed only if in `owned` (None: any)."""
    accounts: dict[str, slurm.Association] = {}
    users: dict[str, set[str]] = {}
    for row in actual:
        if row.cluster != cluster or not MANAGED.match(row.account):
            continue
        if row.user is None:
            accounts[row.account] = row
        else:
            users.setdefault(row.account, set()).add(row.user)
    changes: list[AccountChange] = []
    wanted = {a.account: a for a in desired if MANAGED.match(a.account)}
    for name, want in sorted(wanted.items()):
        minutes = 0 if want.state != "active" else max(want.gpu_minutes, 0)
        have = accounts.get(name)
        if have is None:
            changes.append(
                AccountChange(
                    name,
                    "add_account",
                    f"project {want.project}, {minutes:,} GPU-minutes",
                    _mgr("add", "account", name, f"Cluster={cluster}",
                         f"Description=fabbrica project {want.project}", "Organization=fabbrica"),
                )
            )  # fmt: skip
        if have is None or have.gpu_minutes != minutes:
            before = "none" if have is None or have.gpu_minutes is None else f"{have.gpu_minutes:,}"
            changes.append(
                AccountChange(
                    name,
                    "set_limit",
                    f"GrpTRESMins gres/gpu {before} -> {minutes:,}"
                    + (" (suspended)" if want.state != "active" else ""),
                    _mgr("modify", "account", "where", f"name={name}", f"cluster={cluster}",
                         "set", f"GrpTRESMins=gres/gpu={minutes}"),
                )
            )  # fmt: skip
        present = users.get(name, set())
        for user in sorted(set(want.users) - present):
            if SAFE.match(user):
                changes.append(
                    AccountChange(
                        name,
                        "add_user",
                        user,
                        _mgr("add", "user", user, f"Account={name}", f"Cluster={cluster}"),
                    )
                )
        for user in sorted(present - set(want.users)):
            changes.append(
                AccountChange(
                    name,
                    "remove_user",
                    user,
                    _mgr("delete", "user", "where", f"name={user}", f"account={name}",
                         f"cluster={cluster}"),
                )
            )  # fmt: skip
    for name in sorted(set(accounts) - set(wanted)):
        if owned is not None and name not in owned:
            continue  # not made by this agent: another deployment's, or the site's
        changes.append(
            AccountChange(
                name,
                "remove_account",
                "no allocation in force",
                _mgr("delete", "account", "where", f"name={name}", f"cluster={cluster}"),
            )
        )
    return changes


def _mgr(*words: str) -> tuple[str, ...]:
    return ("sacctmgr", "--immediate", *words)


class AccountSync:
    def __init__(self, runner: SlurmRunner, api: AccountSource, state: Path | None = None) -> None:
        self.runner = runner
        self.api = api
        self.state = state  # accounts.json: the accounts this agent made

    def owned(self) -> set[str]:
        if self.state is None:
            return set()
        try:
            return set(json.loads(self.state.read_text()))
        except (OSError, ValueError):
            return set()

    def _remember(self, owned: set[str]) -> None:
        if self.state is not None:
            self.state.parent.mkdir(parents=True, exist_ok=True)
            self.state.write_text(json.dumps(sorted(owned)))

    def cluster(self) -> str:
        out = self.runner.run(["scontrol", "show", "config"]).stdout
        for line in out.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                return value.strip()
        raise RuntimeError("scontrol show config printed no ClusterName")

    def plan(self) -> list[AccountChange]:
        cluster = self.cluster()
        actual = slurm.parse_assoc(self.runner.run(slurm.assoc_argv(cluster=cluster)).stdout)
        return plan_changes(self.api.accounts(), actual, cluster, self.owned())

    def apply(self) -> list[AccountChange]:
        """Run the plan; a step Slurm refuses (an account with running jobs cannot be
        removed) is left for the next round."""
        done = []
        owned = self.owned()
        for change in self.plan():
            try:
                self.runner.run(change.argv)
            except SlurmCommandError:
                continue
            done.append(change)
            if change.action == "add_account":
                owned.add(change.account)
                self._remember(owned)
            elif change.action == "remove_account":
                owned.discard(change.account)
                self._remember(owned)
        return done
