"""The game an artifact belongs to: saved with every dataset (meta/info.json "game"), agent (config.json
"game"), adapter and reward model (through their agent) and evaluation (eval.json "game"), so that every
command that plays, labels or describes it finds its game without `--env`.

A `GameSpec` holds the Gymnasium id ('module:Id' for a game outside this package), the keyword arguments of
`gymnasium.make`, the observation's image key, the frame size the agent sees, the frame rate and the outcomes
the game reports. An explicit `--env` (or `env=`) wins over the saved game; an artifact that names no game and
no `--env` is an error, never a silent fallback to the built-in JumpPads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from hf_agents.data.schema import FPS
from hf_agents.envs import JUMPPADS_ID, game_metadata

SPEC_KEYS = ("id", "kwargs", "image_key", "frame_size", "fps", "outcomes", "name")


class GameUnknownError(ValueError):
    """An artifact that names no game, asked to play without `--env`."""


@dataclass(frozen=True)
class GameSpec:
    """Which game, with which options, at which frame size, rate and outcomes."""

    id: str = JUMPPADS_ID
    kwargs: dict = field(default_factory=dict)
    image_key: str | None = None
    frame_size: int | None = None
    fps: int = FPS
    outcomes: tuple[str, ...] = ()
    name: str = ""

    @classmethod
    def of(cls, env: str | None = None, kwargs: dict | None = None, image_key: str | None = None,
           frame_size: int | None = None, fps: int | None = None) -> GameSpec:
        """The spec of game `env` (None: the built-in JumpPads) read from its metadata without starting it; a
        game that cannot be imported raises one clear ValueError."""
        meta = game_metadata(env)
        env_id = env or JUMPPADS_ID
        return cls(id=env_id, kwargs=dict(kwargs or {}), image_key=image_key, frame_size=frame_size,
                   fps=int(fps or meta.get("render_fps") or FPS), outcomes=tuple(meta.get("outcomes", ())),
                   name=(meta.get("card") or {}).get("name") or env_id)

    @classmethod
    def from_dict(cls, data: dict, where: str = "game") -> GameSpec:
        unknown = set(data) - set(SPEC_KEYS)
        if unknown or not isinstance(data.get("id"), str):
            raise ValueError(f"{where}: not a game spec (needs 'id'; known keys {SPEC_KEYS}, got {sorted(data)}); "
                             "write it again with the command that made it")
        return cls(**{**data, "kwargs": dict(data.get("kwargs") or {}), "outcomes": tuple(data.get("outcomes", ()))})

    def to_dict(self) -> dict:
        return {**asdict(self), "outcomes": list(self.outcomes)}

    def at(self, frame_size: int) -> GameSpec:
        """The same game seen at `frame_size` (the agent's)."""
        return replace(self, frame_size=int(frame_size))

    def env_fn(self, frame_size: int | None = None, max_steps: int | None = None):
        """A picklable factory of this game behind the gamepad contract."""
        from hf_agents.envs.adapter import env_factory

        return env_factory(self.id, frame_size or self.frame_size or 64, max_steps, kwargs=self.kwargs,
                           image_key=self.image_key)

    def metadata(self) -> dict:
        """The game's own metadata (imports the game)."""
        return game_metadata(self.id)

    def describe(self) -> str:
        options = f" with {json.dumps(self.kwargs, sort_keys=True)}" if self.kwargs else ""
        return f"{self.name or self.id} ({self.id}{options})"


def resolve_game(env: str | None, saved: GameSpec | None, what: str, kwargs: dict | None = None,
                 image_key: str | None = None) -> GameSpec:
    """The game to play: `env` when given (with `kwargs`), else the one saved with `what` (kwargs override its
    options); neither is an error that says how to name the game."""
    if env:
        same = saved is not None and saved.id == env
        base = saved if same else GameSpec.of(env)
        return replace(base, kwargs={**base.kwargs, **(kwargs or {})}, image_key=image_key or base.image_key)
    if saved is None:
        raise GameUnknownError(f"{what} does not name its game (made before games were recorded, or from "
                               f"recordings imported without --env); pass --env GAME (the built-in game is "
                               f"{JUMPPADS_ID})")
    return replace(saved, kwargs={**saved.kwargs, **(kwargs or {})}, image_key=image_key or saved.image_key)


def parse_kwargs(pairs: list[str] | None, where: str = "--env-kwarg") -> dict:
    """KEY=VALUE strings as game keyword arguments; values are JSON when they parse (numbers, true, lists)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{where} {pair!r}: expected KEY=VALUE, e.g. {where} pads_look_alike=true")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def saved_game(data: dict | None, where: str) -> GameSpec | None:
    """The game saved in an artifact's metadata (a dataset's info.json or an agent's config "game"), or None."""
    return GameSpec.from_dict(data, f"{where}: game") if data else None
