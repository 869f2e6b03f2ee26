"""The trajectory reward model: frozen per-step embeddings -> per-step MLP -> concatenated -> MLP -> one reward.

Paper C.3. A trajectory is padded to `max_steps` (100) with black frames: after it, or with `padding_side="left"`
in front of it, so that every trajectory ends at the same input of the trajectory MLP. Each step is embedded by
a frozen encoder: the fine-tuned agent's layer-normed transformer output at that step's observation slot (with
the same sliding context the agent has when it acts), or, as the baseline, a frozen random linear projection of
the flattened frame, standardised per dimension over the training steps (without it the paper's L2 penalty
pulled the baseline to one constant reward). An MLP (256, GELU) maps each embedding to 3 numbers; the 100 x 3
are concatenated and an MLP (256, GELU) gives the trajectory's reward. Trained with Bradley-Terry
(`hf_agents.training.reward`); afterwards the min and max reward over the training trajectories are stored to
normalise to [0, 1].

Because the encoder is frozen, training works on precomputed embeddings (`embed` once, then
`forward(embeddings=...)`); at RL time `forward(frames=..., actions=...)` does both.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_agents.actions import CENTRE_BUCKET, NUM_BUTTONS, NUM_COMPONENTS
from hf_agents.frames import check_frame_size, scale_pixels, to_model
from hf_agents.models.configuration_agent import AgentConfig
from hf_agents.models.configuration_reward import TrajectoryRewardConfig
from hf_agents.models.loading import load_checked
from hf_agents.models.modeling_agent import AgentModel, use_dense_layers


def real_steps(lengths: torch.Tensor, max_steps: int, padding_side: str = "right") -> torch.Tensor:
    """(B, max_steps) mask of each trajectory's real steps (True on its steps, False on the padding, which is
    after them for padding_side="right" and before them for "left")."""
    position = torch.arange(max_steps, device=lengths.device)[None]
    if padding_side == "left":
        return position >= max_steps - lengths[:, None]
    return position < lengths[:, None]


def padding_to_front(embeddings: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, N, D) embeddings padded after each trajectory -> the same with the padding in front (left padding):
    each trajectory's last step moves to position N - 1."""
    N = embeddings.shape[1]
    source = (torch.arange(N, device=embeddings.device)[None] - (N - lengths.to(embeddings.device)[:, None])) % N
    return torch.gather(embeddings, 1, source[..., None].expand(-1, -1, embeddings.shape[2]))


