"""Stage 5a (paper C.4, Appendix H): preference fine-tuning, repeatable for several iterations.

Each iteration rolls out `rollout_episodes` with the current agent, scores every whole trajectory (reward
model or oracle), keeps the top `top_fraction` and behaviour-clones on them (the imitation stage's trainer,
head only by default). Iteration k writes its rollouts and model under output_dir/iteration-k; the last
model is also saved in output_dir.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import set_seed

from hf_agents.data import TrajectoryWriter, load_trajectories
from hf_agents.files import atomic_write_json, write_train_results
from hf_agents.models import AgentModel, AgentPolicy, load_checked
from hf_agents.models.adapters import is_adapter, merged_for_acting
from hf_agents.processes import is_main_process, launch_state
from hf_agents.training.augment import AugmentedWindows
from hf_agents.training.common import PolicyArguments, RolloutArguments, check_output_dir
from hf_agents.training.imitation import ImitationCollator, ImitationConfig, ImitationTrainer
from hf_agents.training.rewards import RewardFunction, RewardSourceArguments


@dataclass
class PreferenceFTConfig(PolicyArguments, RolloutArguments, RewardSourceArguments, ImitationConfig):
    r"""Preference fine-tuning. Paper (C.4): top 20 % of the reward model's trajectories, lr 1e-5, 1,000 updates
    of 256 windows, head only, one iteration."""

    iterations: int = field(default=1, metadata={"help": "generate -> score -> filter -> fine-tune rounds (paper: 1)."})
    rollout_episodes: int = field(default=200, metadata={"help": "Episodes rolled out per iteration (paper: the "
                                                         "reward model's 2,400 trajectories)."})
    top_fraction: float = field(default=0.2, metadata={"help": "Share of the best-scored trajectories kept (paper: 0.2)."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate (paper: 1e-5)."})
    augment: bool = field(default=False, metadata={"help": "Image augmentation (off: the agent's own frames)."})
    eval_fraction: float = field(default=0.0, metadata={"help": "No held-out split: every kept trajectory trains."})

    def __post_init__(self):
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        super().__post_init__()


def rollout_and_score(model: AgentModel, config: PreferenceFTConfig, reward_fn, out: Path, iteration: int,
                      checkpoint: str):
    """Roll out the agent saved at `checkpoint` (in memory as `model`), write the rollouts as a dataset, and
    return it with each episode's score."""
    from hf_agents.rollout.engine import rollout

    size, game = model.config.image_size, config.game(model.config, config.agent)
    env_fn = game.env_fn(max_steps=config.max_episode_steps)
    policy = AgentPolicy(model.eval(), config.num_envs, temperature=config.temperature,
                         seed=config.seed * 1000 + iteration)
    policy.checkpoint = str(checkpoint)
    with config.envs(env_fn, config.num_envs) as venv, TrajectoryWriter(
            out, frame_size=size, overwrite=True, metadata={"policy": policy.metadata, "game": game.to_dict()},
            description=f"Preference fine-tuning rollouts, iteration {iteration}.") as writer:
        result = rollout(venv, policy, config.rollout_episodes, seed=config.seed * 100_000 + iteration * 10_000,
                         writer=writer, source=f"preference-ft:{iteration}", desc=f"rollouts (iteration {iteration})")
    scores = {e.seed: float(s) for e, s in zip(result.episodes, reward_fn(result.episodes))}
    data = load_trajectories(out)
    return data, np.asarray([scores[m["seed"]] for m in data.episodes], np.float32)


def main_rank_rollouts(model: AgentModel, config: PreferenceFTConfig, reward_fn, out: Path, iteration: int,
                       checkpoint: str):
    """`rollout_and_score` on rank 0 of a launched run while the others wait; every rank then reads the same
    rollouts and scores (written beside them), so the ranks fine-tune on the same selection."""
    state = launch_state()
    scores_file = out.parent / "rollout_scores.json"
    if state.num_processes == 1:
        return rollout_and_score(model, config, reward_fn, out, iteration, checkpoint)
    if state.is_main_process:
        data, scores = rollout_and_score(model, config, reward_fn, out, iteration, checkpoint)
        atomic_write_json(scores_file, [float(x) for x in scores])
    state.wait_for_everyone()
    return load_trajectories(out), np.asarray(json.loads(scores_file.read_text()), np.float32)


