import os
import tempfile

# Tests never touch the network or the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-agents-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hf_agents.actions import NUM_BUTTONS, STICK_CENTRES  # noqa: E402


def random_episode(rng, length, size=(16, 16)):
    """Frames whose pixels encode (episode-independent) step content, and random contract actions."""
    frames = rng.integers(0, 256, size=(length, *size, 3), dtype=np.uint8)
    ids = np.concatenate([rng.integers(0, 2, (length, NUM_BUTTONS)), rng.integers(0, 11, (length, 4))], 1)
    return frames, ids


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def stick_values(rng):
    return STICK_CENTRES


@pytest.fixture(scope="session")
def jumppads_sft(tmp_path_factory):
    """A small curated dataset from the real game (32x32 frames, 3 demonstrations per pad)."""
    from hf_agents.games.jumppads.generate import generate_sft

    return generate_sft(tmp_path_factory.mktemp("data") / "sft", per_pad=3, frame_size=32, num_envs=2,
                        progress=False)
