"""The agent: frames -> ConvNeXt embeddings, interleaved with action embeddings, through GPT2, -> 16 action heads.

Sequence for H timesteps: [o_1, a_1, o_2, a_2, ..., o_H, a_H] (2H tokens, learnt positions). The
output at o_t (which has seen o_1..o_t and a_1..a_{t-1}) predicts a_t: LayerNorm -> MLP (GELU) ->
68 logits, split into 12 button heads (2 classes) and 4 stick heads (11 buckets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXtBlock
from torch import nn
from transformers import AutoConfig, AutoModel, GPT2Config, GPT2Model, PreTrainedModel
from transformers.utils import ModelOutput

from hf_agents.actions import COMPONENT_SIZES, NUM_COMPONENTS, TOKEN_OFFSETS, VOCAB_SIZE, ActionError
from hf_agents.models.configuration_agent import AgentConfig

# peft LoRA targets in the GPT2 backbone (Conv1D layers; use fan_in_fan_out=True).
LORA_TARGET_MODULES = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]


class FrameEncoder(nn.Module):
    """Paper C.1: 8x8/4 stem to 16 channels, 4 x (ConvNeXt blocks, 3x3/2 conv doubling channels), LayerNorm."""

    def __init__(self, config: AgentConfig):
        super().__init__()
        c = config.encoder_stem_channels
        self.stem = nn.Conv2d(3, c, kernel_size=8, stride=4, padding=3)
        stages = []
        for depth in config.encoder_depths:
            blocks = [ConvNeXtBlock(c) for _ in range(depth)]
            stages.append(nn.Sequential(*blocks, nn.Conv2d(c, 2 * c, kernel_size=3, stride=2, padding=1)))
            c *= 2
        self.stages = nn.Sequential(*stages)
        with torch.no_grad():
            size = self.stages(self.stem(torch.zeros(1, 3, config.image_size, config.image_size))).numel()
        self.norm = nn.LayerNorm(size, eps=config.layer_norm_epsilon)
        self.proj = nn.Linear(size, config.hidden_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) uint8 or float in [0, 255] -> (N, hidden)."""
        x = frames.to(self.stem.weight.dtype) / 255.0
        x = self.stages(self.stem(x))
        return self.proj(self.norm(x.flatten(1)))


