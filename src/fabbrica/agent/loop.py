"""The agent's loop: report capacity and runs, launch and cancel what the API says.

Each round: ask the backend for its capacity and the state of every run the agent holds,
send both in one sync, cancel what the answer says, launch what it offers (launching is
idempotent per job: a backend never starts the same job twice), then upload new log
output. A job that reads data sets is staged first, in the background (agent.staging):
meanwhile it is reported as a run still pending whose reason is the staging's progress,
and it is launched at the first round after its staging is done. When the API is away
the agent keeps its runs running, retries with exponential backoff, and reports their
states when the API answers again (states, not events, so nothing is lost in between).
Over HTTP a sync asks the API to hold it until there is work for the agent or its interval
ends (a long poll): a job placed on an idle factory is launched at once, and an idle agent
still syncs once per interval (or per the API's longest wait, when shorter).
After a crash, the runs are found again in the backend by their tag (`adopt`), so a
restart neither loses nor duplicates them.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from fabbrica.agent.checkpoints import Checkpoints
from fabbrica.agent.data_cache import DataCache
from fabbrica.agent.staging import Staging
from fabbrica.core.agent_api import AgentApi, ApiRefused, ApiUnavailable, SyncAnswer
from fabbrica.core.executor import (
    Capacity,
    Executor,
    LaunchRequest,
    RunState,
    RunStatus,
    job_files,
)
from fabbrica.core.jobs import job_id_of, run_tag

log = logging.getLogger("fabbrica.agent")
LOG_PART = 256 * 1024  # bytes of a job's log per request
LOG_ROUND = 64 * 1024 * 1024  # bytes of logs sent per round at most
MAX_BACKOFF = 30.0
# A run just launched is followed closely until it starts (or this long has passed): its
# start is reported soon after the backend's, not at the next held sync. The backend is
# asked FOLLOW_POLL_S after the launch, then 1.5 times later each time, up to the interval.
FOLLOW_S = 10.0
FOLLOW_POLL_S = 0.1


DATA_CACHE_BYTES = 50 * 1024**3  # data set files an agent keeps
STAGE_WAIT = 1.0  # seconds a round waits for stagings it started (small ones: launched at once)


@dataclass
class Held:
    """A run the agent holds: the last status it knows and how much log it has sent."""

    status: RunStatus
    log_sent: int = 0
    finished_reported: bool = False
    data: frozenset[str] = frozenset()  # sha256 of the data set files the run reads
    launched_at: float = 0.0  # time.monotonic() of its launch by this agent (0: adopted)


@dataclass
class RoundResult:
    ok: bool
    launched: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    reported: int = 0
    error: str | None = None
    held: bool = False  # the API held the sync until its wait ended, and had no work for us


class Agent:
    def __init__(
        self,
        client: AgentApi,
        executor: Executor,
        *,
        backend: str,
        interval: float = 2.0,
        work_dir: Path | None = None,
        sync_accounts: Callable[[], object] | None = None,
        accounts_every: int = 10,
        watch: Callable[[], Callable[[float, threading.Event], object]] | None = None,
        data_cache_bytes: int = DATA_CACHE_BYTES,
        stage_wait: float = STAGE_WAIT,
    ) -> None:
        """`watch()`, called before each round, gives a `wait(seconds, stop)` that returns
        once work arrived for this agent since that call, or when the time is up: the loop
        waits so between rounds (the embedded agent watches `agent_link.OFFERS`) instead of
        sleeping its interval, and a job placed on an idle factory is launched at once."""
        self.client = client
        self.executor = executor
        self.backend = backend
        self.interval = interval
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="fabbrica-agent-"))
        self.sync_accounts = sync_accounts
        self.accounts_every = accounts_every
        self.watch = watch
        self.rounds = 0
        self.held: dict[str, Held] = {}
        self.failures = 0
        self.backend_ok = True
        # (account, user) pairs an account sync has run for since this agent started
        self.synced_for: set[tuple[str | None, str | None]] = set()
        self.data = DataCache(self.work_dir / "data-cache", data_cache_bytes, client.download)
        self.staging: dict[str, Staging] = {}  # run tag -> its data being staged
        self.stage_wait = stage_wait
        self.checkpoints = Checkpoints(client, self.work_dir)
        self.follow_polls = 0  # rounds since a fresh run began to be followed

    # --- what the notebook tunnel asks (agent.tunnel; read from its thread) -----------------

    def running_jobs(self) -> list[int]:
        """The ids of the jobs this agent holds running."""
        held = list(self.held.items())  # a copy: the loop's thread changes the dict
        ids = (job_id_of(tag) for tag, h in held if h.status.state is RunState.RUNNING)
        return [i for i in ids if i is not None]

    def job_dir(self, job_id: int) -> Path | None:
        """The folder of a job's run at this site (where its notebook's launcher writes)."""
        files = job_files(self.executor)
        return None if files is None else files.job_dir(run_tag(job_id))

    def adopt(self) -> int:
        """Find the runs the backend holds for Fabbrica (after a restart)."""
        found = self.executor.adopt()
        for status in found:
            self.held.setdefault(status.run_tag, Held(status))
            self.checkpoints.adopt(status.run_tag)
        return len(found)

    def run(self, stop: threading.Event) -> None:
        self.adopt()
        while not stop.is_set():
            wait_for_work = self.watch() if self.watch is not None else None
            began = time.monotonic()
            following = self._following(began)
            # over HTTP the API holds the sync until there is work or the interval ends
            held = wait_for_work is None and not following
            result = self.round(wait=self.interval if held else 0.0)
            if result.ok:
                self.failures = 0
                if result.launched:
                    continue  # report what it launched (running, or refused) at once
                if following:  # 0.1 s, then a little longer each time, up to the interval
                    self.follow_polls += 1
                    stop.wait(min(FOLLOW_POLL_S * 1.5 ** (self.follow_polls - 1), self.interval))
                    continue
                self.follow_polls = 0
                if wait_for_work is not None:
                    wait_for_work(self.interval, stop)  # woken early by work for it
                    continue
                if result.held:
                    continue  # the wait was the interval: sync again at once
                wait = self.interval - (time.monotonic() - began)
            else:
                self.failures += 1
                wait = min(self.interval * 2 ** min(self.failures, 10), MAX_BACKOFF)
                log.warning("sync failed (%s); retrying in %.1f s", result.error, wait)
            stop.wait(max(wait, 0.0))

    # --- one round ---------------------------------------------------------------------

    def round(self, wait: float = 0.0) -> RoundResult:
        """One sync; with `wait`, the API may hold it up to `wait` seconds until there is
        work for this agent (if the API holds syncs; otherwise it answers at once)."""
        capacity, runs = self._observe()
        self._send_logs()  # before a run is reported ended, its log is on the server
        # and so is its checkpoint folder (the next run, anywhere, starts from it): a run
        # whose last folder could not be sent is reported running for now
        waiting = self.checkpoints.send({s.run_tag for s in runs if s.state.finished})
        runs = [_still_running(s) if s.run_tag in waiting else s for s in runs]
        try:
            answer = self.client.sync(
                self.backend, sorted(self.executor.capabilities()), capacity, runs, wait=wait
            )
        except (ApiUnavailable, ApiRefused) as exc:
            return RoundResult(ok=False, error=str(exc))
        for status in runs:
            if status.run_tag in self.staging:
                continue
            held = self.held.get(status.run_tag)
            if held is not None and status.state.finished:
                held.finished_reported = True
        idle = not answer.launch and not answer.cancel
        waited = wait > 0 and answer.wait_s > 0 and idle
        result = RoundResult(ok=True, reported=len(runs), held=waited)
        self.rounds += 1
        self._cancel(answer, result)
        due = self.accounts_every and self.rounds % self.accounts_every == 1 % self.accounts_every
        # Before a launch the job's account (and its user in it) must exist; once an account
        # sync has run for them they do, and later launches for them skip it: it would sit
        # in front of every launch (on Slurm, several sacctmgr calls) for nothing.
        new = {(r.account, r.user) for r in answer.launch} - self.synced_for
        if self.sync_accounts is not None and (due or new) and self._accounts():
            self.synced_for |= new
        self._launch(answer, result)
        self._forget_finished()
        return result

    def _following(self, now: float) -> bool:
        """Whether a run launched in the last FOLLOW_S seconds has not started yet (and the
        backend answers: a backend away is not asked faster)."""
        return self.backend_ok and any(
            h.launched_at and now - h.launched_at < FOLLOW_S and h.status.state is RunState.PENDING
            for h in self.held.values()
        )

    def _accounts(self) -> bool:
        assert self.sync_accounts is not None
        try:
            self.sync_accounts()
        except Exception as exc:  # account sync must never stop the job loop
            log.warning("account sync failed: %s", exc)
            return False
        return True

    def _observe(self) -> tuple[list[Capacity], list[RunStatus]]:
        """Capacity and run states; when the backend does not answer, report neither (the
        API then places nothing here, and runs keep their leases only while it answers)."""
        try:
            capacity = self.executor.capacity()
            statuses = self.executor.poll(list(self.held)) if self.held else []
        except Exception as exc:
            if self.backend_ok:
                log.warning("the backend does not answer: %s", exc)
            self.backend_ok = False
            return [], []
        self.backend_ok = True
        for status in statuses:
            held = self.held[status.run_tag]
            if status.state is RunState.UNKNOWN and held.status.state.finished:
                continue  # it never reached the backend (refused at submission): keep that
            held.status = status
        staging = [s.status() for s in self.staging.values()]
        return capacity, [h.status for h in self.held.values()] + staging

    def _cancel(self, answer: SyncAnswer, result: RoundResult) -> None:
        for tag in answer.cancel:
            if self.staging.pop(tag, None) is not None:  # its thread ends on its own
                reason = "cancelled while its data was staged"
                self.held[tag] = Held(RunStatus(tag, RunState.CANCELLED, reason=reason))
                result.cancelled.append(tag)
                continue
            try:
                status = self.executor.cancel(tag)
            except Exception as exc:
                log.warning("cancel of %s failed: %s", tag, exc)
                continue
            self.held.setdefault(tag, Held(status)).status = status
            result.cancelled.append(tag)

    def _launch(self, answer: SyncAnswer, result: RoundResult) -> None:
        started = []
        self.checkpoints.offered({r.run_tag for r in answer.launch} | set(self.staging))
        for request in answer.launch:
            if request.run_tag in self.held or request.run_tag in self.staging:
                continue
            if not self.checkpoints.ready(request):
                continue  # its checkpoint is downloaded in the background first
            if not request.datasets:
                self._submit(request, result)
                continue
            into = self.work_dir / "data" / request.run_tag
            self.staging[request.run_tag] = Staging(request, self.data, into, answer.factory)
            started.append(self.staging[request.run_tag])
        deadline = time.monotonic() + self.stage_wait
        for staging in started:  # a small one is done by then: launched in this round
            staging.wait(max(deadline - time.monotonic(), 0.0))
        for tag, staging in list(self.staging.items()):
            if not staging.done():
                continue
            del self.staging[tag]
            if staging.unavailable:
                log.warning("data of %s not fetched: the API is away", tag)
                continue  # offered again, staged again
            if staging.error is not None:
                self.held[tag] = Held(RunStatus(tag, RunState.FAILED, reason=staging.error))
                result.launched.append(tag)
                continue
            self._submit(staging.staged(), result, data=staging.shas)
        if answer.launch or result.launched:
            in_use = set().union(
                *(h.data for h in self.held.values() if not h.status.state.finished),
                *(s.shas for s in self.staging.values()),
            )
            self.data.evict(in_use)

    def _submit(
        self, request: LaunchRequest, result: RoundResult, data: frozenset[str] = frozenset()
    ) -> None:
        try:
            request = self.checkpoints.fetch(self._with_workdir(request))
            status = self.executor.submit(request)
        except (ApiUnavailable, ApiRefused) as exc:
            log.warning("workdir or checkpoint of %s not fetched: %s", request.run_tag, exc)
            return
        except Exception as exc:
            log.warning("%s could not start: %s", request.run_tag, exc)
            status = RunStatus(request.run_tag, RunState.FAILED, reason=f"could not start: {exc}")
        self.held[request.run_tag] = Held(status, data=data, launched_at=time.monotonic())
        files = job_files(self.executor)
        if files is not None and not status.state.finished:
            self.checkpoints.track(request, files.job_dir(request.run_tag))
        result.launched.append(request.run_tag)

    def _with_workdir(self, request: LaunchRequest) -> LaunchRequest:
        if not request.workdir_archive:
            return request
        dest = self.work_dir / "workdirs" / f"{request.run_tag}.tar"
        self.client.download(request.workdir_archive, dest)
        return replace(request, workdir_archive=str(dest))

    def _send_logs(self) -> None:
        files = job_files(self.executor)
        if files is None:
            return
        budget = LOG_ROUND
        for tag, held in self.held.items():
            job_id = job_id_of(tag)
            if job_id is None:
                continue
            path = files.job_dir(tag) / "log"
            while budget > 0:  # all of it, in parts, within the round's budget
                try:
                    with path.open("rb") as handle:
                        handle.seek(held.log_sent)
                        data = handle.read(LOG_PART)
                except OSError:
                    break
                if not data:
                    break
                try:
                    held.log_sent = self.client.send_log(job_id, held.log_sent, data)
                except ApiRefused as exc:
                    log.warning("log of %s refused: %s", tag, exc)
                    break
                except ApiUnavailable:
                    return
                budget -= len(data)

    def _forget_finished(self) -> None:
        files = job_files(self.executor)
        for tag in list(self.held):
            held = self.held[tag]
            if not held.finished_reported:
                continue
            if files is not None:
                try:
                    size = (files.job_dir(tag) / "log").stat().st_size
                except OSError:
                    size = 0
                if held.log_sent < size:
                    continue  # the rest of its log goes out first
            if self.checkpoints.pending(tag):
                continue  # and its checkpoint folder
            del self.held[tag]
            self.checkpoints.forget(tag)


def _still_running(status: RunStatus) -> RunStatus:
    """A run that ended, reported as running until its last checkpoint is sent."""
    return RunStatus(
        status.run_tag,
        RunState.RUNNING,
        started_at=status.started_at,
        site_job_id=status.site_job_id,
    )
