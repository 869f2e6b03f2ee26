"""Preferences between trajectories: one parquet file of (chosen, rejected) episode ids, and the synthetic oracle.

Schema (one row per comparison): `chosen` and `rejected` are episode ids of one trajectory dataset,
`labeller` says who judged (a designer's name, or `synthetic:<pad>`). The same file serves the synthetic
oracle, the labelling app's export, the reward model and DPO.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from hf_agents.data.schema import NO_OUTCOME, DatasetFormatError
from hf_agents.files import atomic_path, check_file_target, output_lock

PREFERENCE_COLUMNS = ("chosen", "rejected", "labeller")


def synthetic_rank(episode: dict, pad: str) -> tuple[int, int]:
    """Paper 3.4: the given pad > another pad > no pad; within a pad tier, shorter (reaching it sooner) is better.
    Higher sorts better. Trajectories that reach no pad all tie: the paper's no-pad trajectories all ran to the
    timeout, while here falling into a pit ends an episode early, and "shorter is better" among them would teach
    a reward model that falling sooner is better."""
    outcome = episode["outcome"]
    if outcome == NO_OUTCOME:
        return 0, 0
    tier = 2 if outcome == pad else 1
    steps = episode["outcome_step"] + 1 if episode["outcome_step"] >= 0 else episode["length"]
    return tier, -int(steps)


def synthetic_preferences(episodes: list[dict], pad: str, max_comparisons: int | None = None,
                          seed: int = 0) -> list[tuple[int, int]]:
    """Every pair with a strict preference, as (chosen id, rejected id); ties give no comparison."""
    pairs = []
    for a, b in itertools.combinations(episodes, 2):
        ra, rb = synthetic_rank(a, pad), synthetic_rank(b, pad)
        if ra != rb:
            pairs.append((a["episode_id"], b["episode_id"]) if ra > rb else (b["episode_id"], a["episode_id"]))
    if max_comparisons is not None and len(pairs) > max_comparisons:
        pairs = random.Random(seed).sample(pairs, max_comparisons)
    return pairs


def is_preferences_file(path) -> bool:
    """A preferences parquet file (the columns of `PREFERENCE_COLUMNS`), not any other table or file."""
    try:
        return set(pq.read_schema(path).names) == set(PREFERENCE_COLUMNS)
    except (pa.ArrowException, OSError):
        return False


def check_preferences_target(path, overwrite: bool = False) -> Path:
    """Where a preferences file may be written: not over anything without `overwrite`, never over what is not a
    preferences file (a label database, a dataset's table, a model's weights), never inside a trajectory dataset."""
    from hf_agents.data.writer import is_trajectory_dataset

    path = Path(path)
    inside = next((p for p in path.absolute().parents if is_trajectory_dataset(p)), None)
    if inside is not None:
        raise FileExistsError(f"--out {path}: lies inside the trajectory dataset {inside}; write the preferences "
                              "file outside it")
    return check_file_target(path, overwrite, "preferences file", is_preferences_file)


FINGERPRINT_KEY = b"hf_agents.dataset_fingerprint"


def write_preferences(path: str | Path, pairs, labeller, dataset: str | Path | None = None) -> Path:
    """Write (chosen, rejected) pairs to a parquet file, atomically (a failed write keeps the old file);
    `labeller` is one name for every pair or one per pair; `dataset`, the trajectory dataset the pairs' episode
    ids refer to, is recorded by its fingerprint (the reward stage checks it). It replaces only a preferences
    file."""
    from hf_agents.locations import fingerprint

    path = check_preferences_target(path, overwrite=True)
    labellers = [labeller] * len(pairs) if isinstance(labeller, str) else list(labeller)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"chosen": pa.array([int(c) for c, _ in pairs], pa.int64()),
                      "rejected": pa.array([int(r) for _, r in pairs], pa.int64()),
                      "labeller": pa.array(labellers, pa.string())})
    made_on = fingerprint(dataset) if dataset is not None and not _is_fingerprint(dataset) else dataset
    if made_on:
        table = table.replace_schema_metadata({FINGERPRINT_KEY: str(made_on).encode()})
    with output_lock(path), atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _is_fingerprint(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _parquet(path: Path, read):
    """`read(path)` of a preferences file; a missing or unreadable one is named, with the fix."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such preferences file (write one with `hf-agents preferences synthetic`)")
    try:
        return read(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetFormatError(f"{path}: corrupt or truncated parquet file ({e})") from e


def preferences_dataset(path: str | Path) -> str | None:
    """The fingerprint of the dataset a preferences file was made on, or None when it does not record one."""
    metadata = _parquet(Path(path), pq.read_schema).metadata or {}
    value = metadata.get(FINGERPRINT_KEY)
    return value.decode() if value else None


def read_preferences(path: str | Path, episode_ids=None, labeller: str | None = None) -> list[tuple[int, int]]:
    """(chosen, rejected) pairs; with `episode_ids`, checks that every id is in the trajectory dataset;
    with `labeller`, only that labeller's comparisons (one designer = one reward model = one adapter)."""
    path = Path(path)
    table = _parquet(path, pq.read_table)
    missing = [c for c in ("chosen", "rejected") if c not in table.column_names]
    if missing:
        raise DatasetFormatError(f"{path}: missing column(s) {missing}; a preferences file has {list(PREFERENCE_COLUMNS)}")
    if labeller is not None:
        found = sorted(set(table.column("labeller").to_pylist())) if "labeller" in table.column_names else []
        if labeller not in found:
            raise DatasetFormatError(f"{path}: no comparisons by labeller '{labeller}'; labellers here: {found}")
        table = table.filter(pa.compute.equal(table.column("labeller"), labeller))
    pairs = list(zip(table.column("chosen").to_pylist(), table.column("rejected").to_pylist()))
    if not pairs:
        raise DatasetFormatError(f"{path}: no comparisons")
    if episode_ids is not None:
        known = set(episode_ids)
        unknown = sorted({i for pair in pairs for i in pair if i not in known})
        if unknown:
            raise DatasetFormatError(f"{path}: episode id(s) {unknown[:5]} are not in the trajectory dataset; "
                                     "were these preferences made for another dataset?")
    return pairs
