"""Stream episodes to parquet shards; the dataset appears at its path only when complete."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hf_agents.actions import NUM_COMPONENTS, validate_ids
from hf_agents.data.codecs import CODECS, encode_frame
from hf_agents.data.schema import (
    EPISODE_SCHEMA,
    FORMAT_VERSION,
    FPS,
    NO_OUTCOME,
    OPTIONAL_STEP_COLUMNS,
    REQUIRED_STEP_COLUMNS,
    DatasetFormatError,
    is_optional_column,
    step_schema,
)
from hf_agents.files import output_lock
from hf_agents.frames import FrameLayoutError, check_channels_last, check_frame_size

__all__ = ["DatasetFormatError", "TrajectoryWriter", "check_frames"]


def check_frames(frames: np.ndarray, frame_size: tuple[int, int], where: str) -> np.ndarray:
    """Frames must be uint8 (T, H, W, 3) at the dataset's size."""
    frames = np.asarray(frames)
    try:
        check_channels_last(frames, where)
    except FrameLayoutError as e:
        raise DatasetFormatError(str(e)) from None
    if frames.ndim != 4:
        raise DatasetFormatError(f"{where}: frames must have shape (T, H, W, 3), got {frames.shape}")
    try:
        check_frame_size(frames.shape[1:3], frame_size, where, "the dataset", "resize when importing")
    except FrameLayoutError as e:
        raise DatasetFormatError(str(e)) from None
    if frames.dtype != np.uint8:
        raise DatasetFormatError(f"{where}: frames must be uint8 RGB, got {frames.dtype}")
    return frames


