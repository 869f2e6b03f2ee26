"""Scripted 'human' players for JumpPads: privileged-state controllers that emit only gamepad actions.

Each episode draws a persona (skill, habits) and a target pad. Pad choice is multi-modal and biased
to the middle (paper Figure 3): P(pad | spawn) ~ prior(pad) * exp(-detour_aversion * extra path length),
so from the right-hand spawns, where the right pad needs a detour, it is rarely chosen. Habits:
reaction noise, camera wiggle, hesitation, no-op pauses, wrong turns and idling at the start.
Controllers read `info["state"]` (x, y, yaw); they never see pixels, and the dataset keeps only pixels and actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hf_agents.actions import LEFT_X, LEFT_Y, NOOP_IDS, RIGHT_X, STICK_CENTRES
from hf_agents.games.jumppads.map import LAUNCH_ISLAND, MAIN_ISLAND, MAIN_OFFSET, PADS, IslandLayout

PAD_PRIOR = {"left": 0.27, "middle": 0.46, "right": 0.27}


def stick_bucket(value: float) -> int:
    return int(np.abs(STICK_CENTRES - np.clip(value, -1, 1)).argmin())


@dataclass
class Persona:
    skill: float  # 0 clumsy .. 1 expert
    heading_noise: float  # degrees of reaction noise
    wiggle: float  # camera wiggle amplitude (stick units)
    hesitate_p: float  # chance per step to start hesitating
    noop_p: float  # chance per step of a no-op pause
    wrong_turn_p: float  # chance at the start to head for another pad first
    idle_steps: int  # no-op steps at the start
    runs: bool

    @classmethod
    def sample(cls, rng: np.random.Generator, min_skill: float = 0.0) -> Persona:
        skill = float(rng.beta(4, 2))
        while skill < min_skill:
            skill = float(rng.beta(4, 2))
        return cls(skill=skill, heading_noise=float(30 * (1 - skill) + rng.uniform(2, 8)),
                   wiggle=float(rng.choice([0.0, 0.15, 0.375]) * (rng.random() < 0.5)),
                   hesitate_p=float(rng.uniform(0, 0.06)), noop_p=float(rng.uniform(0, 0.05)),
                   wrong_turn_p=float(rng.uniform(0, 0.25)), idle_steps=int(rng.integers(0, 5)),
                   runs=bool(rng.random() < 0.6))


class ScriptedPlayer:
    """One player: target pad chosen at reset, then steers along shortest paths with habits."""

    launch = IslandLayout(LAUNCH_ISLAND)
    main = IslandLayout(MAIN_ISLAND, MAIN_OFFSET)
    _fields: dict = {}

    def __init__(self, rng: np.random.Generator, pad: str | None = None, persona: Persona | None = None,
                 detour_aversion: float = 0.4, min_skill: float = 0.0):
        self.rng, self.fixed_pad, self.fixed_persona, self.min_skill = rng, pad, persona, min_skill
        self.detour_aversion = detour_aversion
        self.persona = None  # set at reset; an idle slot acts no-ops

    @classmethod
    def field(cls, layout: IslandLayout, key, targets, edge_penalty: float = 1.5) -> np.ndarray:
        if (key, edge_penalty) not in cls._fields:
            cls._fields[(key, edge_penalty)] = layout.distances_to(targets, edge_penalty)
        return cls._fields[(key, edge_penalty)]

    def pad_probabilities(self, spawn: int) -> dict[str, float]:
        col, row = self.launch.spawns[spawn]
        dist = {p: self.field(self.launch, p, p, edge_penalty=0.0)[row, col] for p in PADS}  # plain path length
        best = min(dist.values())
        w = {p: PAD_PRIOR[p] * math.exp(-self.detour_aversion * (dist[p] - best)) for p in PADS}
        total = sum(w.values())
        return {p: v / total for p, v in w.items()}

    def reset(self, info: dict) -> None:
        self.persona = self.fixed_persona or Persona.sample(self.rng, self.min_skill)
        probs = self.pad_probabilities(info["spawn"])
        self.pad = self.fixed_pad or str(self.rng.choice(PADS, p=[probs[p] for p in PADS]))
        others = [p for p in PADS if p != self.pad]
        wrong = self.rng.random() < self.persona.wrong_turn_p
        self.goal = str(self.rng.choice(others)) if wrong else self.pad
        self.wrong_steps = int(self.rng.integers(3, 10)) if wrong else 0
        self.t, self.hesitating, self.wander = 0, 0, None
        self.prev_xy, self.near_pit = None, False
        self.phase = self.rng.uniform(0, 2 * math.pi)

    # -- acting ----------------------------------------------------------------------------------
    def act(self, info: dict) -> np.ndarray:
        p, rng = self.persona, self.rng
        ids = NOOP_IDS.copy()
        if p is None or "state" not in info:  # an idle slot, or an env that failed
            return ids
        self.t += 1
        if self.t <= p.idle_steps or rng.random() < p.noop_p:
            return ids
        if self.wrong_steps and self.t > p.idle_steps + self.wrong_steps:
            self.goal, self.wrong_steps = self.pad, 0  # notices the wrong turn
        heading = self._desired_heading(info)
        if heading is None:
            return ids
        diff = (heading - info["state"]["yaw"] + rng.normal(0, p.heading_noise) + 180) % 360 - 180  # >0: target to the left
        turn = -diff / 35.0 * (0.6 + 0.4 * p.skill)  # right stick x > 0 turns right
        turn += p.wiggle * math.sin(self.phase + 0.9 * self.t)
        ids[RIGHT_X] = stick_bucket(turn)
        if self.hesitating > 0:
            self.hesitating -= 1
            return ids
        if rng.random() < p.hesitate_p:
            self.hesitating = int(rng.integers(1, 5))
        # Slow down to turn: the engine has momentum, and the bridges are two tiles wide.
        forward = 1.0 if abs(diff) < 15 else (0.375 if abs(diff) < 45 else 0.0)
        if not p.runs or self.near_pit:  # careful near pits
            forward = min(forward, 0.625 if abs(diff) < 15 else 0.15)
        ids[LEFT_Y] = stick_bucket(forward)
        if rng.random() < 0.1 * (1 - p.skill):
            ids[LEFT_X] = stick_bucket(rng.choice([-0.375, 0.375]))  # sloppy strafing
        return ids

    def _desired_heading(self, info: dict) -> float | None:
        x, y = info["state"]["x"], info["state"]["y"]
        if info.get("on_main_island"):
            layout = self.main
            if self.wander is None or layout.tile_of(x, y) == self.wander:
                tiles = layout.walkable_tiles()
                self.wander = tiles[int(self.rng.integers(len(tiles)))]
            dist = self.field(layout, ("main", self.wander), [self.wander])
        else:
            layout = self.launch
            dist = self.field(layout, self.goal, self.goal)
        col, row = layout.tile_of(x, y)
        if not (0 <= row < layout.h and 0 <= col < layout.w) or not np.isfinite(dist[row, col]):
            return None
        # Aim at the best neighbour tile (or one further along, for smoother paths).
        best, target = dist[row, col], None
        near_pit = layout.near_pit(col, row, radius=1)
        reach = (-1, 0, 1) if near_pit else (-2, -1, 0, 1, 2)
        for dc in reach:
            for dr in reach:
                nc, nr = col + dc, row + dr
                if (dc or dr) and layout.walkable(nc, nr) and dist[nr, nc] < best and self._clear(layout, col, row, nc, nr):
                    best, target = dist[nr, nc], (nc, nr)
        if target is None:
            target = (col, row)
        tx, ty = layout.centre(*target)
        # Steer from where momentum will carry us (the engine keeps ~70% of the velocity per step).
        vx, vy = (x - self.prev_xy[0], y - self.prev_xy[1]) if self.prev_xy else (0.0, 0.0)
        self.prev_xy = (x, y)
        self.near_pit = layout.near_pit(col, row, radius=2)
        return math.degrees(math.atan2(ty - (y + 1.5 * vy), tx - (x + 1.5 * vx)))

    @staticmethod
    def _clear(layout: IslandLayout, c0, r0, c1, r1) -> bool:
        """Every tile on the straight line between two tiles is walkable."""
        n = max(abs(c1 - c0), abs(r1 - r0)) * 2
        return all(layout.walkable(round(c0 + (c1 - c0) * i / n), round(r0 + (r1 - r0) * i / n)) for i in range(n + 1))


class ScriptedPopulation:
    """A policy over a batch of envs: one scripted player per env, re-drawn at every reset.

    Same interface as the agent policy in the rollout engine: reset(indices, infos), act(obs, infos).
    """

    def __init__(self, num_envs: int, seed: int = 0, pad: str | None = None, detour_aversion: float = 0.4,
                 min_skill: float = 0.0):
        self.metadata = {"policy": "scripted-population", "seed": seed, "pad": pad, "detour_aversion": detour_aversion,
                         "min_skill": min_skill}  # recorded by rollout datasets
        self.seed = seed
        self.players = [ScriptedPlayer(np.random.default_rng([seed, i]), pad=pad, detour_aversion=detour_aversion,
                                       min_skill=min_skill) for i in range(num_envs)]

    def reset(self, indices, infos, seeds=None) -> None:
        """New players for the given envs; with the episodes' reset `seeds`, each player's randomness comes from
        (population seed, episode seed), so the data does not depend on how many envs play it."""
        for j, i in enumerate(indices):
            if seeds is not None:
                self.players[i].rng = np.random.default_rng([self.seed, int(seeds[j])])
            self.players[i].reset(infos[i])

    def act(self, obs, infos) -> tuple[np.ndarray, np.ndarray]:
        actions = np.stack([pl.act(info) for pl, info in zip(self.players, infos)])
        return actions, np.zeros(len(actions), np.float32)


__all__ = ["Persona", "ScriptedPlayer", "ScriptedPopulation"]
