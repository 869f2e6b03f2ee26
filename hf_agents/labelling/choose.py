"""Which episodes to show next: never a pair the labeller answered, least-watched episodes first, and with a
reward model the pair it is least sure about (closest rewards: a Bradley-Terry probability nearest 1/2)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np


class PairChooser:
    """Picks pairs (or up to 5 for a ranking) among `episode_ids` given the pairs already answered."""

    def __init__(self, episode_ids, rewards: dict[int, float] | None = None, seed: int = 0):
        self.episode_ids = sorted(int(i) for i in episode_ids)
        self.rewards = rewards
        self.seed = seed
        self.pairs_total = len(self.episode_ids) * (len(self.episode_ids) - 1) // 2

    def pairs_left(self, answered: set[tuple[int, int]]) -> int:
        """Pairs of these episodes not yet answered: the most labels that can still be asked."""
        ids = set(self.episode_ids)
        return self.pairs_total - sum(a in ids and b in ids and a != b for a, b in answered)

    def pair(self, answered: set[tuple[int, int]]) -> tuple[int, int] | None:
        """The next pair (shown left, right), or None when every pair has been answered."""
        shown = Counter(e for p in answered for e in p)
        rng = random.Random(f"{self.seed}:{len(answered)}")
        if self.rewards is not None:
            return self._least_sure(answered, shown, rng)
        for first in sorted(self.episode_ids, key=lambda e: (shown[e], rng.random())):
            partners = [e for e in self.episode_ids if e != first and tuple(sorted((first, e))) not in answered]
            if partners:
                second = min(partners, key=lambda e: (shown[e], rng.random()))
                return (first, second) if rng.random() < 0.5 else (second, first)
        return None

    def _least_sure(self, answered, shown, rng) -> tuple[int, int] | None:
        ids = np.asarray(self.episode_ids)
        r = np.asarray([self.rewards[i] for i in ids], np.float64)
        gap = np.abs(r[:, None] - r[None, :]) + 1e-9 * (np.add.outer([shown[i] for i in ids], [shown[i] for i in ids]))
        gap[np.tril_indices(len(ids))] = np.inf
        for a, b in answered:
            i, j = np.searchsorted(ids, a), np.searchsorted(ids, b)
            gap[min(i, j), max(i, j)] = np.inf
        i, j = np.unravel_index(np.argmin(gap), gap.shape)
        if not np.isfinite(gap[i, j]):
            return None
        return (int(ids[i]), int(ids[j])) if rng.random() < 0.5 else (int(ids[j]), int(ids[i]))

    def ranking(self, answered: set[tuple[int, int]], size: int = 5) -> list[int] | None:
        """Up to `size` episodes no two of which the labeller has compared, least-watched first (with a reward
        model: neighbours in reward order, the comparisons it is least sure of); None when no pair is left."""
        shown = Counter(e for p in answered for e in p)
        rng = random.Random(f"{self.seed}:rank:{len(answered)}")
        order = sorted(self.episode_ids, key=lambda e: (shown[e], rng.random()))
        if self.rewards is not None:
            start = order[0]
            order = sorted(self.episode_ids, key=lambda e: (abs(self.rewards[e] - self.rewards[start]), shown[e]))
        chosen: list[int] = []
        for e in order:
            if all(tuple(sorted((e, c))) not in answered for c in chosen):
                chosen.append(e)
                if len(chosen) == size:
                    break
        if len(chosen) < 2:
            return None
        rng.shuffle(chosen)
        return chosen
