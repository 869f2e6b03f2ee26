"""Stage 5c: DPO on trajectory preferences, offline (no rollouts while training).

A trajectory's log-probability is the sum of its steps' action log-probs (all 16 components), each step
seen with the context the agent had when it acted (`AgentModel.sliding_forward`). Sigmoid loss:
-log sigmoid(beta * [(log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))]). The reference is the
agent with its LoRA adapters disabled (or a frozen copy of the head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from hf_agents.data import load_trajectories
from hf_agents.data.preferences import read_preferences
from hf_agents.models import AgentModel, get_action_and_logprob, load_checked
from hf_agents.models.adapters import TRAINABLE, Reference, prepare_trainable, save_policy, trajectory_logits
from hf_agents.training.common import StageArguments, check_output_dir, clear_checkpoints


@dataclass
class TrajectoryDPOConfig(StageArguments, TrainingArguments):
    r"""DPO on (chosen, rejected) trajectory pairs; every `TrainingArguments` field is available too."""

    agent: str = field(default="", metadata={"help": "The fine-tuned agent to start from (and the reference)."})
    trajectories: str = field(default="", metadata={"help": "Trajectory dataset the preferences refer to."})
    preferences: str = field(default="", metadata={"help": "Preferences parquet file (chosen, rejected, labeller)."})
    labeller: str | None = field(default=None, metadata={"help": "Use only this labeller's preferences (one designer "
                                                         "= one adapter); default: all."})
    beta: float = field(default=0.1, metadata={"help": "DPO temperature beta."})
    trainable: str = field(default="lora", metadata={"help": f"One of {TRAINABLE}."})
    adapter_name: str = field(default="default", metadata={"help": "Name of the LoRA adapter (one per designer)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    trajectory_steps: int = field(default=100, metadata={"help": "Trajectories are cut at this many steps."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Pairs per step."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the pair index columns."})

    def __post_init__(self):
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got '{self.trainable}'")
        super().__post_init__()


class PairCollator:
    """Rows of (chosen, rejected) dataset positions -> frames/actions/mask of the chosen then the rejected."""

    def __init__(self, trajectories, max_steps: int):
        self.trajectories, self.max_steps = trajectories, max_steps

    def __call__(self, rows):
        index = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
        frames, actions, lengths = self.trajectories.read_batch(index, self.max_steps)
        mask = (np.arange(frames.shape[1])[None] < lengths[:, None]).astype(np.float32)
        return {"frames": torch.from_numpy(frames), "actions": torch.from_numpy(actions), "mask": torch.from_numpy(mask)}


def trajectory_logprob(logits, actions, mask) -> torch.Tensor:
    return (get_action_and_logprob(logits, actions).logprob * mask).sum(1)


class TrajectoryDPOTrainer(Trainer):
    def __init__(self, model, args: TrajectoryDPOConfig, reference: Reference, **kwargs):
        self.reference = reference
        super().__init__(model=model, args=args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        frames, actions, mask = inputs["frames"], inputs["actions"], inputs["mask"]
        logits, hidden = trajectory_logits(model, frames, actions, self.args.trainable)
        policy = trajectory_logprob(logits, actions, mask)
        reference = trajectory_logprob(self.reference.logits(frames, actions, hidden), actions, mask)
        B = len(policy) // 2
        ratio = policy - reference
        margin = self.args.beta * (ratio[:B] - ratio[B:])
        loss = -F.logsigmoid(margin).mean()
        if model.training and self.state.global_step % max(int(self.args.logging_steps), 1) == 0:
            self.log({"reward_margin": float(margin.mean().detach()), "pair_accuracy": float((margin > 0).float().mean())})
        return (loss, {"margin": margin}) if return_outputs else loss


def build_pairs(config: TrajectoryDPOConfig, trajectories) -> datasets.Dataset:
    position = {m["episode_id"]: i for i, m in enumerate(trajectories.episodes)}
    pairs = read_preferences(config.preferences, position, labeller=config.labeller)
    return datasets.Dataset.from_dict({"chosen": [position[c] for c, _ in pairs],
                                       "rejected": [position[r] for _, r in pairs]})


def build(config: TrajectoryDPOConfig):
    """Model (with its trainable part), reference and pairs; every check before any training."""
    trajectories = load_trajectories(config.trajectories)
    pairs = build_pairs(config, trajectories)
    base = load_checked(AgentModel, config.agent, "agent")
    if tuple(trajectories.frame_size) != (base.config.image_size,) * 2:
        raise ValueError(f"{config.trajectories}: frames are {trajectories.frame_size} but the agent {config.agent} "
                         f"takes {base.config.image_size}px")
    model = prepare_trainable(base, config.trainable, config.adapter_name, config.lora_r, config.lora_alpha)
    return model, Reference(model, config.trainable), pairs, trajectories


def run(config: TrajectoryDPOConfig) -> dict:
    resume_from = check_output_dir(config)
    model, reference, pairs, trajectories = build(config)
    trainer = TrajectoryDPOTrainer(model, config, reference, train_dataset=pairs,
                                   data_collator=PairCollator(trajectories, config.trajectory_steps))
    clear_checkpoints(config)
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = {"pairs": len(pairs)}
    last = [h for h in trainer.state.log_history if "pair_accuracy" in h][-10:]
    if last:
        metrics.update(pair_accuracy_last10=float(np.mean([h["pair_accuracy"] for h in last])),
                       reward_margin_last10=float(np.mean([h["reward_margin"] for h in last])))
    if trainer.is_world_process_zero():
        save_policy(trainer.accelerator.unwrap_model(trainer.model), config.output_dir, config.trainable, config.agent)
        (Path(config.output_dir) / "train_results.json").write_text(json.dumps(
            {"metrics": metrics, "log_history": trainer.state.log_history}, indent=2, default=str))
    return metrics


CONFIG = TrajectoryDPOConfig
REQUIRED = ("agent", "trajectories", "preferences")
