"""The trajectory dataset schema: one parquet row per step, one row per episode in episodes/.

On disk (a Hub dataset repository as-is):
    README.md                       dataset card (YAML configs point at the two tables)
    meta/info.json                  format version, frame size, fps, counts
    data/steps-00000.parquet ...    per step: episode_id, step, frame (PNG), actions (16 ids), [state, logprob]
    episodes/episodes.parquet       per episode: episode_id, source, variant, spawn, outcome, outcome_step, length, ...

Privileged state columns (`state_*`) are for plots and synthetic preferences and never reach the model.
"""

from __future__ import annotations

import datasets
import pyarrow as pa

FORMAT_VERSION = 1
FPS = 10
NO_OUTCOME = "none"

# Privileged state a game may record per step (all optional, float32).
STATE_COLUMNS = ("state_x", "state_y", "state_z", "state_yaw")
REQUIRED_STEP_COLUMNS = ("episode_id", "step", "frame", "actions")
OPTIONAL_STEP_COLUMNS = ("logprob", "reward", *STATE_COLUMNS)

STEP_FEATURES = datasets.Features(
    {
        "episode_id": datasets.Value("int64"),
        "step": datasets.Value("int32"),
        "frame": datasets.Image(),  # PNG bytes; the Hub viewer shows them
        "actions": datasets.Sequence(datasets.Value("int8"), length=16),
        "logprob": datasets.Value("float32"),  # log-prob of the action under the policy that acted (rollouts)
        "reward": datasets.Value("float32"),
        **{c: datasets.Value("float32") for c in STATE_COLUMNS},
    }
)

EPISODE_FEATURES = datasets.Features(
    {
        "episode_id": datasets.Value("int64"),
        "source": datasets.Value("string"),  # e.g. "scripted", "wham-npz", "rollout:<model>"
        "variant": datasets.Value("string"),  # visual variant ("character"), e.g. "ninja"
        "spawn": datasets.Value("int32"),  # spawn index, -1 if unknown
        "outcome": datasets.Value("string"),  # pad reached ("left", "middle", "right") or "none"
        "outcome_step": datasets.Value("int32"),  # step at which the outcome happened, -1 if none
        "length": datasets.Value("int32"),
        "seed": datasets.Value("int64"),
    }
)


def step_schema(columns: list[str]) -> pa.Schema:
    """Arrow schema (with the `datasets` feature metadata) for the given step columns."""
    return datasets.Features({c: STEP_FEATURES[c] for c in columns}).arrow_schema


EPISODE_SCHEMA = EPISODE_FEATURES.arrow_schema
