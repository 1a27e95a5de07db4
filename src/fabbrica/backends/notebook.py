"""What a notebook job runs: JupyterLab on 127.0.0.1 (or FABBRICA_NOTEBOOK_HOST), watched
until it is idle.

`python -m fabbrica.backends.notebook --idle 3600 --limit 14400 --base-url /notebooks/42/`
is the command of every notebook job (see core.notebooks). It

- picks a free port on 127.0.0.1 (or the address in FABBRICA_NOTEBOOK_HOST, where a
  site agent on another machine than the node reaches it) and a random token (handed to
  Jupyter in its environment, never on a command line other users could read in `ps`);
- starts JupyterLab with that `base_url`, its files rooted in the job's `outputs/` folder
  (the folder Fabbrica keeps as the job's outputs): what the notebook writes is kept;
- once Jupyter answers, writes `notebook.json` (host, port, token, base_url) into
  `.notebook/` in the job's work folder, beside `outputs/` (so never among the outputs),
  mode 0600: the Fabbrica server, or the site agent through its notebook tunnel, reads it
  to proxy the member's traffic. Jupyter's own state (runtime, config, data, IPython) is
  kept there too;
- polls Jupyter's `/api/status` and ends Jupyter (exit 0) once no client is connected, no
  kernel is left (Jupyter culls kernels idle for `--idle` seconds) and nothing happened
  for `--idle` seconds; meanwhile it keeps `status.json` beside `notebook.json`: when the
  notebook would end if left idle (`idle_ends_at`, null while a client is connected), for
  the portal's warning (the time limit's end the server knows from the job);
- gives the kernels an IPython startup file that warns under every cell run in the last
  WARN_S seconds before the time limit (the kernel's stderr, shown under the cell).

Stdlib only: it runs in the job's environment, which has Fabbrica's Python but needs
nothing of Fabbrica's server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONNECTION_FILE = "notebook.json"
CONNECTION_DIR = ".notebook"  # in work/, beside outputs/: never among the outputs
STATUS_FILE = "status.json"
WARN_S = 600  # as core.notebooks.WARN_S (this module imports nothing of Fabbrica's)
POLL_S = 2.0
START_LIMIT_S = 300.0


HOST_ENV = "FABBRICA_NOTEBOOK_HOST"  # the address JupyterLab listens on (default 127.0.0.1)
MAX_CONNECTION_BYTES = 4096


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Connection:
    """Where JupyterLab listens and its token, as the launcher wrote them."""

    host: str
    port: int
    token: str
    owner: int = -1  # the uid that wrote the file: the job's user

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


def read_untrusted_json(job_dir: Path, name: str) -> tuple[object, int]:
    """A file the launcher of the job in `job_dir` wrote into `work/.notebook/`, read as
    untrusted: every folder on the way below `job_dir` and the file itself opened without
    following a link (a job may plant one towards another job's files), a regular file,
    small. (its JSON, its owner's uid); (None, -1) if unfit."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    fds: list[int] = []
    try:
        fds.append(os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY))
        for folder in ("work", CONNECTION_DIR):
            fds.append(os.open(folder, flags | os.O_DIRECTORY, dir_fd=fds[-1]))
        fds.append(os.open(name, flags, dir_fd=fds[-1]))
        info = os.fstat(fds[-1])
        if not stat.S_ISREG(info.st_mode):
            return None, -1
        return json.loads(os.read(fds[-1], MAX_CONNECTION_BYTES)), info.st_uid
    except (OSError, ValueError):
        return None, -1
    finally:
        for fd in fds:
            os.close(fd)


def read_connection(job_dir: Path, base_url: str) -> Connection | None:
    """Where the launcher of the job in `job_dir` says its JupyterLab listens
    (`notebook.json`), checked: it must serve `base_url`, the job's own proxy path; None
    if the file is missing or unfit."""
    data, owner = read_untrusted_json(job_dir, CONNECTION_FILE)
    if not isinstance(data, dict) or data.get("base_url") != base_url:
        return None
    host, port, token = data.get("host", "127.0.0.1"), data.get("port"), data.get("token")
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        return None
    if not isinstance(token, str) or not token.isascii() or not 16 <= len(token) <= 256:
        return None
    if not token.replace("-", "").replace("_", "").isalnum():
        return None
    try:
        address = ipaddress.ip_address(host) if isinstance(host, str) else None
    except ValueError:
        return None
    if address is None or address.is_unspecified or address.is_multicast:
        return None
    return Connection(str(address), port, token, owner)


def _get(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - its own JupyterLab
        return json.loads(response.read())


def idle_end(status: dict[str, Any], idle_s: float) -> dt.datetime | None:
    """When the notebook ends if nothing more happens: `idle_s` after its last activity;
    None while a client is connected (an open notebook never ends idle)."""
    if status.get("connections", 0):
        return None
    last = dt.datetime.fromisoformat(str(status["last_activity"]).replace("Z", "+00:00"))
    return last + dt.timedelta(seconds=idle_s)


def is_idle(status: dict[str, Any], idle_s: float) -> bool:
    """No open client, no kernel left (Jupyter's culler ends idle kernels, never busy
    ones), and no activity for `idle_s` seconds. Only `/api/status` is asked: it is the
    one API call that does not count as activity."""
    end = idle_end(status, idle_s)
    if end is None or status.get("kernels", 0):
        return False
    return dt.datetime.now(dt.UTC) > end


PAGE_CONFIG = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}

# Run by every kernel at its start (IPython's startup folder, in the launcher's IPYTHONDIR).
WARNING_STARTUP = """\
# Fabbrica: a warning under each cell run in the last minutes before the time limit.
import datetime as _dt, os as _os, sys as _sys


def _fabbrica_warn(result=None):
    try:
        end = _dt.datetime.fromisoformat(_os.environ["FABBRICA_NOTEBOOK_ENDS_AT"])
        lead = float(_os.environ.get("FABBRICA_NOTEBOOK_WARN_S", "600"))
    except (KeyError, ValueError):
        return
    left = (end - _dt.datetime.now(_dt.timezone.utc)).total_seconds()
    if left <= lead:
        print(
            f"Fabbrica: this notebook reaches its time limit at {end:%H:%M} UTC"
            f" (in {max(0, int(left // 60))} min) and ends then. Save your work:"
            " what is saved in this folder is kept as the job's outputs.",
            file=_sys.stderr,
        )


get_ipython().events.register("post_run_cell", _fabbrica_warn)  # noqa: F821
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fabbrica-notebook")
    parser.add_argument("--idle", type=float, required=True)
    parser.add_argument("--limit", type=float, default=None, help="the time limit, seconds")
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args(argv)
    # An isolated job may not reach its directory's path from / (backends.local): every
    # path given to Jupyter goes through this process's own working directory (work/).
    work = Path(f"/proc/{os.getpid()}/cwd")
    root = work / "outputs"
    Path("outputs").mkdir(exist_ok=True)
    Path(CONNECTION_DIR).mkdir(mode=0o700, exist_ok=True)
    host = os.environ.get(HOST_ENV) or "127.0.0.1"
    port, token = free_port(host), secrets.token_urlsafe(32)
    state = work / CONNECTION_DIR
    limit_end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.limit) if args.limit else None
    startup = Path(CONNECTION_DIR, "ipython", "profile_default", "startup")
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-fabbrica-warning.py").write_text(WARNING_STARTUP)
    labconfig = Path(CONNECTION_DIR, "jupyter-config", "labconfig")
    labconfig.mkdir(parents=True, exist_ok=True)  # no prompt for Jupyter's news over the work
    (labconfig / "page_config.json").write_text(json.dumps(PAGE_CONFIG))
    env = {**os.environ, "JUPYTER_TOKEN": token, "FABBRICA_NOTEBOOK_WARN_S": str(WARN_S)}
    if limit_end is not None:
        env["FABBRICA_NOTEBOOK_ENDS_AT"] = limit_end.isoformat(timespec="seconds")
    env.update(
        JUPYTER_RUNTIME_DIR=str(state / "jupyter-runtime"),
        JUPYTER_CONFIG_DIR=str(state / "jupyter-config"),
        JUPYTER_DATA_DIR=str(state / "jupyter-data"),
        IPYTHONDIR=str(state / "ipython"),
    )
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        f"--ServerApp.ip={host}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={args.base_url}", f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_remote_access=True",  # the proxy's Host header is Fabbrica's
        "--ServerApp.trust_xheaders=True",
        "--ServerApp.disable_check_xsrf=False",
        f"--ServerApp.shutdown_no_activity_timeout={int(args.idle)}",
        f"--MappingKernelManager.cull_idle_timeout={int(args.idle)}",
        "--MappingKernelManager.cull_interval=10",
        "--MappingKernelManager.cull_connected=False",
        # no calls out from the factory's node (news, updates)
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if os.geteuid() == 0:  # a server that does not isolate its jobs, run as root
        command.append("--ServerApp.allow_root=True")
    jupyter = subprocess.Popen(command, env=env, cwd="outputs")  # noqa: S603
    signal.signal(signal.SIGTERM, lambda *_: jupyter.terminate())
    base = f"http://{netloc(host, port)}{args.base_url}"
    started, written = time.monotonic(), False
    while jupyter.poll() is None:
        time.sleep(POLL_S if written else 0.3)
        try:
            status = _get(f"{base}api/status", token)
        except (OSError, ValueError):
            if not written and time.monotonic() - started > START_LIMIT_S:
                print("JupyterLab did not answer; stopping it", flush=True)
                jupyter.terminate()
            continue
        _write_status(idle_end(status, args.idle))
        if not written:
            _write_connection(host, port, token, args.base_url)
            written = True
            print(f"JupyterLab is ready (ends after {int(args.idle)} s idle)", flush=True)
        elif is_idle(status, args.idle):
            print(f"no activity for {int(args.idle)} s: stopping JupyterLab", flush=True)
            jupyter.terminate()
            break
    try:
        jupyter.wait(timeout=30)
    except subprocess.TimeoutExpired:
        jupyter.kill()
    return 0


def netloc(host: str, port: int) -> str:
    """host:port for a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write_connection(host: str, port: int, token: str, base_url: str) -> None:
    _write(CONNECTION_FILE, {"host": host, "port": port, "token": token, "base_url": base_url})


def _write_status(idle_ends: dt.datetime | None) -> None:
    at = idle_ends.isoformat(timespec="seconds") if idle_ends is not None else None
    _write(STATUS_FILE, {"idle_ends_at": at})


def _write(name: str, data: dict[str, Any]) -> None:
    folder = Path(CONNECTION_DIR)
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    os.replace(tmp, folder / name)


if __name__ == "__main__":
    sys.exit(main())
