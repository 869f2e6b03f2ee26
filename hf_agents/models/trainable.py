"""The agent an alignment stage trains: one object made once from the agent and the trainable mode, owning the
model that trains, its reference policy, its logits of whole trajectories and its saving.

trainable = "head": the MLP after the transformer (the paper); the reference is a frozen copy of the head.
trainable = "lora": LoRA adapters (peft) on the GPT2 backbone and the head; the reference is the same model
    with its adapter disabled, or, going on from a saved adapter, a frozen second copy of that adapter (a few MB,
    no second agent in memory). Saves a named adapter of a few MB.
trainable = "full": everything but the frozen token table; the reference is a frozen copy of the agent.
The reference is the policy as it was when the object was made.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from hf_agents.files import saving
from hf_agents.models.adapters import (
    ADAPTER_FILES,
    active_adapter,
    agent_of,
    check_adapter,
    peft_notes_silenced,
    save_adapter,
)
from hf_agents.models.modeling_agent import LORA_TARGET_MODULES, AgentModel

HEAD_LORA_TARGETS = ["head.1", "head.3"]  # the head's two Linear layers
AGENT_FILES = ("config.json", "model.safetensors")


class TrainablePolicy(ABC):
    """`TrainablePolicy.create(agent, "lora", ...)` picks the mode's class; `model` is what an optimizer or a
    `Trainer` trains, `parameters()` its trainable tensors."""

    mode: str = ""
    frozen_encoder: bool = True  # the frame encoder neither trains nor differs in the reference: frame embeddings
    # recorded while acting (`AgentPolicy.features`) stand for the frames in `logits` and `reference_logits`

    def __init__(self, agent: AgentModel, base_path=None, adapter_name: str = "default"):
        self.agent, self.base_path, self.adapter_name = agent, base_path, adapter_name
        self.model: nn.Module = agent
        self.frozen: nn.Module | None = None  # the reference's own weights (head, full)

    @staticmethod
    def create(agent: AgentModel, trainable: str = "head", *, base_path=None, adapter_name: str = "default",
               lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0, init_adapter=None,
               reference: bool = False) -> TrainablePolicy:
        """Freeze what is not trained (LoRA: wrap in peft with one adapter named `adapter_name`, new or
        `init_adapter` to go on training); `reference=True` keeps the policy as it is now for KL and DPO.
        `base_path`: the saved agent, recorded beside an adapter."""
        if trainable not in MODES:
            raise ValueError(f"trainable must be one of {tuple(MODES)}, got '{trainable}'")
        if init_adapter and trainable != "lora":
            raise ValueError("init_adapter continues a LoRA adapter; set trainable=lora")
        policy = MODES[trainable](agent, base_path, adapter_name)
        policy.prepare(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, init_adapter=init_adapter)
        if reference:
            policy.keep_reference()
        return policy

    @abstractmethod
    def prepare(self, **lora) -> None:
        """Freeze what is not trained (and wrap the agent for LoRA)."""

    @abstractmethod
    def keep_reference(self) -> None:
        """Keep the policy as it is now as the reference (a frozen copy of what trains, or for LoRA what
        disabling or switching adapters gives)."""

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def to(self, device) -> TrainablePolicy:
        self.model.to(device)
        if self.frozen is not None:
            self.frozen.to(device)
        return self

    def logits(self, frames, actions, model: nn.Module | None = None, lengths=None, embeddings=None):
        """Policy logits (B, T, 68) and trunk output of whole trajectories, each step with the context it was
        acted on. `model`: the (e.g. Trainer-wrapped) module to run, default `self.model`. `lengths` (B,): real
        steps (padding is not computed); `embeddings` (B, T, D): the frames' embeddings, when `frozen_encoder`."""
        out = agent_of(model or self.model).sliding_forward(frames, actions, lengths, self._embeddings(embeddings))
        return out.logits, out.last_hidden_state

    @abstractmethod
    def reference_logits(self, frames, actions, hidden=None, lengths=None, embeddings=None) -> torch.Tensor:
        """log pi_ref's logits (B, T, 68); `hidden`: the policy's trunk output when the trunk is frozen;
        `lengths`, `embeddings`: as in `logits`."""

    def _embeddings(self, embeddings):
        if embeddings is not None and not self.frozen_encoder:
            raise ValueError(f"trainable={self.mode} trains the frame encoder: pass frames, not recorded embeddings")
        return embeddings

    def save(self, out_dir) -> Path:
        """The whole agent (head, full) or the adapter alone (LoRA) in `out_dir`; the other kind's files, left by
        an earlier run into the same folder, go: the folder holds one policy."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in AGENT_FILES if self.mode == "lora" else ADAPTER_FILES:
            (out_dir / name).unlink(missing_ok=True)
        with saving(out_dir):  # a full disk: one line naming out_dir, and no half-written weights left
            self._save(out_dir)
        return out_dir

    def _save(self, out_dir: Path) -> None:
        self.agent.save_pretrained(out_dir, safe_serialization=True)


class HeadPolicy(TrainablePolicy):
    mode = "head"

    def prepare(self, **lora) -> None:
        self.agent.requires_grad_(False)
        self.agent.head.requires_grad_(True)

    def keep_reference(self) -> None:
        self.frozen = copy.deepcopy(self.agent.head).requires_grad_(False)

    def logits(self, frames, actions, model=None, lengths=None, embeddings=None):
        """The frozen trunk runs without grad; only the head's logits carry it."""
        agent = agent_of(model or self.model)
        with torch.no_grad():
            hidden = agent.sliding_hidden(frames, actions, lengths=lengths, embeddings=embeddings)
        return agent.action_logits(hidden), hidden

    @torch.no_grad()
    def reference_logits(self, frames, actions, hidden=None, lengths=None, embeddings=None):
        if hidden is None:
            hidden = self.agent.sliding_hidden(frames, actions, lengths=lengths, embeddings=embeddings)
        return self.frozen(hidden)


