"""Configuration of the pixels-to-gamepad agent (paper section 3.2, Appendix C.1)."""

from __future__ import annotations

from transformers import PretrainedConfig

# Named sizes. The first three follow the paper (103M base model; 25M and 4M of Appendix E);
# "cpu" is what the demo trains on 2 cores, "tiny" is for tests.
PRESETS: dict[str, dict] = {
    "paper-103m": dict(image_size=128, hidden_size=1024, num_layers=8, num_heads=8, intermediate_size=4096, head_hidden_size=1024),
    "25m": dict(image_size=128, hidden_size=512, num_layers=8, num_heads=8, intermediate_size=2048, head_hidden_size=512),
    "4m": dict(image_size=128, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, head_hidden_size=256),
    "cpu": dict(image_size=64, hidden_size=192, num_layers=3, num_heads=4, intermediate_size=768, head_hidden_size=192),
    "tiny": dict(image_size=32, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, head_hidden_size=64,
                 encoder_stem_channels=8),
}


# H's upper bound: 2H tokens must fit GPT-2's 1024 positions (the paper uses H = 32). A longer context grows the
# learnt positions, the windows and the attention beyond any machine (H = 100000 took 21 GB before the first step).
MAX_CONTEXT_LENGTH = 512

# The GPT2 blocks' activation. Exact GELU is the default: torch's kernel for the tanh approximation (GPT-2's) runs 3-4x
# slower on CPU (a training step 1.02x, BENCHMARKS.md). Agents saved before the choice existed use the approximation.
ACTIVATIONS = ("gelu", "gelu_pytorch_tanh")
LEGACY_ACTIVATION = "gelu_pytorch_tanh"


class AgentConfig(PretrainedConfig):
    r"""
    Args:
        image_size (`int`): square frame size the encoder takes (frames are RGB uint8, scaled to [0, 1] inside).
        encoder_stem_channels (`int`): channels after the 8x8 stride-4 stem; each of the 4 stages doubles them.
        encoder_depths (`list[int]`): ConvNeXt blocks per stage (the paper uses one per stage).
        hidden_size, num_layers, num_heads, intermediate_size: the GPT2 backbone.
        context_length (`int`): H, the number of timesteps the transformer sees (2H tokens: observation, action).
        keep_steps (`int`): when acting fills the window of H steps, the last `keep_steps` are kept and play
            goes on (learnt positions cannot slide by one step); default H // 2. Acting, the reward model's
            embeddings and every re-scoring of a trajectory use this one schedule (`AgentModel.context_start`).
        head_hidden_size (`int`): hidden width of the MLP between the transformer and the 16 action heads.
        activation_function (`str`): the GPT2 blocks' activation: "gelu" (exact GELU) or "gelu_pytorch_tanh"
            (GPT-2's tanh approximation, whose kernel is 3-4x slower on CPU; configs saved without this field used it
            and still load with it).
        dropout (`float`): dropout in the backbone (attention, residual, embeddings).
        preset (`str`): name of the preset this config was made from, for cards and logs.
        game (`dict`): the game the agent plays (`hf_agents.envs.spec.GameSpec` as a dict), taken from its
            training data; every command that plays the agent reads it.
    """

    model_type = "hf_agent"

    def __init__(self, image_size=64, encoder_stem_channels=16, encoder_depths=(1, 1, 1, 1), hidden_size=192,
                 num_layers=3, num_heads=4, intermediate_size=768, context_length=32, keep_steps=None,
                 head_hidden_size=192, dropout=0.0, layer_norm_epsilon=1e-5, initializer_range=0.02, preset=None, game=None,
                 activation_function="gelu", **kwargs):
        self.image_size = image_size
        self.encoder_stem_channels = encoder_stem_channels
        self.encoder_depths = list(encoder_depths)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        if context_length < 2:  # a full window keeps keep_steps (>= 1) of its steps and slides: H - keep_steps >= 1
            raise ValueError(f"context_length={context_length}: the model needs at least 2 timesteps of context (a "
                             "full window keeps some of its steps and goes on)")
        if context_length > MAX_CONTEXT_LENGTH:
            raise ValueError(f"context_length={context_length}: at most {MAX_CONTEXT_LENGTH} timesteps "
                             f"({2 * MAX_CONTEXT_LENGTH} tokens, GPT-2's positions; the paper uses 32)")
        self.context_length = context_length
        self.keep_steps = max(context_length // 2, 1) if keep_steps is None else keep_steps
        if not 1 <= self.keep_steps < max(context_length, 2):
            raise ValueError(f"keep_steps={self.keep_steps} must be in 1..context_length-1 (H={context_length})")
        self.head_hidden_size = head_hidden_size
        if activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function={activation_function!r}: choose one of {ACTIVATIONS}")
        self.activation_function = activation_function
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.preset = preset
        self.game = dict(game) if game else None
        super().__init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """A saved config without `activation_function` predates the field: its agent was trained with GPT-2's tanh
        GELU, which it keeps."""
        return super().from_dict({"activation_function": LEGACY_ACTIVATION, **config_dict}, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> AgentConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})
