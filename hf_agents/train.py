"""Train a stage from a recipe: `accelerate launch -m hf_agents.train recipes/pretrain.yaml [key=value ...]`.

A recipe's `stage` picks the config: `imitation` (default; pretrain, SFT, scratch: `ImitationConfig`) or
`reward` (`RewardModelConfig`). Overrides: `key=value` or `--key value` for any field of that config.
"""

from __future__ import annotations

import json
import os
import sys
from argparse import ArgumentError
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint

from hf_agents.data import load_trajectories
from hf_agents.training.imitation import (
    UNIFORM_LOSS,
    ImitationCollator,
    ImitationConfig,
    ImitationTrainer,
    build_datasets,
    build_model,
    component_metrics,
)
from hf_agents.training.reward import (
    RewardModelConfig,
    TrajectoryRewardTrainer,
    build_comparisons,
    build_reward_model,
    embed_trajectories,
)

STAGES = {"imitation": ImitationConfig, "reward": RewardModelConfig}
REQUIRED = {"imitation": ("dataset",), "reward": ("trajectories", "preferences")}


class RecipeError(ValueError):
    """A recipe or override that does not fit the config; names the file, field and fix."""


def _argv_from(mapping: dict) -> list[str]:
    argv = []
    for key, value in mapping.items():
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def parse_recipe(recipe: str | None, overrides: list[str] = ()) -> ImitationConfig | RewardModelConfig:
    """Recipe YAML + overrides -> the stage's config, with clear errors for unknown fields and wrong types."""
    values = {}
    if recipe:
        path = Path(recipe)
        if not path.exists():
            raise RecipeError(f"{recipe}: no such recipe file")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise RecipeError(f"{recipe}: a recipe is a mapping of field: value")
    where = recipe or "command line"
    rest = list(overrides)
    while rest:  # key=value or --key value [value ...]; an override replaces the recipe's value
        token = rest.pop(0)
        if token.startswith("--"):
            key, found = token[2:].replace("-", "_"), []
            if "=" in key:
                key, found = key.split("=", 1)[0], [key.split("=", 1)[1]]
            while rest and not rest[0].startswith("--") and "=" not in rest[0]:
                found.append(rest.pop(0))
            values[key] = found if len(found) != 1 else found[0]
        elif "=" in token:
            key, value = token.split("=", 1)
            values[key] = value
        else:
            raise RecipeError(f"{where}: cannot read override '{token}'; use key=value or --key value")
    stage = values.pop("stage", "imitation")
    if stage not in STAGES:
        raise RecipeError(f"{where}: unknown stage '{stage}'; choose one of {sorted(STAGES)}")
    config_class = STAGES[stage]
    argv = _argv_from(values)
    parser = HfArgumentParser(config_class, exit_on_error=False)
    known = {f for f in config_class.__dataclass_fields__}
    unknown = [a[2:] for a in argv if a.startswith("--") and a[2:].replace("-", "_") not in known]
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; see `python -m hf_agents.train --help`")
    try:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
    except (ArgumentError, ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {e}") from e
    for name in REQUIRED[stage]:
        if not getattr(config, name):
            raise RecipeError(f"{where}: `{name}` is required for the {stage} stage (see --help)")
    return config


def check_output_dir(config) -> str | None:
    """The checkpoint to resume from, or None; refuses to write into a used output_dir by accident."""
    out = Path(config.output_dir)
    if config.resume:
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise RecipeError(f"{out}: --resume given but there is no checkpoint-* to resume from")
        return last
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise RecipeError(f"{out}: output_dir is not empty; pass resume=true to continue or overwrite=true to replace")
    return None


def save_results(trainer, config, metrics: dict) -> None:
    """The final model (safetensors) and train_results.json (metrics + log history), written by rank 0."""
    if trainer.is_world_process_zero():
        trainer.save_model(config.output_dir)
        (Path(config.output_dir) / "train_results.json").write_text(json.dumps(
            {"metrics": metrics, "log_history": trainer.state.log_history}, indent=2, default=str))


def train(config) -> dict:
    if isinstance(config, RewardModelConfig):
        return train_reward(config)
    resume_from = check_output_dir(config)
    frame_size, train_windows, eval_windows = build_datasets(config)
    set_seed(config.seed)  # the model's initialisation too, not only the Trainer's data order
    model = build_model(config, frame_size)  # all checks happen before the first step
    if eval_windows is None:
        config.eval_strategy = "no"
    trainer = ImitationTrainer(model=model, args=config, train_dataset=train_windows, eval_dataset=eval_windows,
                               data_collator=ImitationCollator(config.filter_noops),
                               compute_metrics=component_metrics)
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = {"uniform_loss": UNIFORM_LOSS}
    if eval_windows is not None:
        metrics.update(trainer.evaluate())
    save_results(trainer, config, metrics)
    return metrics


def train_reward(config: RewardModelConfig) -> dict:
    resume_from = check_output_dir(config)
    trajectories = load_trajectories(config.trajectories)
    height, width = trajectories.frame_size
    if height != width:
        raise RecipeError(f"{config.trajectories}: frames are {height}x{width}; the reward model takes square frames")
    train_pairs, eval_pairs, train_index = build_comparisons(config, trajectories)
    set_seed(config.seed)
    model = build_reward_model(config, height)
    embeddings = embed_trajectories(model, trajectories, config.embed_batch_size)  # once: the encoder is frozen
    if eval_pairs is None:
        config.eval_strategy = "no"
    trainer = TrajectoryRewardTrainer(model, config, embeddings, train_pairs, eval_pairs)
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = {"train_comparisons": len(train_pairs), "eval_comparisons": len(eval_pairs) if eval_pairs else 0,
               "train_trajectories": len(train_index)}
    if eval_pairs is not None:
        metrics.update(trainer.evaluate())
    metrics["reward_min"], metrics["reward_max"] = trainer.normalise(train_index)
    save_results(trainer, config, metrics)
    return metrics


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        for stage, config_class in STAGES.items():
            print(f"== stage: {stage} ==")
            HfArgumentParser(config_class).print_help()
        return 0
    recipe = argv.pop(0) if argv and argv[0].endswith((".yaml", ".yml")) else None
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if not torch.cuda.is_available():
            # Ranks without GPUs: the Trainer only forms a gloo group (MULTI_CPU) when told it is on the CPU.
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    try:
        config = parse_recipe(recipe, argv)
        metrics = train(config)
    except (RecipeError, ValueError, FileNotFoundError) as e:
        print(f"hf-agents train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("eval_accuracy_") or k.endswith("mean")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
