"""Health Gathering, the ViZDoom scenario that ships with the `vizdoom` package, with a designer's taste on top.

The scenario (`vizdoom.scenarios_path/health_gathering.cfg`): a square room (1216 x 1216 map units) whose acid
floor burns the player's health; 17 medkits lie at random places each episode. The player spawns in the middle,
facing east, and can turn left, turn right and walk forward. The scenario's reward is survival: +1 per tic alive,
-100 on death (an idle player dies after about 11 s). Its reward cannot say *where* the player goes.

The designer's taste that the reward does not give: which half of the room the player takes its first medkit
from, "left" (north of the spawn, the side to its left as it spawns) or "right" (south). Either keeps the
player alive as well as the other. `info["outcome"]` is None until the step the first medkit is taken (health goes
up), then the side where that medkit lay; an episode without a medkit ends as "none". Play goes on after it (the
scenario is unchanged), until death, the scenario's 60 s timeout or `max_steps` (truncated; default 200 steps).

Observations: RGB frames (120, 160, 3) from the player's eyes (`RES_160X120`), at 10 Hz (3.5 engine tics a step,
alternately 4 and 3 at 35 tics/s). Actions: `MultiBinary(3)`, the scenario's own buttons (turn left, turn right,
forward); behind `GamepadEnv` they are the gamepad's A, B and X buttons (all off is the no-op: standing still).
`info["state"]` holds x, y, yaw and health (privileged: plots and synthetic preferences only).
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from hf_agents.games.engine import close_engine, make_engine_folder, start_engine

SCENARIO = "health_gathering.cfg"
OUTCOMES = ("left", "right")
OUTCOME_COLOURS = {"left": "#d62728", "right": "#1f4fd6", "none": "#7f7f7f"}
CENTRE_Y = 608.0  # the room spans 0..1216 in x and y; the player spawns at (608, 608) facing east (+x)
TICS = (4, 3)  # alternate: 3.5 tics of 35 Hz = 10 Hz
BUTTONS = ("TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD")  # the scenario's buttons, in its order
GAMEPAD_BUTTONS = ("a", "b", "x")  # where GamepadEnv puts them (MultiBinary -> the first buttons, in order)
CARD = {"name": "Health Gathering (ViZDoom)", "outcome_noun": "first medkit",
        "tags": ["vizdoom", "health-gathering"],
        "limitations": "Trained and evaluated on ViZDoom's Health Gathering scenario at small scale, with hf-agents' "
                       "example designer taste (the side of the room of the first medkit); it has not seen other "
                       "games or levels and should be evaluated before any other use."}




def side_of(y: float) -> str:
    """The designer's outcome for a medkit lying at map y: "left" (north of the spawn) or "right" (south)."""
    return "left" if y >= CENTRE_Y else "right"


class HealthGatheringEnv(gym.Env):
    """ViZDoom's Health Gathering behind the game contract of `hf_agents.envs` (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "outcomes": OUTCOMES,
                "outcome_colours": OUTCOME_COLOURS, "card": CARD}

    def __init__(self, max_steps: int = 200, render_mode: str | None = "rgb_array"):
        import vizdoom as vzd

        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps, self.render_mode = int(max_steps), render_mode
        self.observation_space = gym.spaces.Box(0, 255, (120, 160, 3), np.uint8)
        self.action_space = gym.spaces.MultiBinary(len(BUTTONS))

        # Not a TemporaryDirectory: the engine writes its ini on close, which may come after a finalizer.
        self._scratch = make_engine_folder()
        game = vzd.DoomGame()
        game.load_config(os.path.join(vzd.scenarios_path, SCENARIO))  # the .wad is found beside the .cfg
        game.set_screen_resolution(vzd.ScreenResolution.RES_160X120)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_available_buttons([getattr(vzd.Button, b) for b in BUTTONS])
        game.set_available_game_variables([vzd.GameVariable.POSITION_X, vzd.GameVariable.POSITION_Y,
                                           vzd.GameVariable.ANGLE, vzd.GameVariable.HEALTH])
        game.set_objects_info_enabled(True)  # where the medkits lie: the side of the one taken
        game.set_mode(vzd.Mode.PLAYER)
        start_engine(game, self._scratch)
        self.game = game
        self._frame = np.zeros(self.observation_space.shape, np.uint8)
        self._vars = (CENTRE_Y, CENTRE_Y, 0.0, 100.0)
        self._medkits: dict[int, tuple[float, float]] = {}
        self._steps, self._outcome = 0, None

    # -- gym API -------------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        # The engine's random numbers (where the medkits lie) come from the episode's seed.
        self.game.set_seed(int(self.np_random.integers(2**31)))
        self.game.new_episode()
        # One idle tic: the engine's first state of an episode may still hold the previous episode's (its health
        # among them), so without it the first observation depended on what the process played before.
        self.game.make_action([0.0] * len(BUTTONS), 1)
        self._steps, self._tic, self._outcome = 0, 0, None
        self._observe()
        return self._frame, self._info()

    def step(self, action):
        action = np.asarray(action).reshape(-1)
        if action.shape != (len(BUTTONS),) or not np.isin(action, (0, 1)).all():
            raise ValueError(f"action {action.tolist()} is not in MultiBinary({len(BUTTONS)}): "
                             f"{len(BUTTONS)} values of 0 or 1 ({', '.join(BUTTONS)})")
        health_before, medkits_before = self._vars[3], self._medkits
        reward = float(self.game.make_action([float(a) for a in action], TICS[self._tic % 2]))
        self._tic += 1
        self._steps += 1
        self._observe()
        if self._outcome is None and self._vars[3] > health_before:  # a medkit was taken during this step
            self._outcome = side_of(self._taken(medkits_before))
        terminated = self.game.is_episode_finished()  # died, or the scenario's timeout
        truncated = not terminated and self._steps >= self.max_steps
        return self._frame, reward, terminated, truncated, self._info()

    def render(self):
        return self._frame

    def close(self):
        if getattr(self, "game", None) is not None:
            close_engine(self.game, self._scratch)
            self.game = None

    # -- helpers -------------------------------------------------------------------------------
    def _observe(self) -> None:
        state = self.game.get_state()
        if state is None:  # the episode ended inside the engine (death): keep the last frame and position
            from vizdoom import GameVariable

            self._vars = (*self._vars[:3], float(self.game.get_game_variable(GameVariable.HEALTH)))
            return
        self._vars = tuple(float(v) for v in state.game_variables)
        self._frame = np.ascontiguousarray(state.screen_buffer)
        self._medkits = {o.id: (o.position_x, o.position_y) for o in state.objects if o.name == "Medikit"}

    def _taken(self, before: dict) -> float:
        """The map y of the medkit taken since `before` (the one nearest the player if several went; the player's
        own y if the engine's object list says nothing)."""
        x, y = self._vars[:2]
        gone = [before[i] for i in set(before) - set(self._medkits)]
        if not gone:
            return y
        return min(gone, key=lambda p: (p[0] - x) ** 2 + (p[1] - y) ** 2)[1]

    def _info(self) -> dict:
        x, y, yaw, health = self._vars
        return {"outcome": self._outcome, "state": {"x": x, "y": y, "yaw": yaw, "health": health}, "spawn": 0,
                "step": self._steps}
