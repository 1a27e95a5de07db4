"""Is federated placement fair to large jobs? Federated against naive and pooled.

Replays Philly (../shared/data/traces/philly.csv; Microsoft Research, CC-BY 4.0; Jeon et
al., USENIX ATC 2019; as processed by the Pollux artifact) and the synthetic LLM-era trace
of bench/llm_trace.py (seed 2026) at peak-week loads 0.9, 1.0 and 1.2 under `naive` (each
job sent on arrival to the least-loaded factory that fits), `federated` (one reservation per
factory), `federated-single` (one reservation for the federation, the core before) and
`pooled` (8-GPU nodes packed, the engine's default), and prints a Markdown table: mean
and p95 wait overall and for jobs above 8 GPUs, the mean wait of the jobs that fit at least
two factories, and whether federated meets the bar (mean below naive's and pooled's; mean
and p95 above 8 GPUs no worse than naive's).

    uv run python bench/federated_fairness.py [--loads 0.9,1.0,1.2] [--skip-philly]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llm_trace

from fabbrica.sim.engine import simulate
from fabbrica.sim.federation import offered_load, sized_for_load
from fabbrica.sim.metrics import summarise
from fabbrica.sim.study import PHILLY_ATTRIBUTION
from fabbrica.sim.trace import Trace, load

PHILLY = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "philly.csv"
POLICIES = ("naive", "federated", "federated-single", "pooled")


def llm() -> Trace:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llm-era.csv"
        out = io.StringIO()
        llm_trace.write(out)
        path.write_text(out.getvalue(), encoding="utf-8")
        return load(path)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", default="0.9,1.0,1.2")
    parser.add_argument("--skip-philly", action="store_true")
    args = parser.parse_args()
    loads = [float(x) for x in args.loads.split(",")]
    traces = [("LLM-era (seed 2026)", llm())]
    if not args.skip_philly:
        traces.insert(0, ("Philly", load(PHILLY)))
    print(
        "| trace | load | GPUs | policy | mean wait (min) | p95 wait (min) "
        "| >8 GPUs mean (min) | >8 GPUs p95 (min) | mean, jobs fitting 2+ factories (min) "
        "| wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for name, trace in traces:
        for value in loads:
            federation = sized_for_load(trace.jobs, value)
            offered = offered_load(trace.jobs, federation.gpus)
            # jobs larger than the second-largest factory fit only one: there a federation
            # cannot do what a pool of all the GPUs does (run two of them side by side)
            second = sorted((s.gpus for s in federation.sites), reverse=True)[1:2] or [0]
            spread = [i for i, j in enumerate(trace.jobs) if j.gpus <= second[0]]
            found = {}
            for policy in POLICIES:
                run = simulate(trace.jobs, federation, policy)
                summary = summarise(trace.jobs, run)
                found[policy] = summary
                big = summary.by_size[">8"]
                waits = [run.starts[i] - trace.jobs[i].submit for i in spread]
                print(
                    f"| {name} | {offered:.2f} | {federation.gpus:,} | {policy} "
                    f"| {minutes(summary.overall.mean_wait)} "
                    f"| {minutes(summary.overall.p95_wait)} | {minutes(big.mean_wait)} "
                    f"| {minutes(big.p95_wait)} | {minutes(sum(waits) / len(waits))} "
                    f"| {run.wall_seconds:.0f} |",
                    flush=True,
                )
            fed, naive, pooled = found["federated"], found["naive"], found["pooled"]
            checks = {
                "mean < naive": fed.overall.mean_wait < naive.overall.mean_wait,
                "mean < pooled": fed.overall.mean_wait < pooled.overall.mean_wait,
                ">8 mean <= naive": fed.by_size[">8"].mean_wait <= naive.by_size[">8"].mean_wait,
                ">8 p95 <= naive": fed.by_size[">8"].p95_wait <= naive.by_size[">8"].p95_wait,
            }
            failed = [k for k, ok in checks.items() if not ok]
            verdicts.append(
                f"{name} at {value}: "
                + ("all met" if not failed else "NOT met: " + ", ".join(failed))
            )
    print()
    for line in verdicts:
        print(f"- {line}")
    if not args.skip_philly:
        print()
        print(PHILLY_ATTRIBUTION)


if __name__ == "__main__":
    main()
