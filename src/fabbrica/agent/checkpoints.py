"""Checkpoints that follow a job across sites, the agent's side.

Before a run of a job that checkpoints starts, the agent downloads the folder the job's
last run sent to the server (from this site or another), checks its SHA-256, and the
executor unpacks it into the run's `$FABBRICA_CHECKPOINT_DIR`. While the run goes on, each
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
from dataclasses import dataclass, replace
from pathlib import Path

from fabbrica.core.agent_api import AgentApi, ApiRefused, ApiUnavailable
from fabbrica.core.executor import LaunchRequest
from fabbrica.core.jobs import job_id_of

log = logging.getLogger("fabbrica.agent")
PART = 512 * 1024  # bytes of a checkpoint per request (under the server's body limit)
ROUND = 256 * 1024 * 1024  # bytes of checkpoints sent per round at most, for running runs
GIVE_UP = 30  # rounds a finished run's end waits for its last checkpoint to be sent

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


class Checkpoints:
    def __init__(self, client: AgentApi, work_dir: Path) -> None:
        self.client = client
        self.dir = work_dir / "checkpoints"
        self.runs: dict[str, Outgoing] = {}

    # --- before a run starts -------------------------------------------------------------

    def fetch(self, request: LaunchRequest) -> LaunchRequest:
        """The request with its checkpoint archive downloaded here and checked (unchanged
        when the job has none on the server). ApiUnavailable when it could not be had:
        the run is launched at a later round."""
        wanted = request.checkpoint
        if wanted is None or not wanted.archive:
            return request
        dest = self.dir / f"{request.run_tag}.{request.run}.tar"
        try:
            self.client.download(wanted.archive, dest)
        except ApiRefused as exc:  # gone meanwhile (a newer one came): offered again
            raise ApiUnavailable(f"checkpoint of {request.run_tag}: {exc}") from exc
        if wanted.sha256 and _sha256(dest) != wanted.sha256:
            dest.unlink(missing_ok=True)
            raise ApiUnavailable(f"checkpoint of {request.run_tag} does not match its sha256")
        return replace(request, checkpoint=replace(wanted, archive=str(dest)))

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
