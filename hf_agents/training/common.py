"""What every training stage shares: recipe parsing, the common config fields, output-dir checks, result saving."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
import zipfile
from argparse import ArgumentError
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from hf_agents.envs.spec import GameSpec, parse_kwargs, resolve_game, saved_game
from hf_agents.files import atomic_write_json, is_disk_error, saving, write_train_results
from hf_agents.locations import RECIPES, weights_problem
from hf_agents.models.configuration_agent import MAX_CONTEXT_LENGTH
from hf_agents.models.trainable import TRAINABLE, TrainablePolicy
from hf_agents.processes import rank
from hf_agents.training import DEFAULT_STAGE, STAGES, load_stage


class RecipeError(ValueError):
    """A recipe or override that does not fit the config; names the file, field and fix."""


@dataclass
class StageArguments:
    """Fields every stage's config has; put it before the `TrainingArguments` base so its defaults win."""

    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    overwrite: bool = field(default=False, metadata={"help": "Allow writing into a non-empty output_dir."})
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"], metadata={"help": "Where to log metrics "
                                                                                    "(tensorboard, wandb, none)."})
    save_safetensors: bool = field(default=True, metadata={"help": "Checkpoints as safetensors."})

    def __post_init__(self):
        check_bounds(self)
        if getattr(self, "dataloader_pin_memory", False) and not _cuda():
            # Pinned memory only speeds up copies to a GPU; without one torch's DataLoader warns at every epoch.
            self.dataloader_pin_memory = False
        chain_post_init(self, StageArguments)


def _positive(v) -> bool:
    return math.isfinite(v) and v > 0


def _non_negative(v) -> bool:
    return math.isfinite(v) and v >= 0


def _at_least_one(v) -> bool:
    return v >= 1


def _fraction(v) -> bool:
    return math.isfinite(v) and 0 <= v < 1


# field -> (rule, what to give): every config that has the field is checked before any work
BOUNDS = {
    "learning_rate": (_positive, "a finite number > 0 (e.g. 1e-4)"),
    "weight_decay": (_non_negative, "a finite number >= 0"),
    "max_grad_norm": (_non_negative, "a finite number >= 0 (0: no clipping)"),
    "num_train_epochs": (_positive, "a finite number > 0"),
    "max_steps": (lambda v: v == -1 or v >= 1, "-1 (train for num_train_epochs) or >= 1"),
    "eval_fraction": (_fraction, "in [0, 1) (e.g. 0.1; 0: no held-out split)"),
    "beta": (_positive, "a finite number > 0 (DPO's temperature, e.g. 0.1)"),
    "l2_penalty": (_non_negative, "a finite number >= 0 (paper: 0.1)"),
    "temperature": (_positive, "a finite number > 0 (1.0 samples the agent as trained)"),
    "lora_dropout": (_fraction, "in [0, 1)"),
    "context_length": (lambda v: 2 <= v <= MAX_CONTEXT_LENGTH, f"in 2..{MAX_CONTEXT_LENGTH} (paper: 32)"),
    **{name: (_at_least_one, ">= 1") for name in (
        "window_stride", "trajectory_steps", "embed_batch_size", "per_device_train_batch_size",
        "per_device_eval_batch_size", "gradient_accumulation_steps", "iterations", "rollout_episodes",
        "max_episode_steps", "num_envs", "lora_r", "lora_alpha", "num_updates", "episodes_per_update", "best_window",
        "micro_batch_size", "save_steps", "rloo_k", "rounds", "rollouts_per_round", "comparisons_per_round",
        "eval_episodes")},
    "kl_coef": (_non_negative, "a finite number >= 0 (0: no KL penalty)"),
    "entropy_coef": (_non_negative, "a finite number >= 0"),
    "rollout_workers": (_non_negative, ">= 0 (0: acting in this process; on a CPU, one per core)"),
    "dpo_beta": (_positive, "a finite number > 0 (e.g. 0.1)"),
    "wait_for_labels": (_non_negative, "a finite number of seconds >= 0"),
}


