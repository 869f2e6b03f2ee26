"""A batch of envs in this process, stepped one after another: `BatchedEnv`'s interface without its processes.

The rollout workers (`hf_agents.rollout.workers`) hold one each: a worker acts for its envs and then steps their games
itself, so each core runs one chain of work (acting, then the games) instead of the agent and many game processes
taking turns. An env that raises ends its episode with `info["error"]` (the engine drops and counts it) and is made
again; a hang or a crash of the whole process is the rollout workers' to handle.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable

import gymnasium as gym
import numpy as np


class SerialEnvs:
    """`num_envs` copies of `env_fn()` in this process; `metadata` is the env's."""

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs}: a batch needs at least 1 env")
        self.env_fn, self.num_envs = env_fn, num_envs
        self.on_step: Callable[[], None] | None = None  # called after each batch step (the workers' sign of life)
        self.steps = 0  # env steps taken (the workers count a share's steps with it)
        self.envs: list[gym.Env | None] = []
        try:
            for _ in range(num_envs):
                self.envs.append(env_fn())
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        self.observation_space, self.action_space = first.observation_space, first.action_space
        self.metadata = dict(first.metadata or {})
        self._last_obs = [np.zeros(self.observation_space.shape, self.observation_space.dtype)] * num_envs
        self._steps: list = []

    def _remake(self, i: int) -> None:
        """Close env i and make it again; if that fails, its next reset tries once more (and then raises)."""
        with contextlib.suppress(Exception):
            self.envs[i].close()
        self.envs[i] = None
        self.envs[i] = self.env_fn()

    # -- the venv interface of the rollout engine -----------------------------------------------------
    def reset_async(self, indices, seeds, options) -> None:
        """Nothing to send: `reset_wait` resets them."""

    def reset_wait(self, indices, seeds, options):
        """Reset the envs one after another; a failed reset is tried once more on a fresh env."""
        obs, infos = [], []
        for i, s, o in zip(indices, seeds, options):
            try:
                ob, info = self.envs[i].reset(seed=s, options=o)
            except Exception:  # (a None env is one whose remaking failed)
                self._remake(i)
                ob, info = self.envs[i].reset(seed=s, options=o)
            self._last_obs[i] = ob
            obs.append(ob)
            infos.append(info)
        return np.stack(obs), infos

    def step_async(self, actions, indices) -> list[bool]:
        """Step the envs one after another (their answers wait for `step_wait`)."""
        self._steps = [self._step(i, a) for i, a in zip(indices, actions)]
        self.steps += len(self._steps)
        if self.on_step is not None:
            self.on_step()
        return [True] * len(self._steps)

    def _step(self, i: int, action) -> tuple:
        try:
            ob, r, te, tr, info = self.envs[i].step(action)
        except Exception:
            error = f"env {i} raised:\n{traceback.format_exc(limit=5)}"
            with contextlib.suppress(Exception):
                self._remake(i)
            return self._last_obs[i], 0.0, True, False, {"error": error}
        self._last_obs[i] = ob
        return ob, r, te, tr, info

    def step_wait(self, indices, sent: list[bool]):
        obs, rewards, terminated, truncated, infos = zip(*self._steps)
        self._steps = []
        return (np.stack(obs), np.asarray(rewards, np.float32), np.asarray(terminated), np.asarray(truncated),
                list(infos))

    def close(self) -> None:
        for env in self.envs:
            if env is not None:
                with contextlib.suppress(Exception):
                    env.close()
        self.envs = []
