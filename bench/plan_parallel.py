"""`fabbrica plan` with 1 and with N worker processes on the same question: wall time
(medians) and whether the answer is the same.

The question: the synthetic LLM-era trace (bench/llm_trace.py, seed 2026; by default 3,000
jobs over 7 days), demand x1.5, on the default federation sized for load 1.0 of the
original demand; where to add GPUs (the three largest factories, or a new gb300 factory in
DE) so that the mean wait under `federated` is at most one minute.

    uv run python bench/plan_parallel.py [--workers 2] [--repeats 3] [--jobs 3000] [--days 7]
        [--own-sessions]

On a machine other sessions load, Linux's autogroup scheduling gives the processes of one
session one session's share of CPU: `--own-sessions` runs every simulation (one worker
too) in a worker process of its own session, as a machine of its own would. Results in
docs/simulator.md (Capacity planning).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llm_trace

from fabbrica.sim import federation as fed
from fabbrica.sim.parallel import Pool, evaluate, install, runner
from fabbrica.sim.plan import Candidate, Plan, Target, grown, plan
from fabbrica.sim.trace import TraceJob, load

GROWTH = 1.5


def question(
    jobs_count: int, days: int
) -> tuple[tuple[TraceJob, ...], fed.Federation, list[Candidate]]:
    text = io.StringIO()
    llm_trace.write(text, jobs=jobs_count, days=days)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "llm.csv"
        path.write_text(text.getvalue(), encoding="utf-8")
        trace = load(path)
    base = fed.sized_for_load(trace.jobs, 1.0)
    largest = sorted(base.sites, key=lambda s: -s.gpus)[:3]
    candidates = [Candidate(s.id, "h100", 8) for s in largest]
    candidates.append(Candidate("giga-de", "gb300", 4, "DE"))
    return grown(trace.jobs, GROWTH), base, candidates


def answer(found: Plan) -> list[tuple[str, int | None]]:
    return [(a.candidate.factory, a.probe.amount if a.probe else None) for a in found.answers]


def _own_session(jobs: tuple[TraceJob, ...]) -> None:
    os.setsid()  # a session, so a scheduling group, of its own (see --own-sessions)
    install(jobs)


@contextmanager
def pool_for(jobs: tuple[TraceJob, ...], workers: int, own_sessions: bool) -> Iterator[Pool]:
    """As `fabbrica plan --workers N` runs (1: in this process), or with every worker, one
    or N, a process in a session of its own."""
    if not own_sessions:
        with runner(jobs, workers=workers) as pool:
            yield pool
        return
    with ProcessPoolExecutor(workers, initializer=_own_session, initargs=(jobs,)) as executor:
        yield Pool(lambda task: executor.submit(evaluate, task))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument(
        "--own-sessions",
        action="store_true",
        help="run every simulation (1 worker too) in a worker process of its own session: "
        "with the kernel's autogroup scheduling, the processes of one session share one "
        "session's CPU when others load the machine",
    )
    args = parser.parse_args()
    jobs, base, candidates = question(args.jobs, args.days)
    times: dict[int, list[float]] = {1: [], args.workers: []}
    answers: dict[int, list[tuple[str, int | None]]] = {}
    steps = 0
    loads = []
    for _ in range(args.repeats):
        for workers in times:
            began = time.perf_counter()
            with pool_for(jobs, workers, args.own_sessions) as pool:
                found = plan(
                    jobs,
                    pool,
                    target=Target("mean_wait", 60.0),
                    policy="federated",
                    candidates=candidates,
                    base=base,
                    growth=GROWTH,
                )
            times[workers].append(time.perf_counter() - began)
            loads.append(os.getloadavg()[0])
            answers.setdefault(workers, answer(found))
            assert answers[workers] == answer(found), "an answer changed between repeats"
            steps = len(found.probes)
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    print(f"jobs replayed: {len(jobs):,}; federation: {base.gpus:,} GPUs; {steps} simulations")
    print(f"answer (GPUs to add per candidate): {answers[1]}")
    mode = "own sessions" if args.own_sessions else "as the CLI runs"
    print(f"{mode}; load average after each run: {[round(x, 1) for x in loads]}")
    print(f"1 worker: median {one:.1f} s of {[round(t, 1) for t in times[1]]}")
    print(
        f"{args.workers} workers: median {many:.1f} s of "
        f"{[round(t, 1) for t in times[args.workers]]}"
    )
    print(f"ratio {many / one:.2f}; same answer: {answers[1] == answers[args.workers]}")


if __name__ == "__main__":
    main()
