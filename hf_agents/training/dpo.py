"""Stage 5c: DPO on trajectory preferences, offline (no rollouts while training).

A trajectory's log-probability is the sum of its steps' action log-probs (all 16 components), each step
seen with the context the agent had when it acted (`AgentModel.sliding_forward`). Sigmoid loss:
-log sigmoid(beta * [(log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))]). The reference is the
agent with its LoRA adapters disabled (or a frozen copy of the head).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments, set_seed

from hf_agents.data import load_trajectories
from hf_agents.data.preferences import read_preferences
from hf_agents.files import write_train_results
from hf_agents.frames import check_frame_size, to_model
from hf_agents.models import AgentModel, get_action_and_logprob, load_checked
from hf_agents.models.trainable import TrainablePolicy
from hf_agents.training.common import PolicyArguments, StageArguments, check_output_dir, clear_checkpoints


@dataclass
class TrajectoryDPOConfig(StageArguments, PolicyArguments, TrainingArguments):
    r"""DPO on (chosen, rejected) trajectory pairs; every `TrainingArguments` field is available too."""

    trajectories: str = field(default="", metadata={"help": "Trajectory dataset the preferences refer to."})
    preferences: str = field(default="", metadata={"help": "Preferences parquet file (chosen, rejected, labeller)."})
    labeller: str | None = field(default=None, metadata={"help": "Use only this labeller's preferences (one designer "
                                                         "= one adapter); default: all."})
    beta: float = field(default=0.1, metadata={"help": "DPO temperature beta."})
    trainable: str = field(default="lora", metadata={"help": "head, lora (one adapter per designer) or full."})
    trajectory_steps: int = field(default=100, metadata={"help": "Trajectories are cut at this many steps."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Pairs per step."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the pair index columns."})


class PairCollator:
    """Rows of (chosen, rejected) dataset positions -> frames/actions/mask of the chosen then the rejected."""

    def __init__(self, trajectories, max_steps: int):
        self.trajectories, self.max_steps = trajectories, max_steps

    def __call__(self, rows):
        index = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
        frames, actions, lengths = self.trajectories.read_batch(index, self.max_steps)
        mask = (np.arange(frames.shape[1])[None] < lengths[:, None]).astype(np.float32)
        return {"frames": to_model(frames, contiguous=True), "actions": torch.from_numpy(actions),
                "mask": torch.from_numpy(mask)}


def trajectory_logprob(logits, actions, mask, temperature: float = 1.0) -> torch.Tensor:
    return (get_action_and_logprob(logits, actions, temperature=temperature).logprob * mask).sum(1)


def pair_margins(policy: TrainablePolicy, frames, actions, mask, beta: float, model=None,
                 temperature: float = 1.0, embeddings=None) -> torch.Tensor:
    """DPO's beta * [(log pi - log pi_ref)(chosen) - (same)(rejected)] for a batch that holds the chosen
    trajectories, then the rejected ones in the same order (offline and online DPO). `mask` (B, T): the real steps
    (right padding after them); `embeddings`: the frames' embeddings recorded while acting (online DPO)."""
    lengths = mask.sum(1).long()
    logits, hidden = policy.logits(frames, actions, model, lengths, embeddings)
    with torch.no_grad():  # pi_ref is frozen
        reference = trajectory_logprob(policy.reference_logits(frames, actions, hidden, lengths, embeddings), actions,
                                       mask, temperature)
    ratio = trajectory_logprob(logits, actions, mask, temperature) - reference
    B = len(ratio) // 2
    return beta * (ratio[:B] - ratio[B:])


class TrajectoryDPOTrainer(Trainer):
    def __init__(self, policy: TrainablePolicy, args: TrajectoryDPOConfig, **kwargs):
        self.policy = policy  # made with reference=True: the policy at the start is pi_ref
        super().__init__(model=policy.model, args=args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        margin = pair_margins(self.policy, inputs["frames"], inputs["actions"], inputs["mask"], self.args.beta, model)
        loss = -F.logsigmoid(margin).mean()
        if model.training and self.state.global_step % max(int(self.args.logging_steps), 1) == 0:
            self.log({"reward_margin": float(margin.mean().detach()), "pair_accuracy": float((margin > 0).float().mean())})
        return (loss, {"margin": margin}) if return_outputs else loss


def build_pairs(config: TrajectoryDPOConfig, trajectories) -> datasets.Dataset:
    position = trajectories.positions()
    pairs = read_preferences(config.preferences, position, labeller=config.labeller)
    return datasets.Dataset.from_dict({"chosen": [position[c] for c, _ in pairs],
                                       "rejected": [position[r] for _, r in pairs]})


def build(config: TrajectoryDPOConfig):
    """The trainable policy (with its reference) and the pairs; every check before any training."""
    trajectories = load_trajectories(config.trajectories)
    pairs = build_pairs(config, trajectories)
    base = load_checked(AgentModel, config.agent, "agent")
    check_frame_size(trajectories.frame_size, base.config.image_size, config.trajectories, f"the agent {config.agent}",
                     "roll out this agent for the preferences, or pick the agent they were made for")
    return config.make_policy(base, reference=True), pairs, trajectories


def run(config: TrajectoryDPOConfig) -> dict:
    resume_from = check_output_dir(config)
    set_seed(config.seed)  # the LoRA adapter's initialisation too, not only the Trainer's data order
    policy, pairs, trajectories = build(config)
    trainer = TrajectoryDPOTrainer(policy, config, train_dataset=pairs,
                                   data_collator=PairCollator(trajectories, config.trajectory_steps))
    clear_checkpoints(config)
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = {"pairs": len(pairs)}
    last = [h for h in trainer.state.log_history if "pair_accuracy" in h][-10:]
    if last:
        metrics.update(pair_accuracy_last10=float(np.mean([h["pair_accuracy"] for h in last])),
                       reward_margin_last10=float(np.mean([h["reward_margin"] for h in last])))
    if trainer.is_world_process_zero():
        policy.save(config.output_dir)
        write_train_results(config.output_dir, metrics, log_history=trainer.state.log_history)
    return metrics


CONFIG = TrajectoryDPOConfig
REQUIRED = ("agent", "trajectories", "preferences")
