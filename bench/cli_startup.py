"""How long the `fabbrica` command takes as a process: `fabbrica --help`, and `fabbrica run`
of a small workdir against a running server (`fabbrica up`, SQLite), medians of N.

`fabbrica run` here packs and uploads a workdir of three small files with a spec that
names the project; the time is the whole process, from exec to exit (Python's start, the
imports, the upload, the answer). `python -X importtime -m fabbrica run --help` shows
where the import time goes.

    uv run --frozen python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_submit import Server, setup  # the bench's own harness


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "fabbrica", *argv], env=env, cwd=cwd, capture_output=True
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace"))
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
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
        timed(["--help"], env, work)  # warm the file cache
        helps = [timed(["--help"], env, work) for _ in range(args.runs)]
        runs = [timed(["run", "job.yaml"], env, work) for _ in range(args.runs)]
    finally:
        server.stop()
    for name, values in (("fabbrica --help", helps), ("fabbrica run (small workdir)", runs)):
        print(
            f"{name}: median {statistics.median(values):.3f} s, min {min(values):.3f} s, "
            f"max {max(values):.3f} s ({args.runs} runs)"
        )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the end: {load} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
