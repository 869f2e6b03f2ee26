"""The built-in game, JumpPads on ViZDoom: env, map, scripted population, data generation, figures.

`gym.make("hf_agents/JumpPads-v0")` works after `import hf_agents.envs` (registered by name, loaded on use).
"""

from hf_agents.games.jumppads.env import JumpPadsEnv, make_jumppads
from hf_agents.games.jumppads.map import DEFAULT_VARIANT, NUM_SPAWNS, PADS, VARIANTS

OUTCOMES = PADS  # what the game reports as info["outcome"]; an episode reaching none of them is "none"
# The paper's failure rates (Figures 3-5), for the comparison table.
PAPER = {"base": {"none": 0.44}, "sft": {"none": 0.11}, "scratch": {"none": 0.20}}

__all__ = ["DEFAULT_VARIANT", "NUM_SPAWNS", "OUTCOMES", "PADS", "PAPER", "VARIANTS", "JumpPadsEnv", "make_jumppads"]
