"""The agent model (registered with transformers' Auto classes on import) and its acting policy."""

from hf_agents.models.configuration_agent import PRESETS, AgentConfig
from hf_agents.models.modeling_agent import LORA_TARGET_MODULES, AgentModel, AgentOutput, split_logits
from hf_agents.models.policy import AgentPolicy

__all__ = ["LORA_TARGET_MODULES", "PRESETS", "AgentConfig", "AgentModel", "AgentOutput", "AgentPolicy", "split_logits"]
