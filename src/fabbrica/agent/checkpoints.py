"""Checkpoints that follow a job across sites, the agent's side.

Before a run of a job that checkpoints starts, the agent downloads the folder the job's
last run sent to the server (from this site or another), checks its SHA-256, and the
executor unpacks it into the run's `$FABBRICA_CHECKPOINT_DIR`. The download runs in a
thread of its own (`ready` starts it): the round goes on with the other jobs, and the run
is launched at the first round after it is here (a small one: in the same round, the
round waits up to FETCH_WAIT seconds in all for them). Meanwhile the server offers the
run again each round, which renews its lease; a download whose run is no longer offered
(cancelled, or placed elsewhere) is dropped. While the run goes on, each
round the agent looks at the folder (its newest mtime, file count and size): when it
changed since the last send, it packs the folder (a tar) and sends it in parts, from an
offset, so that a send cut short goes on where it stopped; the server keeps it only once
it is whole and its hash checks. When the run ended (any way) the folder is sent once more
if it changed, before its end is reported: the next run starts from there. A site that
disappears loses only what its runs wrote since their last send.

What the agent knows of a run's checkpoint (job, run, folder) is kept beside it on disk,
so that an agent restarted mid-run goes on sending for the runs it adopts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fabbrica.core.agent_api import AgentApi, ApiRefused, ApiUnavailable
from fabbrica.core.executor import LaunchRequest
from fabbrica.core.jobs import job_id_of

log = logging.getLogger("fabbrica.agent")
PART = 512 * 1024  # bytes of a checkpoint per request (under the server's body limit)
ROUND = 256 * 1024 * 1024  # bytes of checkpoints sent per round at most, for running runs
GIVE_UP = 30  # rounds a finished run's end waits for its last checkpoint to be sent
FETCH_WAIT = 1.0  # seconds a round waits in all for the downloads it started

Signature = tuple[int, int, int]  # newest mtime (ns), files, bytes


@dataclass
class Sending:
    """A packed folder being sent: where its tar is, its hash and size, how far it got."""

    path: Path
    sha256: str
    size: int
    signature: Signature
    offset: int = 0


@dataclass
class Outgoing:
    """A run whose checkpoint folder the agent sends."""

    job_id: int
    run: int
    folder: Path
    sent: Signature | None = None  # the folder as the server has it
    sending: Sending | None = None
    refused: bool = False  # the server takes no more from this run (it is over there)
    failures: int = 0  # rounds in a row its send failed (the API away or failing)


@dataclass
class Fetch:
    """A run's checkpoint being downloaded in the background."""

    key: tuple[int, str]  # the run, and the checkpoint (its sha256, else its path)
    dest: Path
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    dropped: bool = False  # no longer wanted: the thread removes what it downloaded
    lock: threading.Lock = field(default_factory=threading.Lock)


