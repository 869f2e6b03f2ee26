"""Dataset and model cards (README.md with a YAML header), so a folder pushed to the Hub is self-describing.

Model cards are rendered from the Jinja templates in `model_cards/` with huggingface_hub's `ModelCard`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from hf_agents.files import atomic_write
from hf_agents.locations import RECIPES, looks_like_hub_id


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
UNKNOWN_GAME = {"outcome_noun": "outcome", "tags": [],
                "limitations": "It has not been evaluated on other games or levels; evaluate it before any use."}
LIMITATIONS = {
    "agent": "It plays from pixels alone; no privileged state is a model input.",
    "adapter": "It plays from pixels alone; no privileged state is a model input.",
    "reward_model": "It learnt one designer's (or a synthetic oracle's) preferences from a limited number of "
                    "comparisons: check its held-out accuracy, and watch agents aligned with it, before trusting its "
                    "scores. It scores pixels and actions alone; no privileged state is an input.",
}
RATES = "Success rates come from sampled episodes, with the 95% intervals in eval.json."
RETURNS = "Mean returns come from sampled episodes (eval.json)."

# An absolute local path inside a string (POSIX, home-relative or a Windows drive): never in what is published.
# A slash after a word, a dot, a colon or another slash (hub ids, relative paths, URLs) starts none.
_ABSOLUTE = re.compile(r"(?<![\w.~:/\\-])(?:~?/|[A-Za-z]:[/\\])[^\s\"'`,;:()\[\]{}<>|=*?]+")


def _local_key(path) -> str:
    try:
        return str(Path(str(path)).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return str(path)


def _shortened(path: str, names: dict[str, str]) -> str:
    """A local path as the card or a published file shows it: its Hub id when `names` knows one, a shipped
    recipe as `recipes/...`, anything else by its last component."""
    key = _local_key(path)
    if key in names:
        return names[key]
    try:
        return "recipes/" + Path(key).relative_to(RECIPES.resolve()).as_posix()
    except ValueError:
        pass
    pure = PureWindowsPath(path) if re.match(r"[A-Za-z]:[/\\]", path) else PurePosixPath(path)
    return pure.name or "."


def without_local_paths(value, names: dict[str, str] | None = None):
    """`value` (JSON-like: dicts, lists, strings) with every absolute local path in its strings replaced by a Hub
    id (`names`: local path -> id) or the path's last component; keys and other values as they are."""
    names = {_local_key(k): v for k, v in (names or {}).items()}
    if isinstance(value, dict):
        return {k: without_local_paths(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [without_local_paths(v, names) for v in value]
    if isinstance(value, str):
        if value and _local_key(value) in names:  # a relative local path that stands for a Hub id
            return names[_local_key(value)]
        return _ABSOLUTE.sub(lambda m: _shortened(m.group(0), names), value)
    return value


def hub_id(value, made: dict | None = None) -> str | None:
    """`value` when it is a Hub id (user/name, no such local path, not an input the run read from disk), else None."""
    if not isinstance(value, str) or not looks_like_hub_id(value) or Path(value).expanduser().exists():
        return None
    local = {str(v.get("path")) for v in ((made or {}).get("inputs") or {}).values() if isinstance(v, dict)}
    return None if value in local else value


def model_card_kind(folder) -> str | None:
    """'adapter', 'reward_model', 'agent', or None for a folder that holds no saved model."""
    folder = Path(folder)
    if (folder / "adapter_config.json").exists():
        return "adapter"
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return {"hf_agent": "agent", "hf_agent_reward": "reward_model"}.get(model_type)


def recorded_base(folder, kind: str | None = None) -> str | None:
    """The base agent a model was made from, as recorded beside it: an adapter's agent (hf_agents_base.json,
    adapter_config.json), an agent's `init_from` (SFT) or `agent` (aligned), a reward model's `agent`. A local
    path or a Hub id; None when nothing is recorded."""
    folder = Path(folder)
    kind = kind or model_card_kind(folder)
    config = (_read_json(folder / "provenance.json") or {}).get("config") or {}
    if kind == "adapter":
        return ((_read_json(folder / "hf_agents_base.json") or {}).get("base_model")
                or (_read_json(folder / "adapter_config.json") or {}).get("base_model_name_or_path")
                or config.get("agent") or None)
    if kind == "agent":
        return config.get("init_from") or config.get("agent") or None
    return config.get("agent") or None


def hub_names(folder, base_model: str | None = None, datasets: list[str] | None = None) -> dict[str, str]:
    """Local path -> Hub id for what `folder` was made from, as far as known: its recorded base agent
    (`base_model`) and, when one local dataset is recorded and one Hub id given, that dataset."""
    names, base = {}, recorded_base(folder)
    if base and base_model:
        names[base] = base_model
    local = [d for d in recorded_datasets(folder) if not hub_id(d)]
    if datasets and len(datasets) == 1 and len(local) == 1:
        names[local[0]] = datasets[0]
    return names


def recorded_datasets(folder) -> list[str]:
    """The datasets a model was trained on, as its provenance.json records them (local paths or Hub ids)."""
    config = (_read_json(Path(folder) / "provenance.json") or {}).get("config") or {}
    return [config[k] for k in ("dataset", "trajectories") if isinstance(config.get(k), str) and config[k]]


def write_model_card(folder, repo_id: str | None = None, base_model: str | None = None,
                     datasets: list[str] | None = None, source=None) -> Path | None:
    """Render the model card (README.md) of `folder` from what it holds: config, provenance.json, train_results.json,
    eval results and plots.

    repo_id: the repository's name in the card (default: the folder's name). base_model, datasets: Hub ids of the
    base agent and the training datasets for the card's metadata (default: the recorded ones that are Hub ids; a
    local folder is never named there). source: the training run's folder when `folder` is its published copy
    (provenance, lineage and the base agent's game are read there)."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    source = Path(source) if source is not None else folder
    kind = model_card_kind(source)
    if kind is None:
        return None
    made = _read_json(source / "provenance.json") or {}
    repo = repo_id or folder.name
    recorded = recorded_base(source, kind)
    base = base_model or hub_id(recorded, made)
    datasets = list(datasets or []) or [d for d in (hub_id(d, made) for d in recorded_datasets(source)) if d]
    names = hub_names(source, base, datasets)
    evaluations = _evaluations(folder)
    metrics = (_read_json(source / "train_results.json") or {}).get("metrics") or {}
    game = _game(source, kind, evaluations, recorded)
    env = _env_option(game, kind, recorded)
    data = _card_data(kind, repo, base, datasets, evaluations, metrics, game)
    fields = dict(title=repo, repo=repo, lineage=_lineage(source, kind, made, repo, names), env=env,
                  game_text=_game_text(kind, game, repo, env), media=_media_text(folder),
                  evaluation=_evaluation_text(kind, evaluations, metrics, game), training=_training_text(made, names),
                  limitations=_limitations(kind, game, evaluations),
                  **_kind_fields(source, kind, made, game, base, recorded, repo))
    card = ModelCard.from_template(data, template_path=str(MODEL_CARDS / f"{kind}.md.j2"), **fields)
    return atomic_write(folder / "README.md", str(card))


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _parent(folder: Path) -> str | None:
    """The model this one was trained from: the adapter it went on training, else its base agent."""
    config = (_read_json(folder / "provenance.json") or {}).get("config") or {}
    return config.get("init_adapter") or recorded_base(folder)


def _lineage(folder: Path, kind: str, made: dict, repo: str, names: dict) -> str:
    """This model <- its parent <- the parent's own parent (read from the parents' files while they are here on
    disk), each named by its Hub id when known, else by its folder's name."""
    chain, current, seen = [f"`{repo}` ({kind.replace('_', ' ')})"], folder, set()
    while True:
        parent = _parent(current)
        if not parent or _local_key(parent) in seen:
            break
        seen.add(_local_key(parent))
        current = Path(parent)
        shown = without_local_paths(parent, names)
        chain.append(f"`{shown if hub_id(shown) or shown in names.values() else Path(shown).name}`")
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
        if isinstance(summary, dict) and "distribution" in summary:
            found[summary.get("label") or path.parent.name] = summary
    return found


def _game(source: Path, kind: str, evaluations: dict, base: str | None) -> dict:
    """What the card says of the model's game: its saved spec (config.json "game"; an adapter's from its base
    agent's config while that is here), else the evaluated one; the game's card metadata (name, outcome noun,
    tags, limitations) from the evaluations of that game (eval.json "game", `metadata["card"]` of the game)."""
    folder = Path(base) if kind == "adapter" and base else source
    saved = (_read_json(folder / "config.json") or {}).get("game")
    saved = saved if isinstance(saved, dict) and saved.get("id") else None
    specs = [s.get("game_spec") for s in evaluations.values() if isinstance(s.get("game_spec"), dict)]
    spec = saved or (specs[0] if specs else {})
    card = next((s["game"] for s in evaluations.values() if isinstance(s.get("game"), dict) and s["game"] and
                 (s.get("game_spec") or {}).get("id") in (None, spec.get("id"))), {})
    outcomes = spec.get("outcomes") if spec else None
    if outcomes is None and evaluations:
        outcomes = [o for o in next(iter(evaluations.values()))["distribution"] if o != "none"]
    name = card.get("name") or spec.get("name") or spec.get("id")
    return {**UNKNOWN_GAME, **card, "id": spec.get("id"), "name": name, "kwargs": spec.get("kwargs") or {},
            "outcomes": list(outcomes or []), "saved": bool(saved)}


def _env_option(game: dict, kind: str, base: str | None) -> str:
    """What a printed command needs to name the game: nothing when the model (an adapter: its base agent, which a
    Hub id stands for a published, hence recent, agent) carries its game."""
    if game["saved"] or (kind == "adapter" and not (base and Path(base).exists())):
        return ""
    return f" --env {game['id']}" if game["id"] else " --env GAME"


def _game_phrase(game: dict) -> str:
    options = f" with {json.dumps(game['kwargs'], sort_keys=True)}" if game["kwargs"] else ""
    name, gid = game["name"], game["id"]
    return f"**{name}** (`{gid}`{options})" if name != gid else f"`{gid}`{options}"


def _game_text(kind: str, game: dict, repo: str, env: str) -> str:
    module = game["id"].rpartition(":")[0] if game["id"] else ""
    needs = f" (the game's module `{module}` must be importable)" if module and not module.startswith(
        "hf_agents.") else ""
    if kind == "reward_model":
        if not game["id"]:
            return "The game of its training trajectories is not recorded."
        saved = " (saved in its `config.json` as \"game\")" if game["saved"] else ""
        return (f"It scores trajectories of {_game_phrase(game)}, the game of the trajectories it was trained "
                f"on{saved}; an agent of another game is not aligned with it.")
    if kind == "adapter":
        if game["saved"]:
            return (f"It plays its base agent's game, {_game_phrase(game)}, saved in the base agent's `config.json`: "
                    f"the commands below play it without `--env`{needs}.")
        if env:
            evaluated = f" (it was evaluated on {_game_phrase(game)})" if game["id"] else ""
            return (f"Its base agent does not record its game (saved before games were recorded): give "
                    f"`{env.strip()}` to play it{evaluated}.")
        known = f", {_game_phrase(game)}," if game["id"] else ""
        return f"It plays its base agent's game{known} saved in the base agent's `config.json`, without `--env`."
    if game["saved"]:
        return (f"It plays {_game_phrase(game)}, the game saved with it (`config.json` \"game\"): "
                f"`hf-agents play {repo}` and `hf-agents evaluate {repo}` play that game without `--env`{needs}.")
    if game["id"]:
        return (f"It does not record its game (saved before games were recorded); it was evaluated on "
                f"{_game_phrase(game)}, so give `{env.strip()}` to play or evaluate it.")
    return "It does not record its game (saved before games were recorded): give `--env GAME` to play or evaluate it."


def _has_outcomes(summary: dict) -> bool:
    return any(o != "none" for o in summary.get("distribution", {}))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "game"


def _card_data(kind: str, repo: str, base: str | None, datasets: list[str], evaluations: dict, metrics: dict,
               game: dict):
    from huggingface_hub import EvalResult, ModelCardData

    results, noun, name_of_game = [], game["outcome_noun"], game.get("name") or "game"

    def result(label, s, metric_type, metric_name, value):
        results.append(EvalResult(task_type="reinforcement-learning", task_name="Game playing from pixels",
                                  dataset_type=_slug(name_of_game),
                                  dataset_name=f"{name_of_game}, {label} ({s['episodes']} episodes)",
                                  metric_type=metric_type, metric_name=metric_name,
                                  metric_value=round(float(value), 4)))

    for label, s in evaluations.items():
        if _has_outcomes(s):
            for outcome, share in s["distribution"].items():
                if outcome == "none":
                    result(label, s, "failure_rate", f"failure rate (no {noun})", share)
                else:
                    result(label, s, f"success_rate_{outcome}", f"success rate ({outcome} {noun})", share)
        if s.get("mean_return") is not None:
            result(label, s, "mean_return", "mean return", s["mean_return"])
    if kind == "reward_model" and metrics.get("eval_accuracy") is not None:
        results.append(EvalResult(task_type="reinforcement-learning", task_name="Trajectory preference prediction",
                                  dataset_type="preferences", dataset_name=f"held-out {name_of_game} trajectory pairs",
                                  metric_type="accuracy", metric_name="held-out preference accuracy",
                                  metric_value=round(float(metrics["eval_accuracy"]), 4)))
    tags = {"agent": ["reinforcement-learning", "imitation-learning", "game-agent", "hf-agents", *game["tags"]],
            "reward_model": ["reward-model", "preference-learning", "game-agent", "hf-agents", *game["tags"]],
            "adapter": ["reinforcement-learning", "rlhf", "lora", "game-agent", "hf-agents", *game["tags"]]}[kind]
    return ModelCardData(license="apache-2.0", library_name="peft" if kind == "adapter" else "hf-agents",
                         tags=list(dict.fromkeys(tags)), pipeline_tag="reinforcement-learning", base_model=base,
                         datasets=sorted(set(datasets)) or None, model_name=repo, eval_results=results or None)


def _cell(s: dict, o: str) -> str:
    share = f"{s['distribution'][o]:.0%}"
    return f"{share} [{s['ci95'][o][0]:.0%}-{s['ci95'][o][1]:.0%}]" if o in s.get("ci95", {}) else share


def _number(value) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


def _evaluation_text(kind: str, evaluations: dict, metrics: dict, game: dict) -> str:
    lines, noun = [], game["outcome_noun"]
    with_outcomes = {k: s for k, s in evaluations.items() if _has_outcomes(s)}
    without = {k: s for k, s in evaluations.items() if not _has_outcomes(s)}
    if evaluations:
        lines += ["## Evaluation", ""]
        first_label, first = next(iter(evaluations.items()))
        if first.get("mean_return") is not None:
            lines += [f"Mean return on {game.get('name') or 'its game'}: {_number(first['mean_return'])} "
                      f"({first_label}, {first['episodes']} episodes).", ""]
    if with_outcomes:
        outcomes = list(next(iter(with_outcomes.values()))["distribution"])
        heads = [f"no {noun}" if o == "none" else o for o in outcomes]
        lines += [f"Share of sampled episodes ending at each {noun} (95% interval) and the mean return (the sum of "
                  "the game's rewards per episode):", "",
                  "| evaluation | episodes | " + " | ".join(heads) + " | mean return |",
                  "|---|---|" + "---|" * (len(outcomes) + 1)]
        for label, s in with_outcomes.items():
            cells = [_cell(s, o) if o in s["distribution"] else "-" for o in outcomes]
            lines.append(f"| {label} | {s['episodes']} | " + " | ".join(cells)
                         + f" | {_number(s.get('mean_return'))} |")
        lines.append("")
    if without:
        lines += [f"{game.get('name') or 'The game'} reports no outcomes, so the agent is judged by its return "
                  "(the sum of the game's rewards per episode):", "",
                  "| evaluation | episodes | mean return | mean length |", "|---|---|---|---|"]
        lines += [f"| {label} | {s['episodes']} | {_number(s.get('mean_return'))} | {_number(s.get('mean_length'))} |"
                  for label, s in without.items()]
    if kind == "reward_model":
        if metrics.get("eval_accuracy") is not None:
            lines += ["## Evaluation", "", f"Held-out preference accuracy: {metrics['eval_accuracy']:.1%} on "
                      f"{metrics.get('eval_comparisons', '?')} comparisons between trajectories never trained on "
                      f"({metrics.get('train_comparisons', '?')} training comparisons)."]
        elif not lines:
            lines += ["## Evaluation", "", "No held-out preference accuracy recorded in train_results.json (trained "
                      "with eval_fraction=0, or outside hf-agents)."]
    return "\n".join(lines).strip() or ("## Evaluation\n\nNot evaluated yet: `hf-agents evaluate FOLDER` adds the "
                                        "results here.")


def _limitations(kind: str, game: dict, evaluations: dict) -> str:
    measured = ""
    if kind != "reward_model" and evaluations:
        measured = " " + (RATES if any(_has_outcomes(s) for s in evaluations.values()) else RETURNS)
    if kind == "reward_model":  # the game's own text speaks of agents that play it
        known = f"trajectories of {game['name']}" if game["name"] else "the trajectories it was trained on"
        return f"It has seen only {known}: on another game or level its scores mean nothing. {LIMITATIONS[kind]}"
    return f"{game['limitations']} {LIMITATIONS[kind]}{measured}"


def _media_text(folder: Path) -> str:
    pictures = sorted(p.relative_to(folder) for p in folder.glob("*.png")) + sorted(
        p.relative_to(folder) for p in folder.glob("eval/**/*.png"))
    videos = sorted(p.relative_to(folder) for p in folder.glob("eval/**/videos/*.gif"))[:1]
    if not pictures and not videos:
        return ""
    return "## Plots and a replay\n\n" + "\n".join(f"![{p.stem}]({p.as_posix()})" for p in [*videos, *pictures])


def _training_text(made: dict, names: dict) -> str:
    if not made:
        return "No provenance.json beside the weights: how it was trained is not recorded."
    config = made.get("config") or {}
    keys = [k for k in ("stage", "model_preset", "dataset", "init_from", "agent", "init_adapter", "trajectories",
                        "preferences", "encoder", "reward_source", "reward_model", "target", "algorithm", "trainable",
                        "lora_r", "kl_coef", "entropy_coef", "num_updates", "episodes_per_update", "learning_rate",
                        "per_device_train_batch_size", "max_steps", "num_train_epochs", "context_length",
                        "l2_penalty", "beta", "seed") if config.get(k) not in (None, "", [])]
    rows = "\n".join(f"| {k} | {without_local_paths(str(config[k]), names)} |" for k in keys)
    recipe = without_local_paths(made.get("recipe") or "", names) or "(command line)"
    overrides = " ".join(without_local_paths([str(o) for o in made.get("overrides") or []], names))
    return (f"Recipe `{recipe}` {('with `' + overrides + '`') if overrides else ''}, hf-agents "
            f"{made.get('hf_agents_version')}, commit {made.get('git_commit') or 'unknown'}. The full config and the "
            f"fingerprints of every input are in `provenance.json` (local paths as folder names).\n\n"
            f"| hyperparameter | value |\n|---|---|\n{rows}")


def _kind_fields(folder: Path, kind: str, made: dict, game: dict, base: str | None, recorded: str | None,
                 repo: str) -> dict:
    config = _read_json(folder / "config.json") or {}
    run = made.get("config") or {}
    if kind == "agent":
        weights = folder / "model.safetensors"
        params = _parameter_count(weights) if weights.exists() else 0
        role = ("Fine-tuned (SFT) from a pretrained agent on curated demonstrations." if run.get("init_from") else
                "Aligned from a fine-tuned agent to a designer's preferences (see the training section)."
                if run.get("agent") else "Trained by imitation on recorded gameplay.")
        return dict(image_size=config.get("image_size"), num_layers=config.get("num_layers"),
                    hidden_size=config.get("hidden_size"), context_length=config.get("context_length"),
                    parameters=f"{params / 1e6:.1f}M" if params else "unknown", role=role)
    if kind == "reward_model":
        encoder = config.get("encoder")
        text = ("frozen transformer of the agent it was trained for" if encoder == "agent" else
                "fixed random projection of the pixels (the paper's baseline)")
        return dict(max_steps=config.get("max_steps"), encoder_text=text,
                    align=_align_command(repo, game, run, base))
    adapter = _read_json(folder / "adapter_config.json") or {}
    target = run.get("target")
    size = sum(f.stat().st_size for f in folder.glob("adapter_model.safetensors"))
    name = (run.get("adapter_name") or (_read_json(folder / "hf_agents_base.json") or {}).get("adapter_name")
            or folder.name)
    where = f" (trained on the local agent `{Path(str(recorded)).name}`; publish that agent and name its Hub id)" \
        if recorded and not base else ""
    return dict(adapter_size=f"rank {adapter.get('r')}, {size / 1e6:.1f} MB", adapter_name=name,
                base_model=base or "USER/BASE_AGENT", base_note=f"  # its base agent{where}",
                role=f"the designer's target {game['outcome_noun']} is `{target}`." if target else
                "see the training section.")


def _align_command(repo: str, game: dict, run: dict, agent: str | None) -> str:
    """How to align an agent with this reward model: one designer's LoRA adapter, trained online (align.yaml)."""
    words = ["hf-agents train recipes/align.yaml", f"agent={agent or 'USER/AGENT'}", f"reward_model={repo}",
             "init_adapter="]
    if game["outcomes"]:
        words.append(f"target={run.get('target') or 'TARGET'}")
        note = "" if run.get("target") else (f" `TARGET` is the {game['outcome_noun']} the designer wants, one of "
                                             f"{', '.join(game['outcomes'])}; it names the success rate in the logs.")
    else:
        words += ["target=", "adapter_name=NAME", "output_dir=align-NAME"]
        note = f" {game.get('name') or 'The game'} reports no outcomes: the reward model alone says what is better."
    return "`" + " ".join(words) + "`." + note + (" `USER/AGENT`: the agent to align (of the same game)."
                                                   if not agent else "")


def _parameter_count(path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(int(math.prod(f.get_slice(k).get_shape())) for k in f.keys())
