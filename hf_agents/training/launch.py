"""The training command: `python -m hf_agents.training RECIPE [key=value ...]`, also `hf-agents train ...`.

The recipe's `stage:` picks the stage (see `hf_agents.training.STAGES`; default `imitation`). Overrides:
`key=value` or `--key value` for any field of that stage's config. Works under `accelerate launch`.
`--help` alone lists the stages; after a recipe (or `stage=NAME`) it lists that stage's own fields.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import shutil
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

from hf_agents.cards import write_model_card
from hf_agents.files import error_message, follow_umask, output_lock
from hf_agents.processes import freeze_loaded_objects, keep_freed_memory, rank, world_size
from hf_agents.training import DEFAULT_STAGE, STAGES, load_stage
from hf_agents.training.common import (
    RecipeError,
    StageArguments,
    _read_values,
    parse_stage,
    recipe_file,
    saving_checkpoints,
    write_provenance,
)


def run_recipe(recipe: str | None, overrides=()) -> dict:
    """Parse the recipe and run its stage; returns the stage's metrics. The output folder gets provenance.json."""
    stage, config = parse_stage(recipe, overrides)
    run = load_stage(stage).run
    freeze_loaded_objects()  # the stage's libraries are imported: the Trainer's garbage collections skip them
    with output_lock(config.output_dir) if rank() == 0 else nullcontext():  # one run per output_dir at a time
        with saving_checkpoints(config.output_dir):  # a full disk while saving: one line, no half checkpoint
            metrics = run(config)
        if rank() == 0 and Path(config.output_dir).is_dir():  # the stage saved something
            follow_umask(config.output_dir)  # safetensors writes its files 0600 (through tempfile)
            write_provenance(config, recipe, overrides)
            write_model_card(config.output_dir)  # agent, reward model or adapter card; replaces TRL's generic one
    return metrics


TRAINING_ARGUMENTS_DOCS = "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"


def _width() -> int:
    return min(100, max(60, shutil.get_terminal_size().columns - 2))


def _wrap(text: str, indent: int, first: str = "") -> list[str]:
    """`first` then `text`, wrapped to the terminal, continuation lines indented by `indent`."""
    return textwrap.wrap(" ".join(text.split()), _width(), initial_indent=first or " " * indent,
                         subsequent_indent=" " * indent, break_long_words=False, break_on_hyphens=False) or [first]