class FullPolicy(TrainablePolicy):
    mode = "full"
    frozen_encoder = False

    def prepare(self, **lora) -> None:
        self.agent.requires_grad_(True)
        self.agent.backbone.wte.weight.requires_grad_(False)  # GPT2's token table is unused

    def keep_reference(self) -> None:
        self.frozen = copy.deepcopy(self.agent).requires_grad_(False).eval()

    @torch.no_grad()
    def reference_logits(self, frames, actions, hidden=None, lengths=None, embeddings=None):
        return self.frozen.sliding_forward(frames, actions, lengths, self._embeddings(embeddings)).logits


class LoraPolicy(TrainablePolicy):
    mode = "lora"
    REFERENCE = "reference"  # the frozen copy of the adapter a run went on from

    def prepare(self, lora_r=8, lora_alpha=16, lora_dropout=0.0, init_adapter=None) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        self.init_adapter = init_adapter
        with peft_notes_silenced():
            if init_adapter:
                check_adapter(init_adapter, self.agent.name_or_path)
                self.model = PeftModel.from_pretrained(self.agent, init_adapter, adapter_name=self.adapter_name,
                                                       is_trainable=True)
                return
            config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                target_modules=LORA_TARGET_MODULES + HEAD_LORA_TARGETS)
            self.model = get_peft_model(self.agent, config, adapter_name=self.adapter_name)

    def keep_reference(self) -> None:
        if self.init_adapter:  # the policy at the start is base + that adapter, not the base alone
            with peft_notes_silenced():
                self.model.load_adapter(self.init_adapter, adapter_name=self.REFERENCE, is_trainable=False)
            self.model.set_adapter(self.adapter_name)  # the trained adapter stays the active, trainable one

    @torch.no_grad()
    def reference_logits(self, frames, actions, hidden=None, lengths=None, embeddings=None):
        """The frame encoder has no adapter: the reference shares its embeddings."""
        if self.REFERENCE not in self.model.peft_config:
            with self.model.disable_adapter():
                return self.agent.sliding_forward(frames, actions, lengths, embeddings).logits
        with active_adapter(self.model, self.REFERENCE):
            return self.agent.sliding_forward(frames, actions, lengths, embeddings).logits

    def _save(self, out_dir: Path) -> None:
        save_adapter(self.model, out_dir, self.base_path, self.adapter_name)


MODES = {"head": HeadPolicy, "lora": LoraPolicy, "full": FullPolicy}
TRAINABLE = tuple(MODES)
