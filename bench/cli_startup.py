"""How long the `fabbrica` command takes as a process: `fabbrica --help`, and `fabbrica run`
of a small workdir against a running server (`fabbrica up`, SQLite), medians of N; beside
them the floor, Python itself (`python -c pass`, `python -S -c pass`), and the quick
path's imports alone.

`fabbrica run` here packs and uploads a workdir of three small files with a spec that
names the project; the time is the whole process, from exec to exit (Python's start, the
imports, the upload, the answer). It is measured as `fabbrica` runs it (the quick path,
fabbrica.cli.quick_run, the standard library alone) and through the Typer app (the full
path, which every other command and flag takes, and which `run` took before); into pipes,
and on a terminal (a pty: keys in bold, the full path's progress bar).

Each row is measured without a bytecode cache (as with PYTHONDONTWRITEBYTECODE=1, which
some environments set: every module outside the standard library is compiled at each
start) and with one (an installed package after its first start: here in a temporary
PYTHONPYCACHEPREFIX, warmed once, so that nothing is written next to the sources).
`python -X importtime -m fabbrica run --help` shows where the import time goes.

    uv run --frozen python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_submit import Server, setup  # the bench's own harness

FULL = "import sys\nfrom fabbrica.cli.app import run\nrun(sys.argv[1:])\n"
TTY = "(on a terminal)"
# what the quick path imports, without reading, packing or sending anything
QUICK_IMPORTS = (
    "import fabbrica.cli.main, fabbrica.cli.quick_run, fabbrica.cli.quick_http, "
    "fabbrica.cli.formats"
)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """The process's time, its output into pipes; `TTY` first in `argv`: on a terminal."""
    if argv[0] == TTY:
        return timed_on_a_terminal(argv[1:], env, cwd)
    began = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, *argv], env=env, cwd=cwd, capture_output=True
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace"))
    return took


def timed_on_a_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    began = time.perf_counter()
    leader, follower = pty.openpty()
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, *argv], env=env | {"TERM": "xterm-256color"}, cwd=cwd,
        stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    written = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    code = process.wait()
    took = time.perf_counter() - began
    if code != 0:
        raise RuntimeError(written.decode(errors="replace"))
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = {
        "python -c pass": ["-c", "pass"],
        "python -S -c pass": ["-S", "-c", "pass"],
        "the quick run's imports alone": ["-c", QUICK_IMPORTS],
        "fabbrica --help": ["-m", "fabbrica", "--help"],
        "fabbrica run (small workdir)": ["-m", "fabbrica", "run", "job.yaml"],
        "fabbrica run, full Typer path": ["-c", FULL, "run", "job.yaml"],
        "fabbrica run, on a terminal": [TTY, "-m", "fabbrica", "run", "job.yaml"],
        "fabbrica run, full Typer path, on a terminal": [TTY, "-c", FULL, "run", "job.yaml"],
    }
    results: dict[tuple[str, str], list[float]] = {}
    server = Server(None)
    try:
        headers, project = setup(server.url)
        work = Path(tempfile.mkdtemp(prefix="fabbrica-cli-bench-"))
        (work / "train.py").write_text("print('hello')\n")
        (work / "data.csv").write_text("a,b\n1,2\n" * 100)
        (work / "README.md").write_text("a small workdir\n")
        (work / "job.yaml").write_text(
            f"name: cli-bench\nproject: {project}\nrun: python train.py\n"
            "resources:\n  time_limit: 1m\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABBRICA_")}
        env.update(
            FABBRICA_URL=server.url.removesuffix("/api/v1"),
            FABBRICA_TOKEN=headers["Authorization"].removeprefix("Bearer "),
            HOME=str(work),
        )
        cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="fabbrica-cli-pycache-")
        no_cache = env | {"PYTHONDONTWRITEBYTECODE": "1"}
        modes = {"no bytecode cache": no_cache, "bytecode cached": cached}
        for mode_env in modes.values():
            for argv in rows.values():
                timed(argv, mode_env, work)  # warm the file cache (and the bytecode cache)
        for _ in range(args.runs):  # interleaved: a change in the machine's load hits all
            for mode, mode_env in modes.items():
                for name, argv in rows.items():
                    results.setdefault((name, mode), []).append(timed(argv, mode_env, work))
    finally:
        server.stop()
    print(f"| process ({args.runs} runs each) | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for name in rows:
        cells = []
        for mode in modes:
            values = results[(name, mode)]
            cells.append(f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("median (min-max)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the end: {load} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
