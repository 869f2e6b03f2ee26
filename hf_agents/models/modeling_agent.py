"""The agent: frames -> ConvNeXt embeddings, interleaved with action embeddings, through GPT2, -> 16 action heads.

Sequence for H timesteps: [o_1, a_1, o_2, a_2, ..., o_H, a_H] (2H tokens, learnt positions). The
output at o_t (which has seen o_1..o_t and a_1..a_{t-1}) predicts a_t: LayerNorm -> MLP (GELU) ->
68 logits, split into 12 button heads (2 classes) and 4 stick heads (11 buckets).
"""

from __future__ import annotations

import inspect
import platform
import weakref
from dataclasses import dataclass

import torch
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXtBlock
from torch import nn
from torch.autograd.function import once_differentiable
from transformers import AutoConfig, AutoModel, GPT2Config, GPT2Model, PreTrainedModel
from transformers.pytorch_utils import Conv1D
from transformers.utils import ModelOutput

from hf_agents.actions import (
    COMPONENT_SIZES,
    NUM_BUCKETS,
    NUM_BUTTONS,
    NUM_COMPONENTS,
    NUM_STICKS,
    TOKEN_OFFSETS,
    VOCAB_SIZE,
    ActionError,
)
from hf_agents.frames import check_frame_size, scale_pixels
from hf_agents.models.configuration_agent import AgentConfig
from hf_agents.processes import switch

# transformers 5.24 renamed the KV cache's argument and output field from `past_key_values` to `cache`
_CACHE = "cache" if "cache" in inspect.signature(GPT2Model.forward).parameters else "past_key_values"


# -- dense layers on a CPU ---------------------------------------------------------------------------------------------
# torch sends fp32 matmuls to its BLAS (MKL), which on the 2-core AMD EPYC of BENCHMARKS.md reaches 220 GFLOP/s
# against 480 through oneDNN. On x86-64 the model's Linear and Conv1D layers send their forward product and its input
# gradient through oneDNN (full fp32) when the product has at least 2^21 multiply-adds (below, oneDNN's fixed cost of
# about 10 us a call made it slower there, e.g. acting at batch 1). The weight gradient goes through oneDNN when the
# layer has at least 128 input features (1.2-2.1x faster at the backbone's shapes); with fewer (the encoder's first
# stages: 65,536 rows of 16 channels at batch 8) oneDNN was up to 4x slower, and it stays with torch.
# HF_AGENTS_ONEDNN_LINEARS=0: torch's own path.
def _onednn_linear_op():
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()
ONEDNN_LINEARS = switch("HF_AGENTS_ONEDNN_LINEARS", "the dense layers' products through oneDNN on a CPU",
                        "torch's own path")
ONEDNN_MIN_MULTIPLY_ADDS = 1 << 21
ONEDNN_WEIGHT_GRAD_MIN_FEATURES = 128


def _eager_cpu_fp32(x: torch.Tensor) -> bool:
    """x is an fp32 CPU tensor outside autocast and `torch.compile`: where the CPU paths below apply."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b for x (M, in), W (out, in) of any strides."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None)
        ctx.has_bias = bias is not None
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = _ONEDNN_LINEAR(grad, weight.t(), None, "none", [], "") if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:  # (out, M) @ (M, in) as a linear layer of weight x^T, or torch's mm
            grad_weight = (_ONEDNN_LINEAR(grad.t(), x.t(), None, "none", [], "")
                           if x.shape[-1] >= ONEDNN_WEIGHT_GRAD_MIN_FEATURES else grad.t() @ x)
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`nn.functional.linear` (weight (out, in)), through oneDNN for large fp32 products on an x86-64 CPU (see above)."""
    if (not ONEDNN_LINEARS or _ONEDNN_LINEAR is None or not _eager_cpu_fp32(x) or weight.dtype != torch.float32
            or x.numel() * weight.shape[0] < ONEDNN_MIN_MULTIPLY_ADDS):
        return nn.functional.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled():
        y = _OneDNNLinear.apply(rows, weight, bias)
    else:  # inference (acting): the product alone, without the autograd Function's cost of about 7 us a call
        y = _ONEDNN_LINEAR(rows, weight, bias, "none", [], "")
    return y.view(*x.shape[:-1], weight.shape[0])