class Checkpoints:
    def __init__(self, client: AgentApi, work_dir: Path) -> None:
        self.client = client
        self.dir = work_dir / "checkpoints"
        self.runs: dict[str, Outgoing] = {}
        self.fetching: dict[str, Fetch] = {}  # run tag -> its checkpoint's download
        self._deadline = 0.0  # until when this round waits for the downloads it started
        self._fetches = 0  # downloads started: each has a file of its own

    # --- before a run starts -------------------------------------------------------------

    def offered(self, run_tags: set[str]) -> None:
        """A new round offers these runs (or holds them being staged): drop the downloads
        of the others (cancelled, or placed elsewhere meanwhile)."""
        self._deadline = time.monotonic() + FETCH_WAIT
        for tag in [t for t in self.fetching if t not in run_tags]:
            self._drop(self.fetching.pop(tag))

    def ready(self, request: LaunchRequest) -> bool:
        """Whether the run may be launched now: it has no checkpoint to download, or its
        download ended (`fetch` then gives it, or says why not). Otherwise its download
        goes on (started now, in a thread) and the run waits for a later round."""
        wanted = request.checkpoint
        if wanted is None or not wanted.archive:
            return True
        key = (request.run, wanted.sha256 or wanted.archive)
        fetch = self.fetching.get(request.run_tag)
        if fetch is not None and fetch.key != key:  # another run, or a newer checkpoint
            self._drop(self.fetching.pop(request.run_tag))
            fetch = None
        if fetch is None:
            fetch = self.fetching[request.run_tag] = self._start(request, key)
        return fetch.done.wait(max(self._deadline - time.monotonic(), 0.0))

    def fetch(self, request: LaunchRequest) -> LaunchRequest:
        """The request with its checkpoint archive downloaded here and checked (unchanged
        when the job has none on the server). ApiUnavailable when it could not be had, or
        is not here yet: the run is launched at a later round."""
        wanted = request.checkpoint
        if wanted is None or not wanted.archive:
            return request
        if not self.ready(request):
            raise ApiUnavailable(f"checkpoint of {request.run_tag} is still downloading")
        fetch = self.fetching.pop(request.run_tag)
        if fetch.error is not None:
            raise ApiUnavailable(fetch.error)  # tried again when the run is offered again
        return replace(request, checkpoint=replace(wanted, archive=str(fetch.dest)))

    def _start(self, request: LaunchRequest, key: tuple[int, str]) -> Fetch:
        assert request.checkpoint is not None and request.checkpoint.archive
        self._fetches += 1  # a dropped download may still write its own file
        fetch = Fetch(key, self.dir / f"{request.run_tag}.{request.run}.{self._fetches}.tar")
        archive, sha256 = request.checkpoint.archive, request.checkpoint.sha256
        thread = threading.Thread(
            target=self._download,
            args=(fetch, request.run_tag, archive, sha256),
            name=f"checkpoint-{request.run_tag}",
            daemon=True,
        )
        thread.start()
        return fetch

    def _download(self, fetch: Fetch, tag: str, archive: str, sha256: str | None) -> None:
        try:
            self.client.download(archive, fetch.dest)
            if sha256 and _sha256(fetch.dest) != sha256:
                fetch.error = f"checkpoint of {tag} does not match its sha256"
        except ApiRefused as exc:  # gone meanwhile (a newer one came): offered again
            fetch.error = f"checkpoint of {tag}: {exc}"
        except Exception as exc:  # the API away, the disk full: the run waits, tried again
            fetch.error = f"checkpoint of {tag} not downloaded: {exc}"
        with fetch.lock:
            if fetch.error is not None or fetch.dropped:
                fetch.dest.unlink(missing_ok=True)
            fetch.done.set()

    def _drop(self, fetch: Fetch) -> None:
        with fetch.lock:
            fetch.dropped = True
            if fetch.done.is_set():
                fetch.dest.unlink(missing_ok=True)

    def track(self, request: LaunchRequest, job_dir: Path) -> None:
        """Send the run's checkpoint folder from now on (`job_dir`: the run's directory)."""
        job_id = job_id_of(request.run_tag)
        if request.checkpoint is None or job_id is None:
            return
        folder = job_dir / "work" / request.checkpoint.dir
        self.runs[request.run_tag] = Outgoing(job_id, request.run, folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        note = {"job_id": job_id, "run": request.run, "folder": str(folder)}
        tmp = self.dir / f"{request.run_tag}.json.tmp"
        tmp.write_text(json.dumps(note))
        os.replace(tmp, self.dir / f"{request.run_tag}.json")
        archive = request.checkpoint.archive
        if archive and Path(archive).parent == self.dir:
            Path(archive).unlink(missing_ok=True)  # unpacked into the run by now

    def adopt(self, run_tag: str) -> None:
        """After a restart: go on sending for a run tracked before it."""
        try:
            note = json.loads((self.dir / f"{run_tag}.json").read_text())
            self.runs[run_tag] = Outgoing(
                int(note["job_id"]), int(note["run"]), Path(note["folder"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            return

    def forget(self, run_tag: str) -> None:
        gone = self.runs.pop(run_tag, None)
        if gone is not None and gone.sending is not None:
            gone.sending.path.unlink(missing_ok=True)
        (self.dir / f"{run_tag}.json").unlink(missing_ok=True)

    # --- while it runs, and once it ended -----------------------------------------------

    def send(self, finished: set[str]) -> set[str]:
        """Send each tracked run's folder that changed since its last send (the runs in
        `finished`: all of it; the others within the round's budget). The finished runs
        whose last folder did not reach the server (the API away or failing): their end
        is reported at a later round, once it did (or after GIVE_UP rounds of trying)."""
        budget = ROUND
        held_back: set[str] = set()
        for tag, out in self.runs.items():
            if out.refused:
                continue
            last = tag in finished
            try:
                budget = self._send(out, budget if not last else None) or 0
                out.failures = 0
            except ApiUnavailable as exc:
                log.warning("checkpoint of %s not sent: %s", tag, exc)
                out.failures += 1
                if last and out.failures < GIVE_UP:
                    held_back.add(tag)
                elif last:
                    log.warning("checkpoint of %s given up after %d rounds", tag, GIVE_UP)
                    out.refused = True
                budget = 0  # the rest at a later round
            except ApiRefused as exc:
                log.warning("checkpoint of %s refused: %s", tag, exc)
                out.refused = True
                if out.sending is not None:
                    out.sending.path.unlink(missing_ok=True)
                out.sending = None
        return held_back

    def pending(self, run_tag: str) -> bool:
        """Whether the run's folder still has to reach the server."""
        out = self.runs.get(run_tag)
        if out is None or out.refused:
            return False
        return out.sending is not None or _signature(out.folder) not in (None, out.sent)

    def _send(self, out: Outgoing, budget: int | None) -> int | None:
        """Send what changed; the budget left (None: unlimited)."""
        if out.sending is None:
            now = _signature(out.folder)
            if now is None or now == out.sent:
                return budget
            out.sending = self._pack(out, now)
        sending = out.sending
        with sending.path.open("rb") as handle:
            handle.seek(sending.offset)
            while sending.offset < sending.size and (budget is None or budget > 0):
                data = handle.read(PART)
                try:
                    received, stored = self.client.send_checkpoint(
                        out.job_id,
                        out.run,
                        offset=sending.offset,
                        size=sending.size,
                        sha256=sending.sha256,
                        data=data,
                    )
                except ApiRefused:
                    if sending.offset == 0:
                        raise
                    sending.offset = 0  # the server lost the part: from the start, once
                    handle.seek(0)
                    continue
                sending.offset = received
                handle.seek(received)
                if budget is not None:
                    budget -= len(data)
                if stored:
                    break
        if sending.offset >= sending.size:
            out.sent = sending.signature
            sending.path.unlink(missing_ok=True)
            out.sending = None
        return budget

    def _pack(self, out: Outgoing, signature: Signature) -> Sending:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"fab-{out.job_id}.{out.run}.out.tar"
        with tarfile.open(path, "w") as tar:
            for entry in sorted(out.folder.rglob("*")):
                try:
                    tar.add(entry, arcname=str(entry.relative_to(out.folder)), recursive=False)
                except OSError:  # removed meanwhile (the job replaced it): the next send has it
                    continue
        return Sending(path, _sha256(path), path.stat().st_size, signature)


def _signature(folder: Path) -> Signature | None:
    """The folder's newest mtime, file count and bytes (None: no files in it)."""
    newest = files = size = 0
    try:
        for root, _, names in os.walk(folder):
            for name in names:
                try:
                    stat = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                newest = max(newest, stat.st_mtime_ns)
                files += 1
                size += stat.st_size
    except OSError:
        return None
    return (newest, files, size) if files else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
