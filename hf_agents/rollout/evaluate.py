"""Evaluation of a policy on any game behind the gamepad contract (for JumpPads, the paper's section 3.2:
default variant, random spawn, empty context, run to a pad or the 100-step timeout).

The summary covers the outcomes the game reports (`info["outcome"]`, listed in `env.metadata["outcomes"]`)
with 95% intervals, the mean return and length, and per-spawn counts when spawns are reported; the game's
own figures come from `env.metadata["figures"]` (or the `figures` argument); plus videos.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
from pathlib import Path

import numpy as np

from hf_agents.cards import write_model_card
from hf_agents.data.schema import NO_OUTCOME
from hf_agents.data.writer import TrajectoryWriter
from hf_agents.envs.spec import GameSpec, resolve_game, saved_game
from hf_agents.files import atomic_write_json, output_lock
from hf_agents.processes import launch_state
from hf_agents.rollout.engine import RolloutResult, rollout
from hf_agents.rollout.media import save_video
from hf_agents.rollout.plots import plot_distribution
from hf_agents.rollout.workers import check_rollout_workers, rollout_envs


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial share."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def outcome_names(episodes, declared=()) -> list[str]:
    """The game's declared outcomes in order, then any other reported ones, then "none"."""
    other = sorted({e.outcome for e in episodes} - set(declared) - {NO_OUTCOME})
    return [*declared, *other, NO_OUTCOME]


def _counts(episodes, names) -> dict:
    return {o: sum(e.outcome == o for e in episodes) for o in names}


def summarize(episodes, dropped: int = 0, outcomes=()) -> dict:
    """Outcome counts, shares and 95% intervals, mean return and length, per-spawn counts; the failure rate (share
    with no outcome) only for games that have outcomes."""
    n, names = len(episodes), outcome_names(episodes, outcomes)
    counts = _counts(episodes, names)
    per_spawn = {}
    for s in sorted({e.spawn for e in episodes if e.spawn >= 0}):
        eps = [e for e in episodes if e.spawn == s]
        per_spawn[str(s)] = {"episodes": len(eps), **_counts(eps, names)}
    return {
        "episodes": n,
        "dropped": dropped,
        "outcomes": names,
        "counts": counts,
        "distribution": {o: counts[o] / max(n, 1) for o in names},
        "ci95": {o: wilson(counts[o], n) for o in names},
        # a game without outcomes is judged by its return: no episode "fails" there
        "failure_rate": counts[NO_OUTCOME] / max(n, 1) if len(names) > 1 else None,
        "mean_return": float(np.mean([e.episode_return for e in episodes])) if episodes else 0.0,
        "mean_length": float(np.mean([e.length for e in episodes])) if episodes else 0.0,
        "per_spawn": per_spawn,
    }


def evaluate_policy(policy, out_dir, env_fn, episodes=100, num_envs=8, seed=12345, videos=3, label="agent",
                    progress=True, trajectories=None, overwrite=False, outcomes=None, figures=None,
                    game: GameSpec | None = None, rollout_workers: int = 0) -> dict:
    """Run the evaluation for any policy of the rollout interface on `env_fn()` (a picklable env factory);
    write eval.json, figures and videos.

    trajectories: also write every episode (frames, actions, log-probs, rewards, state, outcome) as a trajectory
    dataset there: the on-policy rollouts that preferences, the reward model and alignment start from.
    outcomes / figures: override the game's `metadata["outcomes"]` / `metadata["figures"]` (False: none).
    game: the game `env_fn` makes, saved in eval.json and with the trajectories (their game for later commands).
    rollout_workers: acting processes, each playing its share of the envs (`RolloutWorkers`; CPU only, the same
    episodes); 0: the agent acts in this process.
    Under `accelerate launch` / torchrun, each rank rolls out its share (episodes rank, rank + world, ...)
    and rank 0 gathers the episodes and writes the results (and rank k writes `trajectories`/rank-k).
    """
    state = launch_state()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    share = list(range(state.process_index, episodes, state.num_processes))
    with contextlib.ExitStack() as stack:
        venv = stack.enter_context(rollout_envs(env_fn, num_envs, rollout_workers))
        writer = None
        if trajectories is not None:
            path = Path(trajectories) / f"rank-{state.process_index}" if state.num_processes > 1 else trajectories
            writer = stack.enter_context(TrajectoryWriter(
                path, frame_size=venv.observation_space.shape[:2], overwrite=overwrite,
                metadata={"game": game.to_dict()} if game else None,
                description=f"On-policy rollouts of {label}: evaluation episodes (reset seeds from {seed})."))
        result = rollout(venv, policy, len(share), seed=seed, keep_frames=videos if state.is_main_process else 0,
                         progress=progress and state.is_main_process, desc=f"evaluate {label}", episode_ids=share,
                         writer=writer, source=f"rollout:{label}")
        game, spec = venv.metadata, game
    if state.num_processes > 1:
        result = _gather(result, state)
        if result is None:
            return {}
    summary = summarize(result.episodes, result.dropped, game.get("outcomes", ()) if outcomes is None else outcomes)
    summary.update(ranks=state.num_processes, label=label, env_steps_per_second=result.steps_per_second,
                   errors=result.errors[:5], game=game.get("card", {}),
                   **({"game_spec": spec.to_dict()} if spec else {}))
    _write_results(summary, result, out, label, game, game.get("figures") if figures is None else figures)
    return summary


