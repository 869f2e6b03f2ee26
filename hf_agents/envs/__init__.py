"""Gymnasium envs behind the gamepad contract: the batched env, the adapter for any game, registration.

What a game reports, and all that the rollout engine and the evaluation read (every key optional):

`info` (from reset and step):
- "outcome": None until the episode's outcome happens, then a short string (JumpPads: the pad reached);
  the first one is the episode's outcome, an episode without one ends as "none";
- "state": a dict of privileged floats (JumpPads: x, y, z, yaw), recorded as `state_<key>` step columns
  for plots and synthetic preferences; never shown to the model;
- "spawn" (int) and "variant" (str): recorded per episode;
- "error": the env failed; the episode is dropped and counted, never used (paper C.4).
The step's reward goes to the `reward` step column, its sum is the episode's return.

`env.metadata`: "outcomes", the outcomes in the order summaries list them; "outcome_colours" for the
figures; "figures", a "module:function" called as `function(episodes, out_dir, label)` after an evaluation
to draw the game's own figures (it may return extra summary entries); "card", what model cards say of the
game: {"name", "outcome_noun" (what an outcome is, e.g. "pad"), "tags", "limitations"} (recorded in each
evaluation's eval.json, read from there by `hf_agents.cards`).

The built-in JumpPads is registered by name here (`gym.make("hf_agents/JumpPads-v0")`) and loaded on use.
"""

import gymnasium as gym

JUMPPADS_ID = "hf_agents/JumpPads-v0"

if JUMPPADS_ID not in gym.registry:
    gym.register(id=JUMPPADS_ID, entry_point="hf_agents.games.jumppads.env:JumpPadsEnv")

__all__ = ["JUMPPADS_ID", "game_metadata", "game_outcomes"]


def game_metadata(env: str | None = None) -> dict:
    """A game's `metadata` (the contract above) without starting it: `env` is a Gymnasium id ('module:Id'
    imports the module first, as `gym.make` does); None is the built-in JumpPads."""
    import importlib

    env_id = env or JUMPPADS_ID
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        spec = gym.spec(name)
    except (ImportError, gym.error.Error) as e:
        raise ValueError(f"env '{env_id}': cannot find this game ({type(e).__name__}: {e}); give a registered "
                         "Gymnasium id, 'module:Id' with the module importable (on PYTHONPATH)") from None
    entry = spec.entry_point
    if isinstance(entry, str):
        entry_module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(entry_module), attr)
    return dict(getattr(entry, "metadata", {}) or {})


def game_outcomes(env: str | None = None) -> tuple[str, ...]:
    """The outcomes a game reports, in its order (empty: it declares none)."""
    return tuple(game_metadata(env).get("outcomes", ()))
