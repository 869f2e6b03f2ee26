"""Dataset and model cards (README.md with a YAML header), so a folder pushed to the Hub is self-describing.

Model cards are rendered from the Jinja templates in `model_cards/` with huggingface_hub's `ModelCard`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from hf_agents.files import atomic_write


def _table(counts: dict, key: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"| {key} | episodes |\n|---|---|\n{rows}"


def dataset_card(info: dict, description: str = "") -> str:
    """A dataset card for a trajectory dataset written by `TrajectoryWriter`."""
    header = {
        "tags": ["hf-agents", "gameplay", "trajectories", "imitation-learning"],
        "task_categories": ["reinforcement-learning", "robotics"],
        "configs": [
            {"config_name": "steps", "data_files": [{"split": "train", "path": "data/*.parquet"}], "default": True},
            {"config_name": "episodes", "data_files": [{"split": "train", "path": "episodes/*.parquet"}]},
        ],
        "size_categories": [_size_category(info["num_steps"])],
    }
    h, w = info["frame_size"]
    extras = [c for c in info["step_columns"] if c not in ("episode_id", "step", "frame", "actions")]
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# Gameplay trajectories (hf-agents)

{description or "Pixel observations and gamepad actions recorded for training agents with hf-agents."}

- **episodes**: {info["num_episodes"]}, **steps**: {info["num_steps"]} (mean length {info["mean_length"]:.1f}) at {info["fps"]} Hz
- **frames**: {h}x{w} RGB, PNG-compressed in the `frame` column
- **actions**: 16 gamepad components as bucket ids (12 buttons in {{0,1}}, 4 sticks in 0..10;
  stick bucket centres -1, -0.85, -0.625, -0.375, -0.15, 0, 0.15, 0.375, 0.625, 0.85, 1)
- **extra step columns**: {", ".join(extras) or "none"} (`state_*` is privileged game state, for plots and
  synthetic preferences only; it is never a model input)
{_policy_line(info.get("policy"))}
## Layout

- `data/*.parquet`: one row per step: `episode_id`, `step`, `frame`, `actions`, extras
- `episodes/episodes.parquet`: one row per episode: `source`, `variant`, `spawn`, `outcome`, `outcome_step`, `length`, `seed`
- `meta/info.json`: format version and the statistics below

Load it with `hf_agents.data.load_trajectories(path_or_hub_id)`, or the tables with `datasets.load_dataset`.

## Statistics

{_table(info["variants"], "variant")}

{_table(info["outcomes"], "outcome")}

{_table(info["sources"], "source")}
"""


def _policy_line(policy) -> str:
    """The acting policy of rollouts (checkpoint, temperature, ...), as recorded in meta/info.json."""
    if not policy:
        return ""
    return "- **policy**: " + ", ".join(f"{k}={v}" for k, v in policy.items()) + " (`policy` in meta/info.json)\n"


def _size_category(n: int) -> str:
    for limit, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]:
        if n < limit:
            return name
    return "1M<n<10M"


# -- model cards -------------------------------------------------------------------------------------------
MODEL_CARDS = Path(__file__).resolve().parent / "model_cards"  # Jinja templates; ./model_cards links here
LIMITATIONS = ("Success rates are from sampled episodes and come with the 95% intervals in eval.json. It plays "
               "from pixels alone; no privileged state is a model input.")
UNKNOWN_GAME = {"outcome_noun": "outcome", "tags": [],
                "limitations": "It has not been evaluated on other games or levels; evaluate it before any use."}


def _game(evaluations: dict) -> dict:
    """What the cards say of the game, as its evaluations recorded it (`metadata["card"]`, see hf_agents.envs)."""
    recorded = next((s["game"] for s in evaluations.values() if s.get("game")), {})
    return {**UNKNOWN_GAME, **recorded}


def model_card_kind(folder) -> str | None:
    """'adapter', 'reward_model', 'agent', or None for a folder that holds no saved model."""
    folder = Path(folder)
    if (folder / "adapter_config.json").exists():
        return "adapter"
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    return {"hf_agent": "agent", "hf_agent_reward": "reward_model"}.get(model_type)


