"""Wait-time CDFs per policy, drawn with matplotlib (the optional `plot` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fabbrica.sim.study import Point
from fabbrica.sim.trace import TraceJob


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def wait_cdfs(
    jobs: Sequence[TraceJob], points: Sequence[Point], path: Path, note: str | None
) -> None:
    """One panel per load; one curve per policy: the share of jobs that waited at most t."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib: install the extra, e.g. pip install 'fabbrica[plot]'"
        ) from exc
    figure, axes = plt.subplots(
        1, len(points), figsize=(6 * len(points), 4.5), squeeze=False, sharey=True
    )
    for ax, point in zip(axes[0], points, strict=True):
        for name, result in point.results.items():
            waits = sorted(
                max(start - job.submit, 0.0)
                for start, job in zip(result.run.starts, jobs, strict=True)
            )
            share = [(i + 1) / len(waits) for i in range(len(waits))]
            ax.step([w / 3600.0 + 1e-3 for w in waits], share, where="post", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("wait (hours, log scale; no wait is drawn at 0.001)")
        ax.set_title(
            f"{point.federation.gpus:,} GPUs, offered load {point.offered_load:.2f}", fontsize=10
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    axes[0][0].set_ylabel("share of jobs")
    if note:
        figure.text(0.01, 0.005, note, fontsize=6, wrap=True)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
