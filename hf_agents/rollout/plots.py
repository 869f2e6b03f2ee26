"""Figures of any game's evaluation: the distribution over outcomes (the paper's Figures 3-5 for JumpPads).
A game's own figures (JumpPads: heatmap, trajectories) live beside the game."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hf_agents.data.schema import NO_OUTCOME  # noqa: E402
from hf_agents.files import atomic_path  # noqa: E402

NO_OUTCOME_COLOUR = "#7f7f7f"


def save_figure(fig, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(out) as tmp:  # same suffix: matplotlib picks the format from it
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out


def _outcomes(runs: dict[str, dict]) -> list[str]:
    """Every outcome of the runs in their order, "none" last."""
    names = dict.fromkeys(o for s in runs.values() for o in s["distribution"] if o != NO_OUTCOME)
    return [*names, NO_OUTCOME]


def plot_distribution(runs: dict[str, dict], out, title="Outcomes", colours: dict | None = None) -> Path:
    """Grouped bars with 95% Wilson intervals; `runs` maps a label to an eval.json summary.
    `colours` (outcome -> colour) colours the bars of a single run."""
    outcomes = _outcomes(runs)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(runs) + 0.75 * len(outcomes), 3.6))
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(outcomes))
    palette = {o: f"C{i}" for i, o in enumerate(outcomes)} | (colours or {}) | {NO_OUTCOME: NO_OUTCOME_COLOUR}
    for i, (label, summary) in enumerate(runs.items()):
        share = np.array([summary["distribution"].get(o, 0.0) for o in outcomes])
        ci = np.array([summary["ci95"].get(o, (0.0, 0.0)) for o in outcomes]).reshape(-1, 2)
        err = np.maximum(0.0, [share - ci[:, 0], ci[:, 1] - share])  # >= 0 despite rounding
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, share, width, yerr=err, capsize=3, label=label,
               color=[palette[o] for o in outcomes] if len(runs) == 1 else None)
    ax.set_xticks(x, outcomes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of episodes")
    ax.set_title(title)
    if len(runs) > 1:
        ax.legend()
    return save_figure(fig, out)
