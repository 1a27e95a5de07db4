"""`fabbrica plan --plot`: the measure against the GPUs added, one curve per candidate."""

from __future__ import annotations

from pathlib import Path

from fabbrica.sim.plan import UTILISATION, Plan
from fabbrica.sim.plot import PlotUnavailable


def draw(found: Plan, path: Path, note: str | None) -> None:
    """Every simulation of the search: GPUs added (or the federation's GPUs) against the
    target's measure, the target as a line, each candidate's answer circled."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib: install the extra, e.g. pip install 'fabbrica[plot]'"
        ) from exc
    target = found.target
    scale = 1.0 if target.metric == UTILISATION else 1 / 3600.0
    figure, ax = plt.subplots(figsize=(7.5, 4.8))
    for answer in found.answers:
        points = sorted(
            (p.amount, target.value(p.summary) * scale)
            for p in found.probes
            if p.candidate == answer.candidate
        )
        if found.base is not None:
            points.insert(0, (0, target.value(found.base.summary) * scale))
        if not points:
            continue
        line = ax.plot([x for x, _ in points], [y for _, y in points], marker=".")
        label = answer.candidate.label
        if answer.probe is not None:
            ax.scatter(
                [answer.probe.amount],
                [target.value(answer.probe.summary) * scale],
                s=90,
                facecolors="none",
                edgecolors=line[0].get_color(),
            )
            label += f": {answer.probe.amount:,}"
        line[0].set_label(label)
    ax.axhline(target.limit * scale, color="black", linestyle="--", label="target")
    if target.metric == UTILISATION and target.floor:
        ax.axhline(target.floor, color="grey", linestyle=":", label="band's bottom")
    whole = any(not a.candidate.factory for a in found.answers)
    ax.set_xlabel("GPUs in the federation" if whole else "GPUs added")
    ax.set_ylabel("GPU utilisation" if target.metric == UTILISATION else f"{target.metric} (hours)")
    ax.set_title(
        f"{found.policy}, demand x{found.growth:g}: fewest GPUs meeting the target", fontsize=10
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        figure.text(0.01, 0.005, note, fontsize=6, wrap=True)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
