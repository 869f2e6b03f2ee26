"""Shared test helpers: random episodes and datasets, the tiny agent, and the fixtures built on them."""

import getpass
import multiprocessing.util
import os
import shutil
import tempfile

# Every temporary file of a test run (pytest's tmp_path, the datasets cache, the game engines' folders, the launchers'
# logs, the subprocesses' files) goes in one folder, removed when the run ends. inductor's compile cache stays where it
# is by default (shared between runs), and so does this process's multiprocessing folder, which multiprocessing removes
# at exit (its forkserver's socket path stays short).
multiprocessing.util.get_temp_dir()
_RUN_TMP = tempfile.mkdtemp(prefix="hf-agents-tests-")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}"))
os.environ["TMPDIR"] = tempfile.tempdir = _RUN_TMP

# Tests never touch the network or the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(_RUN_TMP, "datasets-cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hf_agents.actions import NUM_BUTTONS  # noqa: E402


def random_episode(rng, length, size=(16, 16)):
    """Random frames (T, H, W, 3) and random contract actions (T, 16): frames drawn first, then buttons, sticks."""
    frames = rng.integers(0, 256, size=(length, *size, 3), dtype=np.uint8)
    ids = np.concatenate([rng.integers(0, 2, (length, NUM_BUTTONS)), rng.integers(0, 11, (length, 4))], 1)
    return frames, ids


def write_test_dataset(path, lengths=(8, 8, 8), size=(16, 16), rng=0, outcomes=None, variants=None, spawns=None,
                       seeds=False, state=False, source="test", **writer_kwargs):
    """Write one episode of `random_episode` per entry of `lengths` to a trajectory dataset at `path` and return
    each episode's (frames, ids) as written.

    rng: a numpy Generator (its draws go on from where they are) or a seed; episodes are drawn in order.
    size: frame (height, width), or one int for square frames.
    outcomes, variants, spawns: cycled over the episodes (episode i gets outcomes[i % len(outcomes)]); a reached
        outcome (anything but "none") is reached halfway, at step length // 2.
    seeds: record seed=i for episode i. state: a privileged `state_x` step column (0, 1, 2, ...).
    writer_kwargs: passed to TrajectoryWriter (rows_per_shard, frame_codec, metadata, overwrite, ...).
    """
    from hf_agents.data import TrajectoryWriter

    rng = np.random.default_rng(rng)
    size = (size, size) if isinstance(size, int) else tuple(size)
    episodes = []
    with TrajectoryWriter(path, frame_size=size, **writer_kwargs) as writer:
        for i, n in enumerate(lengths):
            frames, ids = random_episode(rng, n, size)
            meta = {"source": source}
            if outcomes is not None:
                outcome = outcomes[i % len(outcomes)]
                meta.update(outcome=outcome, outcome_step=n // 2 if outcome != "none" else -1)
            if variants is not None:
                meta["variant"] = variants[i % len(variants)]
            if spawns is not None:
                meta["spawn"] = spawns[i % len(spawns)]
            if seeds:
                meta["seed"] = i
            if state:
                meta["state_x"] = np.arange(n, dtype=np.float32)
            writer.add_episode(frames, ids, **meta)
            episodes.append((frames, ids))
    return episodes


def make_tiny_agent(seed=0, **config_overrides):
    """The tests' agent: the "tiny" preset (32x32 frames) with 8 steps of context unless overridden, initialised
    from `seed`, in eval mode; a JumpPads agent (its saved game) unless `game` says otherwise."""
    from hf_agents.envs.spec import GameSpec
    from hf_agents.models import AgentConfig, AgentModel

    torch.manual_seed(seed)
    size = config_overrides.get("image_size", 32)
    values = {"context_length": 8, "game": GameSpec.of(None, frame_size=size).to_dict(), **config_overrides}
    return AgentModel(AgentConfig.from_preset("tiny", **values)).eval()


def random_batch(B=2, T=8, size=32, seed=0):
    """Model inputs: random frames (B, T, 3, size, size) in the model's layout and random contract actions."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, T, 3, size, size), dtype=torch.uint8, generator=g)
    actions = torch.cat([torch.randint(0, 2, (B, T, NUM_BUTTONS), generator=g),
                         torch.randint(0, 11, (B, T, 4), generator=g)], -1)
    return frames, actions


class Drained:
    """A process's piped stdout, read by a thread as it comes: the process never stalls on a full pipe while this
    process is busy with other work; `wait()` returns (exit code, all its output)."""

    def __init__(self, proc):
        import threading

        self.proc, self.chunks = proc, []
        self.thread = threading.Thread(target=lambda: self.chunks.extend(proc.stdout), daemon=True)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self.thread.join()
        return code, "".join(self.chunks)


class KillWhen:
    """A thread that kills `proc` (its stdout piped) with SIGKILL once `path` exists (a checkpoint it writes), so
    that this process can do other work meanwhile (the uninterrupted reference run, say); `check()` then asserts that
    the kill happened mid-run: before `timeout` seconds, while the process was still running."""

    def __init__(self, proc, path, timeout: float = 300, poll: float = 0.02):
        import signal
        import threading
        import time

        self.output, self.problem = Drained(proc), None

        def watch():
            deadline = time.time() + timeout
            while not os.path.exists(path):
                if time.time() > deadline or proc.poll() is not None:
                    self.problem = f"{path} not written within {timeout:.0f} s (exit code {proc.poll()})"
                    proc.kill()
                    return
                time.sleep(poll)
            proc.send_signal(signal.SIGKILL)  # a real kill, mid-run

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()

    def check(self) -> None:
        self.thread.join()
        _, output = self.output.wait()
        assert self.problem is None, f"{self.problem}\n{output[-3000:]}"


@pytest.fixture
def tiny_agent_dir(tmp_path):
    """A saved `make_tiny_agent()` at tmp_path / "agent"."""
    make_tiny_agent().save_pretrained(tmp_path / "agent")
    return tmp_path / "agent"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def jumppads_sft(tmp_path_factory):
    """A small curated dataset from the real game (32x32 frames, 3 demonstrations per pad)."""
    from hf_agents.games.jumppads.generate import generate_sft

    return generate_sft(tmp_path_factory.mktemp("data") / "sft", per_pad=3, frame_size=32, num_envs=2,
                        progress=False)


def pytest_unconfigure(config):
    shutil.rmtree(_RUN_TMP, ignore_errors=True)
