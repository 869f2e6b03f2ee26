"""Rewards of whole trajectories for alignment, in [0, 1], from one of three sources.

model:  a trained `TrajectoryRewardModel`, min-max normalised as stored at training time (paper C.3);
oracle: the privileged synthetic oracle (paper 3.4): the target outcome reached scores 0.5-1, sooner is
        better, anything else 0; the upper bound that tells RL problems from reward-model problems;
env:    the game's own reward summed over the episode (third-party games), not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hf_agents.data.dataset import pad_steps
from hf_agents.frames import to_model
from hf_agents.models import TrajectoryRewardModel
from hf_agents.training.common import chain_post_init

REWARD_SOURCES = ("model", "oracle", "env")


@dataclass
class RewardSourceArguments:
    """Where trajectory rewards come from: the fields every alignment stage shares."""

    reward_source: str = field(default="model", metadata={"help": f"One of {REWARD_SOURCES}: the reward model, the "
                                                          "privileged oracle (upper bound), or the game's reward."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward model directory (reward_source=model)."})
    target: str | None = field(default=None, metadata={"help": "The outcome the designer wants (e.g. left): the "
                                                       "oracle's target, and the success shown in logs and plots."})

    def __post_init__(self):
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {REWARD_SOURCES}, got '{self.reward_source}'")
        chain_post_init(self, RewardSourceArguments)


def stack_episodes(episodes, device=None, max_steps: int | None = None):
    """Episodes -> frames (B, T, 3, H, W) uint8, actions (B, T, 16) (padded with no-ops), mask (B, T)."""
    frames, actions, lengths = pad_steps([e.frames[:max_steps] for e in episodes], [e.actions[:max_steps] for e in episodes])
    mask = torch.as_tensor(np.arange(frames.shape[1])[None] < lengths[:, None], device=device)
    return to_model(frames, device), torch.as_tensor(actions, device=device), mask


def pad_features(episodes) -> np.ndarray:
    """The episodes' recorded `features` (T_i, D) -> (B, max T_i, D), zero-padded."""
    T, D = max(e.length for e in episodes), episodes[0].features.shape[1]
    out = np.zeros((len(episodes), T, D), np.float32)
    for i, e in enumerate(episodes):
        out[i, :e.length] = e.features
    return out


def oracle_reward(episode, target: str, max_steps: int) -> float:
    if episode.outcome != target:
        return 0.0
    step = episode.outcome_step if episode.outcome_step >= 0 else episode.length - 1
    return 0.5 + 0.5 * (1.0 - min(step + 1, max_steps) / max_steps)


class RewardFunction:
    """Scores a list of episodes; built once per run and checked against the agent before any rollout."""

    def __init__(self, source: str, reward_model: str | None = None, target: str | None = None,
                 outcomes: tuple[str, ...] | None = None, max_steps: int = 100, frame_size: int | None = None,
                 batch_size: int = 16, device=None, game: str | None = None):
        if source not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {REWARD_SOURCES}, got '{source}'")
        self.source, self.target, self.max_steps, self.batch_size = source, target, max_steps, batch_size
        self.device = device
        if source == "oracle" and not target:
            raise ValueError("reward_source=oracle needs `target`, the outcome to reach (e.g. target=left)")
        if target and outcomes and target not in outcomes:
            raise ValueError(f"target '{target}' is not an outcome of this game; choose one of {list(outcomes)}")
        if source == "model":
            self.model = TrajectoryRewardModel.load_trained(reward_model, frame_size, game).to(device)
        self.uses_acting_embeddings = False  # see `use_acting_embeddings`

    def use_acting_embeddings(self, agent) -> bool:
        """Score episodes from the frame embeddings recorded while acting (`Episode.features`) instead of encoding
        their frames again, where the reward model's agent encoder is `agent`'s frozen frame encoder (same weights)."""
        self.uses_acting_embeddings = self.source == "model" and self.model.shares_frame_encoder(agent)
        return self.uses_acting_embeddings

    @torch.no_grad()
    def __call__(self, episodes) -> np.ndarray:
        if not episodes:
            return np.zeros(0, np.float32)
        if self.source == "oracle":
            return np.asarray([oracle_reward(e, self.target, self.max_steps) for e in episodes], np.float32)
        if self.source == "env":
            return np.asarray([float(np.sum(getattr(e, "rewards", 0.0))) for e in episodes], np.float32)
        out = []
        for start in range(0, len(episodes), self.batch_size):
            chunk = episodes[start:start + self.batch_size]
            frames, actions, mask = stack_episodes(chunk, self.device, self.model.config.max_steps)
            known = None
            if self.uses_acting_embeddings and all(e.features is not None for e in chunk):
                known = torch.as_tensor(pad_features(chunk)[:, :mask.shape[1]], device=self.device)
            embeddings = self.model.embed(frames, actions, mask.sum(1), frame_embeddings=known)
            raw = self.model(embeddings=embeddings).logits[:, 0]
            out.append(self.model.normalized_reward(raw).float().cpu().numpy())
        return np.concatenate(out)
