"""Which parameters an alignment stage trains, the reference policy, and per-designer LoRA adapters.

trainable = "head": the MLP after the transformer (the paper); the reference is a frozen copy of the head.
trainable = "lora": LoRA adapters (peft) on the GPT2 backbone and the head; the reference is the same model
    with its adapters disabled (no second copy in memory). Each run saves a named adapter of a few MB.
trainable = "full": everything but the frozen token table; the reference is a frozen copy of the agent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from hf_agents.models import LORA_TARGET_MODULES, AgentModel
from hf_agents.models.loading import load_checked

TRAINABLE = ("head", "lora", "full")
HEAD_LORA_TARGETS = ["head.1", "head.3"]  # the head's two Linear layers
BASE_FILE = "hf_agents_base.json"  # beside an adapter: which agent it was trained on


class AdapterError(ValueError):
    """An adapter that does not fit the agent it is loaded on."""


def base_fingerprint(agent_dir) -> str:
    """sha256 of an agent's weights file: an adapter only loads on the agent it was trained on."""
    path = Path(agent_dir) / "model.safetensors"
    if not path.exists():
        raise AdapterError(f"{agent_dir}: no model.safetensors; point at an agent saved by hf-agents")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_trainable(model: AgentModel, trainable: str, adapter_name: str = "default", lora_r: int = 8,
                      lora_alpha: int = 16, lora_dropout: float = 0.0, init_adapter=None) -> nn.Module:
    """Freeze what is not trained; for "lora", wrap in a peft model with one adapter named `adapter_name`
    (new, or `init_adapter` to go on training a saved one, e.g. after preference fine-tuning)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got '{trainable}'")
    if init_adapter and trainable != "lora":
        raise ValueError("init_adapter continues a LoRA adapter; set trainable=lora")
    if trainable == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model

        if init_adapter:
            check_adapter(init_adapter, model.name_or_path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return PeftModel.from_pretrained(model, init_adapter, adapter_name=adapter_name, is_trainable=True)

        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            target_modules=LORA_TARGET_MODULES + HEAD_LORA_TARGETS)
        with warnings.catch_warnings():  # peft sets fan_in_fan_out per layer (GPT2's Conv1D vs the head's Linear)
            warnings.simplefilter("ignore")
            return get_peft_model(model, config, adapter_name=adapter_name)
    model.requires_grad_(trainable == "full")
    model.backbone.wte.weight.requires_grad_(False)
    if trainable == "head":
        model.head.requires_grad_(True)
    return model


def agent_of(model: nn.Module) -> AgentModel:
    """The AgentModel inside a (peft-wrapped, accelerate-wrapped) model."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


class Reference:
    """log pi_ref: the agent before alignment, for the KL penalty and DPO."""

    def __init__(self, model: nn.Module, trainable: str):
        self.trainable = trainable
        agent = agent_of(model)
        self.frozen = None
        if trainable == "head":
            self.frozen = copy.deepcopy(agent.head).requires_grad_(False)
        elif trainable == "full":
            self.frozen = copy.deepcopy(agent).requires_grad_(False).eval()
        self.model = model

    @torch.no_grad()
    def logits(self, frames, actions, hidden=None) -> torch.Tensor:
        """Reference logits (B, T, 68) of whole trajectories; `hidden`: the policy's frozen trunk output (head)."""
        agent = agent_of(self.model)
        if self.trainable == "head":
            if hidden is None:
                hidden = agent.sliding_forward(frames, actions).last_hidden_state
            return self.frozen(hidden)
        if self.trainable == "full":
            return self.frozen.sliding_forward(frames, actions).logits
        with self.model.disable_adapter():
            return agent.sliding_forward(frames, actions).logits


def trajectory_logits(model: nn.Module, frames, actions, trainable: str):
    """Policy logits (B, T, 68) and trunk output of whole trajectories; the frozen trunk runs without grad."""
    agent = agent_of(model)
    if trainable == "head":
        with torch.no_grad():
            hidden = agent.sliding_forward(frames, actions).last_hidden_state
        return agent.action_logits(hidden), hidden
    out = agent.sliding_forward(frames, actions)
    return out.logits, out.last_hidden_state


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", BASE_FILE)
AGENT_FILES = ("config.json", "model.safetensors")


def save_policy(model: nn.Module, out_dir, trainable: str, base_dir) -> None:
    """Head/full: the whole aligned agent (safetensors). LoRA: the adapter alone, with its base's fingerprint.
    The other kind's files, left by an earlier run into the same folder, go: the folder holds one policy."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in AGENT_FILES if trainable == "lora" else ADAPTER_FILES:
        (out_dir / name).unlink(missing_ok=True)
    if trainable == "lora":
        model.save_pretrained(out_dir)  # adapter_config.json + adapter_model.safetensors
        nested = out_dir / model.active_adapter  # peft nests adapters not named "default": keep one flat folder
        if nested.is_dir():
            for f in nested.iterdir():
                os.replace(f, out_dir / f.name)
            nested.rmdir()
        (out_dir / BASE_FILE).write_text(json.dumps({"base_model": str(base_dir),
                                                     "sha256": base_fingerprint(base_dir)}, indent=2))
    else:
        agent_of(model).save_pretrained(out_dir, safe_serialization=True)


def is_adapter(path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def check_adapter(adapter_dir, agent_dir) -> None:
    """Refuse an adapter trained on another agent (names both and the fix)."""
    meta = Path(adapter_dir) / BASE_FILE
    if not is_adapter(adapter_dir):
        raise AdapterError(f"{adapter_dir}: not a LoRA adapter (no adapter_config.json); train one first with "
                           "trainable=lora (a designer's: recipes/preference_ft_<pad>.yaml, then align_<pad>.yaml)")
    if meta.exists():
        expected = json.loads(meta.read_text())
        if expected["sha256"] != base_fingerprint(agent_dir):
            raise AdapterError(f"{adapter_dir}: this adapter was trained on {expected['base_model']}, not on "
                               f"{agent_dir} (different weights); load it on its own base agent")


def adapter_base(adapter_dir) -> str:
    """The agent an adapter was trained on (as recorded when it was saved)."""
    meta = Path(adapter_dir) / BASE_FILE
    if not meta.exists():
        raise AdapterError(f"{adapter_dir}: no {BASE_FILE}; pass the base agent and the adapter separately")
    return json.loads(meta.read_text())["base_model"]


def load_agent(agent_dir, adapters: dict[str, str] | None = None) -> nn.Module:
    """An agent, with any number of named LoRA adapters loaded at once (switch with `model.set_adapter(name)`)."""
    from peft import PeftModel

    model = load_checked(AgentModel, agent_dir, "agent")
    if not adapters:
        return model
    for path in adapters.values():
        check_adapter(path, agent_dir)
    items = list(adapters.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(model, items[0][1], adapter_name=items[0][0])
        for name, path in items[1:]:
            model.load_adapter(path, adapter_name=name)
    return model.eval()


@contextmanager
def active_adapter(model: nn.Module, name: str | None):
    """Use adapter `name` of a multi-adapter model inside the block."""
    if name is None or not hasattr(model, "set_adapter"):
        yield model
        return
    previous = model.active_adapter
    model.set_adapter(name)
    try:
        yield model
    finally:
        model.set_adapter(previous)
