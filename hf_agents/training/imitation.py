"""Stages 1 and 2 (paper C.1-C.2): imitation learning on windows of H steps with the transformers Trainer.

Pretraining, SFT and the from-scratch baseline are the same code with different recipes.
No-op steps are masked out of the loss but stay in the context (the paper 'filters out all no-op actions').
Recipes: `stage: imitation` (the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Trainer, TrainingArguments, set_seed

from hf_agents.actions import COMPONENT_NAMES, NUM_BUCKETS, NUM_BUTTONS, NUM_STICKS, is_noop
from hf_agents.data import load_trajectories
from hf_agents.frames import check_frame_size, to_model
from hf_agents.models import AgentConfig, AgentModel, load_checked
from hf_agents.training.augment import AugmentedWindows, augment_frames
from hf_agents.training.common import StageArguments, check_output_dir, clear_checkpoints, save_results


@dataclass
class ImitationConfig(StageArguments, TrainingArguments):
    r"""Configuration of an imitation stage; every `TrainingArguments` field is available too.

    Paper values (C.1 pretrain / C.2 SFT): AdamW, lr 1e-4 / 1e-6, weight decay 1e-4, batch 256 / 128,
    warmup 1000 / 200 updates, gradient clipping 1, VPT image augmentations, no-op filtering, H = 32.
    """

    dataset: str = field(default="", metadata={"help": "Trajectory dataset: a local directory or a Hub dataset id."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Separate evaluation dataset; default: "
                                                             "`eval_fraction` of the training episodes."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of episodes held out for evaluation."})
    variant: str | None = field(default=None, metadata={"help": "Keep only episodes of this visual variant."})
    outcome: str | None = field(default=None, metadata={"help": "Keep only episodes with this outcome "
                                                       "('success' = any pad)."})
    cut_at_outcome: bool = field(default=False, metadata={"help": "End each episode at the step its outcome "
                                                          "happened (the paper's SFT data is cut at the pad)."})
    model_preset: str = field(default="cpu", metadata={"help": "Preset for a new model: paper-103m, 25m, 4m, cpu, "
                                                       "tiny. Ignored when `init_from` is set."})
    init_from: str | None = field(default=None, metadata={"help": "Checkpoint to start from (e.g. the pretrained "
                                                           "model for SFT)."})
    context_length: int = field(default=32, metadata={"help": "H, timesteps per training window (paper: 32)."})
    window_stride: int | None = field(default=None, metadata={"help": "Steps between window starts (default H/2)."})
    augment: bool = field(default=True, metadata={"help": "VPT-style image augmentation on training frames."})
    filter_noops: bool = field(default=True, metadata={"help": "Mask no-op actions out of the loss (paper)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (paper: 1e-4 pretrain)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (paper: 1e-4)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (paper: 1)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "cosine or constant_with_warmup, ..."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep our batch keys (frames, actions)."})
    label_names: list[str] | None = field(default_factory=lambda: ["actions"], metadata={"help": "Target keys."})


class ImitationCollator:
    """Stacks windows; loss_mask = real steps that are not no-ops (when filtering)."""

    def __init__(self, filter_noops: bool = True):
        self.filter_noops = filter_noops

    def __call__(self, items):
        keys = ("frames", "actions", "attention_mask", *(("augment",) if "augment" in items[0] else ()))
        batch = {k: torch.stack([it[k] for it in items]) for k in keys}
        batch["frames"] = to_model(batch["frames"], contiguous=True)
        mask = batch["attention_mask"].clone()
        if self.filter_noops:
            mask = mask * (~is_noop(batch["actions"])).long()
        batch["loss_mask"] = mask
        return batch


class ImitationTrainer(Trainer):
    """Trainer with a loss normalised over all ranks, and per-component action accuracy in evaluation."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Each rank's summed loss over the mean step count per rank: DDP's gradient average then equals
        # one process's mean over the whole global batch (exactly, padding and no-op masks included).
        if "augment" in inputs:  # the loader drew each window's augmentation; the pixel work happens here
            inputs = {**inputs, "frames": augment_frames(inputs["frames"], inputs["augment"])}
            del inputs["augment"]
        count = inputs["loss_mask"].sum().reshape(1).float()
        per_rank = self.accelerator.gather(count).sum() / self.accelerator.num_processes
        outputs = model(**inputs, num_items_in_batch=per_rank.clamp(min=1))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = {k: v for k, v in self._prepare_inputs(inputs).items() if k != "augment"}  # evaluation: as recorded
        with torch.no_grad(), self.compute_loss_context_manager():
            out = model(**inputs)
        weight = inputs["loss_mask"].sum().float().reshape(1, 1)
        # Per-batch accuracy x weight, gathered across ranks, then averaged in compute_metrics.
        return out.loss.detach(), (out.component_accuracy[None] * weight), weight


