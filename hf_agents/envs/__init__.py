"""Gymnasium environments: the built-in JumpPads game (registered as hf_agents/JumpPads-v0) and the batched env."""

import gymnasium as gym

from hf_agents.envs.jumppads_map import DEFAULT_VARIANT, PADS, VARIANTS

if "hf_agents/JumpPads-v0" not in gym.registry:
    gym.register(id="hf_agents/JumpPads-v0", entry_point="hf_agents.envs.jumppads:JumpPadsEnv")

__all__ = ["DEFAULT_VARIANT", "PADS", "VARIANTS"]