def _stage_summary(stage: str) -> str:
    """The first sentence of a stage module's docstring."""
    doc = (load_stage(stage).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")


def _shipped_recipes() -> dict[str, list[str]]:
    """Stage name -> the shipped recipes (file names) of that stage."""
    import yaml

    from hf_agents.locations import RECIPES

    found: dict[str, list[str]] = {}
    for path in sorted(RECIPES.glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        found.setdefault(values.get("stage", DEFAULT_STAGE), []).append(path.name)
    return found


def usage() -> str:
    """`hf-agents train --help`: how a stage is run, the stages and their shipped recipes."""
    lines = ["usage: hf-agents train RECIPE [key=value ...]",
             "       python -m hf_agents.training RECIPE [key=value ...]",
             "       accelerate launch [--config_file CONFIG] -m hf_agents.training RECIPE [key=value ...]", ""]
    lines += _wrap("Train one stage of the pipeline from a recipe: a YAML file of `field: value` whose `stage:` names "
                   "the stage (default: imitation). Each key=value (or --key value) after it overrides the recipe's "
                   "value; `{field}` in a value stands for another field's value. The stages that train with the "
                   "transformers Trainer take every TrainingArguments field the same way. Runs on one process or "
                   "under `accelerate launch` (configs: `hf-agents recipes`).", 0)
    lines += ["", "positional arguments:"]
    lines += _wrap("a recipe file, or a shipped recipe by name (e.g. sft.yaml; `hf-agents recipes` lists them)", 18,
                   "  RECIPE          ")
    lines += _wrap("set a field of the stage's config (overrides the recipe)", 18, "  key=value       ")
    lines += ["", "options:"]
    lines += _wrap("show this help; `hf-agents train RECIPE --help` shows that stage's fields with their defaults",
                   18, "  -h, --help      ")
    lines += ["", "stages (shipped recipes):"]
    recipes = _shipped_recipes()
    for stage in STAGES:
        shipped = f" ({', '.join(recipes[stage])})" if recipes.get(stage) else ""
        lines += _wrap(f"{_stage_summary(stage)}{shipped}".strip(), 18, f"  {stage:<15} ")
    lines += ["", "fields of every stage:"]
    for f in dataclasses.fields(StageArguments):
        lines += _wrap(f"{f.metadata['help']} (default: {_value(_default(f))})", 28, f"  {f.name:<25} ")
    return "\n".join(lines)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _own_fields(config_class) -> tuple[list[str], dict[str, list[str]]]:
    """The fields a stage's config declares itself (its class and mixins, overrides of TrainingArguments
    included), and those it takes from another stage's config (stage -> names)."""
    from transformers import TrainingArguments

    loaded = [(s, sys.modules.get(m)) for s, m in STAGES.items()]  # a config in the class order is imported
    others = {module.CONFIG: s for s, module in loaded if module and getattr(module, "CONFIG", config_class)
              is not config_class}
    own, borrowed, seen = [], {}, set()
    skip = set(TrainingArguments.__mro__) if issubclass(config_class, TrainingArguments) else {object}
    for cls in config_class.__mro__:
        if cls in skip or cls is StageArguments:  # every stage's fields: `hf-agents train --help`
            continue
        stage = others.get(cls)  # e.g. preference_ft's config is the imitation stage's and more
        for name in inspect.get_annotations(cls):
            if name in seen or name not in config_class.__dataclass_fields__:
                continue
            seen.add(name)
            (borrowed.setdefault(stage, []) if stage else own).append(name)
    return own, borrowed


def _value(value) -> str:
    if isinstance(value, str):
        return repr(value) if not value or value.strip() != value else value
    return str(value)


_PAPER = re.compile(r"\(paper(?: [^:()]*)?: ([^()]*)\)")
_NOTE = re.compile(r"^([A-Za-z_]\w*)\s*:[^#]*#\s*(.*\bpaper(?:'s [\w ]+)?:.*)$")


def _recipe_notes(recipe: str | None) -> dict[str, str]:
    """field -> the recipe's comment beside it, where that comment gives the paper's value."""
    if not recipe:
        return {}
    lines = recipe_file(recipe).read_text().splitlines()
    return {m.group(1): m.group(2).strip() for m in map(_NOTE.match, lines) if m}


def _with_note(value, note: str | None) -> str:
    return f"{_value(value)} # {note}" if note else _value(value)


def stage_usage(recipe: str | None, overrides=()) -> str:
    """`hf-agents train RECIPE --help`: the stage's own fields, each with its default, the paper's value (where its
    help gives it), the recipe's value and its help; not the hundred-odd TrainingArguments fields."""
    from transformers import TrainingArguments

    values, notes = _read_values(recipe, overrides), _recipe_notes(recipe)
    stage = values.pop("stage", DEFAULT_STAGE)
    if stage not in STAGES:
        raise RecipeError(f"{recipe or 'command line'}: unknown stage '{stage}'; choose one of {sorted(STAGES)}")
    module = load_stage(stage)
    config_class = module.CONFIG
    fields = config_class.__dataclass_fields__
    own, borrowed = _own_fields(config_class)
    trainer = issubclass(config_class, TrainingArguments)
    lines = [f"usage: hf-agents train {recipe or f'stage={stage}'} [key=value ...]", ""]
    lines += [f"Recipe: {recipe_file(recipe)}"] if recipe else []  # one line, however long the path
    summary = _stage_summary(stage)
    lines += _wrap(f"Stage `{stage}`" + (f": {summary}." if summary else "."), 0)
    doc = inspect.cleandoc(config_class.__doc__ or "")
    if doc and not doc.startswith(f"{config_class.__name__}("):  # not the signature dataclasses writes
        lines += [""] + _wrap(doc, 0)
    lines += [""]
    lines += ["Fields: type, default, the paper's value, the recipe's (# its note)"
              + ("; * required" if module.REQUIRED else "") + ":"]
    for name in own:
        f = fields[name]
        help_text = f.metadata.get("help", "")
        kind = f.type.__name__ if isinstance(f.type, type) else str(f.type).replace("typing.", "")
        facts = [kind, f"default: {_value(_default(f))}"]
        if name not in notes:  # the recipe's note gives the paper's value for this stage
            facts += [f"paper: {p.strip()}" for p in _PAPER.findall(help_text)[:1]]
        if name in values:
            facts.append(f"recipe: {_with_note(values[name], notes.get(name))}")
        star = " *" if name in module.REQUIRED else ""
        lines += _wrap(f"({'; '.join(facts)})", 6, f"  {name}{star} ")
        if help_text:
            lines += _wrap(help_text, 6)
    lines += _wrap(f"{', '.join(StageArguments.__dataclass_fields__)}: the fields of every stage (`hf-agents train "
                   "--help`)", 6, "  ")
    for other, names in borrowed.items():
        lines += [""]
        lines += _wrap(f"Also every field of the {other} stage (`hf-agents train stage={other} --help`): "
                       f"{', '.join(names)}.", 0)
    extra = {k: v for k, v in values.items() if k not in own and not any(k in n for n in borrowed.values())}
    if extra:
        lines += [""]
        lines += _wrap("The recipe also sets: " + "; ".join(f"{k}={_with_note(v, notes.get(k))}"
                                                           for k, v in extra.items()) + ".", 0)
    if trainer:
        lines += [""]
        lines += _wrap("Any field of transformers.TrainingArguments can be set as key=value too (output_dir, max_steps, "
                       "per_device_train_batch_size, gradient_accumulation_steps, warmup_steps, eval_strategy, "
                       f"save_steps, seed, bf16, ...): {TRAINING_ARGUMENTS_DOCS}", 0)
    return "\n".join(lines)


def _help(argv: list[str]) -> int:
    """No recipe: how to train and the stages; a recipe (or stage=NAME): that stage's fields."""
    rest = [a for a in argv if a not in ("-h", "--help")]
    if not rest:
        print(usage())
        return 0
    recipe = rest.pop(0) if rest[0].endswith((".yaml", ".yml")) else None
    try:
        print(stage_usage(recipe, rest))
    except (RecipeError, ValueError, FileNotFoundError) as e:
        print(f"hf-agents train: error: {e}", file=sys.stderr)
        return 2
    return 0


def _output_dir(recipe, overrides) -> str | None:
    """The output_dir the recipe and overrides name (for an error that names no path), or None."""
    try:
        return _read_values(recipe, overrides).get("output_dir")
    except (RecipeError, OSError):
        return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        return _help(argv)
    recipe = argv.pop(0) if argv and argv[0].endswith((".yaml", ".yml")) else None
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    keep_freed_memory()
    if world_size() > 1:
        import torch

        if not torch.cuda.is_available():
            # Ranks without GPUs: the Trainer only forms a gloo group (MULTI_CPU) when told it is on the CPU.
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    try:
        metrics = run_recipe(recipe, argv)
    except (RecipeError, ValueError, OSError) as e:  # OSError: a read-only or full disk, a busy output_dir, ...
        print(f"hf-agents train: error: {error_message(e, _output_dir(recipe, argv))}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("eval_accuracy_") or k.endswith("mean")}))
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Once every rank has finished, close the ranks' process group: left to the interpreter's exit, gloo's threads
    can abort a finished rank ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
