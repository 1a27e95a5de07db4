"""OS isolation of local jobs: one unprivileged system user per Fabbrica user.

When `fabbrica up` runs as root, every job of the `local` factory (and of the emulated
factories) runs as the system user `fab-u<Fabbrica user id>` (`fab-u7` for user 7), made on
first use with `useradd --system` (its own group, no home, no login shell), started with
that uid and gid and no supplementary groups. Its job directory is the only place on the
data directory it can reach. Without root there is nothing to switch to: `unavailable()`
says why, and the server then lets one user only run jobs there (see services.single_user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

USER_PREFIX = "fab-u"
ATTEMPTS = 5  # useradd tries before a job fails to start
NOBODY = 65534  # the probe's uid and gid when no job user exists yet
_made = threading.Lock()  # useradd, one at a time (several executors share this process)


@dataclass(frozen=True, slots=True)
class JobUser:
    name: str
    uid: int
    gid: int


def user_name(owner: int) -> str:
    """The system user that runs the jobs of Fabbrica user `owner`."""
    if owner < 1:
        raise ValueError(f"no Fabbrica user {owner}")
    return f"{USER_PREFIX}{owner}"


def unavailable() -> str | None:
    """Why jobs cannot run as separate users here (None: they can)."""
    if os.geteuid() != 0:
        try:
            name = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            name = "?"
        return f"it runs as {name} (uid {os.geteuid()}), not as root"
    if shutil.which("useradd") is None:
        return "useradd is missing (install the passwd package)"
    return None


def ensure_user(owner: int) -> JobUser:
    """The job user of `owner`, made now if it does not exist yet."""
    name = user_name(owner)
    with _made:
        why = ""
        for attempt in range(ATTEMPTS):  # another process may hold /etc/passwd's lock
            try:
                entry = pwd.getpwnam(name)
                break
            except KeyError:
                pass
            if attempt:
                time.sleep(0.2 * attempt)
            why = _useradd(owner, name)
        else:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise OSError(f"could not make the job user {name}: {why}") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise OSError(f"{name} is root or in group root: jobs never run as it")
    return JobUser(name, entry.pw_uid, entry.pw_gid)


def _useradd(owner: int, name: str) -> str:
    """Make the system user `name`; what useradd said on failure."""
    shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    made = subprocess.run(  # noqa: S603 - fixed arguments
        [
            shutil.which("useradd") or "/usr/sbin/useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            shell,
            "--comment",
            f"Fabbrica jobs of user {owner}",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return made.stderr.strip()


def chown_tree(top: Path, user: JobUser) -> None:
    """Give `top` and everything under it to `user` (symlinks themselves, never their
    targets)."""
    os.lchown(top, user.uid, user.gid)
    for folder, dirs, files in os.walk(top, followlinks=False):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), user.uid, user.gid)


def python_problem(uid: int = NOBODY, gid: int = NOBODY) -> str | None:
    """Why an unprivileged user cannot run this Python (None: it can), with what to do.

    Local jobs find Fabbrica's own Python first on their PATH (`python train.py` then has
    what Fabbrica was installed with); a job user must be able to reach it."""
    try:
        ran = subprocess.run(
            [sys.executable, "-I", "-S", "-c", ""],  # the interpreter and its stdlib
            user=uid,
            group=gid,
            extra_groups=[],
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if ran.returncode == 0:
            return None
        error = (ran.stderr.strip().splitlines() or [f"exit code {ran.returncode}"])[-1]
    except (OSError, subprocess.SubprocessError) as exc:
        error = str(exc)
    closed = closed_dirs([Path(sys.executable).parent, Path(os.path.realpath(sys.executable))])
    fix = (
        f"let others traverse {' and '.join(closed)} (chmod o+x {' '.join(closed)})"
        if closed
        else "make it and its libraries readable by others"
    )
    return (
        f"job users cannot run {sys.executable} ({error}), so `python` in local jobs is the "
        f"system's: to give jobs Fabbrica's Python, {fix}, or install Fabbrica where "
        "everyone can read it (e.g. /opt)"
    )


def reach_problem(path: Path) -> str | None:
    """Why job users cannot reach `path` by its name from / (None: they can)."""
    closed = closed_dirs([path])
    if not closed:
        return None
    return (
        f"job users cannot pass through {' and '.join(closed)} to reach {path}, so a job "
        "that opens its own files by absolute path fails (`python train.py` does): let "
        f"others traverse them (chmod o+x {' '.join(closed)}) or move the data directory "
        "(FABBRICA_DATA_DIR=/var/lib/fabbrica)"
    )


def closed_dirs(paths: list[Path]) -> list[str]:
    """Directories on the way to `paths` that others may not traverse."""
    closed: list[str] = []
    for path in paths:
        for folder in reversed(path.absolute().parents):
            try:
                mode = folder.stat().st_mode
            except OSError:
                continue
            if not mode & 0o001 and str(folder) not in closed:
                closed.append(str(folder))
    return closed
