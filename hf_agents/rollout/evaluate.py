"""The paper's evaluation (section 3.2): default variant, random spawn, empty context, run to a pad or
the 100-step timeout; the distribution over left / middle / right / none, with figures and videos."""

from __future__ import annotations

import contextlib
import functools
import json
import math
from pathlib import Path

import numpy as np
import torch

from hf_agents.data.writer import TrajectoryWriter
from hf_agents.envs.jumppads import make_jumppads
from hf_agents.envs.jumppads_map import DEFAULT_VARIANT, NUM_SPAWNS
from hf_agents.envs.vector import BatchedEnv
from hf_agents.rollout.engine import rollout
from hf_agents.rollout.media import save_video
from hf_agents.rollout.plots import OUTCOMES, plot_distribution, plot_heatmap, plot_trajectories

# The paper's numbers (Figures 3-5), for the comparison table.
PAPER = {"base": {"none": 0.44}, "sft": {"none": 0.11}, "scratch": {"none": 0.20}}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial share."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(episodes, dropped: int = 0) -> dict:
    n = len(episodes)
    counts = {o: sum(e.outcome == o for e in episodes) for o in OUTCOMES}
    per_spawn = {}
    for s in range(NUM_SPAWNS):
        eps = [e for e in episodes if e.spawn == s]
        per_spawn[str(s)] = {"episodes": len(eps), **{o: sum(e.outcome == o for e in eps) for o in OUTCOMES}}
    return {
        "episodes": n,
        "dropped": dropped,
        "counts": counts,
        "distribution": {o: counts[o] / max(n, 1) for o in OUTCOMES},
        "ci95": {o: wilson(counts[o], n) for o in OUTCOMES},
        "failure_rate": counts["none"] / max(n, 1),
        "fell": sum(e.fell for e in episodes),
        "mean_length": float(np.mean([e.length for e in episodes])) if episodes else 0.0,
        "per_spawn": per_spawn,
    }


def evaluate_policy(policy, out_dir, episodes=100, num_envs=8, frame_size=64, seed=12345, videos=3,
                    label="agent", progress=True, max_steps=100, trajectories=None, overwrite=False) -> dict:
    """Run the evaluation for any policy of the rollout interface; write eval.json, figures and videos.

    trajectories: also write every episode (frames, actions, log-probs, state, outcome) as a trajectory
    dataset there: the on-policy rollouts that preferences, the reward model and alignment start from.
    Under `accelerate launch` / torchrun, each rank rolls out its share (episodes rank, rank + world, ...)
    and rank 0 gathers the episodes and writes the results (and rank k writes `trajectories`/rank-k).
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: gloo ranks when there is no GPU
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_fn = functools.partial(make_jumppads, frame_size=frame_size, variant=DEFAULT_VARIANT, max_steps=max_steps)
    share = list(range(state.process_index, episodes, state.num_processes))
    with contextlib.ExitStack() as stack:
        venv = stack.enter_context(BatchedEnv(env_fn, num_envs))
        writer = None
        if trajectories is not None:
            path = Path(trajectories) / f"rank-{state.process_index}" if state.num_processes > 1 else trajectories
            writer = stack.enter_context(TrajectoryWriter(
                path, frame_size=frame_size, overwrite=overwrite,
                description=f"On-policy rollouts of {label} in the paper's evaluation setting (variant "
                            f"'{DEFAULT_VARIANT}', random spawn, up to {max_steps} steps)."))
        result = rollout(venv, policy, len(share), seed=seed, keep_frames=videos if state.is_main_process else 0,
                         progress=progress and state.is_main_process, desc=f"evaluate {label}", episode_ids=share,
                         writer=writer, source=f"rollout:{label}")
    if state.num_processes > 1:
        local = [(e if e.frames is None else None) for e in result.episodes]
        gathered = gather_object([(local, result.dropped, result.errors, result.env_steps, result.seconds)])
        if not state.is_main_process:
            return {}
        with_frames = [e for e in result.episodes if e.frames is not None]
        result.episodes = with_frames + [e for eps, *_ in gathered for e in eps if e is not None]
        result.dropped = sum(g[1] for g in gathered)
        result.errors = [err for g in gathered for err in g[2]]
        result.env_steps = sum(g[3] for g in gathered)
        result.seconds = max(g[4] for g in gathered)
    summary = summarize(result.episodes, result.dropped)
    summary["ranks"] = state.num_processes
    summary.update(label=label, env_steps_per_second=result.steps_per_second, errors=result.errors[:5])
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    plot_distribution({label: summary}, out / "jumppad_distribution.png", title=f"{label}: jumppad reached")
    plot_heatmap(result.episodes, out / "heatmap.png", title=f"{label}: trajectory heatmap")
    plot_trajectories(result.episodes, out / "trajectories.png", title=f"{label}: successful trajectories")
    for i, ep in enumerate(e for e in result.episodes if e.frames is not None):
        save_video(ep.frames, out / "videos" / f"episode_{i}_{ep.outcome}.gif")
    return summary


def evaluate_model(model_path, out_dir, episodes=100, num_envs=8, temperature=1.0, seed=12345, videos=3,
                   label=None, progress=True, trajectories=None, overwrite=False) -> dict:
    from hf_agents.models import AgentModel, AgentPolicy

    model = AgentModel.from_pretrained(model_path).eval()
    policy = AgentPolicy(model, num_envs, temperature=temperature, seed=seed)
    return evaluate_policy(policy, out_dir, episodes=episodes, num_envs=num_envs, frame_size=model.config.image_size,
                           seed=seed, videos=videos, label=label or Path(model_path).name, progress=progress,
                           trajectories=trajectories, overwrite=overwrite)


def compare(eval_dirs, out, labels=None) -> Path:
    """One figure of several evaluations (e.g. base vs SFT vs scratch)."""
    runs = {}
    for i, d in enumerate(eval_dirs):
        summary = json.loads((Path(d) / "eval.json").read_text())
        runs[labels[i] if labels else summary.get("label", Path(d).name)] = summary
    return plot_distribution(runs, out, title="Jumppad reached: comparison")
