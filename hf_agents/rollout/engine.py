"""The rollout engine: run a policy on a batched env for N episodes; used by evaluation, data generation and
preference collection alike (and by alignment).

A policy has `reset(indices, infos)` and `act(observations (N, H, W, 3) uint8, infos) -> (action ids (N, 16),
log-probs (N,))`, and optionally a `metadata` dict that rollout datasets record (`info["policy"]`).
`observations` is one array the engine updates in place: a policy that keeps frames copies them.
The agent (`AgentPolicy`) ignores `infos`; scripted players read their privileged state from it.
The engine reads only the documented `info` keys of `hf_agents.envs` (outcome, state, spawn, variant, error)
and the env's reward. Episodes come back in the trajectory dataset's terms and can stream straight into a
`TrajectoryWriter`. An episode whose env raised, died or hung is dropped and counted, never mixed in (paper C.4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from hf_agents.data.schema import NO_OUTCOME, STATE_PREFIX


@dataclass
class Episode:
    frames: np.ndarray | None  # uint8 (T, H, W, 3): the observation each action was chosen on
    actions: np.ndarray  # int64 (T, 16)
    logprobs: np.ndarray  # float32 (T,)
    rewards: np.ndarray  # float32 (T,): the env's reward for each action
    state: dict  # privileged state_<key> arrays (T,)
    spawn: int
    variant: str
    outcome: str  # the game's outcome, or "none"
    outcome_step: int
    seed: int
    index: int = -1  # the episode's id in its run
    info: dict = field(default_factory=dict)  # the env's last info (game-specific extras, e.g. JumpPads' "fell")

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())

    def write_to(self, writer, source: str) -> int:
        """Written under its id in the run (`index`), so the dataset does not depend on which episode ended first."""
        return writer.add_episode(self.frames, self.actions, episode_id=self.index, source=source, variant=self.variant,
                                  spawn=self.spawn,
                                  outcome=self.outcome, outcome_step=self.outcome_step, seed=self.seed,
                                  logprob=self.logprobs, reward=self.rewards, **self.state)


@dataclass
class EpisodeBuffer:
    """One env slot's episode in progress."""

    index: int
    seed: int
    keep_frames: bool
    frames: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    states: list = field(default_factory=list)  # info["state"] of each step's observation
    outcome: str | None = None
    outcome_step: int = -1

    def record(self, frame: np.ndarray, action, logprob, info: dict) -> None:
        """The action chosen on `frame`, whose info is `info`."""
        if self.keep_frames:
            self.frames.append(frame.copy())  # the engine's observation array is updated in place
        self.actions.append(action)
        self.logprobs.append(logprob)
        self.states.append(info.get("state") or {})

    def observe(self, reward, info: dict) -> None:
        """The env's answer to the last action: its reward, and the outcome when it first happens."""
        self.rewards.append(reward)
        if self.outcome is None and info.get("outcome") is not None:
            self.outcome, self.outcome_step = str(info["outcome"]), len(self.actions) - 1

    def state_columns(self) -> dict:
        """state_<key> float32 arrays, NaN where a step did not report the key."""
        keys = dict.fromkeys(k for s in self.states for k in s)
        return {f"{STATE_PREFIX}{k}": np.asarray([s.get(k, np.nan) for s in self.states], np.float32) for k in keys}

    def finish(self, info: dict) -> Episode:
        return Episode(
            frames=np.stack(self.frames) if self.frames else None,
            actions=np.stack(self.actions).astype(np.int64), logprobs=np.asarray(self.logprobs, np.float32),
            rewards=np.asarray(self.rewards, np.float32), state=self.state_columns(),
            spawn=int(info.get("spawn", -1)), variant=str(info.get("variant", "default")),
            outcome=self.outcome or NO_OUTCOME, outcome_step=self.outcome_step, seed=self.seed, index=self.index,
            info=info)


@dataclass
class RolloutResult:
    episodes: list[Episode] = field(default_factory=list)
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    env_steps: int = 0
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / max(self.seconds, 1e-9)


class _Schedule:
    """Which episode each env slot plays next, with its reset seed and options."""

    def __init__(self, ids, seed, seeds, spawns, variants, options, keep_frames, writer):
        self.ids, self.next = ids, 0
        self.seed, self.seeds, self.spawns, self.variants, self.options = seed, seeds, spawns, variants, options
        self.keep_frames, self.writer = keep_frames, writer

    def take(self, n: int) -> list[int]:
        ks = self.ids[self.next: self.next + n]
        self.next += len(ks)
        return ks

    def reset_args(self, k: int) -> tuple[int, dict]:
        o = dict(self.options[k]) if self.options is not None else {}
        if self.spawns is not None:
            o["spawn"] = self.spawns[k]
        if self.variants is not None:
            o["variant"] = self.variants[k]
        return (self.seed + k if self.seeds is None else int(self.seeds[k])), o

    def buffer(self, k: int, seed: int) -> EpisodeBuffer:
        keep = self.writer is not None or self.keep_frames is True or k < int(self.keep_frames)
        return EpisodeBuffer(index=k, seed=seed, keep_frames=keep)


