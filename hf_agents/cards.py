"""Dataset cards (README.md with a YAML header), so a folder pushed to the Hub is self-describing.
Model cards are planned."""

from __future__ import annotations

import yaml


def _table(counts: dict, key: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"| {key} | episodes |\n|---|---|\n{rows}"


def dataset_card(info: dict, description: str = "") -> str:
    """A dataset card for a trajectory dataset written by `TrajectoryWriter`."""
    header = {
        "tags": ["hf-agents", "gameplay", "trajectories", "imitation-learning"],
        "task_categories": ["reinforcement-learning", "robotics"],
        "configs": [
            {"config_name": "steps", "data_files": [{"split": "train", "path": "data/*.parquet"}], "default": True},
            {"config_name": "episodes", "data_files": [{"split": "train", "path": "episodes/*.parquet"}]},
        ],
        "size_categories": [_size_category(info["num_steps"])],
    }
    h, w = info["frame_size"]
    extras = [c for c in info["step_columns"] if c not in ("episode_id", "step", "frame", "actions")]
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# Gameplay trajectories (hf-agents)

{description or "Pixel observations and gamepad actions recorded for training agents with hf-agents."}

- **episodes**: {info["num_episodes"]}, **steps**: {info["num_steps"]} (mean length {info["mean_length"]:.1f}) at {info["fps"]} Hz
- **frames**: {h}x{w} RGB, PNG-compressed in the `frame` column
- **actions**: 16 gamepad components as bucket ids (12 buttons in {{0,1}}, 4 sticks in 0..10;
  stick bucket centres -1, -0.85, -0.625, -0.375, -0.15, 0, 0.15, 0.375, 0.625, 0.85, 1)
- **extra step columns**: {", ".join(extras) or "none"} (`state_*` is privileged game state, for plots and
  synthetic preferences only; it is never a model input)
{_policy_line(info.get("policy"))}
## Layout

- `data/*.parquet`: one row per step: `episode_id`, `step`, `frame`, `actions`, extras
- `episodes/episodes.parquet`: one row per episode: `source`, `variant`, `spawn`, `outcome`, `outcome_step`, `length`, `seed`
- `meta/info.json`: format version and the statistics below

Load it with `hf_agents.data.load_trajectories(path_or_hub_id)`, or the tables with `datasets.load_dataset`.

## Statistics

{_table(info["variants"], "variant")}

{_table(info["outcomes"], "outcome")}

{_table(info["sources"], "source")}
"""


def _policy_line(policy) -> str:
    """The acting policy of rollouts (checkpoint, temperature, ...), as recorded in meta/info.json."""
    if not policy:
        return ""
    return "- **policy**: " + ", ".join(f"{k}={v}" for k, v in policy.items()) + " (`policy` in meta/info.json)\n"


def _size_category(n: int) -> str:
    for limit, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]:
        if n < limit:
            return name
    return "1M<n<10M"
