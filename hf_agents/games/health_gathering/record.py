"""A studio's own recordings of Health Gathering: scripted players, written as WHAM `.npz` files.

Each episode is one `episode_NNNNNN.npz` in the format `hf-agents data import` reads (`hf_agents.data.wham`):
`images` uint8 (T, 3, 120, 160), the game's own frames; `actions` float (T, 16), the gamepad (the game's turn
left, turn right and forward are buttons A, B and X, `GAMEPAD_BUTTONS`); `rewards` (T,), the scenario's reward
after each action; `state_x`, `state_y`, `state_yaw`, `state_health` (T,), privileged state at each frame; and,
when a medkit was taken, `outcome` ("left" or "right") and `outcome_step` (the step whose action took it).
Frame t is what the player saw before action t.

The players wander: each keeps an intent (walk, walk while turning, turn on the spot, stand) for a few steps,
then draws another. `curated=True` keeps only episodes that reach an outcome, as many of each side (the
curated demonstrations that SFT learns from).

    python -m hf_agents.games.health_gathering.record --out recordings/play --episodes 60
    python -m hf_agents.games.health_gathering.record --out recordings/curated --episodes 20 --curated
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hf_agents.actions import ids_to_continuous
from hf_agents.files import atomic_path

# intent -> (turn left, turn right, forward), with the chance a player picks it
INTENTS = {"walk": ((0, 0, 1), 0.45), "walk-left": ((1, 0, 1), 0.15), "walk-right": ((0, 1, 1), 0.15),
           "turn-left": ((1, 0, 0), 0.1), "turn-right": ((0, 1, 0), 0.1), "stand": ((0, 0, 0), 0.05)}


class Wanderer:
    """A scripted player: an intent held for 1-8 steps, then another (seeded, so recordings repeat)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.names = list(INTENTS)
        self.p = np.array([INTENTS[n][1] for n in self.names])
        self.left = 0

    def act(self) -> np.ndarray:
        if self.left <= 0:
            self.intent = self.names[self.rng.choice(len(self.names), p=self.p / self.p.sum())]
            self.left = int(self.rng.integers(1, 9))
        self.left -= 1
        return np.array(INTENTS[self.intent][0], np.int8)


def play_episode(env, mapper, seed: int, max_steps: int, stop_at_outcome: bool = False) -> dict:
    """One episode of a `Wanderer` (seeded by `seed`) as the arrays of a WHAM `.npz`; with `stop_at_outcome`, it
    ends at the first medkit."""
    obs, info = env.reset(seed=seed)
    player = Wanderer(seed)
    frames, actions, rewards, state = [], [], [], {k: [] for k in info["state"]}
    outcome, outcome_step = None, -1
    for t in range(max_steps):
        frames.append(obs)
        for k, v in info["state"].items():
            state[k].append(v)
        action = player.act()
        actions.append(ids_to_continuous(mapper.from_env(action)))
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if outcome is None and info["outcome"] is not None:
            outcome, outcome_step = info["outcome"], t
        if terminated or truncated or (stop_at_outcome and outcome is not None):
            break
    arrays = {"images": np.stack(frames).transpose(0, 3, 1, 2).copy(), "actions": np.stack(actions).astype(np.float32),
              "rewards": np.asarray(rewards, np.float32),
              **{f"state_{k}": np.asarray(v, np.float32) for k, v in state.items()}}
    if outcome is not None:
        arrays.update(outcome=np.array(outcome), outcome_step=np.array(outcome_step))
    return arrays


def record(out, episodes: int = 60, seed: int = 0, max_steps: int = 200, curated: bool = False,
           progress: bool = True, overwrite: bool = False) -> list[Path]:
    """Write `episodes` recordings into the folder `out` (see the module docstring); returns their paths.

    curated: keep only episodes with an outcome, `episodes // 2` of each side (and one more "left" when odd),
    each ending at the outcome's step as a curated demonstration would.
    overwrite: replace recordings already in `out` (else a folder holding some is refused)."""
    from hf_agents.envs.adapter import ActionMapper
    from hf_agents.games.health_gathering.env import OUTCOMES, HealthGatheringEnv

    out = Path(out)
    old = sorted(out.glob("episode_*.npz"))
    if old and not overwrite:
        raise FileExistsError(f"{out}: already holds {len(old)} recordings; pass --overwrite or record elsewhere")
    for path in old:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    wanted = {OUTCOMES[0]: episodes - episodes // 2, OUTCOMES[1]: episodes // 2} if curated else None
    env = HealthGatheringEnv(max_steps=max_steps)
    mapper = ActionMapper(env.action_space)
    paths, tried = [], 0
    try:
        while len(paths) < episodes:
            if curated and tried >= 50 * episodes + 100:
                raise RuntimeError(f"{tried} episodes gave {len(paths)} curated ones of {episodes}; raise --max-steps")
            arrays = play_episode(env, mapper, seed + tried, max_steps, stop_at_outcome=curated)
            tried += 1
            if curated:
                side = str(arrays["outcome"]) if "outcome" in arrays else None
                if side is None or wanted[side] == 0:
                    continue
                wanted[side] -= 1
            path = out / f"episode_{len(paths):06d}.npz"
            with atomic_path(path) as tmp:
                np.savez_compressed(tmp, **arrays)
            paths.append(path)
            if progress:
                print(json.dumps({"wrote": str(path), "steps": len(arrays["actions"]),
                                  "outcome": str(arrays["outcome"]) if "outcome" in arrays else "none"}))
    finally:
        env.close()
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hf_agents.games.health_gathering.record",
                                description="Record scripted Health Gathering play as WHAM .npz files (what a studio "
                                            "records), for `hf-agents data import`.")
    p.add_argument("--out", required=True, help="folder for the episode_NNNNNN.npz files")
    p.add_argument("--episodes", type=int, default=60, help="recordings to write")
    p.add_argument("--seed", type=int, default=0, help="first episode's seed (episode i: seed + i)")
    p.add_argument("--max-steps", type=int, default=200, help="episode length cap in steps (10 per second)")
    p.add_argument("--curated", action="store_true", help="only episodes that take a medkit, half on each side, "
                   "cut at that step (demonstrations for SFT)")
    p.add_argument("--overwrite", action="store_true", help="replace the recordings already in --out")
    p.add_argument("--quiet", action="store_true", help="no line per recording")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.max_steps < 1:
        p.error("--episodes and --max-steps must be >= 1")
    try:
        paths = record(args.out, args.episodes, args.seed, args.max_steps, args.curated, progress=not args.quiet,
                       overwrite=args.overwrite)
    except (OSError, RuntimeError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    print(json.dumps({"recordings": len(paths), "folder": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
