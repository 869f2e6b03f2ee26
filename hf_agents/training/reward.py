"""Stage 4 (paper 3.5, C.3): a Bradley-Terry reward model on trajectory preferences.

The encoder (the fine-tuned agent, or a random projection) is frozen, so every trajectory is embedded once
and the trainer sees only embeddings: a batch is the chosen trajectories' rewards followed by the rejected
ones'. Trajectories are split into train and held-out sets by episode; a comparison is held out when both its
trajectories are.
The trainer is a plain `transformers.Trainer` with the Bradley-Terry loss, as the DPO stage's: TRL's
`RewardTrainer` is built for text (it needs a tokenizer with a pad token, an attention mask and token-length
fields that mean nothing for trajectories), and its loss and logged metrics are these few lines. Checked
against `RewardTrainer` (TRL 1.16) on the same data and seed: the same weights, optimizer and scheduler
states and logged metrics, to the bit; only the placeholder tokenizer's `pad_token_id` left the saved config.
Recipes: `stage: reward`. `RewardTrainingConfig` configures the training; the model's own config (what is
saved with it) is `TrajectoryRewardConfig` in `hf_agents.models`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import datasets
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments, set_seed

from hf_agents.data import TrajectoryDataset, load_trajectories
from hf_agents.data.preferences import preferences_dataset, read_preferences
from hf_agents.frames import check_frame_size
from hf_agents.locations import fingerprint
from hf_agents.models import AgentModel, TrajectoryRewardConfig, TrajectoryRewardModel, load_checked
from hf_agents.models.configuration_reward import ENCODERS
from hf_agents.training.common import (
    RecipeError,
    StageArguments,
    check_output_dir,
    clear_checkpoints,
    save_results,
)


@dataclass
class RewardTrainingConfig(StageArguments, TrainingArguments):
    r"""Training arguments of the reward-model stage; every `TrainingArguments` field too.

    Paper values (C.3): minibatch 2048 comparisons, lr 1e-4, L2 penalty 0.1, 200 epochs (50 for the largest
    set), trajectories padded to 100 steps, agent-encoder embeddings (or a 512-d random projection).
    """

    trajectories: str = field(default="", metadata={"help": "Trajectory dataset the preferences refer to (rollouts)."})
    preferences: str = field(default="", metadata={"help": "Preferences parquet file (chosen, rejected episode ids)."})
    labeller: str | None = field(default=None, metadata={"help": "Use only this labeller's preferences (one designer "
                                                         "= one reward model); default: all."})
    encoder: str = field(default="agent", metadata={"help": "'agent' (frozen agent embeddings) or 'random' (frozen "
                                                     "random projection of the frame, the paper's baseline)."})
    agent: str | None = field(default=None, metadata={"help": "Agent checkpoint whose transformer embeds the steps "
                                                      "(required for encoder='agent')."})
    trajectory_steps: int = field(default=100, metadata={"help": "Trajectories are padded to (and cut at) this many "
                                                          "steps (paper: 100)."})
    agent_layer: str = field(default="last", metadata={"help": "encoder=agent: which representation embeds a "
                             "step: 'last' (the transformer's output, the paper's), 'frames' (the frame encoder's "
                             "output) or 'block-K' (the hidden state after GPT2 block K)."})
    padding_side: str = field(default="left", metadata={"help": "Black-frame padding in front of each trajectory "
                              "('left': every trajectory ends at the same input of the trajectory MLP; more accurate "
                              "for every encoder here, docs/results.md) or after it ('right': every trajectory starts "
                              "at the same input). Paper: unstated."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of trajectories held out; comparisons among "
                                                        "them measure preference accuracy."})
    standardize_embeddings: bool | None = field(default=None, metadata={"help": "Standardise each embedding "
                                                "dimension over the training trajectories' steps before the MLPs; "
                                                "default: on for the random encoder (else the L2 penalty pulled its "
                                                "model to one constant reward), off for the agent's layer-normed "
                                                "output (paper)."})
    embed_batch_size: int = field(default=8, metadata={"help": "Trajectories embedded at once by the frozen encoder."})
    per_device_train_batch_size: int = field(default=2048, metadata={"help": "Comparisons per step (paper: 2048)."})
    per_device_eval_batch_size: int = field(default=2048, metadata={"help": "Comparisons per evaluation step."})
    num_train_epochs: float = field(default=200, metadata={"help": "Epochs over the comparisons (paper: 200)."})
    l2_penalty: float = field(default=0.1, metadata={"help": "L2 regularisation of the trained weights, added to the "
                                                     "loss as l2/2 * sum(w^2) (Adam-style coupled L2); keeps the "
                                                     "rewards' scale from growing (paper: 0.1)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW's decoupled weight decay (the paper's L2 is "
                                                       "`l2_penalty`)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (paper: 1e-4)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the comparison columns."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Deprecated alias of "
                                                "activation_checkpointing (off: the encoder is frozen)."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast; default: on where a GPU supports it."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got '{self.encoder}'")
        if self.standardize_embeddings is None:
            self.standardize_embeddings = self.encoder == "random"
        if self.bf16 is None:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()


class EmbeddingCollator:
    """Rows hold trajectory indices (`chosen_ids`, `rejected_ids`); a batch holds the frozen embeddings of the
    distinct trajectories and, per comparison slot (chosen first, then rejected), which of them it is."""

    def __init__(self, embeddings: torch.Tensor):
        self.embeddings = embeddings

    def __call__(self, rows: list[dict]) -> dict:
        index = torch.as_tensor([r["chosen_ids"][0] for r in rows] + [r["rejected_ids"][0] for r in rows])
        distinct, slot = torch.unique(index, return_inverse=True)  # all-pairs data repeats trajectories a lot
        return {"embeddings": self.embeddings[distinct], "trajectory_index": slot}


class TrajectoryRewardTrainer(Trainer):
    """Bradley-Terry training on trajectory embeddings (loss -log sigmoid(r_chosen - r_rejected), plus the
    paper's L2 penalty), logging accuracy, margin, the rewards' range and `num_tokens` (padded trajectory
    steps trained on so far, TRL's name); the min-max normalisation after training (C.3)."""

    def __init__(self, model: TrajectoryRewardModel, args: RewardTrainingConfig, embeddings: torch.Tensor,
                 train_dataset, eval_dataset=None, **kwargs):
        self.embeddings = embeddings
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=EmbeddingCollator(embeddings), **kwargs)
        self.can_return_loss, self.label_names = True, []  # evaluation computes the loss without labels
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._steps_trained = 0  # padded trajectory steps trained on (TRL's `num_tokens`), not resumed

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        outputs = model(**inputs)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        loss = -F.logsigmoid(chosen - rejected).mean()
        if mode == "train":  # both trajectories of each comparison, padded to max_steps
            steps = inputs["trajectory_index"].numel() * inputs["embeddings"].shape[1]
            steps = torch.tensor(steps, device=inputs["trajectory_index"].device)
            self._steps_trained += self.accelerator.gather_for_metrics(steps).sum().item()
        self._metrics[mode]["num_tokens"] = [self._steps_trained]
        with torch.no_grad():
            rewards = self.accelerator.gather(outputs.logits)
            metrics = self._metrics[mode]
            metrics["min_reward"].append(rewards.min().item())
            metrics["mean_reward"].append(rewards.mean().item())
            metrics["max_reward"].append(rewards.max().item())
            metrics["accuracy"].append(self.accelerator.gather_for_metrics((chosen > rejected).float().mean())
                                       .mean().item())
            metrics["margin"].append(self.accelerator.gather_for_metrics((chosen - rejected).mean()).mean().item())
        if self.args.l2_penalty and model.training:
            loss = loss + 0.5 * self.args.l2_penalty * sum(p.pow(2).sum() for p in model.parameters()
                                                           if p.requires_grad)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the metrics gathered since the last log, averaged (eval_-prefixed in evaluation)."""
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + key: sum(v) / len(v) for key, v in self._metrics[mode].items()})
        super().log(logs, start_time)
        self._metrics[mode].clear()

    @torch.no_grad()
    def rewards(self, indices) -> torch.Tensor:
        model = self.accelerator.unwrap_model(self.model).eval()
        emb = self.embeddings[torch.as_tensor(list(indices))]
        device = next(model.parameters()).device
        return torch.cat([model(embeddings=chunk.to(device)).logits[:, 0].float().cpu()
                          for chunk in emb.split(4096)])

    def normalise(self, train_indices) -> tuple[float, float]:
        r = self.rewards(train_indices)
        model = self.accelerator.unwrap_model(self.model)
        model.config.reward_min, model.config.reward_max = float(r.min()), float(r.max())
        return model.config.reward_min, model.config.reward_max


def build_reward_model(config: RewardTrainingConfig, frame_size: int) -> TrajectoryRewardModel:
    if config.encoder == "agent":
        if not config.agent:
            raise ValueError("encoder='agent' needs `agent`: the checkpoint of the (fine-tuned) agent to embed with")
        agent = load_checked(AgentModel, config.agent, "agent")
        check_frame_size(frame_size, agent.config.image_size, config.trajectories, f"the agent {config.agent}",
                         "roll out with a matching env or pick another agent")
        return TrajectoryRewardModel.from_agent(agent, max_steps=config.trajectory_steps,
                                                padding_side=config.padding_side, agent_layer=config.agent_layer)
    return TrajectoryRewardModel(TrajectoryRewardConfig(encoder=config.encoder, image_size=frame_size,
                                                        max_steps=config.trajectory_steps,
                                                        padding_side=config.padding_side))


def fit_standardization(config: RewardTrainingConfig, model: TrajectoryRewardModel, embeddings: torch.Tensor,
                        trajectories: TrajectoryDataset, train_index) -> None:
    """Where the config asks for it, the model standardises embeddings with the training trajectories' statistics."""
    if config.standardize_embeddings:
        lengths = torch.as_tensor([trajectories.episode_length(i) for i in train_index])
        model.standardize(embeddings[torch.as_tensor(list(train_index))], lengths)


def build_comparisons(config: RewardTrainingConfig, trajectories: TrajectoryDataset):
    """Train and held-out comparison datasets (rows of trajectory indices) and the train trajectory indices."""
    position = trajectories.positions()
    made_on, now = preferences_dataset(config.preferences), fingerprint(config.trajectories)  # None: not local
    if made_on and now and made_on != now:
        raise RecipeError(f"{config.preferences}: made on another version of {config.trajectories} (fingerprint "
                          f"{made_on[:12]}…, now {now[:12]}…): its episode ids may "
                          "name other episodes; make the preferences again on this dataset, or train on the dataset "
                          "they were made on")
    pairs = read_preferences(config.preferences, position, labeller=config.labeller)
    train_part, eval_part = trajectories.split(config.eval_fraction, seed=config.seed)
    held_out = {m["episode_id"] for m in eval_part.episodes}
    rows = {"train": ([], []), "eval": ([], [])}
    for chosen, rejected in pairs:
        side = "eval" if chosen in held_out and rejected in held_out else (
            "train" if chosen not in held_out and rejected not in held_out else None)
        if side:  # a comparison across the split would leak held-out trajectories into training
            rows[side][0].append([position[chosen]])
            rows[side][1].append([position[rejected]])
    if not rows["train"][0]:
        raise ValueError(f"{config.preferences}: no comparison between training trajectories; "
                         "label more pairs or lower eval_fraction")
    make = lambda r: datasets.Dataset.from_dict({"chosen_ids": r[0], "rejected_ids": r[1]})  # noqa: E731
    train_idx = sorted(position[m["episode_id"]] for m in train_part.episodes)
    return make(rows["train"]), (make(rows["eval"]) if rows["eval"][0] else None), train_idx


CONFIG = RewardTrainingConfig
REQUIRED = ("trajectories", "preferences")


def run(config: RewardTrainingConfig) -> dict:
    """Embed every trajectory once, train on the comparisons, normalise the rewards and save; returns the metrics."""
    resume_from = check_output_dir(config)
    trajectories = load_trajectories(config.trajectories)
    height, width = trajectories.frame_size
    if height != width:
        raise RecipeError(f"{config.trajectories}: frames are {height}x{width}; the reward model takes square frames")
    train_pairs, eval_pairs, train_index = build_comparisons(config, trajectories)
    set_seed(config.seed)
    model = build_reward_model(config, height)
    model.config.game = trajectories.info.get("game")
    embeddings = model.embed_dataset(trajectories, config.embed_batch_size)
    fit_standardization(config, model, embeddings, trajectories, train_index)
    if eval_pairs is None:
        config.eval_strategy = "no"
    trainer = TrajectoryRewardTrainer(model, config, embeddings, train_pairs, eval_pairs)
    clear_checkpoints(config)
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = {"train_comparisons": len(train_pairs), "eval_comparisons": len(eval_pairs) if eval_pairs else 0,
               "train_trajectories": len(train_index)}
    if eval_pairs is not None:
        metrics.update(trainer.evaluate())
    metrics["reward_min"], metrics["reward_max"] = trainer.normalise(train_index)
    problem = degenerate(metrics)
    if problem:
        metrics["degenerate"] = problem
        warnings.warn(f"{config.output_dir}: {problem}", stacklevel=2)
    save_results(trainer, config, metrics)
    return metrics


def degenerate(metrics: dict) -> str | None:
    """Why a trained reward model cannot guide alignment (one constant reward, or no better than chance on the
    held-out comparisons), with what to change; None when it can."""
    if metrics["reward_max"] - metrics["reward_min"] < 1e-6:
        return ("the reward model gives every training trajectory the same reward; lower l2_penalty, raise "
                "learning_rate or num_train_epochs, or label more pairs")
    accuracy = metrics.get("eval_accuracy")
    if accuracy is not None and metrics.get("eval_comparisons", 0) >= 20 and accuracy <= 0.55:
        return (f"held-out accuracy {accuracy:.0%} is no better than chance; label more (or more consistent) pairs, "
                "or try encoder=random / another agent_layer")
    return None
