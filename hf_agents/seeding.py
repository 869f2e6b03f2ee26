"""Per-episode random streams: an episode's randomness depends on its own seeds only, never on which env or
process plays it, or on how many there are."""

from __future__ import annotations

import numpy as np


def episode_stream(seed: int, episode: int) -> int:
    """The seed of one episode's random stream, from a run's (or a reset's) seed and the episode's id."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1, np.uint64)[0] >> 1)
