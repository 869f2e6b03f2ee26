"""Re-encode a dataset's frames (PNG <-> BMP): same schema, same episodes, steps and metadata."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from hf_agents.data.dataset import TrajectoryDataset
from hf_agents.data.schema import FPS
from hf_agents.data.writer import TrajectoryWriter, check_not_a_source

EPISODE_FIELDS = ("source", "variant", "spawn", "outcome", "outcome_step", "seed", "episode_id")


def convert_frames(data: TrajectoryDataset, out, frame_codec: str, overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Write `data` to `out` with every frame re-encoded as `frame_codec`; the source is left as it is."""
    check_not_a_source(out, [data.root])
    with TrajectoryWriter(out, data.frame_size, overwrite=overwrite, fps=data.info.get("fps", FPS),
                          metadata=data.info, frame_codec=frame_codec,
                          description=f"{data.root.name} with {frame_codec.upper()} frames") as writer:
        for i in tqdm(range(len(data)), desc=f"convert to {frame_codec}", unit="episode", disable=not progress):
            steps = data.read(i)
            extras = {k: v for k, v in steps.items() if k not in ("frames", "actions")}
            meta = {k: data.episodes[i][k] for k in EPISODE_FIELDS}
            writer.add_episode(steps["frames"], steps["actions"], **meta, **extras)
    return writer.path