def check_bounds(config) -> None:
    """Refuse a numeric field out of its range (`BOUNDS`), naming the field and what to give."""
    for name, (ok, rule) in BOUNDS.items():
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not ok(value):
            raise ValueError(f"{name}={value}: must be {rule}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def chain_post_init(config, mixin: type) -> None:
    """Run the `__post_init__` that comes after `mixin`'s in the config's class order (the mixins each check their
    own fields, then hand on; `TrainingArguments` has one too)."""
    parent = getattr(super(mixin, config), "__post_init__", None)
    if parent is not None:
        parent()


@dataclass
class PolicyArguments:
    """The agent an alignment stage starts from and what of it trains: the fields of `TrainablePolicy`."""

    agent: str = field(default="", metadata={"help": "The agent to start from (an SFT agent, a local folder or a Hub "
                                             "id); the KL reference (with init_adapter, if set)."})
    trainable: str = field(default="head", metadata={"help": f"One of {TRAINABLE}: the MLP head (paper), LoRA "
                                                     "adapters (one per designer), or everything."})
    adapter_name: str = field(default="default", metadata={"help": "The LoRA adapter's name (one per designer)."})
    init_adapter: str | None = field(default=None, metadata={"help": "A saved LoRA adapter of `agent` to go on "
                                                             "training (e.g. the designer's preference fine-tuning)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (the adapter's size: rank 8 is a few MB)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha: the adapter's update is scaled by "
                                                  "lora_alpha / lora_r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})

    def __post_init__(self):
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got '{self.trainable}'")
        if self.init_adapter and self.trainable != "lora":
            raise ValueError("init_adapter continues a LoRA adapter; set trainable=lora")
        chain_post_init(self, PolicyArguments)

    def make_policy(self, agent, reference: bool = False) -> TrainablePolicy:
        """The trainable policy of `agent` (loaded from `self.agent`) as these fields say."""
        return TrainablePolicy.create(agent, self.trainable, base_path=self.agent, adapter_name=self.adapter_name,
                                      lora_r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                                      init_adapter=self.init_adapter, reference=reference)


@dataclass
class RolloutArguments:
    """The game an alignment stage plays and how its rollouts sample."""

    env: str | None = field(default=None, metadata={"help": "Gymnasium id of the game ('module:Id'); default: the "
                                                    "game saved with the agent."})
    env_kwargs: list[str] = field(default_factory=list, metadata={"help": "KEY=VALUE keyword arguments of the game "
                                                                  "(JSON values), e.g. [pads_look_alike=true]."})
    image_key: str | None = field(default=None, metadata={"help": "The observation key of the RGB frame (Dict "
                                                          "observations with several images); default: the saved one."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts (and of the "
                                                      "log-probs that are trained)."})
    max_episode_steps: int = field(default=100, metadata={"help": "Episode timeout in steps (paper: 100)."})
    num_envs: int = field(default=8, metadata={"help": "Games played at once."})
    rollout_workers: int = field(default=0, metadata={"help": "Acting processes (CPU: one per core; 0: act here, GPU)."})

    def __post_init__(self):
        check_bounds(self)  # num_envs, temperature, max_episode_steps (here first in some configs' class order)
        chain_post_init(self, RolloutArguments)

    def envs(self, env_fn, num_envs: int):
        """What the rollouts play on: `RolloutWorkers` when `rollout_workers` is set, else a `BatchedEnv`."""
        from hf_agents.rollout.workers import rollout_envs

        return rollout_envs(env_fn, num_envs, self.rollout_workers)

    def game(self, agent_config, what: str = "the agent") -> GameSpec:
        """The game played: `env` (with `env_kwargs`) when set, else the one saved with the agent; at its frame size."""
        kwargs = parse_kwargs(self.env_kwargs, "env_kwargs")
        return resolve_game(self.env, saved_game(agent_config.game, what), what, kwargs,
                            self.image_key).at(agent_config.image_size)

    def env_fn(self, agent_config, what: str = "the agent"):
        """A picklable factory of the game at the agent's frame size."""
        return self.game(agent_config, what).env_fn(max_steps=self.max_episode_steps)


def _argv_from(mapping: dict) -> list[str]:
    argv = []
    for key, value in mapping.items():
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)] if value else []  # empty: the field's default
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def recipe_file(recipe: str) -> Path:
    """The recipe file `recipe` names: a path, or a shipped recipe by name (sft.yaml, gpu/sft.yaml, or
    recipes/sft.yaml outside the repository)."""
    path = Path(recipe)
    shipped = Path(*path.parts[1:]) if path.parts[:1] == ("recipes",) and len(path.parts) > 1 else path
    if not path.exists() and not path.is_absolute() and ".." not in shipped.parts and (RECIPES / shipped).is_file():
        path = RECIPES / shipped
    if not path.exists():
        raise RecipeError(f"{recipe}: no such recipe file (shipped recipes: "
                          f"{sorted(p.name for p in RECIPES.glob('*.yaml'))})")
    return path


def _read_values(recipe: str | None, overrides) -> dict:
    values = {}
    if recipe:
        path = recipe_file(recipe)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{recipe}: not valid YAML ({str(e).splitlines()[0]} {getattr(e, 'problem_mark', '')}); "
                              "a recipe is a mapping of field: value") from None
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
            values[key] = _flow_list(value, key, where)
        else:
            raise RecipeError(f"{where}: cannot read override '{token}'; use key=value or --key value")
    return values


def _flow_list(value: str, key: str, where: str):
    """key=[a, b] on the command line is a list, as in a recipe; any other value stays a string."""
    if not (value.startswith("[") and value.endswith("]")):
        return value
    try:
        items = yaml.safe_load(value)
    except yaml.YAMLError:
        raise RecipeError(f"{where}: {key}={value} is not a list; write {key}=[a, b] (or quote each item)") from None
    return [str(v) for v in items] if isinstance(items, list) else value


_REFERENCE = re.compile(r"\{([A-Za-z_]\w*)\}")


def _fill_references(values: dict, where: str) -> dict:
    """`{name}` in a string value stands for field `name`'s value after the overrides, so one recipe serves every
    target: `output_dir: outputs/align-{target}` with `target=right` writes outputs/align-right."""
    def fill(key, value):
        def one(match):
            name = match.group(1)
            found = values.get(name)
            if found is None or isinstance(found, (list, dict)) or _REFERENCE.search(str(found)):
                raise RecipeError(f"{where}: field '{key}' refers to {{{name}}}, which is not set to a plain value; "
                                  f"set it (e.g. {name}=...) or write '{key}' out in full")
            return str(found)

        return _REFERENCE.sub(one, value) if isinstance(value, str) else value

    return {key: fill(key, value) for key, value in values.items()}


def parse_stage(recipe: str | None, overrides=()) -> tuple[str, object]:
    """Recipe YAML + overrides -> (stage name, that stage's config); errors name the file and field."""
    where = recipe or "command line"
    values = _fill_references(_read_values(recipe, overrides), where)
    stage = values.pop("stage", DEFAULT_STAGE)
    if stage not in STAGES:
        raise RecipeError(f"{where}: unknown stage '{stage}'; choose one of {sorted(STAGES)}")
    module = load_stage(stage)
    config_class = module.CONFIG
    argv = _argv_from(values)
    parser = HfArgumentParser(config_class, exit_on_error=False)
    known = set(config_class.__dataclass_fields__)
    unknown = [key for key in values if key.replace("-", "_") not in known]
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; see `hf-agents train RECIPE --help`")
    try:
        (config,) = parser.parse_args_into_dataclasses(args=argv)
    except (ArgumentError, ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {e}") from e
    help_command = f"hf-agents train {recipe if recipe else f'stage={stage}'} --help"
    for name, value in values.items():  # `key: []` / key=[] empties a list field (argparse cannot take no items)
        field_name = name.replace("-", "_")
        if isinstance(value, list) and not value:
            if not isinstance(getattr(config, field_name), list):
                raise RecipeError(f"{where}: {name}=[] but `{name}` is not a list; give it a value (see "
                                  f"`{help_command}`)")
            setattr(config, field_name, [])
    for name in module.REQUIRED:
        if not getattr(config, name):
            raise RecipeError(f"{where}: `{name}` is required for the {stage} stage (see `{help_command}`)")
    return stage, config


def parse_recipe(recipe: str | None, overrides=()):
    """Recipe YAML + overrides -> the config of the recipe's `stage:` (default: imitation)."""
    return parse_stage(recipe, overrides)[1]


# config fields that name what a stage reads: its output_dir must be none of them and hold none of them
INPUT_FIELDS = ("dataset", "eval_dataset", "init_from", "trajectories", "preferences", "agent", "init_adapter",
                "reward_model")


def check_output_dir(config) -> str | None:
    """The checkpoint to resume from, or None; refuses to write into a used output_dir by accident, over a file or
    over what the stage reads."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{out}: output_dir is a file, not a folder; choose a folder path (or move the file away)")
    check_not_an_input(config, out)
    if config.resume:
        return str(resume_checkpoint(out))
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise RecipeError(f"{out}: output_dir is not empty; pass resume=true to continue or overwrite=true to replace")
    return None


def check_not_an_input(config, out: Path) -> None:
    """output_dir must not be, nor hold, a path the stage reads (overwrite=true would clear it)."""
    here = out.resolve()
    for name in INPUT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, str) and value and os.path.exists(value):
            path = Path(value).resolve()
            if path == here or here in path.parents:
                raise RecipeError(f"{out}: output_dir holds the {name} {value} this stage reads; choose another "
                                  "output_dir")


def resume_checkpoint(out: Path) -> Path:
    """resume=true: the newest whole checkpoint; none whole names each damaged one and the fix."""
    last = last_intact_checkpoint(out)
    if last is not None:
        return last
    damaged = [f"{p.name}: {checkpoint_problem(p)}" for p in checkpoints(out)]
    if not damaged:
        raise RecipeError(f"{out}: resume=true given but there is no checkpoint-* to resume from")
    raise RecipeError(f"{out}: resume=true but no checkpoint is whole ({'; '.join(damaged)}); delete the damaged "
                      "checkpoint folder(s), or run with resume=false overwrite=true to start again")


def checkpoints(out) -> list[Path]:
    """checkpoint-N folders of a run, newest (highest N) first."""
    found = [p for p in Path(out).glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (half-written by a kill), or None."""
    states = [path / name for name in ("trainer_state.json", "state.json") if (path / name).exists()]
    if not states:
        return "no trainer_state.json or state.json"
    try:
        json.loads(states[0].read_text())
    except (OSError, ValueError) as e:
        return f"{states[0].name}: {e}"
    weights = list(path.glob("*.safetensors"))
    if not weights:
        return "no .safetensors weights"
    for file in weights + list(path.glob("*.pt")) + list(path.glob("*.pth")):
        problem = weights_problem(file) if file.suffix == ".safetensors" else torch_file_problem(file)
        if problem:
            return f"{file.name}: {problem}"
    return None


def torch_file_problem(path: Path) -> str | None:
    """Why a `torch.save` file (a zip archive: optimizer.pt, scheduler.pt, rng_state.pth) does not load whole."""
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    try:
        with zipfile.ZipFile(path) as archive:
            end = max((i.header_offset + i.compress_size for i in archive.infolist()), default=0)
    except (zipfile.BadZipFile, OSError, ValueError):
        return "truncated or not a torch.save file"
    return f"truncated ({size} bytes, its records need {end})" if end > size else None


def last_intact_checkpoint(out) -> Path | None:
    """The newest checkpoint that is whole; a half-written newer one is skipped with a warning."""
    skipped = []
    for path in checkpoints(out):
        problem = checkpoint_problem(path)
        if problem is None:
            for old, why in skipped:
                warnings.warn(f"{old}: incomplete checkpoint ({why}); resuming from an earlier one", stacklevel=2)
            return path
        skipped.append((path, problem))
    return None


def clear_checkpoints(config) -> None:
    """overwrite=true: the previous run's checkpoint-* folders go, so a later resume=true continues this run."""
    if config.overwrite and not config.resume and rank() == 0:
        for path in checkpoints(config.output_dir):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def saving_checkpoints(out):
    """Around a stage's training, which writes checkpoint-N folders into `out` as it goes (a Trainer's torch.save of
    optimizer.pt, ...): a failed write on a full or read-only disk becomes one OSError naming `out` (see
    `hf_agents.files.saving`), and a checkpoint it left half-written is removed; the run's earlier, whole ones stay
    for resume=true."""
    before = set(checkpoints(out))
    try:
        with saving(out, remove=False):
            yield
    except OSError as e:
        if is_disk_error(e) and rank() == 0:
            for path in checkpoints(out):
                if path not in before and checkpoint_problem(path):
                    shutil.rmtree(path, ignore_errors=True)
        raise


def save_results(trainer, config, metrics: dict) -> None:
    """The final model (safetensors) and train_results.json (metrics + log history), written by rank 0."""
    if trainer.is_world_process_zero():
        with saving(config.output_dir):  # a full disk: one line, and no half-written weights left
            trainer.save_model(config.output_dir)
        write_train_results(config.output_dir, metrics, log_history=trainer.state.log_history)


def provenance(config, recipe: str | None, overrides=()) -> dict:
    """What produced a stage's output: recipe and overrides, the full config, package version, git commit, seed, and a
    fingerprint of every input path the config names."""
    import dataclasses

    from hf_agents import __version__
    from hf_agents.locations import fingerprint

    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    inputs = {name: {"path": str(value), "sha256": fingerprint(value)} for name, value in values.items()
              if isinstance(value, str) and name not in ("output_dir", "logging_dir") and value and Path(value).exists()}
    return {"recipe": recipe, "overrides": list(overrides), "hf_agents_version": __version__,
            "git_commit": _git_commit(), "seed": values.get("seed"), "inputs": inputs,
            "config": json.loads(json.dumps(values, default=str))}


def write_provenance(config, recipe: str | None, overrides=()) -> Path:
    """output_dir/provenance.json, written atomically by rank 0 once the stage has finished."""
    return atomic_write_json(Path(config.output_dir) / "provenance.json", provenance(config, recipe, overrides))


def _git_commit() -> str | None:
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
