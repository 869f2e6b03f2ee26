"""The rollout engine: run a policy on a batched env for N episodes; used by evaluation, data generation and
preference collection alike (and by alignment).

A policy has `reset(indices, infos)` and `act(observations (N, H, W, 3) uint8, infos) -> (action ids (N, 16),
log-probs (N,))`, optionally a `metadata` dict that rollout datasets record (`info["policy"]`), and optionally
`features` (N, D): each env's features of the last `act` (the agent's frame embeddings), kept with the frames.
`observations` is one array the engine updates in place: a policy that keeps frames copies them.
A policy may also have `keep(rows)`: forget every env but these rows, in this order. The engine calls it when envs
have no episode left to play, and from then on passes only the envs it still holds, so acting costs only the games
still playing (the tail of every run, and most of an alignment update, whose episodes end at different steps).
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
from hf_agents.seeding import episode_stream


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
    features: np.ndarray | None = None  # float32 (T, D): the policy's `features` of each step, kept with the frames
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
    features: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    states: list = field(default_factory=list)  # info["state"] of each step's observation
    outcome: str | None = None
    outcome_step: int = -1

    def record(self, frame: np.ndarray, action, logprob, info: dict, feature: np.ndarray | None = None) -> None:
        """The action chosen on `frame`, whose info is `info` (and the policy's `feature` of it)."""
        if self.keep_frames:
            self.frames.append(frame.copy())  # the engine's observation array is updated in place
            if feature is not None:
                self.features.append(feature)
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
            features=np.stack(self.features) if len(self.features) == len(self.actions) and self.features else None,
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

    def __init__(self, ids, seed, seeds, spawns, variants, options, keep_frames, writer, on_start=None):
        self.ids, self.next, self.on_start = ids, 0, on_start
        self.seed, self.seeds, self.spawns, self.variants, self.options = seed, seeds, spawns, variants, options
        self.keep_frames, self.writer = keep_frames, writer

    def take(self, n: int) -> list[int]:
        ks = self.ids[self.next: self.next + n]
        self.next += len(ks)
        if ks and self.on_start is not None:
            self.on_start(ks)
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
            desc="rollout", episode_ids=None, groups: int = 1, on_start=None) -> RolloutResult:
    """Run `num_episodes` episodes: episode k resets with seed `seed + k` (or `seeds[k]`) and, if given,
    spawns[k] / variants[k] and any other reset options[k]. `episode_ids` renumbers them (a rank's share of a
    larger run, or a later batch written to the same dataset); per-episode lists are indexed by these ids, and
    written episodes keep them as their `episode_id`.

    keep_frames: True keeps every episode's frames, an int N only those of the first N episodes (videos).
    writer: a TrajectoryWriter to stream episodes into (frames are then kept in memory only as keep_frames says);
    it records `policy.metadata` as the dataset's `policy` entry.
    accept: optional `fn(episode) -> bool`; rejected episodes are neither kept nor written (curation).
    groups: split the envs into this many groups, each acting while the others' games step (needs a policy with
    `split(sizes)`). Episodes do not depend on it. On 2 CPU cores two groups were slower (the benchmark's rollout
    section measures both), so the default is 1.
    on_start: optional `fn(ids)`, called with the ids of the episodes whose resets are sent.

    `venv` may be `RolloutWorkers` instead of a batched env: its processes then act, each for its own envs, and
    the episodes are the same (`hf_agents.rollout.workers`).
    """
    from hf_agents.rollout.workers import RolloutWorkers

    ids = list(range(num_episodes)) if episode_ids is None else list(episode_ids)
    if writer is not None and getattr(policy, "metadata", None):
        writer.metadata.setdefault("policy", dict(policy.metadata))
    if isinstance(venv, RolloutWorkers):
        if groups != 1 or on_start is not None:
            raise ValueError("rollout workers act for their own envs: leave groups and on_start at their defaults")
        return venv.rollout(policy, ids, seed=seed, seeds=seeds, spawns=spawns, variants=variants, options=options,
                            keep_frames=keep_frames, writer=writer, source=source, accept=accept, progress=progress,
                            desc=desc)
    schedule = _Schedule(ids, seed, seeds, spawns, variants, options, keep_frames, writer, on_start)
    result = RolloutResult()
    parts = _split(venv, policy, groups)
    for part in parts:
        part.start(venv, schedule, range(part.size))
        part.started(venv)
    bar = tqdm(total=len(ids), desc=desc, unit="ep", disable=not progress)
    t0 = time.monotonic()
    for part in parts:
        part.act(venv)
    while any(part.active or part.resetting for part in parts):
        for part in parts:
            finished = part.receive(venv, result) if part.active else []
            part.started(venv)  # the resets sent last time, done while the others acted and the games stepped
            for i, info in finished:
                bar.update(1)
                _finish(part.buffers[i], info, result, keep_frames, writer, source, accept)
                part.buffers[i] = None
            if finished:  # shown with the bar's next refresh (a forced redraw every step costs acting time)
                rate = f"{bar.n / max(time.monotonic() - t0, 1e-9):.1f}"
                bar.set_postfix(eps_per_s=rate, dropped=result.dropped, refresh=False)
            part.start(venv, schedule, [i for i, _ in finished])
            part.retire()
            part.act(venv)
    bar.close()
    result.seconds = time.monotonic() - t0
    return result


def _split(venv, policy, groups: int) -> list[_Group]:
    """The env slots in `groups` groups, each with its own share of the policy (the policy's `split`)."""
    n = venv.num_envs
    if groups < 1 or groups > n:
        raise ValueError(f"groups={groups}: choose between 1 and the number of envs ({n})")
    if groups == 1:
        return [_Group(policy, list(range(n)), venv)]
    if not hasattr(policy, "split"):
        raise ValueError(f"groups={groups} needs a policy with `split(sizes)`; {type(policy).__name__} has none")
    sizes = split_sizes(n, groups)
    starts = np.cumsum([0] + sizes)
    return [_Group(p, list(range(starts[g], starts[g + 1])), venv) for g, p in enumerate(policy.split(sizes))]


