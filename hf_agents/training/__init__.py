"""Training stages, one module each, run from a recipe: `python -m hf_agents.training RECIPE [key=value ...]`.

A recipe's `stage:` names a module below. Each stage module exports `CONFIG` (its config dataclass), `REQUIRED`
(the fields a recipe must set) and `run(config) -> dict` (train, save, return the metrics). Adding a stage is a
new module and one line here; modules are imported only when their stage is used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

STAGES = {
    "imitation": "hf_agents.training.imitation",  # pretrain, SFT, from scratch
    "reward": "hf_agents.training.reward",  # reward model on trajectory preferences
    "preference_ft": "hf_agents.training.preference_ft",  # top-scored rollouts -> behaviour cloning
    "align": "hf_agents.training.align",  # online REINFORCE / RLOO with a reward
    "dpo": "hf_agents.training.dpo",  # DPO on trajectory preference pairs
    "align_loop": "hf_agents.training.loop",  # rounds of roll out -> label -> reward model -> align -> evaluate
}
DEFAULT_STAGE = "imitation"


def load_stage(name: str) -> ModuleType:
    """The module of stage `name` (a key of `STAGES`)."""
    if name not in STAGES:
        raise KeyError(f"unknown stage '{name}'; choose one of {sorted(STAGES)}")
    return importlib.import_module(STAGES[name])
