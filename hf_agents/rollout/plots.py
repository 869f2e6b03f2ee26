"""Figures of the paper's evaluation: jumppad distributions (Figs 3-5), trajectory heatmap (Fig 10),
successful trajectories coloured by pad (Fig 15)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hf_agents.envs.jumppads_map import LAUNCH_ISLAND, TILE, _grid  # noqa: E402

OUTCOMES = ("left", "middle", "right", "none")
PAD_COLOURS = {"left": "#d62728", "middle": "#2ca02c", "right": "#1f4fd6", "none": "#7f7f7f"}
TILE_COLOURS = {"#": (0.25, 0.25, 0.25), "p": (0.0, 0.0, 0.0), "b": (0.5, 0.5, 0.5), ".": (0.93, 0.9, 0.82),
                "L": (0.95, 0.6, 0.6), "M": (0.6, 0.9, 0.6), "R": (0.6, 0.7, 0.98)}


def draw_map(ax) -> None:
    rows = _grid(LAUNCH_ISLAND)
    img = np.array([[TILE_COLOURS.get(k, TILE_COLOURS["."]) for k in row] for row in rows])
    ax.imshow(img, origin="lower", extent=(0, len(rows[0]) * TILE, 0, len(rows) * TILE))
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_distribution(runs: dict[str, dict], out, title="Jumppad reached") -> Path:
    """Grouped bars with 95% Wilson intervals; `runs` maps a label to an eval.json summary."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(runs) + 3, 3.6))
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(OUTCOMES))
    for i, (label, summary) in enumerate(runs.items()):
        share = [summary["distribution"][o] for o in OUTCOMES]
        lo = [max(0.0, summary["distribution"][o] - summary["ci95"][o][0]) for o in OUTCOMES]  # >= 0 despite rounding
        hi = [max(0.0, summary["ci95"][o][1] - summary["distribution"][o]) for o in OUTCOMES]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, share, width, yerr=[lo, hi], capsize=3, label=label,
               color=[PAD_COLOURS[o] for o in OUTCOMES] if len(runs) == 1 else None)
    ax.set_xticks(x, OUTCOMES)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of episodes")
    ax.set_title(title)
    if len(runs) > 1:
        ax.legend()
    return _save(fig, out)


def plot_heatmap(episodes, out, title="Where the agent goes") -> Path:
    xs = np.concatenate([e.state["state_x"] for e in episodes]) if episodes else np.zeros(0)
    ys = np.concatenate([e.state["state_y"] for e in episodes]) if episodes else np.zeros(0)
    rows = _grid(LAUNCH_ISLAND)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_map(ax)
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs < len(rows[0]) * TILE)
    h, xe, ye = np.histogram2d(xs[keep], ys[keep], bins=(len(rows[0]) * 2, len(rows) * 2),
                               range=((0, len(rows[0]) * TILE), (0, len(rows) * TILE)))
    ax.imshow(np.ma.masked_equal(h.T, 0), origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), cmap="magma",
              alpha=0.8, norm=matplotlib.colors.LogNorm())
    ax.set_title(title)
    return _save(fig, out)


def plot_trajectories(episodes, out, title="Successful trajectories") -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_map(ax)
    for e in episodes:
        if e.outcome in PAD_COLOURS and e.outcome != "none":
            ax.plot(e.state["state_x"], e.state["state_y"], color=PAD_COLOURS[e.outcome], alpha=0.5, lw=1)
    ax.set_title(title)
    return _save(fig, out)
