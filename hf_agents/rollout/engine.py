"""The rollout engine: run a policy on a batched env for N episodes; used by evaluation, data generation,
preference collection and RL alike.

A policy has `reset(indices, infos)` and `act(observations, infos) -> (action ids (N, 16), log-probs (N,))`;
the agent (`AgentPolicy`) ignores `infos`, scripted players read their privileged state from it.
Episodes come back in the trajectory dataset's terms (frames, actions, log-probs, privileged state,
outcome) and can stream straight into a `TrajectoryWriter`. An episode whose env raised, died or hung
is dropped and counted, never mixed in (paper C.4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from hf_agents.data.schema import NO_OUTCOME, STATE_COLUMNS

STATE_KEYS = {"state_x": "x", "state_y": "y", "state_z": "z", "state_yaw": "yaw"}


@dataclass
class Episode:
    frames: np.ndarray | None  # uint8 (T, H, W, 3): the observation each action was chosen on
    actions: np.ndarray  # int64 (T, 16)
    logprobs: np.ndarray  # float32 (T,)
    state: dict  # privileged state_* arrays (T,)
    spawn: int
    variant: str
    outcome: str  # pad reached, or "none"
    outcome_step: int
    seed: int
    fell: bool = False

    @property
    def length(self) -> int:
        return len(self.actions)

    def write_to(self, writer, source: str) -> int:
        return writer.add_episode(self.frames, self.actions, source=source, variant=self.variant, spawn=self.spawn,
                                  outcome=self.outcome, outcome_step=self.outcome_step, seed=self.seed,
                                  logprob=self.logprobs, **self.state)


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


def rollout(venv, policy, num_episodes: int, *, seed: int = 0, spawns=None, variants=None, options=None,
            keep_frames=True, writer=None, source="rollout", accept=None, progress=True,
            desc="rollout", episode_ids=None) -> RolloutResult:
    """Run `num_episodes` episodes (episode k gets seed `seed + k` and, if given, spawns[k] / variants[k] and
    any other reset options[k]). `episode_ids` renumbers them (a rank's share of a larger run).

    keep_frames: True keeps every episode's frames, an int N only those of the first N episodes (videos).
    writer: a TrajectoryWriter to stream episodes into (frames are then kept in memory only as keep_frames says).
    accept: optional `fn(episode) -> bool`; rejected episodes are neither kept nor written (curation).
    """
    n_envs = venv.num_envs
    ids = list(range(num_episodes)) if episode_ids is None else list(episode_ids)
    num_episodes = len(ids)
    result = RolloutResult()
    next_episode = 0
    slot_episode = [-1] * n_envs
    buffers = [None] * n_envs

    def start(indices):
        nonlocal next_episode
        todo = list(indices)[: max(num_episodes - next_episode, 0)]
        if not todo:
            return
        ks = [ids[k] for k in range(next_episode, next_episode + len(todo))]
        next_episode += len(todo)
        reset_options = []
        for k in ks:
            o = dict(options[k]) if options is not None else {}
            if spawns is not None:
                o["spawn"] = spawns[k]
            if variants is not None:
                o["variant"] = variants[k]
            reset_options.append(o)
        obs, infos = venv.reset(todo, seeds=[seed + k for k in ks], options=reset_options)
        for j, i in enumerate(todo):
            slot_episode[i] = ks[j]
            current_obs[i], current_info[i] = obs[j], infos[j]
            buffers[i] = {"frames": [], "actions": [], "logprobs": [], "state": {c: [] for c in STATE_COLUMNS},
                          "outcome_step": None}
        policy.reset(todo, [current_info[i] for i in range(n_envs)])

    current_obs = [np.zeros(venv.observation_space.shape, np.uint8)] * n_envs
    current_info = [{} for _ in range(n_envs)]
    start(range(n_envs))
    bar = tqdm(total=num_episodes, desc=desc, unit="ep", disable=not progress)
    t0 = time.monotonic()
    while any(k >= 0 for k in slot_episode):
        active = [i for i in range(n_envs) if slot_episode[i] >= 0]
        actions, logprobs = policy.act(np.stack(current_obs), current_info)
        for i in active:
            b = buffers[i]
            if writer is not None or keep_frames is True or slot_episode[i] < int(keep_frames):
                b["frames"].append(current_obs[i])
            b["actions"].append(actions[i])
            b["logprobs"].append(logprobs[i])
            for col, key in STATE_KEYS.items():
                b["state"][col].append(current_info[i].get(key, np.nan))
        obs, _, terminated, truncated, infos = venv.step([actions[i] for i in active], active)
        result.env_steps += len(active)
        finished = []
        for j, i in enumerate(active):
            current_obs[i], current_info[i] = obs[j], infos[j]
            if infos[j].get("pad") and buffers[i].get("outcome_step") is None:
                buffers[i]["outcome_step"] = len(buffers[i]["actions"]) - 1  # first pad reached
            if not (terminated[j] or truncated[j]):
                continue
            finished.append(i)
            bar.update(1)
            k, b, info = slot_episode[i], buffers[i], infos[j]
            slot_episode[i] = -1
            if "error" in info:
                result.dropped += 1
                result.errors.append(info["error"])
                continue
            pad = info.get("pad")
            ep = Episode(
                frames=np.stack(b["frames"]) if b["frames"] else None,
                actions=np.stack(b["actions"]).astype(np.int64),
                logprobs=np.asarray(b["logprobs"], np.float32),
                state={c: np.asarray(v, np.float32) for c, v in b["state"].items()},
                spawn=int(info.get("spawn", -1)), variant=str(info.get("variant", "default")),
                outcome=pad or NO_OUTCOME, outcome_step=b["outcome_step"] if pad else -1,
                seed=seed + k, fell=bool(info.get("fell", False)),
            )
            if accept is not None and not accept(ep):
                continue
            if writer is not None:
                ep.write_to(writer, source)
            if keep_frames is not True and k >= int(keep_frames):
                ep.frames = None
            result.episodes.append(ep)
        bar.set_postfix(eps_per_s=f"{bar.n / max(time.monotonic() - t0, 1e-9):.1f}", dropped=result.dropped)
        start(finished)
    bar.close()
    result.seconds = time.monotonic() - t0
    return result
