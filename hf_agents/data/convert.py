"""Copy datasets episode by episode: re-encode the frames (PNG <-> BMP), or merge several into one."""

from __future__ import annotations

import json
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
        copy_episodes(data, writer, progress=progress, desc=f"convert to {frame_codec}")
    return writer.path


def merge_datasets(sources: list[TrajectoryDataset], out, id_offsets: list[int], overwrite: bool = False,
                   description: str = "", progress: bool = True) -> Path:
    """One dataset of every episode of `sources` (same frame size); source k's episode ids are shifted by
    `id_offsets[k]`, so ids from different sources stay apart."""
    check_not_a_source(out, [d.root for d in sources])
    sizes = {tuple(d.frame_size) for d in sources}
    if len(sizes) != 1:
        raise ValueError(f"{out}: cannot merge datasets of different frame sizes {sorted(sizes)}")
    games = {json.dumps(d.info.get("game"), sort_keys=True) for d in sources}
    if len(games) != 1:
        raise ValueError(f"{out}: cannot merge datasets of different games {sorted(games)}")
    game = sources[0].info.get("game")
    with TrajectoryWriter(out, sizes.pop(), overwrite=overwrite, fps=sources[0].info.get("fps", FPS),
                          metadata={"game": game} if game else None, description=description) as writer:
        for data, offset in zip(sources, id_offsets):
            copy_episodes(data, writer, id_offset=offset, progress=progress, desc=f"merge {data.root.name}")
    return writer.path


def copy_episodes(data: TrajectoryDataset, writer: TrajectoryWriter, id_offset: int = 0, progress: bool = True,
                  desc: str = "copy") -> None:
    """Every episode of `data` (frames, actions, step columns, episode fields) into `writer`."""
    for i in tqdm(range(len(data)), desc=desc, unit="episode", disable=not progress):
        steps = data.read(i)
        extras = {k: v for k, v in steps.items() if k not in ("frames", "actions")}
        meta = {k: data.episodes[i][k] for k in EPISODE_FIELDS}
        meta["episode_id"] = int(meta["episode_id"]) + id_offset
        writer.add_episode(steps["frames"], steps["actions"], **meta, **extras)
