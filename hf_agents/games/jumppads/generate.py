"""Generate the built-in game's datasets with the scripted population (`hf-agents data generate`).

pretrain: general gameplay, every visual variant, random spawns, play continuing on the main island
          after a pad (the paper's large unfiltered dataset).
sft:      curated demonstrations: default variant, `per_pad` successful episodes per pad by skilled players
          (skill >= `min_skill`), each cut at the pad (the paper's 100 per jumppad).
Both are deterministic given the seed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from hf_agents.data.writer import TrajectoryWriter
from hf_agents.envs.spec import GameSpec
from hf_agents.envs.vector import BatchedEnv
from hf_agents.games.jumppads.env import make_jumppads
from hf_agents.games.jumppads.map import DEFAULT_VARIANT, NUM_SPAWNS, PADS, VARIANTS
from hf_agents.games.jumppads.population import ScriptedPopulation
from hf_agents.rollout.engine import rollout


def generate_pretrain(out, episodes=200, frame_size=64, num_envs=4, seed=0, max_steps=100, overwrite=False,
                      progress=True, frame_codec="png") -> Path:
    variants = list(VARIANTS)
    rng = np.random.default_rng(seed)
    chosen = [variants[i] for i in rng.integers(len(variants), size=episodes)]
    env_fn = functools.partial(make_jumppads, frame_size=frame_size, max_steps=max_steps, continue_after_pad=True)
    with BatchedEnv(env_fn, num_envs) as venv, TrajectoryWriter(
        out, frame_size=frame_size, overwrite=overwrite, frame_codec=frame_codec,
        description="General JumpPads gameplay by a scripted population of players (all visual variants, "
                    "play continuing after the launch).", metadata={"game": _game(frame_size)}
    ) as writer:
        result = rollout(venv, ScriptedPopulation(num_envs, seed=seed), episodes, seed=seed, variants=chosen,
                         writer=writer, source="scripted-population", progress=progress, desc="pretrain data")
        writer.metadata["dropped_episodes"] = result.dropped  # a game process failed mid-episode (not written)
    return Path(out)


def _game(frame_size: int) -> dict:
    """The game the agents trained on these datasets play: JumpPads in its evaluation setting."""
    return GameSpec.of(None, frame_size=frame_size).to_dict()


class _SpawnCycle:
    """Episode id -> spawn, cycling through the spawns."""

    def __getitem__(self, episode_id: int) -> int:
        return episode_id % NUM_SPAWNS


def generate_sft(out, per_pad=100, frame_size=64, num_envs=4, seed=0, max_steps=100, overwrite=False,
                 progress=True, max_attempts_factor=4, min_skill=0.75, frame_codec="png") -> Path:
    env_fn = functools.partial(make_jumppads, frame_size=frame_size, max_steps=max_steps, variant=DEFAULT_VARIANT)
    with BatchedEnv(env_fn, num_envs) as venv, TrajectoryWriter(
        out, frame_size=frame_size, overwrite=overwrite, frame_codec=frame_codec,
        description=f"Curated JumpPads demonstrations: {per_pad} successful episodes per pad (spawns in turn), variant "
                    f"'{DEFAULT_VARIANT}', each cut at the pad.",
        metadata={"policy": {"policy": "scripted-population", "seed": seed, "pads": list(PADS), "min_skill": min_skill},
                  "game": _game(frame_size)},
    ) as writer:
        dropped, next_id = 0, 0  # every scheduled episode gets its own id (rejected ones leave gaps): same ids however many envs
        # Each pad's demonstrations start from every spawn in turn (drawn spawns left one spawn with 3 of 40 left-pad
        # demonstrations, and the agent then rarely chose the left pad).
        spawn_cycle = _SpawnCycle()
        for p, pad in enumerate(PADS):
            kept = []
            attempts = 0
            while len(kept) < per_pad and attempts < per_pad * max_attempts_factor:
                want = per_pad - len(kept)
                result = rollout(
                    venv, ScriptedPopulation(num_envs, seed=seed + 1000 * p + attempts, pad=pad, min_skill=min_skill),
                    want,
                    seed=seed + 100_000 * (p + 1) + attempts, spawns=spawn_cycle, writer=writer,
                    source=f"scripted-demo-{pad}",
                    accept=lambda ep, pad=pad: ep.outcome == pad, progress=progress, desc=f"sft data ({pad})",
                    episode_ids=range(next_id, next_id + want))
                next_id += want
                kept += result.episodes
                dropped += result.dropped
                attempts += want
            if len(kept) < per_pad:
                raise RuntimeError(f"only {len(kept)} of {per_pad} demonstrations reached the {pad} pad")
        writer.metadata["dropped_episodes"] = dropped
    return Path(out)
