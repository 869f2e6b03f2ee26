"""The agent model and the trajectory reward model (registered with transformers' Auto classes on import)."""

from hf_agents.models.configuration_agent import PRESETS, AgentConfig
from hf_agents.models.configuration_reward import TrajectoryRewardConfig
from hf_agents.models.loading import load_checked
from hf_agents.models.modeling_agent import (
    LORA_TARGET_MODULES,
    ActionSample,
    AgentModel,
    AgentOutput,
    get_action_and_logprob,
    greedy_actions,
    split_logits,
)
from hf_agents.models.modeling_reward import TrajectoryRewardModel
from hf_agents.models.policy import AgentPolicy

__all__ = ["LORA_TARGET_MODULES", "PRESETS", "ActionSample", "AgentConfig", "AgentModel", "AgentOutput", "AgentPolicy",
           "TrajectoryRewardConfig", "TrajectoryRewardModel", "get_action_and_logprob", "greedy_actions", "load_checked",
           "split_logits"]
