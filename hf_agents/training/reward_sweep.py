"""The reward-model sweep (paper Figures 7 and 14): held-out preference accuracy against the number of training
comparisons, for both encoders, several seeds and each target outcome.

Trajectories are split once per seed into training and held-out halves; the synthetic oracle labels pairs on
each side. Each run trains on N training comparisons, sampled from all training pairs or, as the paper does,
from the pairs among a random subset of the training trajectories; a fixed number of optimizer steps, so small
sets are not also under-trained. Each run is scored on every held-out comparison (capped). Encoders are
frozen, so every trajectory is embedded once per encoder (and seed, for the random projection).
Writes sweep.json and sweep.png.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm
from transformers import set_seed

from hf_agents.data import load_trajectories
from hf_agents.data.preferences import synthetic_preferences, synthetic_rank
from hf_agents.data.schema import NO_OUTCOME
from hf_agents.files import atomic_write_json
from hf_agents.training.reward import (
    RewardTrainingConfig,
    TrajectoryRewardTrainer,
    build_reward_model,
    fit_standardization,
)

SIZES = (10, 30, 100, 300, 1000, 0)  # 0: every training comparison


@dataclass
class RewardSweepConfig:
    """What the sweep trains and where it writes; paper values beside each field."""

    trajectories: str = field(metadata={"help": "On-policy rollouts with outcomes, e.g. from `hf-agents evaluate "
                                        "--trajectories` (paper: 1,000 train + 1,400 held-out trajectories)."})
    output_dir: str = field(metadata={"help": "Where sweep.json and sweep.png go.", "aliases": ["--out"]})
    agent: str | None = field(default=None, metadata={"help": "Agent whose frozen transformer is the 'agent' encoder."})
    targets: list[str] = field(default_factory=list, metadata={"help": "Target outcomes, one oracle each; default: "
                               "every outcome the trajectories reach (paper: left and right)."})
    sizes: list[int] = field(default_factory=lambda: list(SIZES), metadata={"help": "Training comparisons per run "
                             "(0: all)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds: split, sampled "
                             "comparisons, init."})
    encoders: list[str] = field(default_factory=lambda: ["agent", "random"], metadata={"help": "Encoders compared: "
                                "agent, random, or agent:LAYER for another representation of the agent (frames, "
                                "block-K)."})
    eval_fraction: float = field(default=0.5, metadata={"help": "Share of trajectories held out (paper: 1,400 of "
                                                        "2,400)."})
    max_eval_comparisons: int = field(default=20000, metadata={"help": "Held-out comparisons scored per run."})
    steps: int = field(default=300, metadata={"help": "Optimizer steps per run (paper: 200 epochs)."})
    batch_size: int = field(default=256, metadata={"help": "Comparisons per step (paper: 2048)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Paper: 1e-4."})
    l2_penalty: float = field(default=0.1, metadata={"help": "Paper: 0.1."})
    padding_side: str = field(default="left", metadata={"help": "Padding after each trajectory ('right') or in "
                              "front of it ('left'); paper: unstated."})
    sampling: str = field(default="pairs", metadata={"help": "How N comparisons are drawn: 'pairs' "
                          "samples N of all training pairs (over up to 2N trajectories); 'trajectories' "
                          "samples N of the pairs among the fewest random training trajectories that give N "
                          "(paper 3.4: subsets of the training trajectories, ~100 comparisons from ~15)."})

    def __post_init__(self):
        if self.sampling not in ("pairs", "trajectories"):
            raise ValueError(f"sampling={self.sampling!r}: choose 'pairs' or 'trajectories'")


def run_sweep(config: RewardSweepConfig, progress: bool = True) -> dict:
    data = load_trajectories(config.trajectories)
    episodes = data.episodes
    if any(e.startswith("agent") for e in config.encoders) and not config.agent:
        raise ValueError("the 'agent' encoder needs `agent`: the (SFT) agent whose rollouts these are")
    reached = sorted({e["outcome"] for e in episodes} - {NO_OUTCOME})
    targets = list(config.targets) or reached
    unknown = [t for t in targets if t not in reached]
    if unknown or not targets:
        raise ValueError(f"{config.trajectories}: no trajectory reaches {unknown or 'any outcome'}; the oracle needs "
                         f"rollouts that do (reached: {reached})")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {pad: {enc: {} for enc in config.encoders} for pad in targets}
    runs = [(enc, seed) for enc in config.encoders for seed in config.seeds]
    bar = tqdm(total=len(runs) * len(targets) * len(config.sizes), desc="reward sweep", disable=not progress)
    cached = {}
    for encoder, seed in runs:
        key = encoder if encoder.startswith("agent") else (encoder, seed)  # a random projection depends on the seed
        if key not in cached:
            set_seed(seed)
            model = build_reward_model(_stage_config(config, encoder, seed, out), data.frame_size[0])
            cached[key] = model.embed_dataset(data, progress=False)
        train_part, eval_part = data.split(config.eval_fraction, seed=seed)
        position = data.positions()
        train_index = [position[m["episode_id"]] for m in train_part.episodes]
        for pad in targets:
            train_pairs = synthetic_preferences(train_part.episodes, pad)
            eval_pairs = synthetic_preferences(eval_part.episodes, pad, config.max_eval_comparisons, seed=seed)
            for size in config.sizes:
                pairs = train_pairs if not size or size >= len(train_pairs) else _sample(
                    config.sampling, train_part.episodes, pad, size, seed)
                accuracy = _train_and_score(config, encoder, seed, out, data, cached[key], pairs, eval_pairs,
                                            position, train_index)
                label = "all" if not size else str(size)
                results[pad][encoder].setdefault(label, {"comparisons": len(pairs), "accuracy": [],
                                                          "trajectories": []})
                results[pad][encoder][label]["trajectories"].append(len({i for pair in pairs for i in pair}))
                results[pad][encoder][label]["accuracy"].append(accuracy)
                bar.update(1)
    bar.close()
    summary = {"config": {**asdict(config), "targets": targets}, "held_out_trajectories": len(eval_part),
               "results": results}
    for pad in results:
        for encoder in results[pad]:
            for row in results[pad][encoder].values():
                row["mean"], row["std"] = float(np.mean(row["accuracy"])), float(np.std(row["accuracy"]))
    atomic_write_json(out / "sweep.json", summary)
    plot_sweep(summary, out / "sweep.png")
    return summary


def _sample(sampling: str, episodes: list[dict], pad: str, size: int, seed: int) -> list[tuple[int, int]]:
    """`size` training comparisons: sampled from every pair, or from the pairs among the first trajectories of a
    seeded random order, as few as give `size` (then `size` of those: runs of a size have the same count)."""
    if sampling == "pairs":
        return synthetic_preferences(episodes, pad, size, seed=seed)
    subset, ranks, strict = [], [], 0  # strict pairs among the subset, counted as it grows
    for i in np.random.default_rng(seed).permutation(len(episodes)):
        rank = synthetic_rank(episodes[i], pad)
        strict += sum(rank != r for r in ranks)
        subset.append(episodes[i])
        ranks.append(rank)
        if strict >= size:
            break
    return synthetic_preferences(subset, pad, size, seed=seed)


def _stage_config(config: RewardSweepConfig, encoder: str, seed: int, out: Path) -> RewardTrainingConfig:
    """`encoder` is 'random', 'agent' or 'agent:LAYER' (an `agent_layer` of the reward stage)."""
    encoder, _, layer = encoder.partition(":")
    return RewardTrainingConfig(output_dir=str(out / "run"), trajectories=config.trajectories, preferences="-",
                                encoder=encoder, agent_layer=layer or "last", agent=config.agent, seed=seed,
                                max_steps=config.steps,
                                per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                                l2_penalty=config.l2_penalty, padding_side=config.padding_side,
                                lr_scheduler_type="constant", eval_strategy="no",
                                save_strategy="no", report_to=[], logging_steps=10**9, disable_tqdm=True,
                                overwrite=True)


def _train_and_score(config, encoder, seed, out, data, embeddings, pairs, eval_pairs, position, train_index) -> float:
    stage = _stage_config(config, encoder, seed, out)
    set_seed(seed)
    model = build_reward_model(stage, data.frame_size[0])
    fit_standardization(stage, model, embeddings, data, train_index)
    rows = {"chosen_ids": [[position[c]] for c, _ in pairs], "rejected_ids": [[position[r]] for _, r in pairs]}
    trainer = TrajectoryRewardTrainer(model, stage, embeddings, datasets.Dataset.from_dict(rows))
    trainer.train()
    scored = sorted({position[i] for pair in eval_pairs for i in pair})
    rewards = dict(zip(scored, trainer.rewards(scored).tolist()))
    wins = [rewards[position[c]] > rewards[position[r]] for c, r in eval_pairs]
    return float(np.mean(wins)) if wins else float("nan")


def plot_sweep(summary: dict, path) -> Path:
    """Held-out accuracy against training comparisons (log scale), mean and spread over seeds, one panel per pad."""
    from hf_agents.rollout.plots import plt, save_figure

    pads = list(summary["results"])
    fig, axes = plt.subplots(1, len(pads), figsize=(4.2 * len(pads), 3.4), squeeze=False)
    for ax, pad in zip(axes[0], pads):
        for encoder, rows in summary["results"][pad].items():
            xs = np.asarray([r["comparisons"] for r in rows.values()], float)
            order = np.argsort(xs)
            mean = np.asarray([r["mean"] for r in rows.values()])[order]
            std = np.asarray([r["std"] for r in rows.values()])[order]
            ax.plot(xs[order], mean, marker="o", label=f"{encoder} encoder")
            ax.fill_between(xs[order], mean - std, mean + std, alpha=0.2)
        ax.set_xscale("log")
        ax.set_ylim(0.4, 1.0)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_xlabel("training comparisons")
        ax.set_ylabel("held-out preference accuracy")
        ax.set_title(f"target {pad} ({len(summary['config']['seeds'])} seeds)")
        ax.legend()
    return save_figure(fig, path)


__all__ = ["RewardSweepConfig", "plot_sweep", "run_sweep"]