def write_model_card(folder, repo_id: str | None = None, base_model: str | None = None) -> Path | None:
    """Render the folder's model card (README.md) from what the folder holds: config, provenance.json,
    train_results.json, eval results and plots. `repo_id`/`base_model`: the names to show (default: folder names)."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    kind = model_card_kind(folder)
    if kind is None:
        return None
    made = _read_json(folder / "provenance.json") or {}
    repo = repo_id or folder.name
    parent = _parent(folder)
    base = base_model or (Path(parent).name if parent else None)
    evaluations = _evaluations(folder)
    metrics = (_read_json(folder / "train_results.json") or {}).get("metrics") or {}
    game = _game(evaluations)
    data = _card_data(kind, repo, base, made, evaluations, metrics, game)
    fields = dict(title=repo, repo=repo, base_model=base or "BASE_AGENT", lineage=_lineage(folder, kind, made),
                  evaluation=_evaluation_text(kind, evaluations, metrics, game), media=_media_text(folder),
                  training=_training_text(made), limitations=f"{game['limitations']} {LIMITATIONS}",
                  **_kind_fields(folder, kind, made, game))
    card = ModelCard.from_template(data, template_path=str(MODEL_CARDS / f"{kind}.md.j2"), **fields)
    return atomic_write(folder / "README.md", str(card))


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _parent(folder: Path) -> str | None:
    """The model this one was trained from: the adapter it went on training, an adapter's base agent, or the
    run's `init_from` / `agent`."""
    base = (_read_json(folder / "hf_agents_base.json") or {}).get("base_model")
    config = (_read_json(folder / "provenance.json") or {}).get("config") or {}
    return config.get("init_adapter") or base or config.get("init_from") or config.get("agent")


def _lineage(folder: Path, kind: str, made: dict) -> str:
    """This model <- its base <- the base's own base (read from the bases' provenance.json when they are here)."""
    chain, current, seen = [f"`{folder.name}` ({kind.replace('_', ' ')})"], folder, set()
    while True:
        parent = _parent(current)
        if not parent or parent in seen:
            break
        seen.add(parent)
        chain.append(f"`{Path(parent).name}`")
        current = Path(parent)
        if not current.exists():
            break
    if len(chain) == 1:
        return ("Lineage: trained from scratch." if made else
                "Lineage: not recorded (no provenance.json beside the weights).")
    return "Lineage: " + " <- ".join(chain) + "."


