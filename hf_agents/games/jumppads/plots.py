"""JumpPads' own figures: the map, trajectory heatmap (paper Fig 10), successful trajectories coloured by pad
(Fig 15), and a contact sheet of every variant from every spawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from hf_agents.actions import LEFT_Y, NOOP_IDS  # noqa: E402
from hf_agents.games.jumppads.map import (  # noqa: E402
    LAUNCH_ISLAND,
    NUM_SPAWNS,
    PAD_COLOURS,
    TILE,
    VARIANTS,
    IslandLayout,
)
from hf_agents.rollout.plots import save_figure  # noqa: E402

TILE_COLOURS = {"#": (0.25, 0.25, 0.25), "p": (0.0, 0.0, 0.0), "b": (0.5, 0.5, 0.5), ".": (0.93, 0.9, 0.82),
                "L": (0.95, 0.6, 0.6), "M": (0.6, 0.9, 0.6), "R": (0.6, 0.7, 0.98)}
LAUNCH = IslandLayout(LAUNCH_ISLAND)
EXTENT = (0, LAUNCH.w * TILE, 0, LAUNCH.h * TILE)


def evaluation_figures(episodes, out_dir, label: str) -> dict:
    """After an evaluation (`env.metadata["figures"]`): heatmap.png and trajectories.png; returns the
    number of episodes that fell into a pit, for the summary."""
    out_dir = Path(out_dir)
    plot_heatmap(episodes, out_dir / "heatmap.png", title=f"{label}: trajectory heatmap")
    plot_trajectories(episodes, out_dir / "trajectories.png", title=f"{label}: successful trajectories")
    return {"fell": sum(bool(e.info.get("fell")) for e in episodes)}


def draw_map(ax) -> None:
    img = np.array([[TILE_COLOURS.get(k, TILE_COLOURS["."]) for k in row] for row in LAUNCH.rows])
    ax.imshow(img, origin="lower", extent=EXTENT)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_heatmap(episodes, out, title="Where the agent goes") -> Path:
    xs = np.concatenate([e.state["state_x"] for e in episodes]) if episodes else np.zeros(0)
    ys = np.concatenate([e.state["state_y"] for e in episodes]) if episodes else np.zeros(0)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_map(ax)
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs < EXTENT[1])
    h, xe, ye = np.histogram2d(xs[keep], ys[keep], bins=(LAUNCH.w * 2, LAUNCH.h * 2),
                               range=(EXTENT[:2], EXTENT[2:]))
    # cyan (rarely) to magenta (often): never dark like the pits nor beige like the floor; unvisited tiles show the map
    image = ax.imshow(np.ma.masked_equal(h.T, 0), origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]),
                      cmap="cool", alpha=0.85, norm=matplotlib.colors.LogNorm())
    if keep.any():
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="steps spent there (log scale)")
    ax.set_title(title)
    return save_figure(fig, out)


def plot_trajectories(episodes, out, title="Successful trajectories") -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_map(ax)
    for e in episodes:
        if e.outcome in PAD_COLOURS:
            ax.plot(e.state["state_x"], e.state["state_y"], color=PAD_COLOURS[e.outcome], alpha=0.5, lw=1)
    ax.set_title(title)
    return save_figure(fig, out)


def contact_sheet(out, frame_size=128, steps_ahead=6) -> Path:
    """A PNG grid: one row per visual variant, one column per spawn, each frame a few steps into the episode."""
    from hf_agents.games.jumppads.env import JumpPadsEnv

    env = JumpPadsEnv(frame_size=frame_size)
    label_w, pad = 70, 4
    sheet = Image.new("RGB", (label_w + NUM_SPAWNS * (frame_size + pad), len(VARIANTS) * (frame_size + pad) + 18),
                      "white")
    draw = ImageDraw.Draw(sheet)
    forward = NOOP_IDS.copy()
    forward[LEFT_Y] = 7  # walk forward a little so the player is framed by the chase camera
    try:
        for s in range(NUM_SPAWNS):
            draw.text((label_w + s * (frame_size + pad) + 4, 2), f"spawn {s}", fill="black")
        for v, name in enumerate(VARIANTS):
            y = 18 + v * (frame_size + pad)
            draw.text((4, y + frame_size // 2), name, fill="black")
            for s in range(NUM_SPAWNS):
                obs, _ = env.reset(options={"spawn": s, "variant": name})
                for _ in range(steps_ahead):
                    obs, *_ = env.step(forward)
                sheet.paste(Image.fromarray(obs), (label_w + s * (frame_size + pad), y))
    finally:
        env.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