class TrajectoryRewardModel(PreTrainedModel):
    config_class = TrajectoryRewardConfig
    base_model_prefix = "reward"
    main_input_name = "embeddings"
    _no_split_modules = []

    def __init__(self, config: TrajectoryRewardConfig):
        super().__init__(config)
        if config.encoder == "agent":
            self.agent = AgentModel(AgentConfig.from_dict(config.agent_config))  # a legacy config keeps its GELU
            self.agent.requires_grad_(False)
        else:
            pixels = 3 * config.image_size * config.image_size
            self.projection = nn.Linear(pixels, config.random_embedding_size, bias=False)
            self.projection.requires_grad_(False)
        # Per-dimension standardisation of the embeddings (identity until `standardize` sets it from training data).
        self.register_buffer("embedding_mean", torch.zeros(config.embedding_size))
        self.register_buffer("embedding_std", torch.ones(config.embedding_size))
        self.step_mlp = nn.Sequential(
            nn.Linear(config.embedding_size, config.step_hidden_size), nn.GELU(),
            nn.Linear(config.step_hidden_size, config.step_output_size),
        )
        self.trajectory_mlp = nn.Sequential(
            nn.Linear(config.max_steps * config.step_output_size, config.hidden_size), nn.GELU(),
            nn.Linear(config.hidden_size, 1),
        )
        use_dense_layers(self)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and module is getattr(self, "projection", None):
            # A random projection that keeps the embedding's scale independent of the frame size.
            nn.init.normal_(module.weight, std=module.in_features ** -0.5)
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=5 ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        # The frozen agent's layers are reset here too; `from_agent` / `from_pretrained` then load its weights.

    @torch.no_grad()
    def standardize(self, embeddings: torch.Tensor, lengths: torch.Tensor) -> None:
        """Set the per-dimension mean and std that `forward` removes, from the real (unpadded) steps of
        embeddings (B, max_steps, D) with lengths (B,)."""
        mask = real_steps(lengths.clamp(max=embeddings.shape[1]), embeddings.shape[1], self.config.padding_side)
        steps = embeddings[mask].double()
        self.embedding_mean.copy_(steps.mean(0))
        self.embedding_std.copy_(steps.std(0).clamp(min=1e-6))

    @classmethod
    def from_agent(cls, agent: AgentModel | str, **config_kwargs) -> TrajectoryRewardModel:
        """A reward model whose frozen encoder is the given agent (a model or a checkpoint directory)."""
        if isinstance(agent, str):
            agent = load_checked(AgentModel, agent, "agent")
        model = cls(TrajectoryRewardConfig(encoder="agent", agent_config=agent.config.to_dict(), **config_kwargs))
        model.agent.load_state_dict(agent.state_dict())
        return model

    # -- embeddings (frozen) -------------------------------------------------------------------
    def pad_actions(self, frames: torch.Tensor, actions: torch.Tensor | None, lengths: torch.Tensor | None):
        """Check (B, T, ...) trajectories against max_steps. Returns their actions padded to (B, max_steps, 16) with
        no-ops after each trajectory's end, and the lengths (B,) (T for every trajectory when None)."""
        B, T = frames.shape[:2]
        N = self.config.max_steps
        if T > N:
            raise ValueError(f"trajectories of {T} steps exceed the reward model's max_steps={N}; cut them first")
        lengths = torch.full((B,), T, device=frames.device) if lengths is None else lengths.to(frames.device)
        out_actions = torch.zeros(B, N, NUM_COMPONENTS, dtype=torch.long, device=frames.device)
        out_actions[..., NUM_BUTTONS:] = CENTRE_BUCKET  # padded steps are no-ops
        if actions is not None:
            keep = real_steps(lengths, N)[:, :T]
            out_actions[:, :T] = torch.where(keep[..., None], actions.long(), out_actions[:, :T])
        return out_actions, lengths

    @torch.no_grad()
    def embed(self, frames: torch.Tensor, actions: torch.Tensor | None = None,
              lengths: torch.Tensor | None = None, frame_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, T, 3, H, W) uint8, actions (B, T, 16) ids, lengths (B,) -> embeddings (B, max_steps, D),
        padded on the config's `padding_side`. frame_embeddings (B, T, D): with the agent encoder, the frames'
        embeddings by this agent's frame encoder when they are already known (recorded while acting by a policy with the
        same frozen encoder, `shares_frame_encoder`); the frames are then not encoded again."""
        actions, lengths = self.pad_actions(frames, actions, lengths)  # after the end: no-ops, and black frames
        embeddings = self._frame_embeddings(frames, lengths, frame_embeddings)
        if self.config.encoder == "agent":
            embeddings = self._agent_embeddings(actions, embeddings)
        if self.config.padding_side == "left":
            embeddings = padding_to_front(embeddings, lengths.clamp(max=self.config.max_steps))
        return embeddings

    @torch.no_grad()
    def embed_dataset(self, trajectories, batch_size: int = 8, progress: bool = True) -> torch.Tensor:
        """(episodes, max_steps, D) frozen embeddings of every episode of a `TrajectoryDataset` (cut to
        max_steps), computed once: the encoder is frozen."""
        from tqdm.auto import tqdm

        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in tqdm(range(0, len(trajectories), batch_size), desc="embedding trajectories",
                          disable=not progress):
            index = range(start, min(start + batch_size, len(trajectories)))
            frames, actions, lengths = trajectories.read_batch(index, self.config.max_steps)
            frames = to_model(frames, device, contiguous=True)
            emb = self.embed(frames, *(torch.from_numpy(x).to(device) for x in (actions, lengths)))
            out.append(emb.float().cpu())
        return torch.cat(out)

    @classmethod
    def load_trained(cls, path, frame_size: int | None = None, game: str | None = None) -> TrajectoryRewardModel:
        """A trained reward model, checked to be normalised and (given the agent's `frame_size` and `game` id) to
        score its frames of its game."""
        if not path:
            raise ValueError("reward_source=model needs `reward_model`: the output_dir of the reward stage")
        model = load_checked(cls, path, "reward model")
        if frame_size is not None:
            check_frame_size(frame_size, model.config.image_size, path, "this reward model",
                             "train a reward model on this agent's rollouts")
        trained_on = (getattr(model.config, "game", None) or {}).get("id")
        if game and trained_on and trained_on != game:
            raise ValueError(f"{path}: this reward model was trained on trajectories of {trained_on}, the agent plays "
                             f"{game}; train a reward model on this agent's rollouts")
        if model.config.reward_min is None or model.config.reward_max is None:
            raise ValueError(f"{path}: the reward model has no normalisation (reward_min/max); it did not finish "
                             "training")
        if model.config.reward_max - model.config.reward_min < 1e-6:
            raise ValueError(f"{path}: the reward model gives every trajectory the same reward (reward_min == "
                             "reward_max), so it cannot guide alignment; retrain it with a lower l2_penalty, a higher "
                             "learning_rate or more labelled pairs")
        return model.eval()

    def _agent_embeddings(self, actions, frame_embeddings):
        # Each step with the context the agent had when it acted (its sliding window).
        layer = self.config.agent_layer
        if layer == "frames":
            return frame_embeddings
        return self.agent.sliding_hidden(None, actions, None if layer == "last" else int(layer.split("-")[1]),
                                         embeddings=frame_embeddings)

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The frozen encoder: frames (K, 3, H, W) -> (K, D)."""
        if self.config.encoder == "random":
            return self.projection(scale_pixels(frames.flatten(1), self.projection.weight.dtype))
        return self.agent.embed_frames(frames)

    def _frame_embeddings(self, frames, lengths, known=None):
        """(B, max_steps, D): each real step's frame embedding, then the padding's black frame's, as if every padded
        frame were encoded. Only the real frames (and one black frame) are encoded, or none where `known` (B, T, D)
        holds their embeddings already (recorded while acting)."""
        (B, T), N = frames.shape[:2], self.config.max_steps
        black = self._encode(frames.new_zeros(1, *frames.shape[2:]))[0]
        out = black.expand(B, N, -1).clone()
        keep = real_steps(lengths, N)[:, :T]
        if bool(keep.any()):
            out[:, :T][keep] = (known[keep] if known is not None else self._encode(frames[keep])).to(out.dtype)
        return out

    def shares_frame_encoder(self, agent) -> bool:
        """Whether `agent`'s frame encoder is this reward model's own (same weights), so that its frame embeddings
        can stand for the frames in `embed`."""
        if self.config.encoder != "agent":
            return False
        ours, theirs = self.agent.encoder.state_dict(), agent.encoder.state_dict()
        return ours.keys() == theirs.keys() and all(
            ours[k].shape == theirs[k].shape and torch.equal(ours[k].to(theirs[k].device, theirs[k].dtype), theirs[k])
            for k in ours)

    # -- the reward ----------------------------------------------------------------------------
    def forward(self, embeddings: torch.Tensor | None = None, frames: torch.Tensor | None = None,
                actions: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                trajectory_index: torch.Tensor | None = None, **kwargs):
        """Rewards (B, 1) from embeddings (B, max_steps, D), or from frames/actions/lengths (embedded here).

        trajectory_index (N,): return rewards[trajectory_index] (N, 1). A batch of comparisons repeats
        trajectories (all pairs of M trajectories), so each distinct one is scored once and then indexed.
        Other keyword arguments (e.g. an `attention_mask`) are ignored: padding is part of the input, as in
        the paper.
        """
        if embeddings is None:
            if frames is None:
                raise ValueError("pass embeddings (B, max_steps, D) or frames (B, T, 3, H, W)")
            embeddings = self.embed(frames, actions, lengths)
        expected = (self.config.max_steps, self.config.embedding_size)
        if embeddings.ndim != 3 or tuple(embeddings.shape[1:]) != expected:
            raise ValueError(f"embeddings must be (batch, {expected[0]}, {expected[1]}), got {tuple(embeddings.shape)}")
        embeddings = (embeddings.to(self.embedding_mean.dtype) - self.embedding_mean) / self.embedding_std
        per_step = self.step_mlp(embeddings.to(self.step_mlp[0].weight.dtype))
        rewards = self.trajectory_mlp(per_step.flatten(1))
        if trajectory_index is not None:
            rewards = rewards[trajectory_index]
        return SequenceClassifierOutput(logits=rewards)

    def normalized_reward(self, rewards: torch.Tensor) -> torch.Tensor:
        """Raw rewards -> [0, 1] with the min/max seen on the training trajectories (clamped outside them)."""
        lo, hi = self.config.reward_min, self.config.reward_max
        if lo is None or hi is None:
            raise ValueError("this reward model has no normalisation yet (reward_min/max are set by training)")
        return ((rewards - lo) / max(hi - lo, 1e-8)).clamp(0, 1)


AutoConfig.register("hf_agent_reward", TrajectoryRewardConfig)
AutoModel.register(TrajectoryRewardConfig, TrajectoryRewardModel)
AutoModelForSequenceClassification.register(TrajectoryRewardConfig, TrajectoryRewardModel)