class DenseLinear(nn.Linear):
    """nn.Linear through `dense`: same parameters and state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense(x, self.weight, self.bias)


class DenseConv1D(Conv1D):
    """GPT2's Conv1D (weight (in, out)) through `dense`: same parameters and state dict; peft's LoRA still wraps it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense(x, self.weight.t(), self.bias)


# A depthwise convolution's weight gradient as a depthwise convolution forward: each frame's channel of the input,
# padded, convolved with the same frame's channel of the output gradient as kernel, summed over frames. On the 2-core
# AMD EPYC of BENCHMARKS.md it ran 3-4x faster than torch's weight gradient at the encoder's 16x16 to 4x4 maps, and
# 5x slower at 2x2, which keeps torch's.
DEPTHWISE_WEIGHT_GRAD_MIN_SIZE = 4


def _depthwise_weight_grad(grad: torch.Tensor, x: torch.Tensor, padding: list[int]) -> torch.Tensor:
    """(C, 1, 2 ph + 1, 2 pw + 1) weight gradient of a depthwise convolution (stride 1, padding (ph, pw), odd kernel
    k = 2 p + 1) of x (N, C, H, W) with output gradient grad (N, C, H, W)."""
    n, c, h, w = x.shape
    per_frame = nn.functional.conv2d(x.contiguous().view(1, n * c, h, w), grad.contiguous().view(n * c, 1, h, w),
                                     None, 1, padding, 1, n * c)
    return per_frame.view(n, c, *per_frame.shape[-2:]).sum(0).unsqueeze(1)


class _DepthwiseConv(torch.autograd.Function):
    """A depthwise convolution (stride 1, zero padding k // 2, odd k) whose backward is three cheaper calls on a CPU:
    the input gradient as the forward convolution with the flipped kernel, the weight gradient alone
    (`_depthwise_weight_grad` from 4x4 maps), the bias gradient as a sum (torch's one call for all three took 2-3x
    longer at the encoder's shapes)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)  # x only for the weight gradient
        ctx.padding, ctx.has_bias = padding, bias is not None
        return nn.functional.conv2d(x, weight, bias, 1, padding, 1, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        groups, padding = weight.shape[0], ctx.padding
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = nn.functional.conv2d(grad, weight.flip(-1, -2), None, 1, padding, 1, groups)
        if ctx.needs_input_grad[1] and min(x.shape[-2:]) >= DEPTHWISE_WEIGHT_GRAD_MIN_SIZE:
            grad_weight = _depthwise_weight_grad(grad, x, padding)
        elif ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], padding, [1, 1], False,
                                                              [0, 0], groups, [False, True, False])[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


def _onednn_conv_ops():
    """oneDNN's weight reorder and convolution on a reordered weight, as `torch.compile` uses them (x86-64 only)."""
    if _ONEDNN_LINEAR is None:
        return None
    try:
        return torch.ops.mkldnn._reorder_convolution_weight.default, torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_CONV = _onednn_conv_ops()


class InferenceConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) whose inference on a CPU (fp32, no gradient) convolves with its
    weight reordered once for oneDNN, instead of at every call: the encoder at batch 16 took 2.5 ms against 3.4
    (acting 5.0 ms against 6.0) on the 2-core AMD EPYC of BENCHMARKS.md, with the same outputs there (oneDNN may sum
    in another order at other shapes). The reordered weight is kept per input shape, and made again once the weight
    changes (its version or storage)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (_ONEDNN_CONV is None or torch.is_grad_enabled() or not _eager_cpu_fp32(x) or x.dim() != 4
                or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return super().forward(x)
        return _ONEDNN_CONV[1](x, self._reordered_weight(x.shape), self.bias, list(self.padding), list(self.stride),
                               list(self.dilation), self.groups, "none", [], "")

    def _reordered_weight(self, shape: torch.Size) -> torch.Tensor:
        key = (self.weight._version, self.weight.data_ptr())
        cached = _REORDERED.get(self)
        if cached is None or cached[0] != key:
            cached = _REORDERED[self] = (key, {})
        by_shape = cached[1]
        if shape not in by_shape:
            by_shape[shape] = _ONEDNN_CONV[0](self.weight.detach(), list(self.padding), list(self.stride),
                                              list(self.dilation), self.groups, list(shape))
        return by_shape[shape]


# InferenceConv2d's reordered weights, by module: kept outside the modules, whose copies (the reference policy's
# deepcopy) and pickles must not carry oneDNN's opaque tensors.
_REORDERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class DepthwiseConv2d(InferenceConv2d):
    """nn.Conv2d for a depthwise convolution (ConvNeXt's 7x7), with `_DepthwiseConv`'s backward when it trains on a
    CPU in fp32: same parameters and state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not _eager_cpu_fp32(x):
            return super().forward(x)
        return _DepthwiseConv.apply(x, self.weight, self.bias, list(self.padding))


def _is_depthwise(m: nn.Conv2d) -> bool:
    k = m.kernel_size
    return (m.groups == m.in_channels == m.out_channels and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.padding_mode == "zeros" and k[0] % 2 == 1 and k[1] % 2 == 1
            and tuple(m.padding) == (k[0] // 2, k[1] // 2))


def use_dense_layers(module: nn.Module) -> nn.Module:
    """Route every nn.Linear and Conv1D inside `module` through `dense`, every convolution's inference through
    `InferenceConv2d` and every depthwise convolution's backward through `_DepthwiseConv`, in place (their class only
    changes)."""
    for m in module.modules():
        if type(m) is nn.Linear:
            m.__class__ = DenseLinear
        elif type(m) is Conv1D:
            m.__class__ = DenseConv1D
        elif type(m) is nn.Conv2d:
            m.__class__ = DepthwiseConv2d if _is_depthwise(m) else InferenceConv2d
    return module


@dataclass
class WindowCache:
    """Acting's KV cache: per transformer block, keys and values (N, heads, 2H + 1, head_dim) of N sequences. A token
    goes to the slot of its position in its window, so the cache never grows and needs no compaction; slot 2H is
    scratch for tokens nothing attends to (an action the slots already hold). `AgentModel.window_cache` makes one."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def scratch(self) -> int:
        return self.keys[0].shape[-2] - 1

    def select(self, rows: torch.Tensor) -> WindowCache:
        """The cache of these sequences only, in this order."""
        return WindowCache([k[rows] for k in self.keys], [v[rows] for v in self.values])


# peft LoRA targets in the GPT2 backbone (Conv1D layers; use fan_in_fan_out=True).
LORA_TARGET_MODULES = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]