def is_trajectory_dataset(path: Path) -> bool:
    """A folder written by `TrajectoryWriter`: meta/info.json with a format_version, and an episodes table."""
    try:
        info = json.loads((path / "meta" / "info.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "format_version" in info and (path / "episodes").is_dir()


def check_replaceable(path: Path) -> None:
    """--overwrite replaces a trajectory dataset of ours and nothing else (not recordings, models or user files)."""
    if not path.is_dir() or not is_trajectory_dataset(path):
        raise FileExistsError(f"{path} exists and is not an hf-agents trajectory dataset; --overwrite only replaces "
                              "one, so nothing was changed; choose another output path")


def check_target(path: Path, overwrite: bool) -> None:
    """A dataset may be written at `path`: nothing there, or (with overwrite) a trajectory dataset of ours."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if path.exists():
        check_replaceable(path)


def remove_stale_staging(path: Path) -> None:
    """Staging folders left beside `path` by killed writers (their process is gone) are removed."""
    for old in path.parent.glob(f".{path.name}.tmp-*"):
        pid = old.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_not_a_source(out, sources) -> None:
    """Refuse to write a dataset over (or inside) what is being read."""
    out = Path(out).resolve()
    for source in sources:
        src = Path(source).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise FileExistsError(f"{out}: the output overlaps the input {source}; write the dataset somewhere else")


class TrajectoryWriter:
    """Write a trajectory dataset episode by episode.

    Only one episode is in memory at a time. Everything goes to a hidden staging directory
    beside `path`; `close()` moves it into place, so a failed or interrupted write leaves any
    previous dataset at `path` intact.
    """

    def __init__(self, path, frame_size=(64, 64), overwrite=False, rows_per_shard=8192, fps=FPS, description="",
                 metadata: dict | None = None, frame_codec: str = "png"):
        self.path = Path(path)
        if frame_codec not in CODECS:
            raise ValueError(f"frame_codec={frame_codec!r}: choose one of {', '.join(CODECS)}")
        self.frame_codec = frame_codec
        if isinstance(frame_size, int):
            frame_size = (frame_size, frame_size)
        self.frame_size = tuple(int(s) for s in frame_size)
        self.rows_per_shard = rows_per_shard
        self.fps, self.description = fps, description
        self.metadata = dict(metadata or {})  # extra meta/info.json entries, e.g. the rollouts' `policy`
        self._lock = output_lock(self.path).acquire()  # a second writer of this path fails here, at once
        try:
            self._stage(overwrite)
        except BaseException:
            self._lock.release()
            raise
        self.columns: list[str] | None = None
        self._shard: pq.ParquetWriter | None = None
        self._shard_rows = 0
        self._num_shards = 0
        self.episodes: list[dict] = []
        self.num_steps = 0
        self._closed = False

    def _stage(self, overwrite: bool) -> None:
        check_target(self.path, overwrite)
        remove_stale_staging(self.path)
        self.staging = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            (self.staging / "data").mkdir(parents=True)
            (self.staging / "episodes").mkdir()
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise

    # -- writing -----------------------------------------------------------------------------
    def add_episode(self, frames, actions, *, source="unknown", variant="default", spawn=-1, outcome=NO_OUTCOME,
                    outcome_step=-1, seed=-1, episode_id=None, **step_columns) -> int:
        """Append one episode. frames: uint8 (T, H, W, 3); actions: ids (T, 16).

        `step_columns` may hold `logprob`, `reward` and privileged `state_<key>` arrays of length T.
        Returns the episode id.
        """
        episode_id = len(self.episodes) if episode_id is None else int(episode_id)
        where = f"episode {episode_id}"
        frames = check_frames(frames, self.frame_size, where)
        actions = validate_ids(np.asarray(actions, dtype=np.int64), where=f"{where} actions")
        T = len(frames)
        if T == 0:
            raise DatasetFormatError(f"{where}: an episode needs at least one step")
        if actions.shape != (T, NUM_COMPONENTS):
            raise DatasetFormatError(f"{where}: actions must have shape ({T}, {NUM_COMPONENTS}) to match the frames, "
                                     f"got {actions.shape}")
        unknown = [c for c in step_columns if not is_optional_column(c)]
        if unknown:
            raise DatasetFormatError(f"{where}: unknown step column(s) {sorted(unknown)}; allowed extras are "
                                     f"{list(OPTIONAL_STEP_COLUMNS)} and state_<key>")
        columns = list(REQUIRED_STEP_COLUMNS) + [c for c in OPTIONAL_STEP_COLUMNS if c in step_columns]
        columns += [c for c in step_columns if c not in OPTIONAL_STEP_COLUMNS]  # state_<key>, in the given order
        if self.columns is None:
            self.columns = columns
        elif columns != self.columns:
            raise DatasetFormatError(f"{where}: step columns {columns} differ from earlier episodes' {self.columns}")
        table = {
            "episode_id": np.full(T, episode_id, dtype=np.int64),
            "step": np.arange(T, dtype=np.int32),
            "frame": [{"bytes": encode_frame(f, self.frame_codec), "path": None} for f in frames],
            "actions": list(actions.astype(np.int8)),
        }
        for name in columns[len(REQUIRED_STEP_COLUMNS):]:
            values = step_columns[name]
            values = np.asarray(values, dtype=np.float32)
            if values.shape != (T,):
                raise DatasetFormatError(f"{where}: column '{name}' must have shape ({T},), got {values.shape}")
            table[name] = values
        self._write_rows(pa.table(table, schema=step_schema(self.columns)))
        if outcome != NO_OUTCOME and not 0 <= outcome_step < T:
            outcome_step = T - 1
        self.episodes.append(dict(episode_id=episode_id, source=source, variant=variant, spawn=int(spawn),
                                  outcome=outcome or NO_OUTCOME, outcome_step=int(outcome_step), length=T,
                                  seed=int(seed)))
        self.num_steps += T
        return episode_id

    def _write_rows(self, table: pa.Table) -> None:
        if self._shard is None:
            name = self.staging / "data" / f"steps-{self._num_shards:05d}.parquet"
            self._shard = pq.ParquetWriter(name, table.schema)
            self._num_shards += 1
        # Small row groups: a window read touches one or two groups, not a whole shard.
        self._shard.write_table(table, row_group_size=256)
        self._shard_rows += len(table)
        if self._shard_rows >= self.rows_per_shard:
            self._shard.close()
            self._shard, self._shard_rows = None, 0

    # -- finishing ---------------------------------------------------------------------------
    def close(self) -> Path:
        """Write metadata and card, then move the dataset into place."""
        if self._closed:
            return self.path
        try:
            if self._shard is not None:
                self._shard.close()
                self._shard = None
            if not self.episodes:
                raise DatasetFormatError(f"{self.path}: no episodes were written; an empty dataset is not saved")
            ids = [e["episode_id"] for e in self.episodes]
            if len(set(ids)) != len(ids):
                raise DatasetFormatError(f"{self.path}: duplicate episode ids {sorted(i for i, n in Counter(ids).items() if n > 1)[:5]}")
            self.episodes.sort(key=lambda e: e["episode_id"])  # the same table however many envs wrote it
            pq.write_table(pa.Table.from_pylist(self.episodes, schema=EPISODE_SCHEMA),
                           self.staging / "episodes" / "episodes.parquet")
            info = self.info()
            (self.staging / "meta").mkdir()
            (self.staging / "meta" / "info.json").write_text(json.dumps(info, indent=2, default=str))
            from hf_agents.cards import dataset_card

            (self.staging / "README.md").write_text(dataset_card(info, self.description))
        except BaseException:
            self.abort()
            raise
        try:
            self._replace()
        finally:
            self._lock.release()
        self._closed = True
        return self.path

    def info(self) -> dict:
        eps = self.episodes
        core = {
            "format_version": FORMAT_VERSION,
            "frame_size": list(self.frame_size),
            "frame_codec": self.frame_codec,
            "fps": self.fps,
            "num_episodes": len(eps),
            "num_steps": self.num_steps,
            "step_columns": self.columns,
            "shards": self._num_shards,
            "variants": dict(Counter(e["variant"] for e in eps)),
            "outcomes": dict(Counter(e["outcome"] for e in eps)),
            "sources": dict(Counter(e["source"] for e in eps)),
            "spawns": {str(k): v for k, v in sorted(Counter(e["spawn"] for e in eps).items())},
            "mean_length": self.num_steps / max(len(eps), 1),
        }
        return {**core, **{k: v for k, v in self.metadata.items() if k not in core}}

    def _replace(self) -> None:
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.path, old)
        os.rename(self.staging, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far; the previous dataset at `path` is untouched."""
        if self._shard is not None:
            try:
                self._shard.close()
            except Exception:
                pass
            self._shard = None
        shutil.rmtree(self.staging, ignore_errors=True)
        self._lock.release()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
