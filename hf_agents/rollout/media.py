"""Episode videos (GIF or MP4) from channels-last frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hf_agents.files import atomic_path
from hf_agents.frames import check_channels_last


def save_video(frames: np.ndarray, out, fps: int = 10, scale: int = 2) -> Path:
    """Frames uint8 (T, H, W, 3) -> GIF (or MP4 if the suffix says so and a writer is installed)."""
    import imageio.v3 as iio

    frames = np.asarray(frames)
    check_channels_last(frames, f"video {Path(out).name}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    options = dict(duration=1000 / fps, loop=0) if out.suffix == ".gif" else dict(fps=fps)
    with atomic_path(out) as tmp:  # same suffix: imageio picks the format from it
        iio.imwrite(tmp, frames, **options)
    return out
