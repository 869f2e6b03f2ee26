"""The trajectory dataset schema: one parquet row per step, one row per episode in episodes/.

On disk (a Hub dataset repository as-is):
    README.md                       dataset card (YAML configs point at the two tables)
    meta/info.json                  format version, frame size, fps, counts
    data/steps-00000.parquet ...    per step: episode_id, step, frame (PNG), actions (16 ids), [state, logprob]
    episodes/episodes.parquet       per episode: episode_id, source, variant, spawn, outcome, outcome_step, length, ...

Privileged state columns (`state_<key>`, any keys a game reports) are for plots and synthetic preferences
and never reach the model. `meta/info.json` may also record how rollouts were made (`policy`: checkpoint,
temperature, ...), so that training can trust their log-probs.
"""

from __future__ import annotations

import datasets
import pyarrow as pa

from hf_agents.actions import NUM_COMPONENTS

FORMAT_VERSION = 1
FPS = 10
NO_OUTCOME = "none"

# Privileged state a game may record per step: any `state_<key>` (optional, float32), e.g. state_x.
STATE_PREFIX = "state_"
REQUIRED_STEP_COLUMNS = ("episode_id", "step", "frame", "actions")
OPTIONAL_STEP_COLUMNS = ("logprob", "reward")


class DatasetFormatError(ValueError):
    """Input that does not fit the trajectory dataset schema; the message names file, field and fix."""


def is_optional_column(name: str) -> bool:
    """An allowed extra step column: logprob, reward or privileged state_<key>."""
    return name in OPTIONAL_STEP_COLUMNS or (name.startswith(STATE_PREFIX) and len(name) > len(STATE_PREFIX))


STEP_FEATURES = datasets.Features(
    {
        "episode_id": datasets.Value("int64"),
        "step": datasets.Value("int32"),
        "frame": datasets.Image(),  # PNG bytes; the Hub viewer shows them
        "actions": datasets.Sequence(datasets.Value("int8"), length=NUM_COMPONENTS),
        "logprob": datasets.Value("float32"),  # log-prob of the action under the policy that acted (rollouts)
        "reward": datasets.Value("float32"),
    }
)
STATE_FEATURE = datasets.Value("float32")

EPISODE_FEATURES = datasets.Features(
    {
        "episode_id": datasets.Value("int64"),
        "source": datasets.Value("string"),  # e.g. "scripted", "wham-npz", "rollout:<model>"
        "variant": datasets.Value("string"),  # visual variant ("character"), e.g. "ninja"
        "spawn": datasets.Value("int32"),  # spawn index, -1 if unknown
        "outcome": datasets.Value("string"),  # the game's outcome (JumpPads: the pad reached) or "none"
        "outcome_step": datasets.Value("int32"),  # step at which the outcome happened, -1 if none
        "length": datasets.Value("int32"),
        "seed": datasets.Value("int64"),
    }
)


def step_schema(columns: list[str]) -> pa.Schema:
    """Arrow schema (with the `datasets` feature metadata) for the given step columns."""
    return datasets.Features({c: STEP_FEATURES.get(c, STATE_FEATURE) for c in columns}).arrow_schema


EPISODE_SCHEMA = EPISODE_FEATURES.arrow_schema
