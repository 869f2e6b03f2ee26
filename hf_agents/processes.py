"""The processes of a launched run (torchrun / `accelerate launch`), read one way everywhere."""

from __future__ import annotations

import os


def rank() -> int:
    """This process's rank in a launched run (torchrun / accelerate launch), 0 alone."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes the run was launched with (1 alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def launch_state():
    """accelerate's `PartialState` of this run: its ranks (gloo on CPU when there is no GPU), device and barrier."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
