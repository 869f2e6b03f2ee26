"""Episode videos for the browser: WebM (VP8, which every browser plays), rendered once per episode from the
dataset's frames into a cache folder, atomically (a half-written video is never served)."""

from __future__ import annotations

import threading
from pathlib import Path

from hf_agents.data.dataset import TrajectoryDataset
from hf_agents.files import atomic_path


class EpisodeVideos:
    """`path(episode_id)` -> the episode's WebM file; only episodes of `trajectories` exist here."""

    def __init__(self, trajectories: TrajectoryDataset, folder: str | Path, fps: int = 10, scale: int = 4):
        self.trajectories, self.folder, self.fps, self.scale = trajectories, Path(folder), fps, scale
        self.index = trajectories.positions()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, episode_id: int) -> Path:
        """The rendered video; KeyError for an episode not in the dataset."""
        index = self.index[int(episode_id)]
        out = self.folder / f"{int(episode_id)}.webm"
        with self._guard:
            lock = self._locks.setdefault(int(episode_id), threading.Lock())
        with lock:
            if not out.exists():
                self._render(index, out)
        return out

    def steps(self, episode_id: int) -> int:
        """The episode's length in steps (one video frame each)."""
        return self.trajectories.episode_length(self.index[int(episode_id)])

    def seconds(self, episode_id: int) -> float:
        """The video's length at normal speed."""
        return self.steps(episode_id) / self.fps

    def _render(self, index: int, out: Path) -> None:
        import imageio.v3 as iio

        frames = self.trajectories.read(index)["frames"]
        frames = frames.repeat(self.scale, axis=1).repeat(self.scale, axis=2)
        with atomic_path(out) as tmp:
            iio.imwrite(tmp, frames, fps=self.fps, codec="libvpx", macro_block_size=1,
                        output_params=["-b:v", "1M", "-auto-alt-ref", "0"], extension=".webm")
