"""The training command: `python -m hf_agents.training RECIPE [key=value ...]`, also `hf-agents train ...`.

The recipe's `stage:` picks the stage (see `hf_agents.training.STAGES`; default `imitation`). Overrides:
`key=value` or `--key value` for any field of that stage's config. Works under `accelerate launch`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from transformers import HfArgumentParser

from hf_agents.cards import write_model_card
from hf_agents.processes import rank, world_size
from hf_agents.training import STAGES, load_stage
from hf_agents.training.common import RecipeError, parse_stage, write_provenance


def run_recipe(recipe: str | None, overrides=()) -> dict:
    """Parse the recipe and run its stage; returns the stage's metrics. The output folder gets provenance.json."""
    stage, config = parse_stage(recipe, overrides)
    metrics = load_stage(stage).run(config)
    if rank() == 0 and Path(config.output_dir).is_dir():  # the stage saved something
        write_provenance(config, recipe, overrides)
        write_model_card(config.output_dir)  # agent, reward model or adapter card; replaces TRL's generic one
    return metrics


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        for stage in STAGES:
            print(f"== stage: {stage} ==")
            HfArgumentParser(load_stage(stage).CONFIG).print_help()
        return 0
    recipe = argv.pop(0) if argv and argv[0].endswith((".yaml", ".yml")) else None
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if world_size() > 1:
        import torch

        if not torch.cuda.is_available():
            # Ranks without GPUs: the Trainer only forms a gloo group (MULTI_CPU) when told it is on the CPU.
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    try:
        metrics = run_recipe(recipe, argv)
    except (RecipeError, ValueError, FileNotFoundError) as e:
        print(f"hf-agents train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("eval_accuracy_") or k.endswith("mean")}))
    return 0