@dataclass
class AgentOutput(ModelOutput):
    """
    loss: summed cross-entropy over the 16 components, averaged over the steps in `loss_mask`.
    logits: (B, T, 68) action logits at each observation slot; `split_logits` gives the 16 heads.
    last_hidden_state: (B, T, hidden) layer-normed transformer output at each observation slot
        (the per-step trajectory embedding used by the reward model and DPO).
    component_accuracy: (16,) accuracy of the greedy action per component over `loss_mask` steps.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    past_key_values: object | None = None
    component_accuracy: torch.Tensor | None = None


def split_logits(logits: torch.Tensor) -> list[torch.Tensor]:
    """(…, 68) -> 16 tensors (…, 2) x 12 and (…, 11) x 4."""
    return list(logits.split(COMPONENT_SIZES.tolist(), dim=-1))


class AgentPreTrainedModel(PreTrainedModel):
    config_class = AgentConfig
    base_model_prefix = "agent"
    main_input_name = "frames"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["GPT2Block"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, (nn.LayerNorm, LayerNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, AgentModel):
            module.token_offsets.copy_(torch.as_tensor(TOKEN_OFFSETS))  # non-persistent: not in checkpoints


class AgentModel(AgentPreTrainedModel):
    def __init__(self, config: AgentConfig):
        super().__init__(config)
        self.encoder = FrameEncoder(config)
        self.action_embedding = nn.Embedding(VOCAB_SIZE, config.hidden_size)  # 16 component embeddings, summed
        gpt2 = GPT2Config(
            vocab_size=1, n_positions=2 * config.context_length, n_embd=config.hidden_size, n_layer=config.num_layers,
            n_head=config.num_heads, n_inner=config.intermediate_size, resid_pdrop=config.dropout,
            embd_pdrop=config.dropout, attn_pdrop=config.dropout, layer_norm_epsilon=config.layer_norm_epsilon,
            initializer_range=config.initializer_range, bos_token_id=None, eos_token_id=None,
        )
        gpt2._attn_implementation = config._attn_implementation
        self.backbone = GPT2Model(gpt2)
        # Inputs come as embeddings: the token table is unused, and DDP rejects unused trainable parameters.
        self.backbone.wte.weight.requires_grad_(False)
        self.head = nn.Sequential(
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon),
            nn.Linear(config.hidden_size, config.head_hidden_size),
            nn.GELU(),
            nn.Linear(config.head_hidden_size, VOCAB_SIZE),
        )
        self.register_buffer("token_offsets", torch.as_tensor(TOKEN_OFFSETS), persistent=False)
        self.post_init()

    # -- pieces, also used by the policy and the reward model ---------------------------------
    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(…, 3, H, W) -> (…, hidden)."""
        self._check_frames(frames)
        lead = frames.shape[:-3]
        return self.encoder(frames.reshape(-1, *frames.shape[-3:])).reshape(*lead, -1)

    def embed_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(…, 16) ids -> (…, hidden): the sum of the 16 component embeddings."""
        return self.action_embedding(actions + self.token_offsets).sum(-2)

    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)

    def _check_frames(self, frames: torch.Tensor) -> None:
        size = self.config.image_size
        if frames.ndim < 4 or frames.shape[-3] != 3:
            hint = " (channels-last? permute to (..., 3, H, W))" if frames.shape[-1] == 3 else ""
            raise ValueError(f"frames must be (..., 3, {size}, {size}) RGB, got {tuple(frames.shape)}{hint}")
        if tuple(frames.shape[-2:]) != (size, size):
            raise ValueError(f"frames are {tuple(frames.shape[-2:])} but the model takes {size}x{size}; resize them")

    def _check_actions(self, actions: torch.Tensor) -> None:
        if actions.shape[-1] != NUM_COMPONENTS or actions.dtype.is_floating_point:
            raise ActionError(f"actions must be integer bucket ids (..., 16), got {actions.dtype} {tuple(actions.shape)}")
        if not torch.compiler.is_compiling():
            bad = (actions < 0) | (actions >= torch.as_tensor(COMPONENT_SIZES, device=actions.device))
            if bad.any():
                raise ActionError("actions hold ids outside the gamepad contract (buttons 0-1, sticks 0-10)")

    # -- the forward pass ----------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, actions: torch.Tensor | None = None, attention_mask=None, loss_mask=None,
                use_cache: bool = False, num_items_in_batch=None, **kwargs) -> AgentOutput:
        """frames (B, T, 3, H, W) uint8; actions (B, T, 16) ids: inputs for a_1..a_{T-1} and targets for all T.

        attention_mask (B, T): 1 for real steps, 0 for padding. loss_mask (B, T): steps that count in the
        loss (default: attention_mask), e.g. 0 on no-ops. Without actions, only o_T's logits are meaningful.
        num_items_in_batch: normaliser of the summed loss (default: this batch's loss_mask steps); the
        Trainer passes the count over all ranks so that N ranks give the same update as one process.
        """
        if frames.ndim != 5:
            raise ValueError(f"frames must be (batch, time, 3, H, W), got {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        if T > self.config.context_length:
            raise ValueError(f"{T} timesteps exceed the context length H={self.config.context_length}")
        obs = self.embed_frames(frames)
        if actions is None:
            act = torch.zeros_like(obs)
        else:
            if actions.shape[:2] != (B, T):
                raise ValueError(f"actions {tuple(actions.shape)} do not match frames' (batch, time) = {(B, T)}")
            self._check_actions(actions)
            act = self.embed_actions(actions)
        tokens = torch.stack([obs, act], dim=2).reshape(B, 2 * T, -1)
        mask = None if attention_mask is None else attention_mask.repeat_interleave(2, dim=1)
        out = self.backbone(inputs_embeds=tokens, attention_mask=mask, use_cache=use_cache)
        hidden = out.last_hidden_state[:, 0::2]  # observation slots
        logits = self.action_logits(hidden)
        loss = accuracy = None
        if actions is not None:
            weights = loss_mask if loss_mask is not None else attention_mask
            weights = torch.ones(B, T, device=logits.device) if weights is None else weights.to(logits.dtype)
            loss, accuracy = self.imitation_loss(logits, actions, weights, num_items_in_batch)
        return AgentOutput(loss=loss, logits=logits, last_hidden_state=hidden,
                           past_key_values=out.past_key_values if use_cache else None, component_accuracy=accuracy)

    @staticmethod
    def imitation_loss(logits, actions, weights, num_items=None):
        """Cross-entropy summed over components, mean over weighted steps; and per-component accuracy."""
        denom = weights.sum().clamp(min=1)
        loss_denom = denom if num_items is None else num_items
        loss = logits.new_zeros(())
        accuracy = []
        for c, lg in enumerate(split_logits(logits.float())):
            target = actions[..., c]
            ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), target.reshape(-1), reduction="none")
            loss = loss + (ce.view_as(weights) * weights).sum() / loss_denom
            accuracy.append(((lg.argmax(-1) == target).float() * weights).sum() / denom)
        return loss, torch.stack(accuracy).detach()


AutoConfig.register("hf_agent", AgentConfig)
AutoModel.register(AgentConfig, AgentModel)
