"""Read a trajectory dataset: episode views, filters, splits and random access to windows of steps.

Steps live in a memory-mapped Arrow table (the `datasets` cache of the parquet shards), so a
dataset larger than RAM works; a window decodes only its own H frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hf_agents.actions import NOOP_IDS, NUM_BUTTONS, NUM_COMPONENTS
from hf_agents.data.codecs import decode_frame, decode_frames
from hf_agents.data.schema import (
    EPISODE_SCHEMA,
    NO_OUTCOME,
    OPTIONAL_STEP_COLUMNS,
    REQUIRED_STEP_COLUMNS,
    DatasetFormatError,
    is_optional_column,
)
from hf_agents.locations import resolve


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetFormatError(f"{path}: corrupt or truncated parquet file ({e}); re-write or remove it") from e


def resolve_dataset_path(path_or_id: str | Path, revision: str | None = None) -> Path:
    """A local directory, or a Hub dataset id downloaded (or found in the local cache)."""
    return resolve(path_or_id, "dataset", revision)


@dataclass
class _View:
    meta: list[dict]  # episode metadata, one dict per selected episode
    start: np.ndarray  # first row of each episode in the step table
    length: np.ndarray  # steps used per episode (may be cut at the outcome)


class TrajectoryDataset:
    """Episodes of a trajectory dataset, possibly filtered or cut; cheap to copy and pickle.

    `info` is meta/info.json: statistics, and for rollouts the acting policy's settings (`info["policy"]`).
    """

    def __init__(self, root: Path, steps: datasets.Dataset, info: dict, view: _View):
        self.root, self.steps, self.info, self._view = root, steps, info, view

    @property
    def _table(self) -> pa.Table:
        """The memory-mapped Arrow table: zero-copy slices, no formatting layer (not pickled: `steps` re-maps it)."""
        return self.steps.data.table

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path_or_id, revision: str | None = None, cache_dir: str | None = None) -> TrajectoryDataset:
        root = resolve_dataset_path(path_or_id, revision)
        info_file, episodes_file = root / "meta" / "info.json", root / "episodes" / "episodes.parquet"
        for f in (info_file, episodes_file):
            if not f.exists():
                raise DatasetFormatError(f"{f}: missing; {root} is not a trajectory dataset (write one with TrajectoryWriter)")
        info = json.loads(info_file.read_text())
        shards = sorted((root / "data").glob("*.parquet"))
        if not shards:
            raise DatasetFormatError(f"{root / 'data'}: no parquet shards; the dataset is empty")
        allowed = [*REQUIRED_STEP_COLUMNS, *OPTIONAL_STEP_COLUMNS, "state_<key>"]
        for shard in shards:
            names = _read_schema(shard).names
            unknown = [n for n in names if n not in REQUIRED_STEP_COLUMNS and not is_optional_column(n)]
            missing = [n for n in REQUIRED_STEP_COLUMNS if n not in names]
            if unknown or missing:
                raise DatasetFormatError(
                    f"{shard}: unknown column(s) {unknown} / missing column(s) {missing}; step columns are {allowed}"
                )
        episodes = pq.read_table(_check_episode_table(episodes_file)).to_pylist()
        if not episodes:
            raise DatasetFormatError(f"{episodes_file}: no episodes; the dataset is empty")
        try:
            steps = datasets.load_dataset("parquet", data_files=[str(s) for s in shards], split="train",
                                          cache_dir=cache_dir)
        except Exception as e:
            raise DatasetFormatError(f"{root / 'data'}: could not read the step shards ({e})") from e
        ids = steps.with_format("arrow")["episode_id"].to_numpy()
        change = np.flatnonzero(np.diff(ids)) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [len(ids)]]))
        where = {int(i): k for k, i in enumerate(ids[starts])}  # steps are stored in the order episodes finished
        listed = [e["episode_id"] for e in episodes]
        if len(where) != len(starts) or sorted(where) != sorted(listed):
            raise DatasetFormatError(f"{episodes_file}: episode list does not match the step shards in {root / 'data'}")
        order = np.asarray([where[i] for i in listed], dtype=np.int64)
        view = _View(episodes, starts[order].astype(np.int64), lengths[order].astype(np.int64))
        return cls(root, steps, info, view)

    # -- episode views -----------------------------------------------------------------------
    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.info["frame_size"])

    @property
    def episodes(self) -> list[dict]:
        return self._view.meta

    def __len__(self) -> int:
        return len(self._view.meta)

    @property
    def num_steps(self) -> int:
        return int(self._view.length.sum())

    def _select(self, keep, cut_at_outcome: bool = False) -> TrajectoryDataset:
        v = self._view
        idx = np.asarray([i for i in range(len(v.meta)) if keep[i]], dtype=np.int64)
        length = v.length[idx].copy()
        if cut_at_outcome:  # keep steps up to and including the one that reached the outcome
            for j, i in enumerate(idx):
                if v.meta[i]["outcome"] != NO_OUTCOME and v.meta[i]["outcome_step"] >= 0:
                    length[j] = min(length[j], v.meta[i]["outcome_step"] + 1)
        return TrajectoryDataset(self.root, self.steps, self.info,
                                 _View([v.meta[i] for i in idx], v.start[idx], length))

    def filter(self, variant=None, outcome=None, source=None, spawn=None, fn=None,
               cut_at_outcome: bool = False) -> TrajectoryDataset:
        """Episodes matching every given criterion (each a value or a list of values).

        `outcome="success"` keeps every episode that reached something; `fn(meta) -> bool` is free-form;
        `cut_at_outcome` ends each episode at the step its outcome happened (the paper's SFT data).
        """

        def match(value, wanted):
            if wanted is None:
                return True
            return value in wanted if isinstance(wanted, (list, tuple, set)) else value == wanted

        keep = []
        for m in self._view.meta:
            ok_outcome = (m["outcome"] != NO_OUTCOME) if outcome == "success" else match(m["outcome"], outcome)
            keep.append(match(m["variant"], variant) and ok_outcome and match(m["source"], source)
                        and match(m["spawn"], spawn) and (fn is None or fn(m)))
        return self._select(keep, cut_at_outcome)

    def split(self, eval_fraction: float = 0.1, seed: int = 0) -> tuple[TrajectoryDataset, TrajectoryDataset]:
        """(train, eval) split by episode; an episode's side depends only on its id and the seed."""
        ids = np.array([m["episode_id"] for m in self._view.meta], dtype=np.uint64)
        with np.errstate(over="ignore"):  # multiplicative hashing wraps around on purpose
            h = (ids * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed) * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(40)
        is_eval = (h % np.uint64(1_000_000)).astype(np.float64) / 1e6 < eval_fraction
        if eval_fraction > 0 and not is_eval.any() and len(ids) > 1:
            is_eval[int(np.argmin(h))] = True  # tiny datasets still get one eval episode
        return self._select(~is_eval), self._select(is_eval)

    # -- reading steps -----------------------------------------------------------------------
    def positions(self) -> dict[int, int]:
        """episode id -> the episode's position in this view (what `read` takes)."""
        return {int(m["episode_id"]): i for i, m in enumerate(self.episodes)}

    def episode_length(self, episode: int) -> int:
        """Steps of one episode in this view (after any cut at the outcome)."""
        return int(self._view.length[episode])

    def read(self, episode: int, start: int = 0, length: int | None = None) -> dict:
        """Steps [start, start+length) of one episode: frames uint8 (L, H, W, 3), actions int64 (L, 16), extras."""
        n = self.episode_length(episode)
        length = n - start if length is None else length
        if not (0 <= start and start + length <= n):
            raise IndexError(f"steps {start}..{start + length} outside episode {episode} of length {n}")
        table = self._table.slice(int(self._view.start[episode]) + start, length)
        frames = self._decode(table.column("frame").combine_chunks().field("bytes"), episode, start)
        actions = table.column("actions").combine_chunks().flatten().to_numpy().reshape(length, NUM_COMPONENTS)
        out = {"frames": np.ascontiguousarray(frames), "actions": actions.astype(np.int64)}  # BMP rows: bottom-up
        for name in table.column_names:
            if is_optional_column(name):
                out[name] = table.column(name).to_numpy()
        return out

    def _decode(self, values: pa.Array, episode: int, start: int) -> np.ndarray:
        try:
            return decode_frames(values)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for damaged bytes: name the step
            step, error = _first_damaged(values, start) or (start, e)
            raise DatasetFormatError(
                f"{self.root}: episode {self.episodes[episode]['episode_id']}, step {step}: the frame does not decode "
                f"({type(error).__name__}: {error}); re-generate or re-import that episode (`hf-agents data verify` "
                "lists every damaged one)") from None

    def verify(self, progress: bool = True) -> list[str]:
        """Decode every frame; the damaged episodes' messages (empty when the dataset is whole)."""
        from tqdm.auto import tqdm

        problems = []
        for i in tqdm(range(len(self)), desc="verify", unit="episode", disable=not progress):
            try:
                self.read(i)
            except DatasetFormatError as e:
                problems.append(str(e))
        return problems

    def read_batch(self, episodes, max_steps: int | None = None):
        """Whole episodes (each cut at `max_steps`) as one padded batch: see `pad_steps`."""
        steps = [self.read(i, 0, min(self.episode_length(i), max_steps or self.episode_length(i))) for i in episodes]
        return pad_steps([s["frames"] for s in steps], [s["actions"] for s in steps])

    def windows(self, context: int, stride: int | None = None, extras: bool = False) -> WindowDataset:
        return WindowDataset(self, context, stride, extras)


class WindowDataset(torch.utils.data.Dataset):
    """Every window of `context` steps (every `stride` steps) of every episode, as model inputs.

    Items: frames uint8 (H, h, w, 3), actions int64 (H, 16), attention_mask (H,) with 0 on the
    padding of episodes shorter than H.
    """

    def __init__(self, trajectories: TrajectoryDataset, context: int, stride: int | None = None, extras=False):
        self.trajectories, self.context = trajectories, context
        self.stride = stride or max(context // 2, 1)
        self.extras = extras
        index = []
        for e, n in enumerate(trajectories._view.length):
            last = max(int(n) - context, 0)
            starts = list(range(0, last + 1, self.stride))
            if starts[-1] != last:
                starts.append(last)  # cover the episode's end too
            index += [(e, s) for s in starts]
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        e, s = (int(x) for x in self.index[i])
        n = int(self.trajectories._view.length[e])
        length = min(self.context, n - s)
        steps = self.trajectories.read(e, s, length)
        pad = self.context - length
        item = {"attention_mask": np.r_[np.ones(length, np.int64), np.zeros(pad, np.int64)]}
        for key, value in steps.items():
            if key != "frames" and key != "actions" and not self.extras:
                continue
            if pad:
                value = np.concatenate([value, np.zeros((pad, *value.shape[1:]), value.dtype)])
            item[key] = value
        if pad:  # padded actions are no-ops, masked out by attention_mask anyway
            item["actions"][length:, NUM_BUTTONS:] = NOOP_IDS[NUM_BUTTONS:]
        return {k: torch.from_numpy(v) for k, v in item.items()}


def pad_steps(frames: list[np.ndarray], actions: list[np.ndarray]):
    """Episodes of different lengths -> frames (B, T, ...) zero-padded, actions (B, T, 16) padded with no-ops,
    lengths (B,) int64."""
    lengths = np.asarray([len(a) for a in actions], np.int64)
    B, T = len(actions), int(lengths.max())
    padded_frames = np.zeros((B, T, *frames[0].shape[1:]), frames[0].dtype)
    padded_actions = np.broadcast_to(NOOP_IDS, (B, T, NUM_COMPONENTS)).copy()
    for i, n in enumerate(lengths):
        padded_frames[i, :n], padded_actions[i, :n] = frames[i][:n], actions[i]
    return padded_frames, padded_actions, lengths


def _first_damaged(values: pa.Array, start: int):
    """(step, exception) of the first frame that does not decode, or None."""
    for step, data in enumerate(values.to_pylist(), start):
        try:
            decode_frame(data)
        except Exception as e:
            return step, e
    return None


def _check_episode_table(path: Path) -> Path:
    """episodes.parquet must be a readable table with the episode columns."""
    names = _read_schema(path).names
    missing = [n for n in EPISODE_SCHEMA.names if n not in names]
    if missing:
        raise DatasetFormatError(f"{path}: not an episode table, missing column(s) {missing}; it needs "
                                 f"{EPISODE_SCHEMA.names} (re-write the dataset with TrajectoryWriter)")
    return path


def load_trajectories(path_or_id, revision: str | None = None) -> TrajectoryDataset:
    """Open a trajectory dataset from a local directory or a Hub dataset id."""
    return TrajectoryDataset.load(path_or_id, revision)