# The encoder's first stages hold 16-32 channels per pixel and move far more memory than they compute. On a CPU it
# encodes a large batch of frames in parts of at most this many pixels (128 frames at 64 px, 32 at 128 px): a part's
# activations then stay in the caches from one layer to the next, forward and backward (a training step 1.1-1.4x
# faster at 64 px and 1.55x at 128 px on the 2-core AMD EPYC of BENCHMARKS.md). A GPU takes the batch whole.
CPU_CHUNK_PIXELS = 1 << 19


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
        """frames (N, 3, H, W) uint8 or float in [0, 255] -> (N, hidden). On a CPU, in parts of at most
        `CPU_CHUNK_PIXELS` pixels: each frame's embedding is its own, so the parts give the whole's."""
        chunk = max(1, CPU_CHUNK_PIXELS // (frames.shape[-2] * frames.shape[-1]))
        if frames.device.type != "cpu" or frames.shape[0] <= chunk or torch.compiler.is_compiling():
            return self._encode(frames)
        return torch.cat([self._encode(part) for part in frames.split(chunk)])

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Channels-last in memory (same values, same weights): the ConvNeXt blocks' norms and MLPs then work on
        their channels without a copy, and oneDNN / cuDNN pick their NHWC convolutions (10-20% faster here)."""
        x = scale_pixels(frames, self.stem.weight.dtype).contiguous(memory_format=torch.channels_last)
        x = self.stages(self.stem(x))
        return self.proj(self.norm(x.flatten(1)))


@dataclass
class AgentOutput(ModelOutput):
    """
    loss: summed cross-entropy over the 16 components, averaged over the steps in `loss_mask`.
    logits: (B, T, 68) action logits at each observation slot; `split_logits` gives the 16 heads.
    last_hidden_state: (B, T, hidden) transformer output at each observation slot (the per-step
        trajectory embedding used by the reward model).
    component_accuracy: (16,) accuracy of the greedy action per component over `loss_mask` steps.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    cache: object | None = None
    component_accuracy: torch.Tensor | None = None


@dataclass
class ActionSample:
    """actions (…, 16) ids; logprob (…): log pi(action | context), the sum over the 16 components;
    component_logprobs (…, 16); entropy (…): the summed entropy of the 16 component distributions."""

    actions: torch.Tensor
    logprob: torch.Tensor
    component_logprobs: torch.Tensor
    entropy: torch.Tensor


def split_logits(logits: torch.Tensor) -> list[torch.Tensor]:
    """(…, 68) -> 16 tensors (…, 2) x 12 and (…, 11) x 4."""
    return list(logits.split(COMPONENT_SIZES.tolist(), dim=-1))


def _grouped_log_softmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, 68) -> log-probs of the buttons (…, 12, 2) and of the sticks (…, 4, 11)."""
    buttons, sticks = logits.split([2 * NUM_BUTTONS, NUM_BUCKETS * NUM_STICKS], dim=-1)
    return (buttons.unflatten(-1, (NUM_BUTTONS, 2)).log_softmax(-1),
            sticks.unflatten(-1, (NUM_STICKS, NUM_BUCKETS)).log_softmax(-1))


def greedy_actions(logits: torch.Tensor) -> torch.Tensor:
    """(…, 68) -> the most likely id of each component (…, 16)."""
    buttons, sticks = logits.split([2 * NUM_BUTTONS, NUM_BUCKETS * NUM_STICKS], dim=-1)
    return torch.cat([buttons.unflatten(-1, (NUM_BUTTONS, 2)).argmax(-1),
                      sticks.unflatten(-1, (NUM_STICKS, NUM_BUCKETS)).argmax(-1)], -1)


def get_action_and_logprob(logits: torch.Tensor, actions: torch.Tensor | None = None, temperature: float = 1.0,
                           greedy: bool = False, generator: torch.Generator | None = None,
                           uniforms: torch.Tensor | None = None) -> ActionSample:
    """Sample an action (or take the greedy one), or re-score the given `actions`, under pi_temperature.

    The one log pi(a | context) of the library: acting, imitation, REINFORCE/RLOO and DPO all call it, so a
    log-prob recomputed in training is the log-prob recorded when the action was taken. logits (…, 68).
    `uniforms` (…, 16) in [0, 1): sample by inverse CDF from these instead of `generator` (each env its own stream).
    """
    logp_buttons, logp_sticks = _grouped_log_softmax(logits.float() / max(temperature, 1e-6))
    if actions is None:
        if greedy:
            actions = greedy_actions(logits)
        else:
            def draw(logp, u=None):
                if u is not None:  # inverse CDF: the first bucket whose cumulative probability exceeds u
                    below = (logp.exp().cumsum(-1) <= u[..., None].to(logp.device)).sum(-1)
                    return below.clamp(max=logp.shape[-1] - 1)
                flat = logp.exp().reshape(-1, logp.shape[-1])
                return torch.multinomial(flat, 1, generator=generator).view(logp.shape[:-1])

            if uniforms is None:
                actions = torch.cat([draw(logp_buttons), draw(logp_sticks)], -1)
            else:
                actions = torch.cat([draw(logp_buttons, uniforms[..., :NUM_BUTTONS]),
                                     draw(logp_sticks, uniforms[..., NUM_BUTTONS:])], -1)
    actions = actions.long()
    component = torch.cat([logp_buttons.gather(-1, actions[..., :NUM_BUTTONS, None]),
                           logp_sticks.gather(-1, actions[..., NUM_BUTTONS:, None])], -2)[..., 0]
    entropy = -(logp_buttons.exp() * logp_buttons).sum((-1, -2)) - (logp_sticks.exp() * logp_sticks).sum((-1, -2))
    return ActionSample(actions=actions, logprob=component.sum(-1), component_logprobs=component, entropy=entropy)


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
            activation_function=config.activation_function,
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
        use_dense_layers(self)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.action_embedding

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

    # -- the sequence layout: [o_1, a_1, o_2, a_2, ...]; step s of a window at positions 2s, 2s+1 -----
    @staticmethod
    def interleave(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Observation and action embeddings (B, T, D) each -> tokens (B, 2T, D)."""
        return torch.stack([obs, act], dim=2).flatten(1, 2)

    def _transformer(self, tokens, attention_mask=None, use_cache=False, layer=None):
        """The GPT2 backbone on token embeddings -> (last hidden state (B, L, D), its KV cache or None).
        `layer` k: the hidden state after block k instead (0: the input tokens with positions)."""
        out = self.backbone(inputs_embeds=tokens, attention_mask=attention_mask, use_cache=use_cache,
                            output_hidden_states=layer is not None)
        hidden = out.last_hidden_state if layer is None else out.hidden_states[layer]
        return hidden, (out.get(_CACHE) if use_cache else None)

    def context_start(self, step: int) -> int:
        """First step of the context the agent acts on at `step` (0-based) of an episode.

        Steps 0..H-1 see the episode from its start; when the window is full, its last `keep_steps` steps are
        kept, so windows start every H - keep_steps steps.
        """
        period = self.config.context_length - self.config.keep_steps
        return period * max(0, (step - self.config.keep_steps) // period)

    def window_cache(self, num_sequences: int) -> WindowCache:
        """An empty acting cache for `num_sequences` sequences (see `WindowCache`)."""
        attn, p = self.backbone.h[0].attn, next(self.parameters())
        shape = (num_sequences, attn.num_heads, 2 * self.config.context_length + 1, attn.head_dim)
        layers = range(len(self.backbone.h))
        return WindowCache([p.new_zeros(shape) for _ in layers], [p.new_zeros(shape) for _ in layers])

    def step(self, obs: torch.Tensor, prev_actions: torch.Tensor, n: torch.Tensor, pending: torch.Tensor,
             cache: WindowCache) -> tuple[torch.Tensor, torch.Tensor]:
        """One cache-aware step per sequence: [previous action, observation] at positions 2n - 1, 2n of its window.

        obs (N, D) observation embeddings; prev_actions (N, 16) the action of step n-1; n (N,) the step's index in
        its window (< H); pending (N,) bool: the previous action is not in the cache yet (False at a window start,
        and after `encode_window` re-encoded it). The cache's slots past 2n are ignored, whatever they hold.
        Returns (logits (N, 68), hidden (N, D)); the step's tokens are written into `cache`.
        """
        tokens = torch.stack([self.embed_actions(prev_actions), obs], dim=1)
        positions = torch.stack([(2 * n - 1).clamp(min=0), 2 * n], dim=1)
        slots = torch.stack([torch.where(pending, 2 * n - 1, cache.scratch), 2 * n], dim=1)
        seen = torch.arange(cache.scratch + 1, device=n.device)
        # the observation sees its window up to itself; a pending action sees the slots before it, one already held
        # sees only its scratch slot (its output is never read, and a row that sees nothing would give NaN)
        obs_mask = seen[None] <= 2 * n[:, None]
        act_mask = torch.where(pending[:, None], seen[None] < 2 * n[:, None], seen[None] == cache.scratch)
        mask = torch.stack([act_mask, obs_mask], dim=1)[:, None]  # (N, 1, 2, 2H + 1)
        hidden = self._cached_blocks(tokens, positions, slots, mask, cache)[:, -1]
        return self.action_logits(hidden), hidden

    def encode_window(self, obs: torch.Tensor, actions: torch.Tensor, rows: torch.Tensor, cache: WindowCache) -> None:
        """Write complete steps into the cache's first slots of the given sequences: obs (R, K, D) and actions
        (R, K, 16) become the tokens at positions 0..2K-1 of their windows (acting's slide, `AgentPolicy`)."""
        K = obs.shape[1]
        tokens = self.interleave(obs, self.embed_actions(actions))
        positions = torch.arange(2 * K, device=obs.device).expand(len(rows), -1)
        seen = torch.arange(cache.scratch + 1, device=obs.device)
        mask = (seen[None] <= positions[0][:, None])[None, None]  # causal over the new tokens, blind past them
        sub = cache.select(rows)
        self._cached_blocks(tokens, positions, positions, mask, sub, outputs=False)  # only their keys and values
        for layer, new in enumerate(sub.keys):
            cache.keys[layer][rows], cache.values[layer][rows] = new, sub.values[layer]

    def _cached_blocks(self, tokens, positions, slots, mask, cache: WindowCache,
                       outputs: bool = True) -> torch.Tensor | None:
        """The backbone's blocks on tokens (N, T, D) at `positions`, inference only, through the acting cache: each
        token's keys and values go to its slot (N, T), then it attends to the slots `mask` (N or 1, 1, T, slots)
        lets it see. The blocks' own layers in GPT2's order, without the per-call set-up of `GPT2Model.forward`.
        Equals `_transformer` (the cached == full-forward tests check it). outputs=False: the keys and values only
        (the last block stops once it wrote them; nothing is returned)."""
        gpt = self.backbone
        h = gpt.drop(tokens + gpt.wpe(positions))
        N, T, _ = h.shape
        rows = torch.arange(N, device=h.device)[:, None]
        for i, block in enumerate(gpt.h):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(h)).split(attn.split_size, dim=2)
            q, k, v = (x.view(N, T, attn.num_heads, attn.head_dim) for x in (q, k, v))
            cache.keys[i][rows, :, slots], cache.values[i][rows, :, slots] = k, v
            if not outputs and i == len(gpt.h) - 1:
                return None
            a = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), cache.keys[i], cache.values[i],
                                                           attn_mask=mask, scale=attn.scaling)
            h = h + attn.resid_dropout(attn.c_proj(a.transpose(1, 2).reshape(N, T, -1)))
            h = h + block.mlp(block.ln_2(h))
        return gpt.ln_f(h)

    def _check_frames(self, frames: torch.Tensor) -> None:
        size = self.config.image_size
        if frames.ndim < 4 or frames.shape[-3] != 3:
            hint = " (channels-last? use hf_agents.frames.to_model)" if frames.shape[-1] == 3 else ""
            raise ValueError(f"frames must be (..., 3, {size}, {size}) RGB, got {tuple(frames.shape)}{hint}")
        check_frame_size(frames.shape[-2:], size, type(self).__name__, "the model",
                         "resize them (hf_agents.frames.resize_frames)")

    def _check_actions(self, actions: torch.Tensor) -> None:
        if actions.shape[-1] != NUM_COMPONENTS or actions.dtype.is_floating_point:
            raise ActionError(f"actions must be integer bucket ids (..., {NUM_COMPONENTS}), "
                              f"got {actions.dtype} {tuple(actions.shape)}")
        if not torch.compiler.is_compiling():
            bad = (actions < 0) | (actions >= torch.as_tensor(COMPONENT_SIZES, device=actions.device))
            if bad.any():
                raise ActionError("actions hold ids outside the gamepad contract (buttons 0-1, sticks 0-10)")

    def _check_inputs(self, frames, actions):
        if frames.ndim != 5:
            raise ValueError(f"frames must be (batch, time, 3, H, W), got {tuple(frames.shape)}")
        if actions is not None:
            if actions.shape[:2] != frames.shape[:2]:
                raise ValueError(f"actions {tuple(actions.shape)} do not match frames' (batch, time) = "
                                 f"{tuple(frames.shape[:2])}")
            self._check_actions(actions)

    # -- the forward passes --------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, actions: torch.Tensor | None = None, attention_mask=None, loss_mask=None,
                use_cache: bool = False, num_items_in_batch=None, **kwargs) -> AgentOutput:
        """frames (B, T, 3, H, W) uint8; actions (B, T, 16) ids: inputs for a_1..a_{T-1} and targets for all T.

        One window of T <= H steps. attention_mask (B, T): 1 for real steps, 0 for padding. loss_mask (B, T):
        steps that count in the loss (default: attention_mask), e.g. 0 on no-ops. Without actions, only
        o_T's logits are meaningful. num_items_in_batch: normaliser of the summed loss (default: this batch's
        loss_mask steps); the Trainer passes the count over all ranks so that N ranks equal one process.
        """
        self._check_inputs(frames, actions)
        B, T = frames.shape[:2]
        if T > self.config.context_length:
            raise ValueError(f"{T} timesteps exceed the context length H={self.config.context_length}; "
                             "use sliding_forward for whole trajectories")
        obs = self.embed_frames(frames)
        act = torch.zeros_like(obs) if actions is None else self.embed_actions(actions)
        mask = None if attention_mask is None else attention_mask.repeat_interleave(2, dim=1)
        hidden, cache = self._transformer(self.interleave(obs, act), mask, use_cache=use_cache)
        hidden = hidden[:, 0::2]  # observation slots
        logits = self.action_logits(hidden)
        loss = accuracy = None
        if actions is not None:
            weights = loss_mask if loss_mask is not None else attention_mask
            weights = torch.ones(B, T, device=logits.device) if weights is None else weights.to(logits.dtype)
            loss, accuracy = self.imitation_loss(logits, actions, weights, num_items_in_batch)
        return AgentOutput(loss=loss, logits=logits, last_hidden_state=hidden,
                           cache=cache, component_accuracy=accuracy)

    def sliding_forward(self, frames: torch.Tensor | None, actions: torch.Tensor, lengths: torch.Tensor | None = None,
                        embeddings: torch.Tensor | None = None) -> AgentOutput:
        """Whole trajectories (B, T, ...) of any length, each step seen with the context it had when the agent
        acted (`context_start`): the same numbers as step-by-step acting. Right padding needs no mask (causal).

        Returns logits and last_hidden_state (B, T, ...). Frames are encoded once; windows start every
        H - keep_steps steps and each contributes the steps whose context starts there. `lengths` and
        `embeddings`: see `sliding_hidden`.
        """
        hidden = self.sliding_hidden(frames, actions, lengths=lengths, embeddings=embeddings)
        return AgentOutput(logits=self.action_logits(hidden), last_hidden_state=hidden)

    def sliding_hidden(self, frames: torch.Tensor | None, actions: torch.Tensor, layer: int | None = None,
                       lengths: torch.Tensor | None = None, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """The observation slots' hidden states (B, T, D) of `sliding_forward`: the transformer's output, or
        with `layer` k the hidden state after GPT2 block k (0: the tokens it takes).

        lengths (B,): each trajectory's real steps; windows of padding alone are not computed and the padding's
        hidden states are 0, which saves most of the work of padding a batch to its longest trajectory.
        embeddings (B, T, D): the frames' embeddings (`embed_frames`) when they are already known, e.g. recorded
        while acting with this frame encoder; `frames` is then not read.
        """
        if embeddings is None:
            self._check_inputs(frames, actions)
        else:
            self._check_actions(actions)
        H, keep = self.config.context_length, self.config.keep_steps
        B, T = actions.shape[:2]
        valid = None if lengths is None else torch.arange(T, device=actions.device)[None] < lengths[:, None]
        obs = embeddings if embeddings is not None else self._embed_steps(frames, valid)
        act = self.embed_actions(actions)
        lengths = torch.full((B,), T, device=actions.device) if lengths is None else lengths
        hidden = None
        for start in range(0, max(T - keep, 1), H - keep):
            first = 0 if start == 0 else keep  # the kept steps belong to the previous window
            rows = (lengths > start + first).nonzero()[:, 0]  # the trajectories with steps in this window
            if len(rows) == 0:  # every trajectory has ended
                break
            rows = slice(None) if len(rows) == B else rows
            end = min(start + H, int(lengths[rows].max()))
            out, _ = self._transformer(self.interleave(obs[rows, start:end], act[rows, start:end]), layer=layer)
            if hidden is None:
                hidden = out.new_zeros(B, T, out.shape[-1])
            hidden[rows, start + first:end] = out[:, 0::2][:, first:]
        if hidden is None:
            return obs.new_zeros(B, T, self.config.hidden_size)
        return hidden if valid is None else hidden.masked_fill(~valid[..., None], 0.0)

    def _embed_steps(self, frames: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """embed_frames (B, T, 3, H, W) -> (B, T, D), only where `valid` (B, T) says (0 elsewhere)."""
        if valid is None or bool(valid.all()):
            return self.embed_frames(frames)
        obs = self.embed_frames(frames[valid])
        out = obs.new_zeros(*valid.shape, obs.shape[-1])
        out[valid] = obs
        return out

    @staticmethod
    def imitation_loss(logits, actions, weights, num_items=None):
        """Cross-entropy summed over components, mean over weighted steps; and per-component accuracy."""
        denom = weights.sum().clamp(min=1)
        loss_denom = denom if num_items is None else num_items
        scored = get_action_and_logprob(logits, actions)
        loss = -(scored.logprob * weights).sum() / loss_denom
        correct = (greedy_actions(logits) == actions).float()
        accuracy = (correct * weights[..., None]).flatten(0, -2).sum(0) / denom
        return loss, accuracy.detach()


AutoConfig.register("hf_agent", AgentConfig)
AutoModel.register(AgentConfig, AgentModel)
