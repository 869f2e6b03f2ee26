"""JumpPads: the paper's jumppad task recreated on ViZDoom (real 3D engine, pixels only, gamepad actions).

The player spawns on a launch island at one of 4 spawns and can reach one of 3 jumppads
(left, middle, right). Observations are RGB frames from a chase camera behind the player, at 10 Hz;
actions are the 16-component gamepad contract (ids, `MultiDiscrete([2]*12 + [11]*4)`).

Gamepad -> engine: left stick moves relative to the camera (y forward, x strafe), right stick x turns,
right stick y looks up/down; A jumps, B crouches, X uses, LB runs, RT attacks; other buttons do nothing.

An episode ends at a pad (launch task), on falling into a pit, or at `max_steps` (truncated). With
`continue_after_pad=True` a pad launches the player onto the main island and play goes on until
`max_steps` (the pretraining data's general gameplay). `info` follows the contract of `hf_agents.envs`:
`outcome` (the pad reached, else None), `state` (x, y, z, yaw: privileged, for plots and synthetic
preferences only), `spawn`, `variant`; and this game's own `fell`, `on_main_island`, `step`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import gymnasium as gym
import numpy as np

from hf_agents.actions import NUM_BUTTONS, STICK_CENTRES, action_space
from hf_agents.envs.vector import shared_temp_dir
from hf_agents.files import atomic_path
from hf_agents.frames import resize
from hf_agents.games.engine import close_engine, make_engine_folder, start_engine
from hf_agents.games.jumppads.map import (
    DEFAULT_VARIANT,
    FALL_Z,
    MAIN_ISLAND,
    MAIN_OFFSET,
    NUM_SPAWNS,
    PAD_COLOURS,
    PADS,
    VARIANTS,
    IslandLayout,
    map_name,
    write_wad,
)

MAX_RUN = 50.0  # ViZDoom's analog move cap
MAX_TURN = 10.0  # degrees per tic at full right stick (35 degrees a step)
MAX_LOOK = 4.0
TICS = (4, 3)  # alternate: 3.5 tics of 35 Hz = 10 Hz
BUTTONS = {0: "JUMP", 1: "CROUCH", 2: "USE", 4: "SPEED", 7: "ATTACK"}  # gamepad button index -> engine button
_WAD_LOCK = threading.Lock()


def wad_path(pads_look_alike: bool = False) -> Path:
    """The generated WAD, written once per map version (and pad look) into the temp folder game processes share."""
    from hf_agents.games.jumppads import map as jumppads_map

    digest = hashlib.sha1(Path(jumppads_map.__file__).read_bytes()).hexdigest()[:12]
    look = "-look-alike" if pads_look_alike else ""
    path = shared_temp_dir() / f"hf-agents-jumppads-{digest}{look}.wad"
    with _WAD_LOCK:
        if not path.exists():
            with atomic_path(path) as tmp:
                write_wad(tmp, pads_look_alike)
    return path




CARD = {"name": "JumpPads", "outcome_noun": "pad", "tags": ["vizdoom"],
        "limitations": "Trained and evaluated on hf-agents' built-in JumpPads game (ViZDoom) at small scale; it has "
                       "not seen other games or levels and should be evaluated before any other use."}


class JumpPadsEnv(gym.Env):
    # outcomes / outcome_colours / figures: what the generic evaluation reports and draws (see hf_agents.envs)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "outcomes": PADS, "outcome_colours": PAD_COLOURS,
                "figures": "hf_agents.games.jumppads.plots:evaluation_figures", "card": CARD}

    def __init__(self, frame_size=64, variant: str = DEFAULT_VARIANT, spawn: int | None = None, max_steps: int = 100,
                 continue_after_pad: bool = False, render_mode: str | None = "rgb_array", pads_look_alike: bool = False):
        import vizdoom as vzd

        self.frame_size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant '{variant}'; choose one of {list(VARIANTS)}")
        if spawn is not None and not 0 <= spawn < NUM_SPAWNS:
            raise ValueError(f"spawn must be in 0..{NUM_SPAWNS - 1} or None (random), got {spawn}")
        self.variant, self.spawn, self.max_steps = variant, spawn, max_steps
        self.continue_after_pad, self.render_mode = continue_after_pad, render_mode
        self.layout = IslandLayout()
        main = IslandLayout(MAIN_ISLAND, MAIN_OFFSET)
        self.main_landing = main.centre(*main.tiles("T")[0])
        self.observation_space = gym.spaces.Box(0, 255, (*self.frame_size, 3), np.uint8)
        self.action_space = action_space()

        # Not a TemporaryDirectory: the engine writes its ini on close, which may come after a finalizer.
        self._scratch = make_engine_folder()
        game = vzd.DoomGame()
        game.set_doom_game_path(os.path.join(os.path.dirname(vzd.__file__), "freedoom2.wad"))
        game.set_doom_scenario_path(str(wad_path(pads_look_alike)))  # look-alike pads: only place tells them apart
        self._map = map_name(variant, spawn or 0)
        game.set_doom_map(self._map)
        big = max(self.frame_size) > 64
        game.set_screen_resolution(vzd.ScreenResolution.RES_320X240 if big else vzd.ScreenResolution.RES_160X120)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_window_visible(False)
        for setter in (game.set_render_hud, game.set_render_crosshair, game.set_render_weapon, game.set_render_messages):
            setter(False)
        self._buttons = ["MOVE_FORWARD_BACKWARD_DELTA", "MOVE_LEFT_RIGHT_DELTA", "TURN_LEFT_RIGHT_DELTA",
                         "LOOK_UP_DOWN_DELTA", *BUTTONS.values()]
        game.set_available_buttons([getattr(vzd.Button, b) for b in self._buttons])
        game.set_available_game_variables([vzd.GameVariable.POSITION_X, vzd.GameVariable.POSITION_Y,
                                           vzd.GameVariable.POSITION_Z, vzd.GameVariable.ANGLE])
        game.set_episode_timeout(0)
        game.set_mode(vzd.Mode.PLAYER)
        game.add_game_args("+sv_cheats 1 +freelook 1 +sv_nomonsters 1")
        start_engine(game, self._scratch)
        game.send_game_command("chase")  # third-person camera behind the player
        self.game = game
        self._steps = 0
        self._frame = np.zeros((*self.frame_size, 3), np.uint8)
        self._color = None

    # -- gym API -------------------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        options = options or {}
        variant = options.get("variant", self.variant)
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant '{variant}'; choose one of {list(VARIANTS)}")
        spawn = options.get("spawn", self.spawn)
        if spawn is None:
            spawn = int(self.np_random.integers(NUM_SPAWNS))
        if not isinstance(spawn, (int, np.integer)) or not 0 <= spawn < NUM_SPAWNS:
            raise ValueError(f"reset(options={{'spawn': {spawn!r}}}): spawn must be in 0..{NUM_SPAWNS - 1} or None")
        self._variant, self._spawn = variant, int(spawn)
        # The engine's own random numbers (ViZDoom draws each episode's from a generator seeded at random when the
        # game starts) come from the episode's seed: otherwise frames depended on what the process played before.
        self.game.set_seed(int(self.np_random.integers(2**31)))
        wanted = map_name(variant, self._spawn)
        if wanted == self._map:
            self.game.new_episode()
        else:  # a running game starts a new episode on a map as it is set (`new_episode` would load it twice)
            self._map = wanted
            self.game.set_doom_map(wanted)
        if self._color != VARIANTS[variant].player_color:
            self._color = VARIANTS[variant].player_color
            self.game.send_game_command(f'color "{self._color}"')
        # One idle tic: the engine's first frame of an episode still shows the previous episode's camera, so
        # without it the first observation depended on what the process played before.
        self.game.make_action([0.0] * self.game.get_available_buttons_size(), 1)
        self._steps, self._tic = 0, 0
        self._pad, self._launched, self._fell = None, False, False
        return self._observe(), self._info()

    def step(self, action):
        cmd = self.engine_command(np.asarray(action))
        self.game.make_action(cmd, TICS[self._tic % 2])
        self._tic += 1
        self._steps += 1
        obs = self._observe()
        x, y, z = self._xyz
        terminated = False
        if z < FALL_Z:
            self._fell, terminated = True, True
        elif not self._launched:
            pad = self.layout.pad_at(x, y)
            if pad is not None:
                self._pad = pad
                if self.continue_after_pad:  # the pad launches the player onto the main island
                    self._launched = True
                    self.game.send_game_command(f"warp {self.main_landing[0]:.0f} {self.main_landing[1]:.0f}")
                else:
                    terminated = True
        truncated = not terminated and self._steps >= self.max_steps
        return obs, 0.0, terminated, truncated, self._info()

    def render(self):
        return self._frame

    def close(self):
        if getattr(self, "game", None) is not None:
            close_engine(self.game, self._scratch)
            self.game = None

    # -- helpers -------------------------------------------------------------------------------
    def engine_command(self, ids: np.ndarray) -> list[float]:
        if not self.action_space.contains(ids.astype(np.int64)):
            raise ValueError(f"action {ids.tolist()} is outside MultiDiscrete([2]*12 + [11]*4)")
        lx, ly, rx, ry = STICK_CENTRES[ids[NUM_BUTTONS:]]
        # Positive right stick x turns right, as ViZDoom's positive turn delta does.
        cmd = [float(ly) * MAX_RUN, float(lx) * MAX_RUN, float(rx) * MAX_TURN, float(ry) * MAX_LOOK]
        return cmd + [float(ids[b]) for b in BUTTONS]

    def _observe(self) -> np.ndarray:
        state = self.game.get_state()
        if state is None:  # episode finished inside the engine; keep the last frame
            return self._frame
        self._xyz = tuple(float(v) for v in state.game_variables[:3])
        self._yaw = float(state.game_variables[3])
        self._frame = resize(state.screen_buffer, self.frame_size)
        return self._frame

    def _info(self) -> dict:
        x, y, z = self._xyz
        return {"outcome": self._pad, "state": {"x": x, "y": y, "z": z, "yaw": self._yaw}, "spawn": self._spawn,
                "variant": self._variant, "fell": self._fell, "on_main_island": self._launched, "step": self._steps}


def make_jumppads(fault_injection: bool = False, **kwargs) -> gym.Env:
    """Picklable env factory for `BatchedEnv` (use functools.partial to bind kwargs)."""
    env = JumpPadsEnv(**kwargs)
    if fault_injection:
        from hf_agents.envs.vector import FaultInjection

        env = FaultInjection(env)
    return env
