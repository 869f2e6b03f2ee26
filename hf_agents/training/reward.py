"""Stage 4 (paper 3.5, C.3): a Bradley-Terry reward model on trajectory preferences, with TRL's RewardTrainer.

The encoder (the fine-tuned agent, or a random projection) is frozen, so every trajectory is embedded once
and the trainer sees only embeddings: a batch is the chosen trajectories' embeddings followed by the
rejected ones', which is the (2B, 1) layout `RewardTrainer.compute_loss` expects. Trajectories are split
into train and held-out sets by episode; a comparison is held out when both its trajectories are.
Recipes: `stage: reward`. `RewardTrainingConfig` configures the training; the model's own config (what is
saved with it) is `TrajectoryRewardConfig` in `hf_agents.models`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, set_seed
from trl import RewardConfig, RewardTrainer

from hf_agents.data import TrajectoryDataset, load_trajectories
from hf_agents.data.preferences import read_preferences
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
class RewardTrainingConfig(StageArguments, RewardConfig):
    r"""Training arguments of the reward-model stage; every `RewardConfig`/`TrainingArguments` field too.

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
    padding_side: str = field(default="right", metadata={"help": "Black-frame padding after each trajectory "
                              "('right', every trajectory starts at the same input of the trajectory MLP) or in "
                              "front of it ('left', every trajectory ends at the same input). Paper: unstated. "
                              "Which is better depends on the data (README: reward models)."})
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
    max_length: int | None = field(default=None, metadata={"help": "Unused: trajectories, not tokens."})
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


def _placeholder_tokenizer() -> PreTrainedTokenizerFast:
    """RewardTrainer asks for a tokenizer with a pad token even when the data is already 'tokenized'."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0}, unk_token="<pad>")),
                                   pad_token="<pad>", eos_token="<pad>")


class EmbeddingCollator:
    """Rows hold trajectory indices (`chosen_ids`, `rejected_ids`); a batch holds the frozen embeddings of the
    distinct trajectories and, per comparison slot (chosen first, then rejected), which of them it is."""

    def __init__(self, embeddings: torch.Tensor):
        self.embeddings = embeddings

    def __call__(self, rows: list[dict]) -> dict:
        index = torch.as_tensor([r["chosen_ids"][0] for r in rows] + [r["rejected_ids"][0] for r in rows])
        distinct, slot = torch.unique(index, return_inverse=True)  # all-pairs data repeats trajectories a lot
        return {"embeddings": self.embeddings[distinct], "trajectory_index": slot,
                "attention_mask": torch.ones(len(index), self.embeddings.shape[1], dtype=torch.long)}


class TrajectoryRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer on trajectory embeddings; adds the min-max normalisation after training (C.3)."""

    def __init__(self, model: TrajectoryRewardModel, args: RewardTrainingConfig, embeddings: torch.Tensor,
                 train_dataset, eval_dataset=None, **kwargs):
        self.embeddings = embeddings
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=EmbeddingCollator(embeddings), processing_class=_placeholder_tokenizer(),
                         **kwargs)
        self.processing_class = None  # the placeholder is not part of the model: do not save it beside the weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.args.l2_penalty or not model.training:
            return out
        penalty = 0.5 * self.args.l2_penalty * sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
        if return_outputs:
            return out[0] + penalty, out[1]
        return out + penalty

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
        if agent.config.image_size != frame_size:
            raise ValueError(f"{config.trajectories}: frames are {frame_size}px but the agent {config.agent} takes "
                             f"{agent.config.image_size}px; roll out with a matching env or pick another agent")
        return TrajectoryRewardModel.from_agent(agent, max_steps=config.trajectory_steps,
                                                padding_side=config.padding_side)
    return TrajectoryRewardModel(TrajectoryRewardConfig(encoder=config.encoder, image_size=frame_size,
                                                        max_steps=config.trajectory_steps,
                                                        padding_side=config.padding_side))


@torch.no_grad()
def embed_trajectories(model: TrajectoryRewardModel, trajectories: TrajectoryDataset, batch_size: int = 8,
                       progress: bool = True) -> torch.Tensor:
    """(episodes, max_steps, D) frozen embeddings of every episode (cut to max_steps)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    order = range(len(trajectories))
    for start in tqdm(range(0, len(order), batch_size), desc="embedding trajectories", disable=not progress):
        frames, actions, lengths = trajectories.read_batch(order[start:start + batch_size], model.config.max_steps)
        emb = model.embed(*(torch.from_numpy(x).to(device) for x in (frames, actions, lengths)))
        out.append(emb.float().cpu())
    return torch.cat(out)


def fit_standardization(config: RewardTrainingConfig, model: TrajectoryRewardModel, embeddings: torch.Tensor,
                        trajectories: TrajectoryDataset, train_index) -> None:
    """Where the config asks for it, the model standardises embeddings with the training trajectories' statistics."""
    if config.standardize_embeddings:
        lengths = torch.as_tensor([trajectories.episode_length(i) for i in train_index])
        model.standardize(embeddings[torch.as_tensor(list(train_index))], lengths)


def build_comparisons(config: RewardTrainingConfig, trajectories: TrajectoryDataset):
    """Train and held-out comparison datasets (rows of trajectory indices) and the train trajectory indices."""
    position = {m["episode_id"]: i for i, m in enumerate(trajectories.episodes)}
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
    embeddings = embed_trajectories(model, trajectories, config.embed_batch_size)  # once: the encoder is frozen
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
    save_results(trainer, config, metrics)
    return metrics
