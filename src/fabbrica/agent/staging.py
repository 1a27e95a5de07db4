"""A job's data sets staged in a background thread, so that the agent keeps syncing while a
large version is fetched: meanwhile the agent reports the job as a run still pending, with
its progress as the reason; the loop launches it at the first round after it is done.

Nothing is kept on disk about a staging: when the agent restarts mid-way, the API offers
the job again and it is staged again (the files already in the cache are not fetched)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from fabbrica.agent.data_cache import DataCache, StagingError
from fabbrica.core.agent_api import ApiRefused, ApiUnavailable
from fabbrica.core.executor import DataMount, LaunchRequest, RunState, RunStatus


class Staging:
    """One job's staging: started at once, read by the loop (`status`, `done`)."""

    def __init__(self, request: LaunchRequest, cache: DataCache, into: Path, factory: str) -> None:
        self.request = request
        self.into = into
        self.factory = factory
        self.reason = f"staging data at {factory}"
        self.error: str | None = None  # why it failed (the job fails with it)
        self.unavailable = False  # the API was away: offered again, staged again
        files = [url for m in request.datasets for _, url in m.files]
        self.shas = frozenset(url.rsplit("/", 1)[-1] for url in files)
        self._cache = cache
        self._thread = threading.Thread(target=self._run, name=f"stage-{request.run_tag}")
        self._thread.daemon = True  # a restart stages again: nothing to finish
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, seconds: float) -> None:
        self._thread.join(seconds)

    def status(self) -> RunStatus:
        """The job as the agent reports it meanwhile: pending, saying how far it got."""
        return RunStatus(self.request.run_tag, RunState.PENDING, reason=self.reason)

    def staged(self) -> LaunchRequest:
        """The request to launch once done: its data sets as the files staged for it
        (`$FABBRICA_DATA`: Slurm's batch script exports it; as local files, for an
        executor that places them in the run's own directory: an isolated run's user
        cannot enter the agent's directory)."""
        mounts = tuple(
            DataMount(m.name, tuple((p, str(self.into / m.name / p)) for p, _ in m.files))
            for m in self.request.datasets
        )
        return replace(self.request, datasets=mounts, data_dir=str(self.into))

    def _progress(self, mount: DataMount, files: int, done: int) -> None:
        self.reason = (
            f"staging data set {mount.version or mount.name} at {self.factory}: "
            f"{files} of {len(mount.files)} files, {_amount(done, mount.size)}"
        )

    def _run(self) -> None:
        try:
            self._cache.stage(self.request.datasets, self.into, self._progress)
        except ApiUnavailable:
            self.unavailable = True
        except (ApiRefused, StagingError, OSError) as exc:
            self.error = f"data staging failed: {exc}"
        except Exception as exc:  # never silently: the job fails saying why
            self.error = f"data staging failed: {exc!r}"


def _amount(done: int, total: int) -> str:
    """`120 of 200 MiB`: in the largest unit the total reaches."""
    unit, size = "bytes", 1
    for name, bytes_ in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if total >= bytes_:
            unit, size = name, bytes_
            break
    return f"{_number(done / size)} of {_number(total / size)} {unit}"


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")