def rollout(venv, policy, num_episodes: int, *, seed: int = 0, seeds=None, spawns=None, variants=None, options=None,
            keep_frames=True, writer=None, source="rollout", accept=None, progress=True,
            desc="rollout", episode_ids=None) -> RolloutResult:
    """Run `num_episodes` episodes: episode k resets with seed `seed + k` (or `seeds[k]`) and, if given,
    spawns[k] / variants[k] and any other reset options[k]. `episode_ids` renumbers them (a rank's share of a
    larger run, or a later batch written to the same dataset); per-episode lists are indexed by these ids, and
    written episodes keep them as their `episode_id`.

    keep_frames: True keeps every episode's frames, an int N only those of the first N episodes (videos).
    writer: a TrajectoryWriter to stream episodes into (frames are then kept in memory only as keep_frames says);
    it records `policy.metadata` as the dataset's `policy` entry.
    accept: optional `fn(episode) -> bool`; rejected episodes are neither kept nor written (curation).
    """
    ids = list(range(num_episodes)) if episode_ids is None else list(episode_ids)
    schedule = _Schedule(ids, seed, seeds, spawns, variants, options, keep_frames, writer)
    if writer is not None and getattr(policy, "metadata", None):
        writer.metadata.setdefault("policy", dict(policy.metadata))
    n_envs, result = venv.num_envs, RolloutResult()
    obs = np.zeros((n_envs, *venv.observation_space.shape), venv.observation_space.dtype)  # updated in place
    infos: list[dict] = [{} for _ in range(n_envs)]
    buffers: list[EpisodeBuffer | None] = [None] * n_envs
    _start(venv, policy, schedule, range(n_envs), obs, infos, buffers)
    bar = tqdm(total=len(ids), desc=desc, unit="ep", disable=not progress)
    t0 = time.monotonic()
    while any(b is not None for b in buffers):
        finished = _step(venv, policy, obs, infos, buffers, result)
        for i, info in finished:
            bar.update(1)
            _finish(buffers[i], info, result, keep_frames, writer, source, accept)
            buffers[i] = None
        bar.set_postfix(eps_per_s=f"{bar.n / max(time.monotonic() - t0, 1e-9):.1f}", dropped=result.dropped)
        _start(venv, policy, schedule, [i for i, _ in finished], obs, infos, buffers)
    bar.close()
    result.seconds = time.monotonic() - t0
    return result


def episode_stream(reset_seed: int, episode_id: int) -> int:
    """The seed of one episode's random stream, from its reset seed and its id."""
    return int(np.random.SeedSequence([int(reset_seed), int(episode_id)]).generate_state(1, np.uint64)[0] >> 1)


def _start(venv, policy, schedule: _Schedule, slots, obs, infos, buffers) -> None:
    """Reset the given env slots onto the next episodes (as many as are left)."""
    ks = schedule.take(len(slots))
    if not ks:
        return
    slots = list(slots)[: len(ks)]
    seeds, opts = zip(*(schedule.reset_args(k) for k in ks))
    new_obs, new_infos = venv.reset(slots, seeds=list(seeds), options=list(opts))
    obs[slots] = new_obs
    for j, i in enumerate(slots):
        infos[i] = new_infos[j]
        buffers[i] = schedule.buffer(ks[j], seeds[j])
    # Each episode's own random stream (its reset seed and id): results do not depend on num_envs, and episodes
    # that share a reset seed (an RLOO group: same spawn) still act differently.
    policy.reset(slots, infos, seeds=[episode_stream(s, k) for s, k in zip(seeds, ks)])


def _step(venv, policy, obs, infos, buffers, result: RolloutResult) -> list[tuple[int, dict]]:
    """One action for every active slot; returns (slot, last info) of the episodes that ended."""
    active = [i for i, b in enumerate(buffers) if b is not None]
    actions, logprobs = policy.act(obs, infos)
    for i in active:
        buffers[i].record(obs[i], actions[i], logprobs[i], infos[i])
    new_obs, rewards, terminated, truncated, new_infos = venv.step([actions[i] for i in active], active)
    result.env_steps += len(active)
    obs[active] = new_obs
    finished = []
    for j, i in enumerate(active):
        infos[i] = new_infos[j]
        buffers[i].observe(float(rewards[j]), new_infos[j])
        if terminated[j] or truncated[j]:
            finished.append((i, new_infos[j]))
    return finished


def _finish(buffer: EpisodeBuffer, info: dict, result: RolloutResult, keep_frames, writer, source, accept) -> None:
    """Drop a failed episode, or keep (and write) a finished one that `accept` takes."""
    if "error" in info:
        result.dropped += 1
        result.errors.append(info["error"])
        return
    ep = buffer.finish(info)
    if accept is not None and not accept(ep):
        return
    if writer is not None:
        ep.write_to(writer, source)
    if keep_frames is not True and ep.index >= int(keep_frames):
        ep.frames = None
    result.episodes.append(ep)