def _wait() -> None:
    """Every rank of a launched run reaches this point before any goes on."""
    launch_state().wait_for_everyone()


def fine_tune(model, config: PreferenceFTConfig, selected, out: Path):
    """Behaviour cloning on the kept trajectories with the imitation stage's trainer."""
    windows = selected.windows(config.context_length, config.window_stride or max(config.context_length // 2, 1))
    if config.augment:
        windows = AugmentedWindows(windows, seed=config.seed)
    args = dataclasses.replace(config, output_dir=str(out), eval_strategy="no")
    trainer = ImitationTrainer(model=model, args=args, train_dataset=windows,
                               data_collator=ImitationCollator(config.filter_noops))
    trainer.train()
    return trainer


def completed_iterations(out: Path) -> int:
    """Iterations recorded in history.json, which is written once an iteration's model is saved whole, and whose
    model is still there: resume=true goes on after the last of them (a run killed while saving does it again)."""
    path, done = out / "history.json", 0
    for entry in json.loads(path.read_text()) if path.exists() else []:
        model = out / f"iteration-{done + 1}" / "model"
        if entry["iteration"] != done + 1 or not ((model / "config.json").exists() or is_adapter(model)):
            break
        done += 1
    return done


def run(config: PreferenceFTConfig) -> dict:
    out = Path(config.output_dir)
    start = completed_iterations(out) if config.resume else 0
    if not config.resume:
        check_output_dir(config)
        if config.overwrite:  # a previous run's iterations and history: resume must not find them
            for old in out.glob("iteration-*"):
                shutil.rmtree(old, ignore_errors=True)
            for name in ("history.json", "train_results.json"):
                (out / name).unlink(missing_ok=True)
    set_seed(config.seed)
    if config.trainable == "lora" and start:
        raise ValueError(f"{out}: resume=true continues head or full fine-tuning only; rerun with overwrite=true")
    base = load_checked(AgentModel, out / f"iteration-{start}" / "model" if start else config.agent)
    base = base.to(config.device)  # the Trainer's device (a GPU when there is one): the rollouts act there too
    game = config.game(base.config, config.agent)
    reward_fn = RewardFunction(config.reward_source, config.reward_model, config.target, game.outcomes,
                               config.max_episode_steps, base.config.image_size, device=config.device, game=game.id)
    policy = config.make_policy(base)
    history = json.loads((out / "history.json").read_text())[:start] if start else []
    for it in range(start + 1, config.iterations + 1):
        it_dir = out / f"iteration-{it}"
        source = out / f"iteration-{it - 1}" / "model" if it > 1 else config.agent
        data, scores = main_rank_rollouts(merged_for_acting(policy.model), config, reward_fn, it_dir / "rollouts", it,
                                          source)
        keep = max(1, int(round(config.top_fraction * len(scores))))
        cutoff = np.sort(scores)[::-1][keep - 1]
        top = {m["episode_id"] for m, s in sorted(zip(data.episodes, scores), key=lambda p: -p[1])[:keep]}
        selected = data.filter(fn=lambda m, top=top: m["episode_id"] in top)
        outcomes = [m["outcome"] for m in selected.episodes]
        fine_tune(policy.model, config, selected, it_dir / "model")
        if is_main_process():
            policy.save(it_dir / "model")
        _wait()
        history.append({"iteration": it, "rollouts": len(scores), "kept": keep, "score_cutoff": float(cutoff),
                        "score_mean": float(scores.mean()), "kept_outcomes": {o: outcomes.count(o) for o in set(outcomes)},
                        "all_outcomes": {o: [m["outcome"] for m in data.episodes].count(o)
                                         for o in {m["outcome"] for m in data.episodes}}})
        if is_main_process():
            atomic_write_json(out / "history.json", history)
    if not is_main_process():
        return {"iterations": config.iterations, "history": history}
    policy.save(out)  # the last iteration's agent (or adapter)
    metrics = {"iterations": config.iterations, "history": history}
    write_train_results(out, metrics, config=config.to_dict())
    return metrics


CONFIG = PreferenceFTConfig
REQUIRED = ("agent", "output_dir")