def component_metrics(pred):
    weighted, weights = np.asarray(pred.predictions), np.asarray(pred.label_ids)
    acc = weighted.sum(0) / max(weights.sum(), 1e-9)
    metrics = {f"accuracy_{n}": float(a) for n, a in zip(COMPONENT_NAMES, acc)}
    metrics["accuracy_mean"] = float(acc.mean())
    return metrics


# The loss of a policy that knows nothing: uniform over each button's 2 and each stick's NUM_BUCKETS values.
UNIFORM_LOSS = NUM_BUTTONS * math.log(2) + NUM_STICKS * math.log(NUM_BUCKETS)


def build_model(config: ImitationConfig, frame_size, game: dict | None = None) -> AgentModel:
    """A new model from the preset, or the `init_from` checkpoint; checks it fits the data; the model takes the
    data's game (`game`, from its meta/info.json)."""
    if config.init_from:
        model = load_checked(AgentModel, config.init_from, "agent (init_from)")
    else:
        model = AgentModel(AgentConfig.from_preset(config.model_preset, image_size=frame_size[0],
                                                   context_length=config.context_length))
    check_frame_size(frame_size, model.config.image_size, config.dataset, "the model",
                     "regenerate the data at that size or pick a model of this size")
    if config.context_length > model.config.context_length:
        raise ValueError(f"context_length={config.context_length} exceeds the model's H={model.config.context_length}")
    model.config.game = _same_game(model.config.game, game, config)
    return model


def _same_game(model_game: dict | None, data_game: dict | None, config: ImitationConfig) -> dict | None:
    """The game of the trained model: the data's, which must be the init_from model's own when both name one."""
    if model_game and data_game and model_game["id"] != data_game["id"]:
        raise ValueError(f"{config.dataset}: recorded on {data_game['id']} but init_from={config.init_from} plays "
                         f"{model_game['id']}; fine-tune on recordings of its game")
    return data_game or model_game


def build_datasets(config: ImitationConfig):
    def load(path):
        data = load_trajectories(path)
        if config.variant or config.outcome or config.cut_at_outcome:
            data = data.filter(variant=config.variant, outcome=config.outcome, cut_at_outcome=config.cut_at_outcome)
        return data

    data = load(config.dataset)
    if config.eval_dataset:
        train, evaluation = data, load(config.eval_dataset)
        _check_held_out(config, data, evaluation)
    else:
        train, evaluation = data.split(config.eval_fraction, seed=config.seed)
    if len(train) == 0:
        raise ValueError(f"{config.dataset}: no training episodes left after filtering")
    stride = config.window_stride or max(config.context_length // 2, 1)
    train_windows = train.windows(config.context_length, stride)
    if config.augment:
        train_windows = AugmentedWindows(train_windows, seed=config.seed)
    eval_windows = evaluation.windows(config.context_length, config.context_length) if len(evaluation) else None
    return data.frame_size, data.info.get("game"), train_windows, eval_windows


def _check_held_out(config: ImitationConfig, data, evaluation) -> None:
    """The held-out data is of the training data's game and frame size (checked before training, not after it)."""
    fix = "hold out recordings of the same game at the same frame size, or drop eval_dataset to use eval_fraction"
    check_frame_size(evaluation.frame_size, data.frame_size, f"{config.eval_dataset} (eval_dataset)",
                     f"training on {config.dataset}", fix)
    game, eval_game = (d.info.get("game") or {} for d in (data, evaluation))
    if game.get("id") and eval_game.get("id") and game["id"] != eval_game["id"]:  # one that records none may match
        raise ValueError(f"{config.eval_dataset}: eval_dataset is of the game {eval_game.get('id')} but the training "
                         f"data ({config.dataset}) of {game.get('id')}; {fix}")


CONFIG = ImitationConfig
REQUIRED = ("dataset",)


def run(config: ImitationConfig) -> dict:
    """Train, evaluate (when there is held-out data) and save; returns the metrics."""
    resume_from = check_output_dir(config)
    frame_size, game, train_windows, eval_windows = build_datasets(config)
    set_seed(config.seed)  # the model's initialisation too, not only the Trainer's data order
    model = build_model(config, frame_size, game)  # all checks happen before the first step
    if eval_windows is None:
        config.eval_strategy = "no"
    trainer = ImitationTrainer(model=model, args=config, train_dataset=train_windows, eval_dataset=eval_windows,
                               data_collator=ImitationCollator(config.filter_noops),
                               compute_metrics=component_metrics)
    clear_checkpoints(config)
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = {"uniform_loss": UNIFORM_LOSS}
    if eval_windows is not None:
        metrics.update(trainer.evaluate())
    save_results(trainer, config, metrics)
    return metrics
