"""Pictures people would rather look at than read: contact sheets and episode videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def contact_sheet(out, frame_size=128, steps_ahead=6) -> Path:
    """A PNG grid: one row per visual variant, one column per spawn, each frame a few steps into the episode."""
    from hf_agents.actions import NOOP_IDS
    from hf_agents.envs.jumppads import JumpPadsEnv
    from hf_agents.envs.jumppads_map import NUM_SPAWNS, VARIANTS

    env = JumpPadsEnv(frame_size=frame_size)
    label_w, pad = 70, 4
    sheet = Image.new("RGB", (label_w + NUM_SPAWNS * (frame_size + pad), len(VARIANTS) * (frame_size + pad) + 18),
                      "white")
    draw = ImageDraw.Draw(sheet)
    forward = NOOP_IDS.copy()
    forward[13] = 7  # walk forward a little so the player is framed by the chase camera
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


def save_video(frames: np.ndarray, out, fps: int = 10, scale: int = 2) -> Path:
    """Frames uint8 (T, H, W, 3) -> GIF (or MP4 if the suffix says so and a writer is installed)."""
    import imageio.v3 as iio

    frames = np.asarray(frames)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, frames, duration=1000 / fps, loop=0) if out.suffix == ".gif" else iio.imwrite(out, frames, fps=fps)
    return out
