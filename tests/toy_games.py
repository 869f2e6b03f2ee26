"""Toy third-party games for the tests, registered with Gymnasium: `gym.make("tests.toy_games:Corridor-v0")`."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """A third-party toy game speaking only the documented info keys: walk right to the goal, left to the pit."""

    metadata = {"outcomes": ("goal", "pit")}
    observation_space = spaces.Dict({"pos": spaces.Box(-5.0, 5.0, (1,), np.float32),
                                     "pixels": spaces.Box(0, 255, (12, 12, 3), np.uint8)})
    action_space = spaces.Discrete(3)  # 0 stay, 1 right (button A), 2 left (button B)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0
        return self._obs(), self._info()

    def step(self, action):
        self.x += {0: 0, 1: 1, 2: -1}[int(action)]
        done = abs(self.x) >= 3
        return self._obs(), float(self.x >= 3), done, False, self._info()

    def _obs(self):
        return {"pos": np.array([self.x], np.float32), "pixels": np.full((12, 12, 3), 40 * (self.x + 3), np.uint8)}

    def _info(self):
        outcome = "goal" if self.x >= 3 else ("pit" if self.x <= -3 else None)
        return {"outcome": outcome, "state": {"x": float(self.x)}, "spawn": 0}


class Fuse(gym.Env):
    """Episodes of 2 to 7 steps, set by the reset seed; each frame shows the last action taken (so a game handed
    another env's action plays differently from then on)."""

    metadata = {"outcomes": ("burnt",)}
    observation_space = spaces.Box(0, 255, (12, 12, 3), np.uint8)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length, self.last = 0, 2 + (seed or 0) % 6, 0
        return self._obs(), {"outcome": None, "spawn": 0}

    def step(self, action):
        self.t, self.last = self.t + 1, int(action)
        done = self.t >= self.length
        return self._obs(), 0.0, done, False, {"outcome": "burnt" if done else None, "spawn": 0}

    def _obs(self):
        return np.full((12, 12, 3), 60 * self.last + self.t, np.uint8)


CORRIDOR_ID = "tests.toy_games:Corridor-v0"
FUSE_ID = "tests.toy_games:Fuse-v0"
if "Corridor-v0" not in gym.registry:
    gym.register(id="Corridor-v0", entry_point="tests.toy_games:Corridor")
if "Fuse-v0" not in gym.registry:
    gym.register(id="Fuse-v0", entry_point="tests.toy_games:Fuse")
