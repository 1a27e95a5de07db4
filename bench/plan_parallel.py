"""`fabbrica plan` with 1 and with N worker processes on the same question: wall time
(medians) and whether the answer is the same.

The question: the synthetic LLM-era trace (bench/llm_trace.py, seed 2026; by default 4,000
jobs over 7 days), demand x1.5, on the default federation sized for load 1.0 of the
original demand; where to add GPUs (the three largest factories, or a new gb300 factory in
DE) so that the mean wait under `federated` is at most one minute.

    uv run python bench/plan_parallel.py [--workers 2] [--repeats 3] [--jobs 3000] [--days 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llm_trace

from fabbrica.sim import federation as fed
from fabbrica.sim.parallel import runner
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    jobs, base, candidates = question(args.jobs, args.days)
    times: dict[int, list[float]] = {1: [], args.workers: []}
    answers: dict[int, list[tuple[str, int | None]]] = {}
    steps = 0
    for _ in range(args.repeats):
        for workers in times:
            began = time.perf_counter()
            with runner(jobs, workers=workers) as pool:
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
            answers.setdefault(workers, answer(found))
            assert answers[workers] == answer(found), "an answer changed between repeats"
            steps = len(found.probes)
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    print(f"jobs replayed: {len(jobs):,}; federation: {base.gpus:,} GPUs; {steps} simulations")
    print(f"answer (GPUs to add per candidate): {answers[1]}")
    print(f"1 worker: median {one:.1f} s of {[round(t, 1) for t in times[1]]}")
    print(
        f"{args.workers} workers: median {many:.1f} s of "
        f"{[round(t, 1) for t in times[args.workers]]}"
    )
    print(f"ratio {many / one:.2f}; same answer: {answers[1] == answers[args.workers]}")


if __name__ == "__main__":
    main()