def split_sizes(n: int, parts: int) -> list[int]:
    """n envs in `parts` consecutive parts, as even as they go (the first ones one larger)."""
    return [n // parts + (g < n % parts) for g in range(parts)]


class _Group:
    """Some env slots and the policy acting for them: `act` sends their actions, `receive` takes the answers."""

    def __init__(self, policy, slots: list[int], venv):
        self.policy, self.slots, self.size = policy, slots, len(slots)
        self.obs = np.zeros((self.size, *venv.observation_space.shape), venv.observation_space.dtype)  # in place
        self.infos: list[dict] = [{} for _ in slots]
        self.buffers: list[EpisodeBuffer | None] = [None] * self.size
        self.active: list[int] = []  # slots whose actions were sent
        self.held = list(range(self.size))  # slots the policy holds, its rows in this order (see `retire`)
        self.sent: list[bool] = []
        self.resetting: list[tuple] = []  # (slot, episode id, seed, options, buffer) of resets sent

    def start(self, venv, schedule: _Schedule, local) -> None:
        """Send resets for the given slots onto the next episodes (as many as are left); `started` collects them.
        A slot sits out the step in between: its reset overlaps the others' acting and stepping."""
        ks = schedule.take(len(local))
        if not ks:
            return
        local = list(local)[: len(ks)]
        seeds, opts = zip(*(schedule.reset_args(k) for k in ks))
        venv.reset_async([self.slots[i] for i in local], list(seeds), list(opts))
        self.resetting = [(i, k, s, o, schedule.buffer(k, s)) for i, k, s, o in zip(local, ks, seeds, opts)]

    def started(self, venv) -> None:
        """Collect the resets `start` sent: the slots' first observations, buffers and the policy's reset."""
        if not self.resetting:
            return
        local, ks, seeds, opts, buffers = (list(x) for x in zip(*self.resetting))
        self.resetting = []
        new_obs, new_infos = venv.reset_wait([self.slots[i] for i in local], seeds, opts)
        self.obs[local] = new_obs
        for j, i in enumerate(local):
            self.infos[i] = new_infos[j]
            self.buffers[i] = buffers[j]
        # Each episode's own random stream (its reset seed and id): results do not depend on num_envs or groups, and
        # episodes that share a reset seed (an RLOO group: same spawn) still act differently.
        self.policy.reset(self.rows(local), self.held_infos(),
                          seeds=[episode_stream(s, k) for s, k in zip(seeds, ks)])

    def rows(self, slots) -> list[int]:
        """The policy's rows of these slots."""
        return [self.held.index(i) for i in slots]

    def held_infos(self) -> list[dict]:
        """The infos of the slots the policy holds, by its rows."""
        return self.infos if len(self.held) == self.size else [self.infos[i] for i in self.held]

    def retire(self) -> None:
        """A policy with `keep` forgets the slots with no episode left (nothing playing, nothing resetting)."""
        if getattr(self.policy, "keep", None) is None:
            return
        resetting = {r[0] for r in self.resetting}
        held = [i for i in self.held if self.buffers[i] is not None or i in resetting]
        if len(held) < len(self.held):
            self.policy.keep(self.rows(held))
            self.held = held

    def act(self, venv) -> None:
        """One action for every slot with an episode, sent to its env (which steps while others act)."""
        self.active = [i for i, b in enumerate(self.buffers) if b is not None]
        if not self.active:
            return
        obs = self.obs if len(self.held) == self.size else self.obs[self.held]
        actions, logprobs = self.policy.act(obs, self.held_infos())
        features = getattr(self.policy, "features", None)
        rows = self.rows(self.active)
        for i, r in zip(self.active, rows):
            self.buffers[i].record(self.obs[i], actions[r], logprobs[r], self.infos[i],
                                   None if features is None else features[r])
        self.sent = venv.step_async([actions[r] for r in rows], [self.slots[i] for i in self.active])

    def receive(self, venv, result: RolloutResult) -> list[tuple[int, dict]]:
        """The envs' answers to the sent actions; returns (slot, last info) of the episodes that ended."""
        new_obs, rewards, terminated, truncated, new_infos = venv.step_wait([self.slots[i] for i in self.active],
                                                                            self.sent)
        result.env_steps += len(self.active)
        self.obs[self.active] = new_obs
        finished = []
        for j, i in enumerate(self.active):
            self.infos[i] = new_infos[j]
            self.buffers[i].observe(float(rewards[j]), new_infos[j])
            if terminated[j] or truncated[j]:
                finished.append((i, new_infos[j]))
        return finished


def _finish(buffer: EpisodeBuffer, info: dict, result: RolloutResult, keep_frames, writer, source, accept) -> None:
    """Drop a failed episode, or keep (and write) a finished one that `accept` takes."""
    if "error" in info:
        result.dropped += 1
        result.errors.append(info["error"])
        return
    keep_episode(buffer.finish(info), result, keep_frames, writer, source, accept)


def keep_episode(ep: Episode, result: RolloutResult, keep_frames, writer, source, accept) -> None:
    """Keep (and write) a finished episode that `accept` takes, its frames only as `keep_frames` says."""
    if accept is not None and not accept(ep):
        return
    if writer is not None:
        ep.write_to(writer, source)
    if keep_frames is not True and ep.index >= int(keep_frames):
        ep.frames = None
    result.episodes.append(ep)
