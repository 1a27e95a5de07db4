"""A federation on the Slurm testbed: `fabbrica up` and one site agent per cluster, each a
real process, as an operator runs them.

`Federation` starts the server on SQLite with a short lease, makes a user (site username
`fabuser1` at every factory), an organisation, a project with a Playground allocation at
every testbed factory, a partition map per factory, and the agents. It can kill -9 and
restart an agent, and stop and start a cluster's slurmctld. `close()` always cleans up:
it stops its processes, starts again any slurmctld it stopped, cancels the Slurm jobs of
its accounts and deletes the `fab-...` accounts it caused to exist.

Project ids come from the database's sequence (`FAB-AIF-2026PG11-0001` on every fresh
server), and the Slurm account is the id in lower case; so that two servers (two tests, or
a test and someone's manual federation) never share an account, the harness puts a
placeholder project with a random key in the database before it creates the real one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from fabbrica.catalog.loader import load_catalog
from fabbrica.catalog.model import Catalog, Partition
from tests.cli.server import Server, clean_env
from tests.slurm.conftest import Cluster, SlurmTestbed, mapping_path, poll

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
TESTBED_SCRIPT = ROOT / "scripts" / "slurm-testbed"
EMAIL = "ada@example.eu"
SITE_USER = "fabuser1"
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")
SACCT_FIELDS = (
    "JobID",
    "JobName",
    "Comment",
    "User",
    "Account",
    "ElapsedRaw",
    "AllocTRES",
    "State",
)


# --- Slurm ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SacctJob:
    """One allocation line of `sacct -X -P`."""

    site_job_id: str  # Slurm's id of the job
    name: str
    comment: str  # reaches sacct only some time after the job ended
    user: str
    account: str
    elapsed_s: int
    gpus: int
    state: str

    @property
    def gpu_seconds(self) -> int:
        return self.gpus * self.elapsed_s

    def runs(self, job_id: int) -> bool:
        """Whether this Slurm job ran Fabbrica job `job_id` (by its name `fab-<id>-...`,
        or the comment `fab-<id>`)."""
        tag = f"fab-{job_id}"
        return self.comment == tag or self.name == tag or self.name.startswith(f"{tag}-")


def _gpus(tres: str) -> int:
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu":
            return int(value)
    return 0


def sacct_jobs(cluster: Cluster, account: str) -> list[SacctJob]:
    """Every job of `account` on `cluster` in the last day (as root: every user's)."""
    out = cluster.run(
        ["sacct", "-X", "-a", "-P", "-n", "-A", account, "-S", "now-1days",
         "-o", ",".join(SACCT_FIELDS)]
    ).stdout  # fmt: skip
    jobs = []
    for line in out.splitlines():
        if not line.strip():
            continue
        site_job_id, name, comment, user, acct, elapsed, tres, state = line.split("|")
        jobs.append(
            SacctJob(
                site_job_id,
                name,
                comment,
                user,
                acct,
                int(elapsed or 0),
                _gpus(tres),
                state.split()[0],
            )
        )
    return jobs


def squeue_state(cluster: Cluster, slurm_id: str) -> tuple[str, str] | None:
    """(state, reason) of a job the controller still knows, else None."""
    done = cluster.run(["squeue", "-h", "--states=all", "-j", slurm_id, "-o", "%T|%r"], check=False)
    line = done.stdout.strip()
    if done.returncode != 0 or not line:
        return None
    state, _, reason = line.partition("|")
    return state, reason


def associations(cluster: Cluster, account: str) -> list[tuple[str, str, str, str]]:
    """(cluster, account, user, GrpTRESMins) of `account` on `cluster`."""
    out = cluster.run(
        ["sacctmgr", "-n", "-P", "show", "assoc", f"cluster={cluster.name}",
         f"account={account}", "format=Cluster,Account,User,GrpTRESMins"]
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        if line.strip():
            c, a, u, limit = line.split("|")
            rows.append((c, a, u, limit))
    return rows


def delete_account(cluster: Cluster, account: str, timeout: float = 90.0) -> None:
    """Cancel the account's jobs on the cluster, then delete it (Slurm refuses while any of
    its jobs is active)."""

    def gone() -> bool | None:
        cluster.run(["scancel", f"--account={account}"], check=False)
        if not associations(cluster, account):
            return True
        cluster.run(
            ["sacctmgr", "-i", "delete", "account", "where", f"name={account}",
             f"cluster={cluster.name}"], check=False
        )  # fmt: skip
        return None if associations(cluster, account) else True

    poll(f"account {account} deleted on {cluster.name}", gone, timeout, every=1.0)


_OURS: set[int] = set()  # pids of the agents this process started


def foreign_agents(bed: SlurmTestbed) -> list[str]:
    """`fabbrica agent` processes on the testbed's clusters that this harness did not start.
    Their account sync deletes every `fab-...` account it does not know (ours too), so a
    federation beside them cannot run reliably."""
    confs = {c.slurm_conf for c in bed.clusters}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in _OURS:
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "agent" in argv and any("fabbrica" in a for a in argv[:3]) and confs & set(argv):
            found.append(f"{proc.name}: {' '.join(argv).strip()}")
    return found


def node_gpus(cluster: Cluster) -> tuple[int, int]:
    """(GPUs the controller counts as allocated on the node, GPUs of its running jobs)."""
    node = cluster.run(["scontrol", "--oneliner", "show", "node"]).stdout
    alloc = next((w[len("AllocTRES=") :] for w in node.split() if w.startswith("AllocTRES=")), "")
    typed = sum(
        int(value)
        for key, _, value in (item.partition("=") for item in alloc.split(",") if item)
        if key.startswith("gres/gpu:")
    )
    allocated = max(_gpus(alloc), typed)
    jobs = cluster.run(["squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%b"]).stdout.split()
    running = sum(
        int(b.rsplit(":", 1)[-1]) for b in jobs if b.startswith("gres") and b[-1].isdigit()
    )
    return allocated, running


def heal_gres(bed: SlurmTestbed, cluster: Cluster) -> None:
    """Slurm 22.05 may keep counting the GPUs of a job that was recovered after a
    controller restart and then cancelled (the node says AllocTRES=gres/gpu:<m>=1 with no
    job running): what later tests and agents see as busy GPUs. A restart clears it."""

    def settled() -> bool | None:
        allocated, running = node_gpus(cluster)
        return True if allocated <= running else None

    try:
        poll(f"{cluster.name}'s GPUs released", settled, timeout=8, every=0.5)
    except AssertionError:
        pid = ctld_pid(cluster)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            poll("slurmctld to stop", lambda: True if ctld_pid(cluster) is None else None, 30)
        testbed_up(bed)
        poll(f"{cluster.name}'s GPUs released", settled, timeout=30, every=0.5)


def forget_account(cluster: Cluster, account: str) -> None:
    """Delete the account record once no cluster has an association of it."""
    cluster.run(["sacctmgr", "-i", "delete", "account", f"name={account}"], check=False)
    left = cluster.run(
        ["sacctmgr", "-n", "-P", "list", "account", f"name={account}", "format=Account"]
    ).stdout.split()
    assert account not in left, f"sacctmgr still lists account {account}"


def testbed_dir() -> Path:
    return mapping_path().parent


def ctld_pid(cluster: Cluster) -> int | None:
    """slurmctld's pid when it runs (the testbed's pid file, checked against /proc)."""
    pidfile = testbed_dir() / cluster.name / "run" / "slurmctld.pid"
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = Path(f"/proc/{pid}/stat").read_text().split()
    except (OSError, ValueError):
        return None
    if cluster.slurm_conf not in cmdline or status[2] == "Z":
        return None
    return pid


def ctld_answers(cluster: Cluster) -> bool:
    try:
        ping = cluster.run(["scontrol", "ping"], check=False)
    except subprocess.TimeoutExpired:
        return False
    return "is UP" in ping.stdout


def testbed_up(bed: SlurmTestbed) -> None:
    """`scripts/slurm-testbed up`: starts what is not running (it waits for the nodes)."""
    done = subprocess.run(
        [str(TESTBED_SCRIPT), "up", "--clusters", str(len(bed.clusters))],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"slurm-testbed up exited {done.returncode}: {done.stderr}")


# --- the federation --------------------------------------------------------------------------


@dataclass
class Site:
    """One factory: its cluster and its agent process."""

    factory: str
    cluster: Cluster
    partition: Partition
    token: str
    map_file: Path
    work_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0


@dataclass
class Federation:
    bed: SlurmTestbed
    root: Path
    lease_s: float = 8.0
    interval_s: float = 0.5
    loop_interval_s: float = 0.5
    accounts_every: int = 10
    gpu_hours: float | dict[str, float] = 100.0
    factories: Sequence[str] | None = None  # default: every testbed cluster
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    server: Server | None = None
    sites: dict[str, Site] = field(default_factory=dict)
    user_token: str = ""
    project: str = ""
    account: str = ""
    allocations: dict[str, int] = field(default_factory=dict)  # factory -> allocation id
    extra_accounts: list[tuple[Cluster, str]] = field(default_factory=list)
    stopped_ctld: set[str] = field(default_factory=set)
    restarted_ctld: set[str] = field(default_factory=set)
    catalog: Catalog = field(default_factory=lambda: load_catalog(None))
    clients: dict[str, httpx.Client] = field(default_factory=dict)
    work_root: Path | None = None  # the agents' work dirs
    # the server's address, and what runs it (`ip netns exec NS`: a network of its own)
    server_host: str = "127.0.0.1"
    server_prefix: tuple[str, ...] = ()

    # --- start ----------------------------------------------------------------------------

    def start(self) -> Federation:
        self.root.mkdir(parents=True, exist_ok=True)
        # The site users read the job scripts and write the logs there: pytest's tmp_path
        # (mode 700 under /tmp/pytest-of-root) is closed to them.
        self.work_root = Path(tempfile.mkdtemp(prefix="fabbrica-agents-"))
        self.work_root.chmod(0o755)
        env = clean_env(
            FABBRICA_LOCAL_GPUS="0",
            FABBRICA_LOOP_INTERVAL_SECONDS=f"{self.loop_interval_s:g}",
            FABBRICA_AGENT_LEASE_SECONDS=f"{self.lease_s:g}",
            FABBRICA_BOOTSTRAP_TOKEN=self.admin_token,
            FABBRICA_LOG_LEVEL="warning",
        )
        self.server = Server(
            self.root / "data",
            env,
            self.root / "up.log",
            host=self.server_host,
            prefix=self.server_prefix,
        ).start()
        admin = self.http(self.admin_token)
        user = _ok(admin.post("/users", json={"email": EMAIL, "name": "Ada", "role": "user"}))
        self.user_token = user["token"]
        for cluster in self.bed.clusters:
            if self.factories is None or cluster.factory in self.factories:
                self.sites[cluster.factory] = self._site(admin, cluster)
        me = self.http(self.user_token)
        org = _ok(
            me.post(
                "/organisations",
                json={"name": "Startup srl", "country": "IT", "type": "startup",
                      "sector": "manufacturing"},
            )
        )  # fmt: skip
        self._placeholder_project(org["id"])
        project = _ok(me.post("/projects", json={"title": "LLM", "org_id": org["id"]}))
        self.project = project["id"]
        account = self.project.lower()
        for cluster in self.bed.clusters:  # never take over (and later delete) another's
            assert not associations(cluster, account), f"{account} exists on {cluster.name}"
            assert not sacct_jobs(cluster, account), f"{account} has jobs on {cluster.name}"
        self.account = account
        for factory in self.sites:
            self.allocations[factory] = self.apply(factory, self.hours(factory))
        for site in self.sites.values():
            self.start_agent(site.factory)
        for site in self.sites.values():
            self.wait_capacity(site.factory)

            def joined(c: Cluster = site.cluster) -> bool | None:
                users = (u for _, _, u, _ in associations(c, self.account))
                return True if SITE_USER in users else None

            poll(f"account {self.account} with {SITE_USER} on {site.cluster.name}", joined, 60)
        return self

    def hours(self, factory: str) -> float:
        if isinstance(self.gpu_hours, dict):
            return self.gpu_hours.get(factory, 100.0)
        return self.gpu_hours

    def apply(self, factory: str, gpu_hours: float) -> int:
        """A Playground proposal at `factory` (decided at once): its allocation id."""
        proposal = _ok(
            self.http(self.user_token).post(
                "/proposals",
                json={"project_id": self.project, "call_id": f"{factory}-playground",
                      "gpu_hours": gpu_hours, "months": 1, "abstract": "tests",
                      "declare_civilian_ai_act": True},
            )
        )  # fmt: skip
        assert proposal["state"] == "accepted", proposal
        allocation = proposal["allocation"]
        return int(allocation["id"] if isinstance(allocation, dict) else allocation)

    def _site(self, admin: httpx.Client, cluster: Cluster) -> Site:
        factory = cluster.factory
        token = _ok(admin.post(f"/agents/{factory}/token", json={}))["token"]
        _ok(admin.put(f"/agents/{factory}/usernames", json={"email": EMAIL, "username": SITE_USER}))
        entry = self.catalog.factory(factory)
        assert entry is not None, factory
        partition = next(
            p for p in entry.operating_partitions() if p.gpu_model == cluster.gpu_model
        )
        map_file = self.root / f"{factory}.map.json"
        map_file.write_text(
            json.dumps(
                {"partitions": {partition.id: {"slurm_partition": cluster.partition,
                                               "gres_type": cluster.gpu_model}}}
            )
        )  # fmt: skip
        return Site(
            factory=factory,
            cluster=cluster,
            partition=partition,
            token=token,
            map_file=map_file,
            work_dir=(self.work_root or self.root) / factory,
            log=self.root / f"agent-{factory}.log",
        )

    def _placeholder_project(self, org_id: int) -> None:
        """Shift the project sequence to a random place no other server uses now."""
        db = self.root / "data" / "fabbrica.db"
        pk = secrets.randbelow(900_000) + 100_000
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn, conn:
            me = conn.execute("SELECT id FROM users WHERE email = ?", (EMAIL,)).fetchone()[0]
            conn.execute(
                "INSERT INTO projects (pk, id, title, organisation_id, pi_user_id, mode,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (pk, f"PLACEHOLDER-{pk}", "placeholder", org_id, me, "playground",
                 dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(" ")),
            )  # fmt: skip

    # --- agents -------------------------------------------------------------------------

    def start_agent(self, factory: str) -> None:
        site = self.sites[factory]
        assert site.process is None or site.process.poll() is not None, "already running"
        assert self.server is not None
        env = clean_env(FABBRICA_URL=self.server.url, FABBRICA_TOKEN=site.token)
        argv = [
            sys.executable, "-m", "fabbrica", "agent", "--factory", factory,
            "--backend", "slurm", "--slurm-conf", site.cluster.slurm_conf,
            "--partition-map", str(site.map_file), "--work-dir", str(site.work_dir),
            "--interval", f"{self.interval_s:g}", "--accounts-every", str(self.accounts_every),
        ]  # fmt: skip
        with site.log.open("ab") as out:
            site.process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _OURS.add(site.process.pid)
        site.starts += 1

    def kill_agent(self, factory: str) -> None:
        """kill -9: no chance to clean up or say goodbye."""
        site = self.sites[factory]
        assert site.process is not None and site.process.poll() is None, "agent not running"
        site.process.send_signal(signal.SIGKILL)
        site.process.wait(10)

    def stop_agent(self, factory: str) -> None:
        site = self.sites[factory]
        if site.process is None or site.process.poll() is not None:
            return
        site.process.send_signal(signal.SIGTERM)
        try:
            site.process.wait(15)
        except subprocess.TimeoutExpired:
            site.process.kill()
            site.process.wait(10)

    def agents(self) -> dict[str, dict[str, Any]]:
        rows = _ok(self.http(self.admin_token).get("/agents"))
        return {r["factory"]: r for r in rows}

    def wait_capacity(self, factory: str, timeout: float = 60.0) -> dict[str, Any]:
        """Until the agent reports its cluster's GPUs (a sync after it started or after its
        cluster came back)."""
        total = self.sites[factory].cluster.gpus

        def probe() -> dict[str, Any] | None:
            row = self.agents().get(factory)
            caps = row["capacity"] if row else []
            return row if caps and caps[0]["total_gpus"] == total else None

        return poll(f"the agent of {factory} to report its capacity", probe, timeout)

    def wait_free(self, factory: str, free: int, timeout: float = 60.0) -> None:
        """Until the agent reports `free` GPUs free (what placement sees)."""

        def probe() -> bool | None:
            caps = self.agents()[factory]["capacity"]
            return True if caps and caps[0]["free_gpus"] == free else None

        poll(f"{factory} to report {free} free GPUs", probe, timeout)

    # --- slurmctld ----------------------------------------------------------------------

    def stop_ctld(self, factory: str) -> None:
        cluster = self.sites[factory].cluster
        pid = ctld_pid(cluster)
        assert pid is not None, f"slurmctld of {cluster.name} is not running"
        self.stopped_ctld.add(factory)
        self.restarted_ctld.add(factory)
        os.kill(pid, signal.SIGTERM)
        poll(
            f"slurmctld of {cluster.name} to stop",
            lambda: True if ctld_pid(cluster) is None else None,
            30,
        )
        poll(
            f"slurmctld of {cluster.name} to stop answering",
            lambda: True if not ctld_answers(cluster) else None,
            30,
        )

    def start_ctld(self, factory: str) -> None:
        cluster = self.sites[factory].cluster
        testbed_up(self.bed)
        poll(
            f"slurmctld of {cluster.name} to answer",
            lambda: True if ctld_answers(cluster) else None,
            60,
        )
        self.stopped_ctld.discard(factory)

    # --- users' view ----------------------------------------------------------------------

    def http(self, token: str) -> httpx.Client:
        """An API client with `token` (one per token, closed with the federation)."""
        assert self.server is not None
        if token not in self.clients:
            self.clients[token] = httpx.Client(
                base_url=f"{self.server.url}/api/v1",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        return self.clients[token]

    def cli(
        self, *args: str, token: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`fabbrica ARGS` as the user (or with `token`)."""
        assert self.server is not None
        env = self.server.client_env(token or self.user_token)
        return subprocess.run(
            [sys.executable, "-m", "fabbrica", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cli_json(self, *args: str, token: str | None = None, ok: Sequence[int] = (0,)) -> Any:
        done = self.cli(*args, "--json", token=token)
        assert done.returncode in ok, (
            f"fabbrica {' '.join(args)} exited {done.returncode}: {done.stderr}"
        )
        return json.loads(done.stdout)

    def spec(self, name: str, run: str, *, gpus: int = 1, model: str = "any",
             time_limit: str = "10m", factories: Sequence[str] | None = None) -> Path:  # fmt: skip
        """A job spec file in a folder of its own (its workdir)."""
        folder = self.root / "specs" / name
        folder.mkdir(parents=True, exist_ok=True)
        spec: dict[str, Any] = {
            "name": name,
            "project": self.project,
            "resources": {"gpus": gpus, "gpu_model": model, "time_limit": time_limit},
            "run": run,
        }
        if factories:
            spec["placement"] = {"factories": list(factories)}
        path = folder / "job.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def submit(self, spec: Path) -> int:
        """`fabbrica run SPEC --json`: the job id."""
        return int(self.cli_json("run", str(spec))["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = _ok(self.http(self.user_token).get(f"/jobs/{job_id}"))
        return job

    def wait_job(
        self,
        job_id: int,
        until: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        last: list[dict[str, Any]] = []

        def probe() -> dict[str, Any] | None:
            job = self.job(job_id)
            last[:] = [job]
            return job if until(job) else None

        try:
            return poll(f"job {job_id} {what}", probe, timeout, every=0.2)
        except AssertionError as failure:
            raise AssertionError(f"{failure}\nlast seen: {last}\n{self.output()}") from None

    def wait_state(self, job_id: int, *states: str, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_job(
            job_id, lambda j: j["state"] in states, f"to be {'/'.join(states)}", timeout
        )

    def wait_finished(self, job_id: int, timeout: float = 180.0) -> dict[str, Any]:
        return self.wait_state(job_id, *FINISHED, timeout=timeout)

    def logs(self, job_id: int) -> str:
        done = self.cli("logs", str(job_id))
        assert done.returncode == 0, done.stderr
        return done.stdout

    def slurm_ids(self, job_id: int, factory: str) -> list[str]:
        """The Slurm jobs at `factory` tagged with this job (from squeue and sacct)."""
        cluster = self.sites[factory].cluster
        tag = f"fab-{job_id}"
        found = {j.site_job_id for j in sacct_jobs(cluster, self.account) if j.runs(job_id)}
        out = cluster.run(
            ["squeue", "-h", "--states=all", "-A", self.account, "-o", "%i|%j"], check=False
        ).stdout
        for line in out.splitlines():
            slurm_id, _, name = line.partition("|")
            if name == tag or name.startswith(f"{tag}-"):
                found.add(slurm_id)
        return sorted(found, key=int)

    # --- cleanup --------------------------------------------------------------------------

    def close(self) -> None:
        errors: list[str] = []
        for factory in list(self.sites):
            try:
                self.stop_agent(factory)
            except Exception as exc:  # go on: the rest must be cleaned up too
                errors.append(f"agent {factory}: {exc}")
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        if self.server is not None:
            self.server.stop()
        if self.stopped_ctld:
            try:
                testbed_up(self.bed)
                self.stopped_ctld.clear()
            except Exception as exc:
                errors.append(f"slurm-testbed up: {exc}")
        targets = list(self.extra_accounts)
        if self.account:
            targets += [(c, self.account) for c in self.bed.clusters]
        for cluster, account in targets:
            try:
                delete_account(cluster, account)
            except Exception as exc:
                errors.append(f"account {account} on {cluster.name}: {exc}")
        for factory in sorted(self.restarted_ctld):
            try:
                heal_gres(self.bed, self.sites[factory].cluster)
            except Exception as exc:
                errors.append(f"GPUs of {factory}: {exc}")
        for account in sorted({a for _, a in targets}):
            try:  # the account itself (slurmdbd keeps it after its last association)
                forget_account(self.bed.clusters[0], account)
            except Exception as exc:
                errors.append(f"account {account}: {exc}")
        if self.work_root is not None:
            shutil.rmtree(self.work_root, ignore_errors=True)
        if errors:
            raise AssertionError("cleanup failed: " + "; ".join(errors))

    def user_dir(self) -> Path:
        """A fresh folder the site user may write (under the agents' work root)."""
        assert self.work_root is not None
        path = Path(tempfile.mkdtemp(prefix="shared-", dir=self.work_root))
        shutil.chown(path, SITE_USER, SITE_USER)
        return path

    def usage_records(self) -> list[dict[str, Any]]:
        """The server's usage records, read from its database (the API shows only sums of
        charged GPU-hours; a record also keeps the GPUs and seconds it was charged for)."""
        db = self.root / "data" / "fabbrica.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
            c.row_factory = sqlite3.Row
            rows = c.execute(
                "SELECT job_id, run, gpus, elapsed_s, gpu_hours, factory_id, site_job_id"
                " FROM usage_records ORDER BY job_id"
            ).fetchall()
        return [dict(r) for r in rows]

    def output(self) -> str:
        """The server's and the agents' logs and what each cluster shows (for failure
        messages)."""
        parts = [f"--- up.log\n{(self.server.output() if self.server else '')[-6000:]}"]
        for site in self.sites.values():
            text = site.log.read_text(errors="replace") if site.log.exists() else ""
            parts.append(f"--- agent {site.factory}\n{text[-4000:]}")
            for command in (
                ["squeue", "-h", "--states=all", "-o", "%i|%j|%T|%r|%b"],
                ["sinfo", "-h", "-N", "-o", "%N|%T|%E|%G"],
            ):
                shown = site.cluster.run(command, check=False)
                parts.append(
                    f"--- {site.factory}: {' '.join(command)}\n{shown.stdout}{shown.stderr}"
                )
        return "\n".join(parts)


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, (
        f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    )
    return response.json()


@contextlib.contextmanager
def federation(bed: SlurmTestbed, root: Path, **options: Any) -> Iterator[Federation]:
    fed = Federation(bed, root, **options)
    try:
        fed.start()
        yield fed
    finally:
        fed.close()
