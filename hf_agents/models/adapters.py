"""Per-designer LoRA adapters on disk: saved flat with their name and their base agent's fingerprint, checked
against the agent they load on, several loaded on one base and switched by name."""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from hf_agents.files import atomic_write_json, sha256_file
from hf_agents.models.loading import load_checked
from hf_agents.models.modeling_agent import AgentModel

BASE_FILE = "hf_agents_base.json"  # beside an adapter: which agent it was trained on


class AdapterError(ValueError):
    """An adapter that does not fit the agent it is loaded on."""


def base_fingerprint(agent_dir) -> str:
    """sha256 of an agent's weights file: an adapter only loads on the agent it was trained on."""
    path = Path(agent_dir) / "model.safetensors"
    if not path.exists():
        raise AdapterError(f"{agent_dir}: no model.safetensors; point at an agent saved by hf-agents")
    return sha256_file(path)


def agent_of(model: nn.Module) -> AgentModel:
    """The AgentModel inside a (peft-wrapped, accelerate-wrapped) model."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", BASE_FILE)


def save_adapter(model: nn.Module, out_dir, base_dir, name: str) -> None:
    """A peft model's adapter in one flat folder, with its name and its base agent's fingerprint."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, selected_adapters=[model.active_adapter])  # adapter_config + _model.safetensors
    nested = out_dir / model.active_adapter  # peft nests adapters not named "default": keep one flat folder
    if nested.is_dir():
        for f in nested.iterdir():
            os.replace(f, out_dir / f.name)
        nested.rmdir()
    card = out_dir / "README.md"
    if card.exists() and "Model Card for Model ID" in card.read_text(errors="replace"):
        card.unlink()  # peft's empty template: the run writes its own card
    atomic_write_json(out_dir / BASE_FILE, {"base_model": str(base_dir), "sha256": base_fingerprint(base_dir),
                                            "adapter_name": name})


def is_adapter(path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def check_adapter(adapter_dir, agent_dir) -> None:
    """Refuse an adapter trained on another agent (names both and the fix)."""
    meta = Path(adapter_dir) / BASE_FILE
    if not is_adapter(adapter_dir):
        raise AdapterError(f"{adapter_dir}: not a LoRA adapter (no adapter_config.json); train one first with "
                           "trainable=lora (a designer's: recipes/preference_ft.yaml target=..., then recipes/align.yaml)")
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


@contextmanager
def peft_notes_silenced():
    """peft sets fan_in_fan_out per layer (GPT2's Conv1D vs the head's Linear) and says so at every adapter it
    makes or loads, and calls a transformers method deprecated in 5.x: only those two notes are silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to", category=UserWarning)
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def load_agent(agent_dir, adapters: dict[str, str] | None = None) -> nn.Module:
    """An agent, with any number of named LoRA adapters loaded at once (switch with `model.set_adapter(name)`)."""
    from peft import PeftModel

    model = load_checked(AgentModel, agent_dir, "agent")
    if not adapters:
        return model
    for path in adapters.values():
        check_adapter(path, agent_dir)
    items = list(adapters.items())
    with peft_notes_silenced():
        model = PeftModel.from_pretrained(model, items[0][1], adapter_name=items[0][0])
        for name, path in items[1:]:
            model.load_adapter(path, adapter_name=name)
    return model.eval()


def load_for_acting(path, adapters: dict[str, str] | None = None) -> tuple[nn.Module, str, dict[str, str]]:
    """An agent to act with: `path` is an agent folder, or a LoRA adapter whose recorded base agent is loaded
    beneath it; `adapters` (name -> folder) load onto the one base too. Returns the model, the base agent's
    folder and the adapters by name (the first one `path` itself when it is an adapter)."""
    if is_adapter(path):
        adapters = {Path(path).name: str(path), **(adapters or {})}
        path = adapter_base(path)
    return load_agent(path, adapters), str(path), adapters or {}


def merged_for_acting(model: nn.Module, name: str | None = None) -> AgentModel:
    """The agent to act with: a plain agent as it is; a peft model as a copy of its agent with adapter `name` (the
    active one by default) merged into the weights, so that acting skips LoRA's extra matmuls at every step (the
    same policy up to float rounding). The model itself is left as it was."""
    import copy

    if not hasattr(model, "merge_and_unload"):
        return agent_of(model)
    with peft_notes_silenced():
        return copy.deepcopy(model).merge_and_unload(adapter_names=[name or model.active_adapter])


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
