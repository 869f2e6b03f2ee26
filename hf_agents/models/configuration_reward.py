"""Configuration of the trajectory reward model (paper section 3.5, Appendix C.3)."""

from __future__ import annotations

from transformers import PretrainedConfig

from hf_agents.models.configuration_agent import AgentConfig

ENCODERS = ("agent", "random")


class TrajectoryRewardConfig(PretrainedConfig):
    r"""
    Args:
        encoder (`str`): per-step embeddings from the frozen agent transformer (`"agent"`, the paper's
            agent encoder) or from a frozen random linear projection of the flattened frame (`"random"`,
            the paper's baseline).
        agent_config (`dict`): the agent's config when `encoder="agent"`; its weights live in this model.
        agent_layer (`str`): which of the agent's representations embeds a step: `"last"`, the transformer's
            output at the step's observation (the action head's input; the paper's), `"frames"`, the frame
            encoder's output alone, or `"block-K"`, the hidden state after GPT2 block K < num_layers (0: its input
            tokens).
        image_size (`int`): square frame size the encoder takes.
        random_embedding_size (`int`): output size of the random projection (paper: 512).
        max_steps (`int`): trajectories are padded with black frames (and no-op actions) to this length.
        padding_side (`str`): where the padding goes once a trajectory is embedded: `"left"` puts it in front,
            so every trajectory's last step (how it ended) sits at the last position of the trajectory MLP's
            input; `"right"` keeps it after the trajectory. Either way each step is embedded with the context
            the agent had when it acted.
        step_hidden_size, step_output_size: the per-step MLP (paper: 256 hidden, GELU, 3 outputs).
        hidden_size (`int`): the trajectory MLP over the concatenated step outputs (paper: 256, GELU, 1).
        reward_min, reward_max (`float`): raw rewards over the training trajectories after training;
            `normalized_reward` maps them to [0, 1] (paper C.3). None until training has set them.
    """

    model_type = "hf_agent_reward"

    def __init__(self, encoder="agent", agent_config=None, image_size=64, random_embedding_size=512, max_steps=100,
                 padding_side="left", step_hidden_size=256, step_output_size=3, hidden_size=256, reward_min=None,
                 reward_max=None, agent_layer="last", game=None, **kwargs):
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got '{encoder}'")
        if encoder == "agent" and agent_config is None:
            raise ValueError("encoder='agent' needs the agent's config (build it with TrajectoryRewardModel.from_agent)")
        if isinstance(agent_config, AgentConfig):
            agent_config = agent_config.to_dict()
        layers = (agent_config or {}).get("num_layers", 0)
        if agent_layer not in ("last", "frames", *(f"block-{k}" for k in range(layers))):  # block-L is 'last'
            raise ValueError(f"agent_layer must be 'last', 'frames' or 'block-K' with K in 0..{layers - 1}, got "
                             f"'{agent_layer}'")
        self.encoder, self.agent_layer = encoder, agent_layer
        self.agent_config = agent_config
        self.image_size = agent_config["image_size"] if agent_config else image_size
        self.random_embedding_size = random_embedding_size
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got '{padding_side}'")
        self.max_steps, self.padding_side = max_steps, padding_side
        self.step_hidden_size, self.step_output_size, self.hidden_size = step_hidden_size, step_output_size, hidden_size
        self.reward_min, self.reward_max = reward_min, reward_max  # set after training (min-max normalisation)
        self.game = dict(game) if game else None  # the game of the trajectories it was trained on
        kwargs["num_labels"] = 1  # one scalar per trajectory
        super().__init__(**kwargs)

    @property
    def embedding_size(self) -> int:
        return self.agent_config["hidden_size"] if self.encoder == "agent" else self.random_embedding_size