def _evaluations(folder: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(folder.glob("eval/**/eval.json")) + sorted(folder.glob("eval.json")):
        summary = _read_json(path)
        if summary and "distribution" in summary:
            found[summary.get("label") or path.parent.name] = summary
    return found


def _card_data(kind: str, repo: str, base: str | None, made: dict, evaluations: dict, metrics: dict, game: dict):
    from huggingface_hub import EvalResult, ModelCardData

    results, noun, name_of_game = [], game["outcome_noun"], game.get("name") or "game"
    for label, s in evaluations.items():
        for outcome, share in s["distribution"].items():
            name = f"failure rate (no {noun})" if outcome == "none" else f"success rate ({outcome} {noun})"
            results.append(EvalResult(task_type="reinforcement-learning", task_name="Game playing from pixels",
                                      dataset_type=name_of_game.lower(),
                                      dataset_name=f"{name_of_game}, {label} ({s['episodes']} episodes)",
                                      metric_type="failure_rate" if outcome == "none" else f"success_rate_{outcome}",
                                      metric_name=name, metric_value=round(float(share), 4)))
    if kind == "reward_model" and metrics.get("eval_accuracy") is not None:
        results.append(EvalResult(task_type="reinforcement-learning", task_name="Trajectory preference prediction",
                                  dataset_type="preferences", dataset_name=f"held-out {name_of_game} trajectory pairs",
                                  metric_type="accuracy", metric_name="held-out preference accuracy",
                                  metric_value=round(float(metrics["eval_accuracy"]), 4)))
    tags = {"agent": ["reinforcement-learning", "imitation-learning", "game-agent", "hf-agents", *game["tags"]],
            "reward_model": ["reward-model", "preference-learning", "game-agent", "hf-agents"],
            "adapter": ["reinforcement-learning", "rlhf", "lora", "game-agent", "hf-agents"]}[kind]
    datasets = sorted({Path(v["path"]).name for k, v in (made.get("inputs") or {}).items()
                       if k in ("dataset", "trajectories")})
    return ModelCardData(license="apache-2.0", library_name="peft" if kind == "adapter" else "hf-agents", tags=tags,
                         pipeline_tag="reinforcement-learning", base_model=base, datasets=datasets or None,
                         model_name=repo, eval_results=results or None)


def _evaluation_text(kind: str, evaluations: dict, metrics: dict, game: dict) -> str:
    lines = []
    if evaluations:
        outcomes = list(next(iter(evaluations.values()))["distribution"])
        lines += ["## Evaluation", "", f"Share of sampled episodes ending at each {game['outcome_noun']} (95% "
                  "interval):", "",
                  "| evaluation | episodes | " + " | ".join(outcomes) + " |", "|---|---|" + "---|" * len(outcomes)]
        for label, s in evaluations.items():
            cells = [f"{s['distribution'][o]:.0%} [{s['ci95'][o][0]:.0%}-{s['ci95'][o][1]:.0%}]" if "ci95" in s
                     else f"{s['distribution'][o]:.0%}" for o in outcomes]
            lines.append(f"| {label} | {s['episodes']} | " + " | ".join(cells) + " |")
    if kind == "reward_model" and metrics.get("eval_accuracy") is not None:
        lines += ["## Evaluation", "", f"Held-out preference accuracy: {metrics['eval_accuracy']:.1%} on "
                  f"{metrics.get('eval_comparisons', '?')} comparisons between trajectories never trained on "
                  f"({metrics.get('train_comparisons', '?')} training comparisons)."]
    return "\n".join(lines) or "## Evaluation\n\nNot evaluated yet: `hf-agents evaluate FOLDER` adds the results here."


def _media_text(folder: Path) -> str:
    pictures = sorted(p.relative_to(folder) for p in folder.glob("*.png")) + sorted(
        p.relative_to(folder) for p in folder.glob("eval/**/*.png"))
    videos = sorted(p.relative_to(folder) for p in folder.glob("eval/**/videos/*.gif"))[:1]
    if not pictures and not videos:
        return ""
    return "## Plots and a replay\n\n" + "\n".join(f"![{p.stem}]({p.as_posix()})" for p in [*videos, *pictures])


def _training_text(made: dict) -> str:
    if not made:
        return "No provenance.json beside the weights: how it was trained is not recorded."
    config = made.get("config") or {}
    keys = [k for k in ("stage", "model_preset", "dataset", "init_from", "agent", "trajectories", "preferences",
                        "encoder", "reward_source", "reward_model", "target", "algorithm", "trainable", "lora_r",
                        "kl_coef", "entropy_coef", "num_updates", "episodes_per_update", "learning_rate",
                        "per_device_train_batch_size", "max_steps", "num_train_epochs", "context_length",
                        "l2_penalty", "beta", "seed") if config.get(k) not in (None, "", [])]
    rows = "\n".join(f"| {k} | {config[k]} |" for k in keys)
    recipe = made.get("recipe") or "(command line)"
    overrides = " ".join(made.get("overrides") or [])
    return (f"Recipe `{recipe}` {('with `' + overrides + '`') if overrides else ''}, hf-agents "
            f"{made.get('hf_agents_version')}, commit {made.get('git_commit') or 'unknown'}. The full config and the "
            f"fingerprints of every input are in `provenance.json`.\n\n| hyperparameter | value |\n|---|---|\n{rows}")


def _kind_fields(folder: Path, kind: str, made: dict, game: dict) -> dict:
    config = _read_json(folder / "config.json") or {}
    if kind == "agent":
        weights = folder / "model.safetensors"
        params = _parameter_count(weights) if weights.exists() else 0
        stage = (made.get("config") or {}).get("init_from")
        role = ("Fine-tuned (SFT) from a pretrained agent on curated demonstrations." if stage else
                "Trained by imitation on recorded gameplay.")
        return dict(image_size=config.get("image_size"), num_layers=config.get("num_layers"),
                    hidden_size=config.get("hidden_size"), context_length=config.get("context_length"),
                    parameters=f"{params / 1e6:.1f}M" if params else "unknown", role=role)
    if kind == "reward_model":
        encoder = config.get("encoder")
        text = ("frozen transformer of the agent it was trained for" if encoder == "agent" else
                "fixed random projection of the pixels (the paper's baseline)")
        return dict(max_steps=config.get("max_steps"), encoder_text=text)
    adapter = _read_json(folder / "adapter_config.json") or {}
    target = (made.get("config") or {}).get("target")
    size = sum(f.stat().st_size for f in folder.glob("adapter_model.safetensors"))
    return dict(adapter_size=f"rank {adapter.get('r')}, {size / 1e6:.1f} MB",
                adapter_name=(made.get("config") or {}).get("adapter_name") or folder.name,
                role=f"the designer's target is the {target} {game['outcome_noun']}." if target else
                "see the training section.")


def _parameter_count(path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(int(math.prod(f.get_slice(k).get_shape())) for k in f.keys())
