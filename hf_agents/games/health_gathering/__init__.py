"""An example second game: ViZDoom's Health Gathering scenario with a designer's taste its reward does not give.

The player must gather medkits to survive an acid floor (the scenario's reward: survival). The designer cares
about something else: which half of the room the first medkit comes from ("left" or "right" of the spawn).
See `env.py` for the game and `record.py` for a studio's own recordings; docs/tutorial-second-game.md takes it
through the whole pipeline.

Importing this module registers the game with Gymnasium, so every command reaches it as
`--env hf_agents.games.health_gathering:hf_agents/HealthGathering-v0` (`ENV`), in worker processes too.
"""

import gymnasium as gym

from hf_agents.games.health_gathering.env import CARD, OUTCOMES, HealthGatheringEnv

GYM_ID = "hf_agents/HealthGathering-v0"
ENV = f"hf_agents.games.health_gathering:{GYM_ID}"  # what --env and env= take

if GYM_ID not in gym.registry:
    gym.register(id=GYM_ID, entry_point="hf_agents.games.health_gathering.env:HealthGatheringEnv")

__all__ = ["CARD", "ENV", "GYM_ID", "OUTCOMES", "HealthGatheringEnv"]
