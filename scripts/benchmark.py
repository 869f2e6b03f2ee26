"""Benchmarks: speed and scale against baselines and the machine's own limit, printed as JSON.

    python scripts/benchmark.py [--quick] [--out BENCHMARKS.md] [--sections a,b,...]

Every figure is the median of several repetitions with min and max; ratios are measured side by side in
this run (against a baseline, or the matmul peak measured here), absolute numbers beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_agents.actions import NOOP_IDS  # noqa: E402
from hf_agents.frames import to_model  # noqa: E402
from hf_agents.models import (  # noqa: E402
    LORA_TARGET_MODULES,
    AgentConfig,
    AgentModel,
    AgentPolicy,
    modeling_agent,
)
from hf_agents.processes import freeze_loaded_objects, keep_freed_memory  # noqa: E402
from hf_agents.seeding import episode_stream  # noqa: E402

_SCRATCH: list[tempfile.TemporaryDirectory] = []


def scratch_folder() -> Path:
    """A fresh folder for a section's files, inside one temporary folder that goes when the run ends."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="hf-agents-benchmark-"))
    return Path(tempfile.mkdtemp(dir=_SCRATCH[0].name))


def stats(samples) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def timed(fn, reps: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def busy_cores(fn, *args):
    """(fn(*args), how many of the machine's cores were busy on average while it ran: all processes, from /proc/stat;
    None where there is none)."""
    def ticks():
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    try:
        total0, idle0 = ticks()
    except OSError:
        return fn(*args), None
    result = fn(*args)
    total1, idle1 = ticks()
    return result, (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory() -> bool:
    """Reset this process's peak-RSS mark (Linux: write 5 to /proc/self/clear_refs) and the GPU's peak."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def section_peak_memory() -> dict:
    """Peak RSS of this process since `reset_peak_memory` (VmHWM), and the GPU's peak allocation."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        out["peak_rss_mb"] = peak_rss_mb()  # the process's running peak, where VmHWM is not available
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- sections ---------------------------------------------------------------------------------------
class MatmulRate:
    """One dtype's square-matmul GFLOP/s, measured in ~0.3 s bursts: `matmul_peak` reports it, and a training step's
    share of the peak divides by a burst measured right beside that step (the host's speed drifts with its load).
    fp32 on a CPU goes two ways, torch's BLAS (`a @ b`) and oneDNN (the model's dense layers); the peak is the faster
    (on the AMD EPYC of BENCHMARKS.md the BLAS reached less than half of oneDNN's rate)."""

    def __init__(self, dtype: torch.dtype):
        self.n = 2048 if torch.cuda.is_available() else 1024
        self.a = torch.randn(self.n, self.n, device=device(), dtype=dtype)
        self.b = torch.randn(self.n, self.n, device=device(), dtype=dtype)
        self.ways = {"torch": lambda: self.a @ self.b}
        onednn = getattr(modeling_agent, "_ONEDNN_LINEAR", None)  # None in commits before it (before/after runs)
        if device().type == "cpu" and dtype == torch.float32 and onednn is not None:
            weight = self.b.t()  # a linear layer computes a @ weight^T
            self.ways["onednn"] = lambda: onednn(self.a, weight, None, "none", [], "")
        self.iters = {}
        for way, fn in self.ways.items():
            t = time.perf_counter()
            fn()
            sync()
            self.iters[way] = max(1, min(50, int(0.3 / max(time.perf_counter() - t, 1e-6))))  # even where slow

    def rates(self) -> dict[str, float]:
        out = {}
        for way, fn in self.ways.items():
            t = time.perf_counter()
            for _ in range(self.iters[way]):
                fn()
            sync()
            out[way] = 2 * self.n**3 * self.iters[way] / (time.perf_counter() - t) / 1e9
        return out

    def gflops(self) -> float:
        return max(self.rates().values())


def matmul_peak(q) -> dict:
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rate = MatmulRate(dtype)
        rate.rates()  # warm-up
        runs = [rate.rates() for _ in range(q["reps"])]
        out[name] = {"gflops": stats([max(r.values()) for r in runs]), "size": rate.n,
                     "ways": {way: stats([r[way] for r in runs]) for way in rate.ways}}
    out["memory_gb_s"] = memory_bandwidth(q)
    return out


def memory_bandwidth(q) -> dict:
    """GB/s read and written by a copy of 256 MB (far larger than the caches): with the fp32 peak, the FLOP per byte
    below which a layer is bound by memory rather than arithmetic."""
    a = torch.randn(64 << 20, device=device())
    b = torch.empty_like(a)
    b.copy_(a)
    sync()
    return stats([2 * a.numel() * 4 / t / 1e9 for t in timed(lambda: (b.copy_(a), sync()), q["reps"])])


def batch(B, T, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, T, 3, size, size), dtype=torch.uint8, generator=g)
    actions = torch.cat([torch.randint(0, 2, (B, T, 12), generator=g), torch.randint(0, 11, (B, T, 4), generator=g)], -1)
    return frames.to(device()), actions.to(device())


def _onednn_linear_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(x_shape) * weight_shape[0]


def _convolution_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                                output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """A convolution's input and weight gradients, each as many multiply-adds as its forward. torch's formula ignores
    the groups in the weight gradient, which counted a depthwise convolution's weight gradient once per channel."""
    forward = math.prod(w_shape) * x_shape[0] * math.prod((x_shape if transposed else grad_out_shape)[2:])
    return 2 * forward * (bool(output_mask[0]) + bool(output_mask[1]))


def flop_counter():
    """torch's FlopCounterMode, also counting the dense layers' oneDNN products (`modeling_agent.dense`), which it
    has no formula for (without it a CPU step's forward products and input gradients went uncounted), and grouped
    convolutions' weight gradients once (`_convolution_backward_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.convolution_backward: _convolution_backward_flops}
    if getattr(modeling_agent, "_ONEDNN_LINEAR", None) is not None:
        mapping[torch.ops.mkldnn._linear_pointwise] = _onednn_linear_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def trainers_optimizer(params, **kwargs) -> torch.optim.AdamW:
    """AdamW as the Trainer makes it by default (`optim="adamw_torch_fused"`, on a CPU too): a bare step measured
    with torch's unfused default spent 4.6 ms against 1.0 on the cpu preset's parameters (CPU C)."""
    return torch.optim.AdamW(params, lr=1e-4, fused=True, **kwargs)


def train_flops(model, frames, actions) -> int:
    counter = flop_counter()
    with counter:
        model(frames, actions).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def training_step_speed(q, preset: str, size: int, dtype: str, B: int) -> dict:
    """frames/s and achieved FLOP/s of one AdamW training step on B windows of 32 steps."""
    torch.manual_seed(0)
    model = AgentModel(AgentConfig.from_preset(preset, image_size=size)).to(device()).train()
    frames, actions = batch(B, 32, size)
    flops = train_flops(model, frames, actions)
    opt = trainers_optimizer(model.parameters())
    ctx = (lambda: torch.autocast(device().type, dtype=torch.bfloat16)) if dtype == "bf16" else (
        lambda: torch.autocast(device().type, enabled=False))

    def step():
        with ctx():
            loss = model(frames, actions).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    # Each step beside a matmul burst of the same dtype: the share is the median of step-by-step ratios, so a host
    # whose speed drifts with its neighbours' load (2x within an hour on shared 2-core hosts) still gives one figure.
    rate = MatmulRate(torch.bfloat16 if dtype == "bf16" else torch.float32)
    step()  # warm-up
    s, beside = [], []
    for _ in range(q["reps"]):
        s += timed(step, 1, warmup=0)
        beside.append(rate.gflops())
    achieved = [flops / t / 1e9 for t in s]
    return {"frames_per_s": stats([B * 32 / t for t in s]), "gflops": stats(achieved),
            "share_of_matmul_peak": statistics.median(a / p for a, p in zip(achieved, beside)),
            "matmul_peak_beside_gflops": stats(beside),
            "params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
            "peak_rss_mb": peak_rss_mb()}


_STEP_IN_A_FRESH_PROCESS = """
import json, resource, sys, time, torch
from hf_agents.models import AgentConfig, AgentModel
from hf_agents.processes import keep_freed_memory
kept, steps = keep_freed_memory(), int(sys.argv[1])
torch.manual_seed(0)
model = AgentModel(AgentConfig.from_preset("cpu")).train()
frames = torch.randint(0, 256, (16, 32, 3, 64, 64), dtype=torch.uint8)
actions = torch.zeros(16, 32, 16, dtype=torch.long)
opt = torch.optim.AdamW(model.parameters(), fused=True)
ms, faults = [], []
for _ in range(steps):
    f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    model(frames, actions).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    ms.append((time.perf_counter() - t) * 1e3)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
print(json.dumps({"kept": kept, "ms": ms[2:], "faults": faults[2:]}))
"""


def freed_memory_kept(q) -> dict:
    """The cpu preset's training step (batch 16, 64 px) in fresh processes, with freed memory kept for reuse
    (`processes.keep_freed_memory`, what the command line and training runs set) and with glibc's own behaviour,
    interleaved: ms and page faults a step after two warm-up steps."""
    import subprocess

    if not sys.platform.startswith("linux"):
        return {"skipped": "glibc's malloc: Linux only"}
    out = {"kept": {"ms": [], "faults": []}, "glibc's own": {"ms": [], "faults": []}}
    for _ in range(q["reps"]):
        for name, setting in (("glibc's own", "0"), ("kept", "1")):
            done = subprocess.run([sys.executable, "-c", _STEP_IN_A_FRESH_PROCESS, str(3 if q["quick"] else 6)],
                                  cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
                                  env={**os.environ, "HF_AGENTS_KEEP_FREED_MEMORY": setting})
            run = json.loads(done.stdout.strip().splitlines()[-1])
            out[name]["ms"] += run["ms"]
            out[name]["faults"] += run["faults"]
    result = {k: {"step_ms": stats(v["ms"]), "page_faults_per_step": statistics.median(v["faults"])}
              for k, v in out.items()}
    result["kept_speedup"] = statistics.median(out["glibc's own"]["ms"]) / statistics.median(out["kept"]["ms"])
    return result


def training_throughput(q, peak) -> dict:
    """Training frames/s and achieved FLOP/s as a share of the matmul peak, per preset, size and dtype (batch 8);
    on a CPU also the cpu and 4m presets at 64 px with larger batches (16, 32: the recipes' sizes)."""
    out = {}
    presets = ["tiny", "cpu", "4m"] if not torch.cuda.is_available() else ["cpu", "4m", "25m", "paper-103m"]
    if q["quick"]:
        presets = ["cpu"]  # quick: one preset (data_loading compares against cpu/64px/fp32)
    bf16_ok = peak["bf16"]["gflops"]["median"] > 0.25 * peak["fp32"]["gflops"]["median"]
    for preset in presets:
        for size in q["sizes"]:
            for dtype in ("fp32", "bf16"):
                if dtype == "bf16" and not bf16_ok:
                    out[f"{preset}/{size}px/bf16"] = {"skipped": "no fast bf16 matmul on this device "
                                                                 "(see matmul_peak)"}
                    continue
                out[f"{preset}/{size}px/{dtype}"] = training_step_speed(q, preset, size, dtype, q["batch"])
                if q["quick"]:
                    break
    if not q["quick"] and not torch.cuda.is_available():
        for preset in ("cpu", "4m"):
            for B in (16, 32):
                out[f"{preset}/64px/fp32/batch {B}"] = training_step_speed(q, preset, 64, "fp32", B)
    return out


def encoder_ceiling(q) -> dict:
    """CPU only: the most a training step's share of the fp32 peak can reach with the frame encoder's present kernels,
    per preset (64 px): one part of the encoder's frames (`CPU_CHUNK_PIXELS`: 128 at 64 px) forward and backward, run
    over and over so that its data stays in the caches, beside the whole step; the ceiling is the step's FLOPs over
    the time of its parts alone, as if the backbone, head, loss and optimizer took no time."""
    if torch.cuda.is_available():
        return {"skipped": "CPU only"}
    return {preset: _encoder_ceiling(q, preset) for preset in (["cpu"] if q["quick"] else ["cpu", "4m"])}


def _encoder_ceiling(q, preset: str) -> dict:
    torch.manual_seed(0)
    model = AgentModel(AgentConfig.from_preset(preset, image_size=64)).train()
    frames, actions = batch(q["batch"], 32, 64)
    step_flops = train_flops(model, frames, actions)
    flat = frames.reshape(-1, 3, 64, 64)
    size = min(len(flat), max(1, modeling_agent.CPU_CHUNK_PIXELS // 64**2))
    parts, part = len(flat) / size, flat[:size].contiguous()
    opt = trainers_optimizer(model.parameters())
    rate = MatmulRate(torch.float32)

    def encode():
        model.encoder(part).sum().backward()

    counter = flop_counter()
    with counter:
        encode()
    part_flops = counter.get_total_flops()

    def step():
        model(frames, actions).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    encode(), step()  # warm-up
    rows = []  # (a part's seconds, a step's seconds, the peak's FLOP/s beside them), interleaved
    for _ in range(q["reps"]):
        encoded, stepped = timed(encode, 5, warmup=0), timed(step, 2, warmup=0)
        rows.append((statistics.median(encoded), statistics.median(stepped), rate.gflops() * 1e9))
    return {"batch": q["batch"], "part_frames": size, "parts_per_step": parts,
            "step_gflop": step_flops / 1e9, "part_gflop": part_flops / 1e9,
            "peak_beside_gflops": stats([r[2] / 1e9 for r in rows]),
            "part_ms": stats([r[0] * 1e3 for r in rows]), "step_ms": stats([r[1] * 1e3 for r in rows]),
            "encoder_share_of_step": statistics.median(parts * r[0] / r[1] for r in rows),
            "encoder_share_of_matmul_peak": statistics.median(part_flops / r[0] / r[2] for r in rows),
            "step_share_of_matmul_peak": statistics.median(step_flops / r[1] / r[2] for r in rows),
            "ceiling_share_of_matmul_peak": statistics.median(step_flops / (parts * r[0]) / r[2] for r in rows)}


def batch_sweep(q, peak, preset="paper-103m", size=128, batches=(8, 32, 64, 128)) -> dict:
    """GPU only: the training step of `preset` at `size` px in bf16 over batch sizes, eager and torch.compile,
    as frames/s and share of the measured bf16 matmul peak (batch 8 alone is launch-bound on a GPU)."""
    if not torch.cuda.is_available() and preset == "paper-103m":
        return {"skipped": "no GPU: run on a machine with one"}
    out = {}
    for B in batches:
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            model = AgentModel(AgentConfig.from_preset(preset, image_size=size)).to(device()).train()
            frames, actions = batch(B, 32, size)
            flops = train_flops(model, frames, actions)
            torch._dynamo.reset()  # each batch size its own static-shape compile
            fn = torch.compile(model) if mode == "compiled" else model
            opt = trainers_optimizer(model.parameters())

            def step(fn=fn, opt=opt, frames=frames, actions=actions):
                with torch.autocast(device().type, dtype=torch.bfloat16):
                    loss = fn(frames, actions).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync()

            try:
                s = timed(step, q["reps"], warmup=2)
            except torch.cuda.OutOfMemoryError:
                out[f"batch={B}/{mode}"] = {"skipped": "out of memory"}
                continue
            out[f"batch={B}/{mode}"] = {"frames_per_s": stats([B * 32 / t for t in s]),
                                        "share_of_bf16_peak": flops / statistics.median(s) / 1e9
                                        / peak["bf16"]["gflops"]["median"]}
            del model, opt, fn
    return out


def context_scaling(q) -> dict:
    """Cost of a training step as context length H and frame size grow (cpu preset, fp32)."""

    def measure(H, size):
        model = AgentModel(AgentConfig.from_preset("cpu", context_length=H, image_size=size)).to(device()).train()
        frames, actions = batch(q["batch"], H, size)

        def step():
            model(frames, actions).loss.backward()
            sync()

        s = timed(step, q["reps"])
        return {"ms_per_step": stats([t * 1e3 for t in s]), "frames_per_s": stats([q["batch"] * H / t for t in s])}

    out = {f"H={H}": measure(H, 64) for H in q["scaling_contexts"]}
    out.update({f"{size}px": measure(32, size) for size in q["scaling_sizes"]})
    return out


def acting(q) -> dict:
    """ms per step in steady state (a full window of H steps) with the KV cache, against running the
    whole model over the last H observations at every step (the naive way), both with torch's threads; and the
    cached step with one thread, the policy's default on a CPU (where the games need the other cores)."""
    preset, size = ("paper-103m", 128) if torch.cuda.is_available() else ("cpu", 64)
    size = q.get("act_size") or size
    model = AgentModel(AgentConfig.from_preset(preset, image_size=size, **q.get("act_model", {}))).to(device()).eval()
    H, out = model.config.context_length, {"model": f"{preset}, {size} px", "target_speedup_batch_16": 10}
    for B in q["act_batches"]:
        frames = torch.randint(0, 256, (B, size, size, 3), dtype=torch.uint8).numpy()
        steps = q["act_steps"]
        policies = {threads: AgentPolicy(model, B, seed=0, threads=threads)
                    for threads in {torch.get_num_threads(), 1}}
        for policy in policies.values():
            for _ in range(H):  # fill the window first: steady state includes the periodic cache rebuilds
                policy.act(frames)

        def cached(threads, frames=frames, steps=steps, policies=policies):
            for _ in range(steps):
                policies[threads].act(frames)
            sync()

        window = to_model(frames)[:, None].repeat(1, H, 1, 1, 1).to(device())
        acts = torch.as_tensor(NOOP_IDS, device=device()).repeat(B, H, 1)

        def reencode(window=window, acts=acts, steps=steps):
            with torch.no_grad():
                for _ in range(steps):
                    model(window, acts)
            sync()

        c = [t / steps * 1e3 for t in timed(lambda: cached(torch.get_num_threads()), q["reps"], warmup=0)]
        c1 = [t / steps * 1e3 for t in timed(lambda: cached(1), q["reps"], warmup=0)]
        r = [t / steps * 1e3 for t in timed(reencode, q["reps"])]
        out[f"batch={B}"] = {"kv_cache_ms_per_step": stats(c), "kv_cache_one_thread_ms_per_step": stats(c1),
                             "reencode_ms_per_step": stats(r),
                             "speedup": statistics.median(r) / statistics.median(c)}
    out["threads"] = torch.get_num_threads()
    return out


@contextlib.contextmanager
def restored(module, *names):
    """Puts `module`'s attributes `names` back as they were when the block ends, however it ends."""
    saved = {name: getattr(module, name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def interleaved(q, variants: dict, measures: dict) -> dict:
    """ms samples {measure: {variant: [...]}} of each variant (name -> a function that sets it up and returns its
    model) by each measure (name -> a function of the model), interleaved so that all see the same machine."""
    ms = {m: {k: [] for k in variants} for m in measures}
    for _ in range(q["reps"]):
        for name, setup in variants.items():
            model = setup()
            for m, measure in measures.items():
                ms[m][name] += measure(model)
    return ms


def training_and_acting_side_by_side(q, variants: dict, training_ms, acting_ms, before: str, after: str):
    """Training step and acting ms of each variant (`interleaved`); and `after`'s speed-up over `before` for each."""
    ms = interleaved(q, variants, {"training_step": training_ms, "acting": lambda model: acting_ms(model.eval(), 1)})
    out = {name: {f"{m}_ms": stats(ms[m][name]) for m in ms} for name in variants}
    speedup = {m: statistics.median(v[before]) / statistics.median(v[after]) for m, v in ms.items()}
    return out, speedup


def acting_choices(q) -> dict:
    """Side by side, interleaved: the backbone's GELU (GPT-2's tanh approximation against exact) and the dense layers'
    products (torch's BLAS against oneDNN) on a cpu-preset training step (batch 8) and on acting (batch 16, one
    thread); the depthwise weight gradient (torch's against `_depthwise_weight_grad`) on the training step; acting with
    the convolution weights reordered at every call against once, and through a LoRA adapter against the adapter
    merged into a copy; and an alignment-sized rollout (16 episodes of up to 100 steps on 16 games) with envs leaving
    the agent's batch when they have no episode left (`keep`) against acting for all 16 to the end."""
    import copy

    from peft import LoraConfig, get_peft_model

    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.games.jumppads.env import make_jumppads
    from hf_agents.models.adapters import merged_for_acting
    from hf_agents.rollout.engine import rollout

    size, B, steps = q["act_size"] or 64, q["rollout_batch"], q["act_steps"]
    frames = torch.randint(0, 256, (B, size, size, 3), dtype=torch.uint8).numpy()
    out = {"training_batch": q["batch"], "acting_batch": B, "episodes": B}

    def acting_ms(model, reps):
        policy = AgentPolicy(model, B, seed=0)
        for _ in range(steps):
            policy.act(frames)
        return [t / steps * 1e3 for t in timed(lambda: [policy.act(frames) for _ in range(steps)], reps, warmup=0)]

    models = {act: AgentModel(AgentConfig.from_preset("cpu", image_size=size, activation_function=act))
              for act in ("gelu_pytorch_tanh", "gelu")}
    tokens = batch(q["batch"], 32, size)

    def training_ms(model):
        model.train()

        def step():
            model(*tokens).loss.backward()
            model.zero_grad(set_to_none=True)
        return [t * 1e3 for t in timed(step, 1)]

    out["gelu"], out["gelu"]["exact_speedup"] = training_and_acting_side_by_side(
        q, {act: (lambda model=model: model) for act, model in models.items()}, training_ms, acting_ms,
        before="gelu_pytorch_tanh", after="gelu")

    def setting(name, value, model):
        """A variant: `modeling_agent.<name> = value`, then `model`."""
        setattr(modeling_agent, name, value)
        return model

    # the dense layers' products through torch's BLAS or through oneDNN (`modeling_agent.dense`); not where there is
    # no oneDNN linear (or in a commit before it)
    if getattr(modeling_agent, "_ONEDNN_LINEAR", None) is not None:
        with restored(modeling_agent, "ONEDNN_LINEARS"):
            out["dense_layers"], out["dense_layers"]["onednn_speedup"] = training_and_acting_side_by_side(
                q, {"blas": lambda: setting("ONEDNN_LINEARS", False, models["gelu"]),
                    "onednn": lambda: setting("ONEDNN_LINEARS", True, models["gelu"])}, training_ms, acting_ms,
                before="blas", after="onednn")

    def side_by_side(variants: dict, before: str, after: str, measure=lambda model: acting_ms(model, 1)) -> dict:
        """ms of each variant by `measure` (acting by default; `interleaved`), and `after`'s speed-up over `before`
        (under `{after}_speedup`)."""
        ms = interleaved(q, variants, {"ms": measure})["ms"]
        return {**{k: stats(v) for k, v in ms.items()},
                f"{after}_speedup": statistics.median(ms[before]) / statistics.median(ms[after])}

    # the depthwise convolutions' weight gradient as a convolution (`_depthwise_weight_grad`) or torch's own
    if hasattr(modeling_agent, "DEPTHWISE_WEIGHT_GRAD_MIN_SIZE"):
        from_size = modeling_agent.DEPTHWISE_WEIGHT_GRAD_MIN_SIZE
        with restored(modeling_agent, "DEPTHWISE_WEIGHT_GRAD_MIN_SIZE"):
            out["depthwise_weight_grad_training_ms"] = side_by_side(
                {"torch": lambda: setting("DEPTHWISE_WEIGHT_GRAD_MIN_SIZE", math.inf, models["gelu"]),
                 "as a convolution": lambda: setting("DEPTHWISE_WEIGHT_GRAD_MIN_SIZE", from_size, models["gelu"])},
                before="torch", after="as a convolution", measure=training_ms)

    # convolutions at inference with their weight reordered for oneDNN once (`InferenceConv2d`) or at every call
    if getattr(modeling_agent, "_ONEDNN_CONV", None) is not None:
        reorder_once = modeling_agent._ONEDNN_CONV
        with restored(modeling_agent, "_ONEDNN_CONV"):
            out["conv_weights_acting_ms"] = side_by_side(
                {"every call": lambda: setting("_ONEDNN_CONV", None, models["gelu"].eval()),
                 "once": lambda: setting("_ONEDNN_CONV", reorder_once, models["gelu"].eval())},
                before="every call", after="once")

    lora = get_peft_model(copy.deepcopy(models["gelu"]).eval(), LoraConfig(
        r=8, lora_alpha=16, target_modules=LORA_TARGET_MODULES, fan_in_fan_out=True, init_lora_weights=False))
    merged = merged_for_acting(lora)
    out["lora_acting_ms"] = side_by_side({"adapter": lora.get_base_model, "merged": lambda: merged},
                                         before="adapter", after="merged")

    class AllToTheEnd(AgentPolicy):
        keep = None  # acts for every env until the last episode ends

    seconds = {"keep": [], "all to the end": []}
    with BatchedEnv(functools.partial(make_jumppads, frame_size=size, max_steps=20 if q["quick"] else 100), B) as venv:
        for rep in range(1 if q["quick"] else 3):
            for name, cls in (("keep", AgentPolicy), ("all to the end", AllToTheEnd)):
                seconds[name].append(rollout(venv, cls(models["gelu"].eval(), B, seed=rep), B, seed=100 * rep,
                                             keep_frames=False, progress=False).seconds)
    out["rollout_of_an_update_s"] = {k: stats(v) for k, v in seconds.items()}
    out["rollout_of_an_update_s"]["keep_speedup"] = (statistics.median(seconds["all to the end"])
                                                     / statistics.median(seconds["keep"]))
    return out


def trainer_vs_bare_loop(q) -> dict:
    """The Trainer against a bare torch loop over the same model, data and optimiser: the whole `train()` call, and
    its steps alone (from the Trainer's train-begin to its train-end event), apart from its one-time set-up; and,
    interleaved (each first in turn), the whole call with the libraries' objects in the garbage collection it starts
    with, as without `processes.freeze_loaded_objects` (which `main` calls as a training run does)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hf_agents.data.writer import TrajectoryWriter
    from hf_agents.training.imitation import ImitationCollator, ImitationTrainer

    tmp = scratch_folder()
    rng = np.random.default_rng(0)
    with TrajectoryWriter(tmp / "ds", frame_size=64) as w:
        for _ in range(q["trainer_episodes"]):
            ids = np.concatenate([rng.integers(0, 2, (100, 12)), rng.integers(0, 11, (100, 4))], 1)
            w.add_episode(rng.integers(0, 256, (100, 64, 64, 3), dtype=np.uint8), ids)
    from hf_agents.data import load_trajectories

    windows = load_trajectories(tmp / "ds").windows(32, 8)
    collate = ImitationCollator(True)
    steps, B = q["trainer_steps"], q["batch"]
    results = {"bare": [], "trainer": [], "trainer_steps": [], "outside_steps_s": [], "trainer_unfrozen": []}
    events = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            events["begin"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            events["end"] = time.perf_counter()

    for rep in range(q["reps"]):
        torch.manual_seed(0)
        model = AgentModel(AgentConfig.from_preset("cpu")).to(device())
        loader = torch.utils.data.DataLoader(windows, batch_size=B, shuffle=True, collate_fn=collate)
        opt = trainers_optimizer(model.parameters())
        t = time.perf_counter()
        it = iter(loader)
        for _ in range(steps):
            try:
                b = next(it)
            except StopIteration:
                it = iter(loader)
                b = next(it)
            b = {k: v.to(device()) for k, v in b.items()}
            loss = model(**b).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync()
        results["bare"].append(B * 32 * steps / (time.perf_counter() - t))
        for frozen in ((True, False) if rep % 2 == 0 else (False, True)):
            torch.manual_seed(0)
            model = AgentModel(AgentConfig.from_preset("cpu"))
            args = TrainingArguments(output_dir=str(tmp / "t"), max_steps=steps, per_device_train_batch_size=B,
                                     report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True,
                                     remove_unused_columns=False, dataloader_num_workers=0,
                                     lr_scheduler_type="constant")
            trainer = ImitationTrainer(model=model, args=args, train_dataset=windows, data_collator=collate,
                                       callbacks=[Clock()])
            if not frozen:
                gc.unfreeze()
            t = time.perf_counter()
            trainer.train()
            seconds, stepping = time.perf_counter() - t, events["end"] - events["begin"]
            if not frozen:
                gc.freeze()
                results["trainer_unfrozen"].append(B * 32 * steps / seconds)
                continue
            results["trainer"].append(B * 32 * steps / seconds)
            results["trainer_steps"].append(B * 32 * steps / stepping)
            results["outside_steps_s"].append(seconds - stepping)
    assert Trainer  # the Trainer subclass measured is ImitationTrainer
    bare, tr = statistics.median(results["bare"]), statistics.median(results["trainer"])
    return {"bare_frames_per_s": stats(results["bare"]), "trainer_frames_per_s": stats(results["trainer"]),
            "trainer_overhead": 1 - tr / bare, "trainer_steps_frames_per_s": stats(results["trainer_steps"]),
            "trainer_overhead_per_step": 1 - statistics.median(results["trainer_steps"]) / bare,
            "trainer_outside_steps_s": stats(results["outside_steps_s"]),
            "trainer_every_object_collected_frames_per_s": stats(results["trainer_unfrozen"]),
            "trainer_every_object_collected_overhead": 1 - statistics.median(results["trainer_unfrozen"]) / bare}


# What one H100 consumes (issue 15: paper-103m, 128 px, H = 32, batch 64, torch.compile): 96.1k frames/s, so
# each of its host's 16 cores must deliver 6k decoded frames/s.
GPU_FRAMES_PER_S, GPU_HOST_CORES = 96_100, 16


@functools.cache
def jumppads_frames(size: int, episodes: int, num_envs: int) -> Path:
    """A folder with real JumpPads pretraining data at `size` px twice: png/ as generated, bmp/ converted (made once
    per arguments: quick mode's data_loading and end_to_end_pretraining share theirs)."""
    from hf_agents.data import load_trajectories
    from hf_agents.data.convert import convert_frames
    from hf_agents.games.jumppads.generate import generate_pretrain

    tmp = scratch_folder()
    generate_pretrain(tmp / "png", episodes=episodes, frame_size=size, num_envs=num_envs, progress=False)
    convert_frames(load_trajectories(tmp / "png"), tmp / "bmp", "bmp", progress=False)
    return tmp


def data_loading(q, train_fps) -> dict:
    """Training windows (real JumpPads frames, PNG and BMP, 64/128 px) decoded in the main process (one core) and
    by 2 persistent workers,
    against this CPU's training consumption and one GPU's per core; batch augmentation on the device apart."""
    from hf_agents.data import load_trajectories
    from hf_agents.training.augment import AugmentedWindows, augment_frames
    from hf_agents.training.imitation import ImitationCollator

    out, per_core_target = {}, GPU_FRAMES_PER_S / GPU_HOST_CORES
    for size in q["loading_sizes"]:
        tmp = jumppads_frames(size, q["data_episodes"], num_envs=2)
        for codec in ("png", "bmp"):
            windows = AugmentedWindows(load_trajectories(tmp / codec).windows(32, 16))
            for workers in (0, 2):
                loader = torch.utils.data.DataLoader(windows, batch_size=8, shuffle=True, num_workers=workers,
                                                     collate_fn=ImitationCollator(), persistent_workers=workers > 0)

                def load(loader=loader):
                    for _ in loader:
                        pass

                s = timed(load, q["loading_reps"])  # steady state: workers started in the warm-up epoch
                fps = [len(windows) * 32 / t for t in s]
                rate, cores = train_fps.get(size), max(workers, 1)
                out[f"{size}px/{codec}/workers={workers}"] = {
                    "frames_per_s": stats(fps), "cores": cores, "per_core_frames_per_s": statistics.median(fps) / cores,
                    "gpu_needs_per_core": per_core_target,
                    "share_of_gpu_need": statistics.median(fps) / cores / per_core_target,
                    "training_consumes_frames_per_s": rate,
                    "ratio_to_training": statistics.median(fps) / rate if rate else None}
        frames = torch.randint(0, 256, (8, 32, 3, size, size), dtype=torch.uint8, device=device())
        params = torch.tensor([[1.1, 0.9, 1.1, 0.02, 0.03, -0.02, 1.01]] * 8, device=device())
        s = timed(lambda frames=frames, params=params: (augment_frames(frames, params), sync()), q["reps"])
        out[f"{size}px/augment_on_{device().type}"] = {"frames_per_s": stats([8 * 32 / t for t in s]),
                                                        "training_consumes_frames_per_s": train_fps.get(size)}
    return out


def end_to_end_pretraining(q) -> dict:
    """`accelerate launch` pretraining (the recipe's loader, Trainer, augmentation) against the bare step of the
    same model, batch and precision. CPU: recipes/pretrain.yaml (cpu preset, 64 px); GPU: recipes/gpu/pretrain.yaml
    (paper-103m, 128 px, bf16, torch.compile). Two runs of different lengths: their difference is steady state
    (start-up, compilation and worker start cancel out)."""
    import subprocess

    import yaml

    from hf_agents.locations import RECIPES

    gpu = torch.cuda.is_available()
    recipe = RECIPES / ("gpu/pretrain.yaml" if gpu else "pretrain.yaml")
    config = yaml.safe_load(recipe.read_text())
    size, B = 128 if gpu else 64, int(config["per_device_train_batch_size"])
    B, H = q.get("pretrain_batch") or B, q.get("pretrain_context") or 32
    accum = int(config.get("gradient_accumulation_steps", 1))
    episodes = q["data_episodes"] * (8 if gpu else 1 if q["quick"] else 2)  # GPU: >= 4 steps of 256 windows
    tmp = jumppads_frames(size, episodes, q["num_envs"])
    runtimes = {}
    steps = (1, 8) if q["quick"] else (10, 40)  # quick: enough steps apart that the difference outweighs noise
    if gpu:
        torch.cuda.empty_cache()  # the launched run shares this GPU
    for n in steps:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(RECIPES / "accelerate" / ("gpu.yaml" if gpu else "cpu.yaml")), "-m", "hf_agents.training",
               str(recipe), f"dataset={tmp / 'bmp'}", f"output_dir={tmp / f'run{n}'}", f"max_steps={n}",
               "eval_strategy=no", "save_strategy=no", "report_to=none", "warmup_steps=0", "logging_steps=1000",
               "dataloader_drop_last=true"]  # every step a full batch: frames/step below is exact
        if q["quick"]:  # a smaller batch and context, the same for the bare step below
            cmd += [f"per_device_train_batch_size={B}", f"context_length={H}"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode:
            return {"error": done.stderr[-1500:]}
        history = json.loads((tmp / f"run{n}" / "train_results.json").read_text())["log_history"]
        runtimes[n] = next(h["train_runtime"] for h in history if "train_runtime" in h)
    frames_per_step = B * accum * H
    end_to_end = (steps[1] - steps[0]) * frames_per_step / (runtimes[steps[1]] - runtimes[steps[0]])

    torch.manual_seed(0)
    model = AgentModel(AgentConfig.from_preset(config["model_preset"], image_size=size,
                                               **({"context_length": H} if q["quick"] else {}))).to(device()).train()
    torch._dynamo.reset()  # a fresh static-shape compile, not a dynamic graph left by earlier sections
    step_fn = torch.compile(model) if config.get("torch_compile") else model
    opt = trainers_optimizer(model.parameters())
    frames, actions = batch(B, H, size)
    dtype = torch.bfloat16 if config.get("bf16") else None

    def step():
        with torch.autocast(device().type, dtype=dtype, enabled=dtype is not None):
            loss = step_fn(frames, actions).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    step()  # compiles
    bare = statistics.median([B * H / t for t in timed(step, q["reps"])])
    return {"recipe": str(recipe.relative_to(RECIPES)), "frames": size, "batch": B * accum,
            "frame_codec": "bmp", "end_to_end_frames_per_s": end_to_end, "bare_step_frames_per_s": bare,
            "ratio": end_to_end / bare, "target_ratio": 0.8}


def env_speed(q) -> dict:
    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.games.jumppads.env import JumpPadsEnv, make_jumppads

    out = {}
    env = JumpPadsEnv(max_steps=10_000)
    env.reset(seed=0)
    acts = [env.action_space.sample() for _ in range(50 if q["quick"] else 300)]

    def single():
        env.reset(seed=0)
        for a in acts:
            env.step(a)

    s = timed(single, q["reps"])
    out["single_process_steps_per_s"] = stats([len(acts) / t for t in s])
    # a reset onto the same spawn's map, and onto another spawn's (the map the engine loads changes)
    for name, spawns in (("same_map", [0] * 10), ("other_map", [i % 4 for i in range(1, 11)])):
        s = timed(lambda spawns=spawns: [env.reset(seed=i, options={"spawn": k}) for i, k in enumerate(spawns)],
                  q["reps"])
        out[f"reset_ms_{name}"] = stats([t / len(spawns) * 1e3 for t in s])
    env.close()
    n = q["num_envs"]
    with BatchedEnv(functools.partial(make_jumppads, max_steps=10_000), n) as venv:
        venv.reset()

        def batched():
            for a in acts:
                venv.step([a] * n)

        s = timed(batched, q["reps"])
    out[f"batched_{n}_envs_steps_per_s"] = stats([len(acts) * n / t for t in s])
    return out


def rollout_speed(q) -> dict:
    """Agent rollouts at batch 16, side by side: acting with one CPU thread (the policy's default on a CPU) or all of
    torch's threads, and all envs acting at once or two groups, each acting while the other's games step; time
    split into acting, env stepping and the rest."""
    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.games.jumppads.env import make_jumppads
    from hf_agents.rollout.engine import rollout

    B = q["rollout_batch"]
    model = AgentModel(AgentConfig.from_preset("cpu")).eval()
    spent = {"act": 0.0, "env": 0.0}

    def timing(fn, key):
        def timed_call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t
        return timed_call

    full_batch_calls = []  # ms of each act with every env of its group

    class TimedPolicy(AgentPolicy):
        def __init__(self, model, num_envs, **kwargs):
            super().__init__(model, num_envs, **kwargs)
            self.group_size = num_envs

        def act(self, frames, *args, **kwargs):
            t = time.perf_counter()
            try:
                return super().act(frames, *args, **kwargs)
            finally:
                seconds = time.perf_counter() - t
                spent["act"] += seconds
                if len(frames) == self.group_size:
                    full_batch_calls.append(seconds * 1e3)

    out = {"batch": B, "target_times": 50}
    with BatchedEnv(functools.partial(make_jumppads, max_steps=20 if q["quick"] else 60), B) as venv:
        venv.step_async, venv.step_wait = timing(venv.step_async, "env"), timing(venv.step_wait, "env")
        runs = {"threads=1, groups=1": (1, 1), f"threads={torch.get_num_threads()}, groups=1": (torch.get_num_threads(), 1),
                "threads=1, groups=2": (1, 2)}
        samples, shares = {k: [] for k in runs}, {}
        for rep in range(1 if q["quick"] else 3):
            for name, (threads, groups) in runs.items():  # interleaved, so all see the same machine
                spent.update(act=0.0, env=0.0)
                full_batch_calls.clear()
                # several episodes per env, so that the batch stays full (the last episodes run at a smaller batch)
                result = rollout(venv, TimedPolicy(model, B, seed=rep, threads=threads), q["rollout_rounds"] * B,
                                 seed=100 * rep, keep_frames=False, progress=False, groups=groups)
                samples[name].append(result.steps_per_second)
                total = result.seconds
                shares[name] = {"share_acting": spent["act"] / total, "share_env_step": spent["env"] / total,
                                "share_other": 1 - (spent["act"] + spent["env"]) / total,
                                "acting_ms_full_batch": statistics.median(full_batch_calls or [float("nan")])}
    for name, xs in samples.items():
        out[name] = {"env_steps_per_s": stats(xs), "times_real_time_10hz": statistics.median(xs) / 10, **shares[name]}
    default = "threads=1, groups=1"
    out["times_real_time_10hz"] = out[default]["times_real_time_10hz"]
    out["speedup_vs_default"] = {k: statistics.median(xs) / statistics.median(samples[default])
                                 for k, xs in samples.items()}
    return out


def _median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class StandStill:
    """A policy that costs nothing: every env presses no button, so every episode runs to its step limit. Through the
    same engine, it measures the game alone on episodes of its own (no move, no fall, fewer resets)."""

    def reset(self, envs=None, infos=None, seeds=None) -> None:
        pass

    def act(self, frames, infos=None):
        return np.tile(NOOP_IDS, (len(frames), 1)), np.zeros(len(frames), np.float32)

    def split(self, sizes):
        return [StandStill() for _ in sizes]


class Replay:
    """A policy that costs nothing and plays a rollout's recorded actions again, episode by episode: through the same
    engine, the game alone doing the agent's work (the same episodes: moves, lengths, falls and resets). Each env finds
    its episode from the stream seed the engine passes at its reset (its reset seed and episode id)."""

    def __init__(self, episodes):
        self.recorded = {episode_stream(e.seed, e.index): e.actions for e in episodes}
        self.playing: dict[int, np.ndarray | None] = {}
        self.steps: dict[int, int] = {}

    def split(self, sizes):
        """One replay per rollout worker, each finding its episodes by their streams."""
        parts = [Replay([]) for _ in sizes]
        for part in parts:
            part.recorded = self.recorded
        return parts

    def reset(self, envs=None, infos=None, seeds=None) -> None:
        for row, stream in zip(envs if envs is not None else (), seeds if seeds is not None else ()):
            self.playing[row], self.steps[row] = self.recorded.get(stream), 0

    def act(self, frames, infos=None):
        actions = np.tile(NOOP_IDS, (len(frames), 1))
        for row in range(len(frames)):
            played, t = self.playing.get(row), self.steps.get(row, 0)
            if played is not None and t < len(played):
                actions[row] = played[t]
            self.steps[row] = t + 1
        return actions, np.zeros(len(frames), np.float32)


def rollouts_against_the_game(q) -> dict:
    """The game alone (policies that cost nothing) and the cpu-preset agent acting, side by side through the same
    engine and games, at batch 16 and 64 and at 64 and 128 px; and frames piped or in shared memory (batch 16,
    64 px); each also through rollout workers (one per core, each acting for its envs and stepping their games
    in-process). The game alone twice: replaying the agent's own episodes (`Replay`: the game's work in those
    rollouts) and standing still (`StandStill`). Per core: env steps/s divided by the CPU count. Target: rollouts
    >= 60% of the game alone."""
    from hf_agents.envs.vector import BatchedEnv
    from hf_agents.games.jumppads.env import make_jumppads
    from hf_agents.rollout.engine import rollout
    from hf_agents.rollout.workers import RolloutWorkers

    cores = os.cpu_count() or 1
    out = {"cores": cores, "episode_steps": q["scaling_episode_steps"], "target_share_of_game": 0.6}

    def run(venv, policy, B, rep):
        return rollout(venv, policy, q["rollout_rounds"] * B, seed=100 * rep, keep_frames=False, progress=False)

    for size in q["rollout_sizes"]:
        model = AgentModel(AgentConfig.from_preset("cpu", image_size=size)).eval()
        for B in q["rollout_batches"]:
            env_fn = functools.partial(make_jumppads, frame_size=size, max_steps=q["scaling_episode_steps"])
            transports = ("shared", "pipe") if (B, size) == (q["rollout_batches"][0], q["rollout_sizes"][0]) \
                else ("shared",)
            engines = {f"{size}px, batch {B}, {t}": functools.partial(BatchedEnv, env_fn, B,
                                                                      shared_memory=t == "shared") for t in transports}
            # rollout workers, one per core: each acts for its share of the envs and steps their games itself
            engines[f"{size}px, batch {B}, rollout workers"] = functools.partial(RolloutWorkers, env_fn, B,
                                                                                  min(cores, B))
            runs = {name: {"replay": [], "still": [], "agent": [], "same": 0, "lengths": [], "game": [], "busy": []}
                    for name in engines}
            with contextlib.ExitStack() as stack:
                venvs = {name: stack.enter_context(make()) for name, make in engines.items()}
                for rep in range(q["reps_rollout"]):  # interleaved, so all see the same machine
                    for name, venv in venvs.items():
                        m = runs[name]
                        acted, cores_acting = busy_cores(run, venv, AgentPolicy(model, B, seed=rep), B, rep)
                        replayed, cores_game = busy_cores(run, venv, Replay(acted.episodes), B, rep)
                        m["busy"].append(cores_acting)
                        m["game"].append(cores_game)
                        m["agent"].append(acted.steps_per_second)
                        m["replay"].append(replayed.steps_per_second)
                        m["still"].append(run(venv, StandStill(), B, rep).steps_per_second)
                        by_index = {e.index: e.length for e in replayed.episodes}
                        m["same"] += sum(by_index.get(e.index) == e.length for e in acted.episodes)
                        m["lengths"] += [e.length for e in acted.episodes]
            batched = statistics.median(runs[f"{size}px, batch {B}, shared"]["replay"])
            for name, m in runs.items():
                r, s_, a = statistics.median(m["replay"]), statistics.median(m["still"]), statistics.median(m["agent"])
                out[name] = {
                    "game_alone_steps_per_s": stats(m["replay"]), "game_standing_still_steps_per_s": stats(m["still"]),
                    "rollout_steps_per_s": stats(m["agent"]), "game_alone_per_core": r / cores,
                    "rollout_per_core": a / cores, "share_of_game": a / r, "share_of_game_standing_still": a / s_,
                    "share_of_batched_game": a / batched,
                    "times_real_time_10hz": a / 10, "mean_episode_steps": float(np.mean(m["lengths"])),
                    "replayed_episodes_of_the_same_length": m["same"] / max(len(m["lengths"]), 1),
                    "busy_cores_game_alone": _median_or_none(m["game"]),
                    "busy_cores_rollouts": _median_or_none(m["busy"])}
    return out


def sample_factory_peer(q) -> dict:
    """The peer: Sample Factory 2's APPO on its ViZDoom throughput scenario (`doom_benchmark`: battle at 160x120
    resized to 128x72, frameskip 4, conv + GRU policy) on this machine's CPU, acting and learning at once. It counts
    frames; agent decisions are frames / 4. Runs in its own environment (scripts/setup_sample_factory.sh)."""
    import re
    import signal
    import subprocess

    python = ROOT / ".venv-sample-factory" / "bin" / "python"
    if q["quick"]:
        return {"skipped": "not in a quick run"}
    if not python.exists():
        return {"skipped": "no .venv-sample-factory here: run `bash scripts/setup_sample_factory.sh` first"}
    cores, seconds = os.cpu_count() or 1, 150
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(python), "-m", "sf_examples.vizdoom.train_vizdoom", "--env=doom_benchmark", "--algo=APPO",
               "--env_frameskip=4", "--use_rnn=True", f"--num_workers={2 * cores}", "--num_envs_per_worker=8",
               "--num_policies=1", "--batch_size=1024", "--wide_aspect_ratio=False", "--device=cpu",
               "--benchmark=True", "--save_every_sec=100000", f"--train_dir={tmp}", "--experiment=peer"]
        with open(Path(tmp) / "log.txt", "w") as log_file:  # it logs a 10-second frame rate every 5 seconds
            run = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
            try:
                run.wait(seconds)
            except subprocess.TimeoutExpired:  # still running, as it should be: stop it and its workers
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
        log = (Path(tmp) / "log.txt").read_text(errors="replace")
    # its reports: "[date hh:mm:ss,ms][pid] Fps is (...). Total num frames: N."; frames counted in whole batches
    reports = [(3600 * int(h) + 60 * int(m) + float(sec.replace(",", ".")), int(n)) for h, m, sec, n in
               re.findall(r"(\d\d):(\d\d):(\d\d,\d+)\]\[\d+\] Fps is .*?Total num frames: (\d+)", log)]
    reports = [r for r in reports if r[1] > 0]
    if len(reports) < 4:
        return {"error": f"exit {run.returncode}, {len(reports)} frame-count reports: {log[-1500:]}"}
    (t0, n0), (t1, n1) = reports[len(reports) // 2], reports[-1]  # the second half: workers started, learner warm
    steady = (n1 - n0) / (t1 - t0)
    return {"command": " ".join(cmd[1:-2]), "seconds": seconds, "cores": cores, "steady_frames_per_s": steady,
            "measured_over_s": t1 - t0, "decisions_per_s": steady / 4, "decisions_per_s_per_core": steady / 4 / cores,
            "published": "50k+ frames/s on a 10-core CPU (its ViZDoom docs): about 1.25k decisions/s per core"}


def rollout_worker_calls(q) -> dict:
    """What a call to the rollout workers costs beside its episodes, side by side on 16 games and one worker per core:
    each call with a new copy of the agent (as every alignment update makes), sent whole (its model pickled and
    unpickled at every call, as before the workers kept it) or only as weights (`_ModelCopy`), with short (10-step)
    and the recipe's 100-step episodes; and an evaluation (`evaluate_policy`) on the workers against acting in one
    process (8 games, the demo's)."""
    import copy

    import hf_agents.rollout.workers as workers_module
    from hf_agents.games.jumppads.env import make_jumppads
    from hf_agents.rollout.engine import rollout
    from hf_agents.rollout.evaluate import evaluate_policy
    from hf_agents.rollout.workers import RolloutWorkers

    per_core, n = min(os.cpu_count() or 1, 16), q["rollout_batch"]
    model, out = AgentModel(AgentConfig.from_preset("cpu")).eval(), {"workers": per_core, "games": n}
    ways = {"whole policy": lambda policy: None,  # no model of its own: the policy is pickled whole
            "weights only": workers_module._model_of}
    for steps in (10, 20 if q["quick"] else 100):
        env_fn = functools.partial(make_jumppads, max_steps=steps)
        samples = {name: [] for name in ways}
        with RolloutWorkers(env_fn, n, per_core) as workers, restored(workers_module, "_model_of"):
            for rep in range(2 + q["reps"] * 2):
                for name, model_of in ways.items():
                    workers_module._model_of = model_of
                    t = time.perf_counter()
                    rollout(workers, AgentPolicy(copy.deepcopy(model), n, seed=rep), n, seed=1000 * rep,
                            keep_frames=False, progress=False)
                    if rep >= 2:  # the first calls start the workers' copies
                        samples[name].append(time.perf_counter() - t)
        out[f"{steps}-step episodes"] = {
            **{f"{k}_s": stats(v) for k, v in samples.items()},
            "speedup": statistics.median(samples["whole policy"]) / statistics.median(samples["weights only"])}
    evaluation = {0: [], per_core: []}
    env_fn = functools.partial(make_jumppads, max_steps=20 if q["quick"] else 100)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(q["reps"]):
            for workers in evaluation:
                t = time.perf_counter()
                evaluate_policy(AgentPolicy(model, 8, seed=0), Path(tmp) / f"{workers}-{rep}", env_fn,
                                episodes=4 if q["quick"] else 64, num_envs=8, videos=0, progress=False,
                                rollout_workers=workers)
                evaluation[workers].append(time.perf_counter() - t)
    out["evaluation on 8 games"] = {"episodes": 4 if q["quick"] else 64,
        "one process_s": stats(evaluation[0]), f"{per_core} rollout workers_s": stats(evaluation[per_core]),
        "speedup": statistics.median(evaluation[0]) / statistics.median(evaluation[per_core])}
    return out


def align_update(q) -> dict:
    """One alignment update of 16 episodes with the cpu-preset agent, a LoRA adapter and a random-encoder reward
    model, split into its parts (rollouts, reward scoring, the reference's log-probs for the KL term, re-scoring
    and backward), without and with the KL term, side by side."""
    from hf_agents.envs.spec import GameSpec
    from hf_agents.models import TrajectoryRewardConfig, TrajectoryRewardModel
    from hf_agents.training.align import AlignConfig, AlignTrainer

    updates = 1 if q["quick"] else 5
    # quick: fewer, shorter episodes on fewer games (full: AlignConfig's defaults, 16 episodes of up to 100 steps)
    sizes = dict(episodes_per_update=4, max_episode_steps=20) if q["quick"] else {}
    games = (2,) if q["quick"] else (8, 16)  # 16: the align recipe's, one episode per game
    out = {"episodes_per_update": sizes.get("episodes_per_update", 16), "updates": updates}
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentModel(AgentConfig.from_preset("cpu", game=GameSpec.of(None, frame_size=64).to_dict()))
        agent.save_pretrained(Path(tmp) / "agent")
        reward = TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=64, reward_min=-1.0,
                                                              reward_max=1.0))
        reward.save_pretrained(Path(tmp) / "reward")
        # and the largest batch again with the rollouts in one worker process per core (`rollout_workers`)
        per_core = min(os.cpu_count() or 1, games[-1])
        runs = [(n, kl, 0) for n in games for kl in (0.0, 0.05)] + [(games[-1], kl, per_core) for kl in (0.0, 0.05)]
        for n, kl, workers in runs:
            name = f"{n} games, kl_coef={kl:g}" + (f", {workers} rollout workers" if workers else "")
            config = AlignConfig(agent=str(Path(tmp) / "agent"), output_dir=str(Path(tmp) / name), target="left",
                                 reward_source="model", reward_model=str(Path(tmp) / "reward"), algorithm="rloo",
                                 trainable="lora", kl_coef=kl, num_updates=updates, save_steps=10**6,
                                 report_to=["none"], num_envs=n, rollout_workers=workers, **sizes)
            trainer = AlignTrainer(config)
            trainer.train()
            logs = trainer.log_history[1:] or trainer.log_history  # the first update warms up
            parts = {k: statistics.median(h[k] for h in logs) for k in
                     ("seconds", "seconds_rollout", "seconds_reward", "seconds_reference", "seconds_learn")}
            out[name] = {**parts, **{f"share_{k[8:]}": parts[k] / parts["seconds"] for k in parts if k != "seconds"}}
    return out


def reward_model_speed(q, peak) -> dict:
    """Reward-model training comparisons/s (the reward stage's Trainer on frozen embeddings, against a bare loop on the
    same model and data), its FLOP/s share of the matmul peak, and the one-off cost of embedding trajectories."""
    import datasets

    from hf_agents.models import TrajectoryRewardConfig, TrajectoryRewardModel
    from hf_agents.training.reward import RewardTrainingConfig, TrajectoryRewardTrainer

    tmp = scratch_folder()
    agent = AgentModel(AgentConfig.from_preset("cpu")).to(device()).eval()
    out = {}
    n = q["embed_trajectories"]
    frames, actions = batch(n, 100, 64)
    embedder = TrajectoryRewardModel.from_agent(agent).to(device()).eval()
    s = timed(lambda: (embedder.embed(frames, actions), sync()), q["reps"], warmup=0 if q["quick"] else 1)
    out["embed_agent_cpu_preset_64px"] = {"trajectories_per_s": stats([n / t for t in s])}
    B, steps, M = (64, 2, 64) if q["quick"] else (2048, 6, 1024)  # paper: 2048 comparisons a step
    reps = 1 if q["quick"] else 3  # each rep trains three times (bare, bare without dedup, Trainer) per encoder
    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randint(0, M, (B * steps,), generator=g), torch.randint(0, M, (B * steps,), generator=g)
    pairs = datasets.Dataset.from_dict({"chosen_ids": chosen[:, None].tolist(), "rejected_ids": rejected[:, None].tolist()})
    for encoder in ("agent", "random"):
        def fresh(encoder=encoder):
            torch.manual_seed(0)
            if encoder == "agent":
                return TrajectoryRewardModel.from_agent(agent)
            return TrajectoryRewardModel(TrajectoryRewardConfig(encoder="random", image_size=64))

        model = fresh()
        embeddings = torch.randn(M, 100, model.config.embedding_size)
        model.to(device())
        counter = flop_counter()
        with counter:  # one step's forward + backward: chosen and rejected trajectories
            model(embeddings=embeddings[:2 * B].to(device())).logits.sum().backward()
        flops_per_step = counter.get_total_flops()
        results = {"bare": [], "bare_without_dedup": [], "trainer": []}
        for _ in range(reps):
            for dedup in (True, False):  # score each distinct trajectory of a batch once, or every slot
                model = fresh().to(device())
                opt = trainers_optimizer([p for p in model.parameters() if p.requires_grad], weight_decay=0.1)
                t = time.perf_counter()
                for k in range(steps):
                    idx = torch.cat([chosen[k * B:(k + 1) * B], rejected[k * B:(k + 1) * B]])
                    if dedup:
                        distinct, slot = torch.unique(idx, return_inverse=True)
                        r = model(embeddings=embeddings[distinct].to(device()), trajectory_index=slot.to(device()))
                    else:
                        r = model(embeddings=embeddings[idx].to(device()))
                    r = r.logits[:, 0]
                    loss = -torch.nn.functional.logsigmoid(r[:B] - r[B:]).mean()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                sync()
                results["bare" if dedup else "bare_without_dedup"].append(B * steps / (time.perf_counter() - t))
            args = RewardTrainingConfig(output_dir=str(tmp / encoder), trajectories="-", preferences="-",
                                     per_device_train_batch_size=B, max_steps=steps, report_to="none",
                                     save_strategy="no", logging_steps=10_000, disable_tqdm=True,
                                     lr_scheduler_type="constant", dataloader_num_workers=0)
            trainer = TrajectoryRewardTrainer(fresh(), args, embeddings, pairs)
            t = time.perf_counter()
            trainer.train()
            results["trainer"].append(B * steps / (time.perf_counter() - t))
        med = statistics.median(results["trainer"])
        out[f"train_{encoder}_encoder"] = {
            "embedding_size": model.config.embedding_size, "batch_comparisons": B,
            "trainer_comparisons_per_s": stats(results["trainer"]), "bare_comparisons_per_s": stats(results["bare"]),
            "trainer_overhead": 1 - med / statistics.median(results["bare"]),
            "bare_without_dedup_comparisons_per_s": stats(results["bare_without_dedup"]),
            "dedup_speedup": statistics.median(results["bare"]) / statistics.median(results["bare_without_dedup"]),
            # useful FLOP/s: the work of scoring every slot (what a loop without dedup has to do), per second
            "gflops_equivalent": med / B * flops_per_step / 1e9,
            "share_of_matmul_peak": med / B * flops_per_step / 1e9 / peak["fp32"]["gflops"]["median"],
            "bare_without_dedup_share_of_matmul_peak": statistics.median(results["bare_without_dedup"]) / B
            * flops_per_step / 1e9 / peak["fp32"]["gflops"]["median"],
        }
    return out


def data_generation(q) -> dict:
    from hf_agents.games.jumppads.generate import generate_pretrain

    tmp = scratch_folder()
    t = time.perf_counter()
    generate_pretrain(tmp / "ds", episodes=q["gen_episodes"], num_envs=2 if q["quick"] else q["num_envs"],
                      progress=False)
    seconds = time.perf_counter() - t
    info = json.loads((tmp / "ds" / "meta" / "info.json").read_text())
    return {"frames": info["num_steps"], "seconds": seconds, "frames_per_s": info["num_steps"] / seconds,
            "note": "includes starting the game processes"}


def compile_speedup(q) -> dict:
    """torch.compile against eager for a training step (cpu preset, 64px); compile time reported apart. Also compiled
    with inductor's layout optimization forced on: by default inductor decides it from the forward graph's
    convolutions, so the backward graph (convolution backwards only) runs without it and hands the depthwise
    convolutions' backward NCHW gradients, which oneDNN computes several times slower than channels-last ones."""
    out, steps = {}, {}
    variants = {"eager": None, "compiled": {}, "compiled, layout optimization forced": {"force_layout_optimization": True}}
    for mode, options in variants.items():
        torch.manual_seed(0)
        torch._dynamo.reset()
        model = AgentModel(AgentConfig.from_preset("cpu")).to(device()).train()
        frames, actions = batch(q["batch"], 32, 64)
        fn = model if options is None else torch.compile(model, options=options or None)

        def step(fn=fn, model=model, frames=frames, actions=actions):
            fn(frames, actions).loss.backward()
            model.zero_grad(set_to_none=True)
            sync()

        t = time.perf_counter()
        try:
            step()  # compiles on the first call
        except Exception as e:  # a missing compiler toolchain, say
            out[mode] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        out[mode] = {"first_call_s": time.perf_counter() - t}
        steps[mode] = step
    seconds = {mode: [] for mode in steps}
    for _ in range(q["reps"]):  # interleaved, so all see the same machine
        for mode, step in steps.items():
            seconds[mode] += timed(step, 1, warmup=0)
    for mode, s in seconds.items():
        out[mode]["frames_per_s"] = stats([q["batch"] * 32 / x for x in s])
    for mode in list(steps)[1:]:
        if "eager" in steps:
            out[f"speedup, {mode}"] = out[mode]["frames_per_s"]["median"] / out["eager"]["frames_per_s"]["median"]
    return out


def labelling_load(q) -> dict:
    """8 labellers on 2 labelling servers sharing one SQLite file, over loopback HTTP; labels lost = acknowledged
    labels missing from the database afterwards."""
    from hf_agents.data import TrajectoryWriter
    from hf_agents.labelling import read_labels
    from tests.labelling_load import Server, label_concurrently, running

    labels = 400 if q["quick"] else 2000
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        with TrajectoryWriter(Path(tmp) / "ds", frame_size=(16, 16)) as writer:
            for _ in range(30):
                writer.add_episode(rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
                                   np.zeros((8, 16), dtype=np.int64))
        db = Path(tmp) / "labels.sqlite"
        with running(Server(Path(tmp) / "ds", db), Server(Path(tmp) / "ds", db)) as servers:
            report = label_concurrently([s.url for s in servers], labellers=8, labels=labels)
        stored = {row["id"] for row in read_labels(db)}
    return {"labellers": 8, "servers": 2, "labels": labels, "acknowledged": report["labels_acknowledged"],
            "lost": len(set(report["ids"]) - stored), "errors": len(report["errors"]),
            "labels_per_s": report["labels_per_s"], "seconds": report["seconds"]}


def main():
    keep_freed_memory()  # as the command line and training runs do
    import hf_agents.training.imitation  # noqa: F401  (the stages whose Trainers the sections run, imported as a
    import hf_agents.training.reward  # noqa: F401  training run imports its stage before it freezes them)

    freeze_loaded_objects()
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one repetition at the smallest sizes: only checks "
                        "that every section runs (under a minute on 2 cores)")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--sections", default="all")
    args = parser.parse_args()
    # quick: one repetition and the fewest steps and sizes that still run every section's code (CI's check that
    # the benchmark runs); full: the numbers BENCHMARKS.md reports
    quick = args.quick
    q = dict(quick=quick, reps=1 if quick else 5, batch=2 if quick else 8, sizes=[64] if quick else [64, 128],
             act_batches=[16] if quick else [1, 16, 64], act_steps=2 if quick else 48,
             act_size=32 if quick else None, act_model=dict(context_length=8) if quick else {},
             trainer_steps=2 if quick else 30, trainer_episodes=1 if quick else 8,
             data_episodes=2 if quick else 16, num_envs=2 if quick else 4, gen_episodes=4 if quick else 32,
             scaling_contexts=(8,) if quick else (8, 16, 32, 64), scaling_sizes=(32,) if quick else (32, 64, 128),
             loading_sizes=(64,) if quick else (64, 128), loading_reps=1 if quick else 2,
             pretrain_batch=2 if quick else None, pretrain_context=8 if quick else None,
             embed_trajectories=1 if quick else 4, rollout_batch=4 if quick else 16, rollout_rounds=1 if quick else 4,
             rollout_batches=(4,) if quick else (16, 64), rollout_sizes=(32,) if quick else (64, 128),
             scaling_episode_steps=10 if quick else 60, reps_rollout=1 if quick else 3)
    want = set(args.sections.split(",")) if args.sections != "all" else None
    report = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"},
              "quick": args.quick}
    t0 = time.time()
    peak = matmul_peak(q)
    report["matmul_peak"] = peak
    sections = [
        ("training", lambda: training_throughput(q, peak)),
        ("encoder_ceiling", lambda: encoder_ceiling(q)),
        ("freed_memory_kept", lambda: freed_memory_kept(q)),
        ("batch_sweep", lambda: batch_sweep(q, peak)),
        ("trainer_vs_bare_loop", lambda: trainer_vs_bare_loop(q)),
        ("acting", lambda: acting(q)),
        ("acting_choices", lambda: acting_choices(q)),
        ("context_and_frame_scaling", lambda: context_scaling(q)),
        ("data_loading", lambda: data_loading(q, {
            int(k.split("/")[1][:-2]): v["frames_per_s"]["median"] for k, v in report.get("training", {}).items()
            if k.startswith("cpu/") and k.endswith("fp32")})),
        ("end_to_end_pretraining", lambda: end_to_end_pretraining(q)),
        ("env", lambda: env_speed(q)),
        ("rollout", lambda: rollout_speed(q)),
        ("rollouts_against_the_game", lambda: rollouts_against_the_game(q)),
        ("sample_factory", lambda: sample_factory_peer(q)),
        ("data_generation", lambda: data_generation(q)),
        ("reward_model", lambda: reward_model_speed(q, peak)),
        ("rollout_worker_calls", lambda: rollout_worker_calls(q)),
        ("align_update", lambda: align_update(q)),
        ("labelling", lambda: labelling_load(q)),
    ]
    if not args.quick:
        sections.append(("torch_compile", lambda: compile_speedup(q)))
    for name, fn in sections:
        if want and name not in want:
            continue
        start = time.time()
        reset_peak_memory()
        with contextlib.redirect_stdout(sys.stderr):  # libraries' prints must not corrupt the JSON on stdout
            report[name] = fn()
        report[name + "_seconds"] = time.time() - start
        # this section's own peak (main process; env worker processes are not included)
        report[name + "_memory"] = section_peak_memory()
        print(f"[bench] {name}: {time.time() - start:.1f}s", file=sys.stderr)
    # clear_refs also resets ru_maxrss, so the whole run's peak is the largest section peak
    report["peak_rss_mb"] = max([peak_rss_mb()] + [v["peak_rss_mb"] for k, v in report.items() if k.endswith("_memory")])
    report["total_seconds"] = time.time() - t0
    print(json.dumps(report, indent=2))
    write_markdown(report, Path(args.out))


def write_markdown(report: dict, out: Path) -> None:
    lines = [f"# Benchmarks\n\nDevice: {report['machine']['device']} ({report['machine']['platform']}, "
             f"torch {report['machine']['torch']}, {report['machine']['threads']} threads). "
             f"Medians of repetitions [min-max]; {'quick mode' if report['quick'] else 'full mode'}. "
             "Regenerate with `python scripts/benchmark.py`.\n"]
    fmt = lambda s: f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"  # noqa: E731
    p = report["matmul_peak"]
    ways = p["fp32"].get("ways", {})
    by_way = f" (torch's BLAS {fmt(ways['torch'])}, oneDNN {fmt(ways['onednn'])})" if "onednn" in ways else ""
    memory = p.get("memory_gb_s")
    ridge = (f" Memory: {fmt(memory)} GB/s (a copy of 256 MB), so a layer doing fewer than "
             f"{p['fp32']['gflops']['median'] / memory['median']:.0f} FLOP per byte it reads and writes is bound by "
             "memory at the fp32 peak.") if memory else ""
    lines.append(f"Matmul peak: fp32 {fmt(p['fp32']['gflops'])} GFLOP/s{by_way}, bf16 {fmt(p['bf16']['gflops'])} "
                 f"GFLOP/s. A share of the peak divides by the faster way, measured beside each step.{ridge}\n")
    if "training" in report:
        lines.append("| training (batch 8, H=32) | params | frames/s | GFLOP/s | matmul peak beside it (GFLOP/s) | "
                     "share of that peak |\n|---|---|---|---|---|---|")
        for k, v in report["training"].items():
            if "skipped" in v:
                lines.append(f"| {k} | | skipped: {v['skipped']} | | | |")
                continue
            beside = fmt(v["matmul_peak_beside_gflops"]) if "matmul_peak_beside_gflops" in v else ""
            lines.append(f"| {k} | {v['params_m']:.1f}M | {fmt(v['frames_per_s'])} | {fmt(v['gflops'])} | {beside} | "
                         f"{v['share_of_matmul_peak']:.0%} |")
    if "encoder_ceiling" in report and "skipped" not in report["encoder_ceiling"]:
        for preset, c in report["encoder_ceiling"].items():
            lines.append(f"\n{preset} preset, batch {c['batch']}, 64 px: one part of {c['part_frames']} frames through the encoder "
                         f"and back, over and over (its data in the caches), {fmt(c['part_ms'])} ms: "
                         f"{c['encoder_share_of_matmul_peak']:.0%} of the matmul peak; the step's {c['parts_per_step']:g} "
                         f"part(s) are {c['encoder_share_of_step']:.0%} of the step ({fmt(c['step_ms'])} ms, "
                         f"{c['step_share_of_matmul_peak']:.0%} of the peak). With the rest of the step taking no time, "
                         f"the step would reach {c['ceiling_share_of_matmul_peak']:.0%} of the peak.")
        lines.append("")
    if "freed_memory_kept" in report and "skipped" not in report["freed_memory_kept"]:
        m = report["freed_memory_kept"]
        own, kept = m["glibc's own"], m["kept"]
        lines.append(f"\nTraining step (cpu preset, batch 16, 64 px) in fresh processes: {fmt(own['step_ms'])} ms with "
                     f"glibc's own malloc ({own['page_faults_per_step']:.0f} page faults a step) against "
                     f"{fmt(kept['step_ms'])} ms with freed memory kept for reuse ({kept['page_faults_per_step']:.0f}), "
                     f"as the command line and training runs set it: {m['kept_speedup']:.2f}x.\n")
    if "trainer_vs_bare_loop" in report:
        t = report["trainer_vs_bare_loop"]
        lines.append(f"\nTrainer {fmt(t['trainer_frames_per_s'])} frames/s vs bare loop {fmt(t['bare_frames_per_s'])}: "
                     f"overhead {t['trainer_overhead']:.1%} (target < 10%). Its steps alone "
                     f"{fmt(t['trainer_steps_frames_per_s'])} frames/s ({t['trainer_overhead_per_step']:.1%}), besides "
                     f"{t['trainer_outside_steps_s']['median']:.2f} s of set-up and wind-down. Side by side, with "
                     f"the libraries' objects in the garbage collection the Trainer starts with (as without "
                     f"`processes.freeze_loaded_objects`): "
                     f"{fmt(t['trainer_every_object_collected_frames_per_s'])} frames/s, overhead "
                     f"{t['trainer_every_object_collected_overhead']:.1%}.\n")
    if "acting" in report:
        a = report["acting"]
        lines.append(f"| acting ({a['model']}, {a.get('threads', '?')} threads) | KV cache ms/step | "
                     f"re-encode ms/step | speed-up (target at batch 16: >= {a['target_speedup_batch_16']}x) | "
                     "KV cache, one thread (the policy's CPU default) |\n|---|---|---|---|---|")
        for k, v in a.items():
            if not k.startswith("batch="):
                continue
            one = fmt(v["kv_cache_one_thread_ms_per_step"]) if "kv_cache_one_thread_ms_per_step" in v else ""
            lines.append(f"| {k} | {fmt(v['kv_cache_ms_per_step'])} | {fmt(v['reencode_ms_per_step'])} | "
                         f"{v['speedup']:.1f}x | {one} |")
    if "acting_choices" in report:
        c = report["acting_choices"]
        g, lora, roll = c["gelu"], c["lora_acting_ms"], c["rollout_of_an_update_s"]
        lines.append("\n| side by side (cpu preset) | before | after | speed-up |\n|---|---|---|---|")
        lines.append(f"| training step ms (batch {c['training_batch']}): tanh GELU -> exact GELU | "
                     f"{fmt(g['gelu_pytorch_tanh']['training_step_ms'])} | {fmt(g['gelu']['training_step_ms'])} | "
                     f"{g['exact_speedup']['training_step']:.2f}x |")
        lines.append(f"| acting ms (batch {c['acting_batch']}, one thread): tanh GELU -> exact GELU | "
                     f"{fmt(g['gelu_pytorch_tanh']['acting_ms'])} | {fmt(g['gelu']['acting_ms'])} | "
                     f"{g['exact_speedup']['acting']:.2f}x |")
        if "dense_layers" in c:
            d = c["dense_layers"]
            for what, key, setting in (("training step ms", "training_step", f"batch {c['training_batch']}"),
                                       ("acting ms", "acting", f"batch {c['acting_batch']}, one thread")):
                lines.append(f"| {what} ({setting}): dense layers through torch's BLAS -> oneDNN | "
                             f"{fmt(d['blas'][key + '_ms'])} | {fmt(d['onednn'][key + '_ms'])} | "
                             f"{d['onednn_speedup'][key]:.2f}x |")
        if "depthwise_weight_grad_training_ms" in c:
            w = c["depthwise_weight_grad_training_ms"]
            lines.append(f"| training step ms (batch {c['training_batch']}): the depthwise convolutions' weight gradient "
                         f"by torch -> as a convolution (`_depthwise_weight_grad`) | {fmt(w['torch'])} | "
                         f"{fmt(w['as a convolution'])} | {w['as a convolution_speedup']:.2f}x |")
        if "conv_weights_acting_ms" in c:
            w = c["conv_weights_acting_ms"]
            lines.append(f"| acting ms (batch {c['acting_batch']}, one thread): convolution weights reordered for oneDNN "
                         f"at every call -> once (`InferenceConv2d`) | {fmt(w['every call'])} | {fmt(w['once'])} | "
                         f"{w['once_speedup']:.2f}x |")
        lines.append(f"| acting ms: through the LoRA adapter -> adapter merged into a copy | {fmt(lora['adapter'])} | "
                     f"{fmt(lora['merged'])} | {lora['merged_speedup']:.2f}x |")
        lines.append(f"| rollout of an update ({c['episodes']} episodes of up to 100 steps, as many games) s: every env acts to the end "
                     f"-> envs leave the batch (`keep`) | {fmt(roll['all to the end'])} | {fmt(roll['keep'])} | "
                     f"{roll['keep_speedup']:.2f}x |")
    if "context_and_frame_scaling" in report:
        lines.append("\n| scaling (cpu preset, fwd+bwd, batch 8) | ms/step | frames/s |\n|---|---|---|")
        for k, v in report["context_and_frame_scaling"].items():
            lines.append(f"| {k} | {fmt(v['ms_per_step'])} | {fmt(v['frames_per_s'])} |")
    if "data_loading" in report:
        lines.append("\n| window loading (real frames, H=32) | frames/s | per core | share of one GPU's need per core "
                     f"({GPU_FRAMES_PER_S / GPU_HOST_CORES:.0f}) | x this CPU's training |\n|---|---|---|---|---|")
        for k, v in report["data_loading"].items():
            ratio = v.get("ratio_to_training")
            ratio = "" if ratio is None else f"{ratio:.1f}x"
            if "per_core_frames_per_s" in v:
                lines.append(f"| {k} | {fmt(v['frames_per_s'])} | {v['per_core_frames_per_s']:.0f} | "
                             f"{v['share_of_gpu_need']:.0%} | {ratio} |")
            else:
                lines.append(f"| {k} (batch augmentation) | {fmt(v['frames_per_s'])} | | | |")
    if "batch_sweep" in report:
        if "skipped" in report["batch_sweep"]:
            lines.append(f"\nBatch sweep of the paper-103m training step: skipped ({report['batch_sweep']['skipped']}).\n")
        else:
            lines.append("\n| paper-103m 128 px bf16 training step | frames/s | share of bf16 matmul peak |\n|---|---|---|")
            for k, v in report["batch_sweep"].items():
                if "skipped" in v:
                    lines.append(f"| {k} | {v['skipped']} | |")
                else:
                    lines.append(f"| {k} | {fmt(v['frames_per_s'])} | {v['share_of_bf16_peak']:.1%} |")
    if "end_to_end_pretraining" in report:
        e = report["end_to_end_pretraining"]
        if "error" in e:
            lines.append(f"\nEnd-to-end pretraining failed: {e['error'][-300:]}\n")
        else:
            lines.append(f"\nEnd-to-end `accelerate launch` pretraining ({e['recipe']}, {e['frames']} px {e['frame_codec']} "
                         f"frames, batch {e['batch']}): {e['end_to_end_frames_per_s']:.0f} frames/s against "
                         f"{e['bare_step_frames_per_s']:.0f} for the bare step of the same model and batch = "
                         f"{e['ratio']:.0%} (target >= {e['target_ratio']:.0%}).\n")
    if "env" in report:
        lines.append("\n| JumpPads env (64px) | steps/s, or ms a reset |\n|---|---|")
        for k, v in report["env"].items():
            lines.append(f"| {k} | {fmt(v)} |")
    if "rollout" in report:
        r = report["rollout"]
        lines.append(f"\n| rollouts, agent at batch {r['batch']} | env steps/s | x real time (target >= {r['target_times']}x) | "
                     "acting | env step (send, game, receive) | engine bookkeeping, resets | acting, ms a call with "
                     "every env of the group |\n|---|---|---|---|---|---|---|")
        for name, speedup in r["speedup_vs_default"].items():
            g = r[name]
            lines.append(f"| {name}{' (default)' if speedup == 1 else ''} | {fmt(g['env_steps_per_s'])} | "
                         f"{g['times_real_time_10hz']:.0f}x ({speedup:.2f}x the default) | "
                         f"{g['share_acting']:.0%} | {g['share_env_step']:.0%} | {g['share_other']:.0%} | "
                         f"{g.get('acting_ms_full_batch', float('nan')):.1f} |")
        hot = report.get("acting", {}).get(f"batch={r['batch']}", {}).get("kv_cache_one_thread_ms_per_step")
        in_loop = f" (the same step in a loop of its own: {hot['median']:.1f} ms, the acting section)" if hot else ""
        lines.append("\nthreads: torch's CPU threads while acting; groups=2: each half of the envs acts while the other "
                     "half's games step (shares are of the acting process's wall time; with two groups, env step is the "
                     "wait for games that had not finished). The last column: acting between game steps, at the "
                     f"run's full batch{in_loop}.\n")
    if "rollouts_against_the_game" in report:
        r = report["rollouts_against_the_game"]
        lines.append(f"\n| {r['episode_steps']}-step episodes, {r['cores']} cores | game alone, the agent's episodes: "
                     f"steps/s | per core | agent acting (cpu preset, one thread): steps/s | per core | share of the game "
                     f"alone (target >= {r['target_share_of_game']:.0%}) | x real time | game standing still: steps/s "
                     "| share of it | busy cores: game alone / rollouts | share of the batched env's game alone |\n"
                     "|---|---|---|---|---|---|---|---|---|---|---|")
        cores = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        for k, v in r.items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {fmt(v['game_alone_steps_per_s'])} | {v['game_alone_per_core']:.0f} | "
                             f"{fmt(v['rollout_steps_per_s'])} | {v['rollout_per_core']:.0f} | {v['share_of_game']:.0%} | "
                             f"{v['times_real_time_10hz']:.0f}x | {fmt(v['game_standing_still_steps_per_s'])} | "
                             f"{v['share_of_game_standing_still']:.0%} | {cores(v.get('busy_cores_game_alone'))} / "
                             f"{cores(v.get('busy_cores_rollouts'))} | {v['share_of_batched_game']:.0%} |")
        rows = [v for v in r.values() if isinstance(v, dict)]
        lines.append("\nThe game alone: the same engine and games with a policy that costs nothing, replaying the "
                     "agent's recorded actions (its episodes: moves, falls, resets; "
                     f"{min(v['replayed_episodes_of_the_same_length'] for v in rows):.0%} of the replayed episodes "
                     "ended at the step the agent's did, in the row with the fewest; the untrained agent's episodes average "
                     f"{np.mean([v['mean_episode_steps'] for v in rows]):.0f} steps), or standing still (every "
                     "episode runs to its step limit). shared / pipe: the batched env (a process per game, the agent "
                     "acting in the benchmark's process), frames through shared memory or pickled through the "
                     "workers' pipes. rollout workers: one process per core, each acting for its share of the envs "
                     "and stepping their games itself (`rollout_workers`); the game alone through them is the same "
                     "games without the batched env's processes. The last column: the rollouts against the game "
                     "alone through the batched env (shared frames) in the same run. Busy cores: the average number "
                     "of the machine's cores at work (all processes) during the game alone replaying and during the "
                     "rollouts.\n")
    if "sample_factory" in report:
        p, rows = report["sample_factory"], report.get("rollouts_against_the_game", {})
        if "steady_frames_per_s" in p:
            lines.append(f"| agent decisions per second per core ({p['cores']} cores) | decisions/s | per core |\n"
                         "|---|---|---|")
            lines.append(f"| Sample Factory 2 APPO, doom_benchmark 128x72, frameskip 4, conv+GRU, acting and learning "
                         f"| {p['decisions_per_s']:.0f} | {p['decisions_per_s_per_core']:.0f} |")
            for engine, how in (("shared", "acting in one process"), ("rollout workers", "on rollout workers")):
                if (ours := rows.get(f"64px, batch 16, {engine}")) is not None:
                    lines.append(f"| hf-agents rollouts, JumpPads 64 px, cpu-preset agent (ConvNeXt + GPT2, KV cache) "
                                 f"at batch 16, {how}, acting only | {ours['rollout_steps_per_s']['median']:.0f} | "
                                 f"{ours['rollout_per_core']:.0f} |")
            lines.append(f"| Sample Factory, published | | {p['published']} |\n")
        else:
            lines.append(f"\nSample Factory: {p.get('skipped') or p.get('error')}\n")
    if "rollout_worker_calls" in report:
        c = report["rollout_worker_calls"]
        lines.append(f"| a call to {c['workers']} rollout workers, {c['games']} games, a new copy of the cpu-preset agent "
                     "each call | policy sent whole (ms) | weights only (ms) | speed-up |\n|---|---|---|---|")
        in_ms = lambda x: f"{1e3 * x['median']:.0f} [{1e3 * x['min']:.0f}-{1e3 * x['max']:.0f}]"  # noqa: E731
        for k, v in c.items():
            if isinstance(v, dict) and "whole policy_s" in v:
                lines.append(f"| {k} | {in_ms(v['whole policy_s'])} | {in_ms(v['weights only_s'])} | "
                             f"{v['speedup']:.2f}x |")
        e = c["evaluation on 8 games"]
        lines.append(f"\nAn evaluation of {e['episodes']} episodes on 8 games (`evaluate_policy`, cpu-preset agent): "
                     f"{fmt(e['one process_s'])} s acting in one process, {fmt(e[str(c['workers']) + ' rollout workers_s'])}"
                     f" s on {c['workers']} rollout workers ({e['speedup']:.2f}x).\n")
    if "align_update" in report:
        a = report["align_update"]
        lines.append(f"| one alignment update ({a['episodes_per_update']} episodes, cpu preset, LoRA, RLOO) | seconds | "
                     "rollouts | reward model | KL reference | re-scoring + backward |\n|---|---|---|---|---|---|")
        for k, v in a.items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {v['seconds']:.2f} | {v['share_rollout']:.0%} | {v['share_reward']:.0%} | "
                             f"{v['share_reference']:.0%} | {v['share_learn']:.0%} |")
        lines.append("")
    if "data_generation" in report:
        g = report["data_generation"]
        lines.append(f"Data generation: {g['frames_per_s']:.0f} frames/s ({g['frames']} frames in {g['seconds']:.0f}s, "
                     f"{g['note']}).\n")
    if "torch_compile" in report:
        c = report["torch_compile"]
        lines.append("| torch.compile, cpu preset training step (fwd + bwd, interleaved) | first call (s) | frames/s | "
                     "against eager |\n|---|---|---|---|")
        for mode, v in c.items():
            if mode.startswith("speedup"):
                continue
            if "error" in v:
                lines.append(f"| {mode} | error: {v['error']} | | |")
                continue
            speedup = c.get(f"speedup, {mode}")
            lines.append(f"| {mode} | {v['first_call_s']:.1f} | {fmt(v['frames_per_s'])} | "
                         f"{'' if speedup is None else f'{speedup:.2f}x'} |")
        lines.append("")
    if "reward_model" in report:
        r = report["reward_model"]
        lines.append("| reward model training (reward Trainer, frozen embeddings, 100 steps) | comparisons/s | "
                     "bare loop | Trainer overhead | bare loop scoring every slot | dedup speed-up | share of matmul "
                     "peak without dedup |\n|---|---|---|---|---|---|---|")
        for k, v in r.items():
            if k.startswith("train_"):
                lines.append(f"| {k} ({v['embedding_size']}-d, batch {v['batch_comparisons']}) | "
                             f"{fmt(v['trainer_comparisons_per_s'])} | {fmt(v['bare_comparisons_per_s'])} | "
                             f"{v['trainer_overhead']:.1%} | {fmt(v['bare_without_dedup_comparisons_per_s'])} | "
                             f"{v['dedup_speedup']:.1f}x | {v['bare_without_dedup_share_of_matmul_peak']:.0%} |")
        e = r["embed_agent_cpu_preset_64px"]["trajectories_per_s"]
        lines.append(f"\nEmbedding 100-step trajectories once with the frozen cpu-preset agent (64px): {fmt(e)} "
                     "trajectories/s.\n")
    if "labelling" in report:
        b = report["labelling"]
        lines.append(f"Labelling app under load: {b['labellers']} labellers on {b['servers']} servers (one SQLite file, "
                     f"fsync per label) submitted {b['acknowledged']} of {b['labels']} labels at "
                     f"{b['labels_per_s']:.0f} labels/s; {b['lost']} lost.\n")
    lines.append("| section | seconds | peak RSS of the main process (MB) |\n|---|---|---|")
    for key, value in report.items():
        if key.endswith("_memory"):
            name = key[: -len("_memory")]
            gpu = f", GPU {value['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in value else ""
            lines.append(f"| {name} | {report[name + '_seconds']:.0f} | {value['peak_rss_mb']:.0f}{gpu} |")
    lines.append(f"\nPeak RSS of the whole run: {report['peak_rss_mb']:.0f} MB.\n")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
