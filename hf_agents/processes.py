"""The processes of a launched run (torchrun / `accelerate launch`), read one way everywhere, and the memory set-up
that each of our entry points gives its process."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import sys


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


# glibc's malloc hands blocks above its mmap threshold back to the system when they are freed, and raises that
# threshold only as it goes: a CPU training step's 1-25 MB activations were then faulted in afresh at every step
# (27,000 page faults a step, 180-197 ms against 144-157 ms for the cpu preset at batch 16, 64 px, on the 2-core AMD
# EPYC of BENCHMARKS.md). Blocks of up to 32 MB (glibc's largest threshold) then come from the heap, which keeps up
# to 1 GiB of what was freed for the next step instead of returning it.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def switch(name: str, on: str, off: str) -> bool:
    """An environment variable that turns one of our speed-ups off (0) or on (1, its default): True when on; any
    other value is an error that says what each one means (`on`, `off`)."""
    value = os.environ.get(name, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{name}={value!r}: set it to 1 ({on}, the default) or 0 ({off})")
    return value == "1"


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 32 MB for reuse in this process (see above); what the command
    line and `accelerate launch` runs call first. False where it does not apply (no glibc, or
    HF_AGENTS_KEEP_FREED_MEMORY=0)."""
    if not switch("HF_AGENTS_KEEP_FREED_MEMORY", "malloc keeps freed blocks of up to 32 MB for reuse",
                  "glibc's own behaviour") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                  TRIM_THRESHOLD_BYTES))


# transformers' Trainer starts each `train()` with accelerate's `free_memory`, a full garbage collection. Over the
# ~500k objects that torch, transformers and datasets leave once imported, it took 0.26 s (the 2-core AMD EPYC of
# BENCHMARKS.md): a tenth of a 30-step training run, and most of the Trainer's overhead against a bare loop there.
@functools.cache
def freeze_loaded_objects() -> bool:
    """Leave every object alive now out of all later garbage collections (`gc.freeze`), once per process. Training
    entry points call it once their stage's libraries are imported and before they build models or data: a full
    collection then looks only at what the run made since, all of which it can still free. False when
    HF_AGENTS_FREEZE_GC=0."""
    if not switch("HF_AGENTS_FREEZE_GC", "the objects of the imported libraries are left out of garbage collections",
                  "every collection looks at every object"):
        return False
    gc.freeze()
    return True
