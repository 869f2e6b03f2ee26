"""Bring your own game: any Gymnasium env with an RGB image observation, behind the gamepad contract.

`GamepadEnv(env)` resizes frames to the agent's size and maps the env's action space to and from the
16-component gamepad, so the rollout engine, recording, evaluation and every training stage work unchanged.
A Dict observation needs `image_key=` only when it holds more than one RGB image. Actions:
- Discrete(n): the game's no-op action (`metadata["noop_action"]`, default 0; None: the game has none) is 'no
  button', every other action a button in order (the lowest pressed button wins); so a recorded no-op is the only
  action `filter_noops` drops. Without a no-op, each of the n <= 12 actions is a button and an idle gamepad
  takes action 0;
- MultiBinary(n), n <= 12: buttons;
- MultiDiscrete: size-2 components take buttons, components of 3..11 values take stick axes;
- Box (1-D, bounded), up to 4 values: stick axes, the bucket centre scaled to [low, high];
- Dict of these: allocated in key order.
What does not fit (too many buttons or axes, unbounded boxes, other spaces) raises a clear error.
The env's reward passes through; for outcomes and privileged state see the `info` keys in `hf_agents.envs`.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hf_agents.actions import NOOP_IDS, NUM_BUTTONS, NUM_STICKS, STICK_CENTRES, action_space
from hf_agents.frames import resize


class ActionMappingError(ValueError):
    """An env action space that the gamepad contract cannot express."""


class _Slots:
    def __init__(self):
        self.button, self.stick = 0, 0

    def buttons(self, n, what):
        if self.button + n > NUM_BUTTONS:
            raise ActionMappingError(f"{what} needs {n} buttons but only {NUM_BUTTONS - self.button} of "
                                     f"{NUM_BUTTONS} are left")
        start, self.button = self.button, self.button + n
        return list(range(start, start + n))

    def sticks(self, n, what):
        if self.stick + n > NUM_STICKS:
            raise ActionMappingError(f"{what} needs {n} stick axes but only {NUM_STICKS - self.stick} of "
                                     f"{NUM_STICKS} are left")
        start, self.stick = self.stick, self.stick + n
        return [NUM_BUTTONS + i for i in range(start, start + n)]


def _starts(space: spaces.MultiDiscrete) -> np.ndarray:
    """Each component's lowest value (gymnasium's `start`, 0 by default), flattened."""
    return np.broadcast_to(np.asarray(getattr(space, "start", 0), np.int64), np.shape(space.nvec)).reshape(-1)


class ActionMapper:
    """Maps gamepad ids (16,) <-> actions of a Gymnasium space."""

    def __init__(self, space: spaces.Space, slots: _Slots | None = None, name: str = "action space",
                 noop: int | None = 0):
        self.space, slots = space, slots or _Slots()
        if isinstance(space, spaces.Dict):
            self.children = {k: ActionMapper(s, slots, f"{name}['{k}']") for k, s in space.spaces.items()}
        elif isinstance(space, spaces.Discrete):
            if noop is not None and not 0 <= noop < space.n:
                raise ActionMappingError(f"{name}: noop_action {noop} is not an action of Discrete({space.n})")
            self.noop, self.actions = noop, [k for k in range(int(space.n)) if k != noop]  # actions on buttons
            if len(self.actions) > NUM_BUTTONS:
                raise ActionMappingError(f"{name}: Discrete({space.n}) has more than {NUM_BUTTONS} actions besides a "
                                         "no-op; wrap the env to expose a MultiDiscrete or Dict action space")
            self.index = slots.buttons(len(self.actions), name)
        elif isinstance(space, spaces.MultiBinary):
            self.index = slots.buttons(int(np.prod(space.n)), name)
        elif isinstance(space, spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).reshape(-1)
            if nvec.max() > len(STICK_CENTRES):
                raise ActionMappingError(f"{name}: a MultiDiscrete component has {nvec.max()} values; "
                                         f"at most {len(STICK_CENTRES)} fit a stick")
            self.index = [slots.buttons(1, name)[0] if n <= 2 else slots.sticks(1, name)[0] for n in nvec]
        elif isinstance(space, spaces.Box):
            if len(space.shape) != 1 or not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
                raise ActionMappingError(f"{name}: only bounded 1-D Box spaces map to sticks, got {space}")
            self.index = slots.sticks(space.shape[0], name)
        else:
            raise ActionMappingError(f"{name}: {type(space).__name__} cannot be mapped to the gamepad contract")

    def to_env(self, ids: np.ndarray):
        s = self.space
        if isinstance(s, spaces.Dict):
            return {k: m.to_env(ids) for k, m in self.children.items()}
        if isinstance(s, spaces.Discrete):
            pressed = [k for k, b in enumerate(self.index) if ids[b]]
            return int(s.start + (self.actions[pressed[0]] if pressed else (self.noop or 0)))
        if isinstance(s, spaces.MultiBinary):
            return ids[self.index].astype(s.dtype).reshape(s.shape)
        if isinstance(s, spaces.MultiDiscrete):
            nvec = np.asarray(s.nvec).reshape(-1)
            out = [int(ids[b]) if n <= 2 else int(round((STICK_CENTRES[ids[b]] + 1) / 2 * (n - 1)))
                   for b, n in zip(self.index, nvec)]
            return (np.asarray(out) + _starts(s)).astype(s.dtype).reshape(s.shape)
        centre = STICK_CENTRES[ids[self.index]]
        return (s.low + (centre + 1) / 2 * (s.high - s.low)).astype(s.dtype)

    def from_env(self, action, ids: np.ndarray | None = None) -> np.ndarray:
        """Env action -> gamepad ids (for recording a game's own actions)."""
        ids = NOOP_IDS.copy() if ids is None else ids
        s = self.space
        if isinstance(s, spaces.Dict):
            for k, m in self.children.items():
                m.from_env(action[k], ids)
        elif isinstance(s, spaces.Discrete):
            k = int(action) - int(s.start)
            if k != self.noop:
                ids[self.index[self.actions.index(k)]] = 1
        elif isinstance(s, spaces.MultiBinary):
            ids[self.index] = np.asarray(action).reshape(-1).astype(np.int64)
        elif isinstance(s, spaces.MultiDiscrete):
            nvec = np.asarray(s.nvec).reshape(-1)
            for b, n, v in zip(self.index, nvec, np.asarray(action).reshape(-1) - _starts(s)):
                ids[b] = int(v) if n <= 2 else int(np.abs(STICK_CENTRES - (2 * v / (n - 1) - 1)).argmin())
        else:
            x = 2 * (np.asarray(action, np.float64) - s.low) / (s.high - s.low) - 1
            ids[self.index] = np.abs(STICK_CENTRES[None] - x[:, None]).argmin(1)
        return ids


class GamepadEnv(gym.Wrapper):
    """A pixel env behind the gamepad contract: observations (H, W, 3) uint8, actions MultiDiscrete([2]*12+[11]*4)."""

    def __init__(self, env: gym.Env, frame_size=64, image_key: str | None = None):
        super().__init__(env)
        self.frame_size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
        obs_space = env.observation_space
        if isinstance(obs_space, spaces.Dict):
            image_key = image_key or _only_image_key(obs_space)
            if image_key not in obs_space.spaces:
                raise ValueError(f"observation space is a Dict {list(obs_space.spaces)}; pass image_key= the RGB image")
            obs_space = obs_space.spaces[image_key]
        if not _is_rgb(obs_space):
            raise ValueError(f"observations must be RGB images (H, W, 3), got {obs_space}")
        self.image_key = image_key
        self.mapper = ActionMapper(env.action_space, noop=(getattr(env, "metadata", None) or {}).get("noop_action", 0))
        self.observation_space = spaces.Box(0, 255, (*self.frame_size, 3), np.uint8)
        self.action_space = action_space()

    def _frame(self, obs) -> np.ndarray:
        return resize(obs[self.image_key] if self.image_key else obs, self.frame_size)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._frame(obs), info

    def step(self, action):
        env_action = self.mapper.to_env(np.asarray(action, dtype=np.int64))
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        info = dict(info, env_action=env_action)
        return self._frame(obs), reward, terminated, truncated, info


def _is_rgb(space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) == 3 and space.shape[-1] == 3


def _only_image_key(space: spaces.Dict) -> str | None:
    """The key of the Dict's one RGB image, else None (none, or several to choose from)."""
    keys = [k for k, s in space.spaces.items() if _is_rgb(s)]
    return keys[0] if len(keys) == 1 else None


def make_gamepad_env(env_id: str, frame_size=64, image_key=None, **kwargs) -> GamepadEnv:
    """`gymnasium.make(env_id, **kwargs)` behind the gamepad contract (picklable for `BatchedEnv`).

    Use "module:EnvId" (e.g. "ale_py:ALE/Pong-v5") so that worker processes import the module registering it.
    """
    return GamepadEnv(gym.make(env_id, **kwargs), frame_size=frame_size, image_key=image_key)


def env_factory(env: str | None = None, frame_size=64, max_steps: int | None = None, kwargs: dict | None = None,
                image_key: str | None = None):
    """A picklable factory for `BatchedEnv`: the built-in JumpPads for `env=None` (its defaults are the paper's
    evaluation setting), else any Gymnasium id ("module:Id") behind `GamepadEnv`; frames of `frame_size`.
    `max_steps` is the episode timeout in steps (None: the game's own); `kwargs` go to `gymnasium.make`."""
    from hf_agents.envs import JUMPPADS_ID

    kwargs = dict(kwargs or {})
    if env is None or env == JUMPPADS_ID:
        limit = {} if max_steps is None else {"max_steps": max_steps}
        return functools.partial(gym.make, f"hf_agents.envs:{JUMPPADS_ID}", frame_size=frame_size,
                                 disable_env_checker=True, **{**kwargs, **limit})
    limit = {} if max_steps is None else {"max_episode_steps": max_steps}
    return functools.partial(make_gamepad_env, env, frame_size=frame_size, image_key=image_key, **{**kwargs, **limit})