def _gather(result: RolloutResult, state) -> RolloutResult | None:
    """Rank 0: every rank's episodes (frames only of its own video episodes); other ranks: None."""
    from accelerate.utils import gather_object

    local = [(e if e.frames is None else None) for e in result.episodes]
    gathered = gather_object([(local, result.dropped, result.errors, result.env_steps, result.seconds)])
    if not state.is_main_process:
        return None
    with_frames = [e for e in result.episodes if e.frames is not None]
    return RolloutResult(episodes=with_frames + [e for eps, *_ in gathered for e in eps if e is not None],
                         dropped=sum(g[1] for g in gathered), errors=[err for g in gathered for err in g[2]],
                         env_steps=sum(g[3] for g in gathered), seconds=max(g[4] for g in gathered))


def _write_results(summary: dict, result: RolloutResult, out: Path, label: str, game: dict, figures) -> None:
    """The game's figures (which may add summary entries), eval.json, the outcome chart and videos."""
    if isinstance(figures, str):
        module, name = figures.split(":")
        figures = getattr(importlib.import_module(module), name)
    if figures:
        summary.update(figures(result.episodes, out, label) or {})
    atomic_write_json(out / "eval.json", summary)
    if len(summary["outcomes"]) > 1:
        plot_distribution({label: summary}, out / "outcome_distribution.png", title=f"{label}: outcome reached",
                          colours=game.get("outcome_colours"))
    for i, ep in enumerate(e for e in result.episodes if e.frames is not None):
        save_video(ep.frames, out / "videos" / f"episode_{i}_{ep.outcome}.gif")


def check_sampling(num_envs: int, temperature: float, rollout_workers: int = 0) -> None:
    """Refuse no games, a temperature that is not a positive number and rollout workers that cannot run (a negative
    number, or any with a GPU), before any model is loaded."""
    if num_envs < 1:
        raise ValueError(f"--num-envs {num_envs}: must be >= 1 (parallel game processes)")
    check_rollout_workers(rollout_workers, "--rollout-workers")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"--temperature {temperature}: must be a finite number > 0 (1.0 samples the agent as trained)")


def evaluate_model(model_path, out_dir, episodes=100, num_envs=8, temperature=1.0, seed=12345, videos=3,
                   label=None, progress=True, trajectories=None, overwrite=False, env=None, max_steps=None,
                   adapters: dict[str, str] | None = None, env_kwargs: dict | None = None,
                   image_key: str | None = None, rollout_workers: int = 0) -> dict:
    """Evaluate a saved agent on its own game (saved with it), or on `env`, a Gymnasium id such as
    "ale_py:ALE/Pong-v5" behind `GamepadEnv` (with `env_kwargs`); frames at the model's size. `max_steps`:
    episode timeout (None: the game's own; JumpPads: the paper's 100 steps).

    `model_path` may be a LoRA adapter saved by alignment (its base agent is loaded beneath it). `adapters`
    (name -> directory) load onto the one base at once; each is evaluated in turn into out_dir/<name>, and the
    summaries come back by name. `rollout_workers`: see `evaluate_policy`.
    """
    if episodes < 1:
        raise ValueError(f"--episodes {episodes}: an evaluation needs at least 1 episode")
    check_sampling(num_envs, temperature, rollout_workers)
    from hf_agents.models import AgentPolicy
    from hf_agents.models.adapters import agent_of, load_for_acting, merged_for_acting

    folder = Path(model_path)  # the saved model whose card shows this evaluation (when out_dir lies inside it)
    model, model_path, adapters = load_for_acting(model_path, adapters)
    model = model.to(launch_state().device)  # this rank's GPU, when there is one
    agent = agent_of(model)
    game = resolve_game(env, saved_game(agent.config.game, str(model_path)), f"the agent at {model_path}",
                        env_kwargs, image_key).at(agent.config.image_size)
    env_fn = game.env_fn(max_steps=max_steps)

    def run(out, name):
        policy = AgentPolicy(merged_for_acting(model, name), num_envs, temperature=temperature, seed=seed)
        policy.checkpoint = str(adapters[name]) if name else str(model_path)
        main = launch_state().is_main_process  # a second evaluation into `out` fails at once
        with output_lock(out) if main else contextlib.nullcontext():
            return evaluate_policy(policy, out, env_fn, episodes=episodes, num_envs=num_envs, seed=seed,
                                   videos=videos, label=label or name or Path(model_path).name, progress=progress,
                                   trajectories=trajectories if not name or len(adapters) == 1 else None,
                                   overwrite=overwrite, game=game, rollout_workers=rollout_workers)

    if not adapters:
        summary = run(out_dir, None)
    else:
        summaries = {}
        for name in adapters:
            summaries[name] = run(Path(out_dir) / name if len(adapters) > 1 else out_dir, name)
        summary = summaries[name] if len(adapters) == 1 else summaries
    if summary and folder.resolve() in Path(out_dir).resolve().parents:
        write_model_card(folder)
    return summary


def compare(eval_dirs, out, labels=None) -> Path:
    """One figure of several evaluations (e.g. base vs SFT vs scratch)."""
    runs = {}
    for i, d in enumerate(eval_dirs):
        summary = json.loads((Path(d) / "eval.json").read_text())
        runs[labels[i] if labels else summary.get("label", Path(d).name)] = summary
    return plot_distribution(runs, out, title="Outcome reached: comparison")
