"""The designer's loop (paper Appendix A, steps 3-5): R rounds of roll out the current adapter -> preferences
on those rollouts -> a reward model retrained on every round's rollouts so far -> preference fine-tuning and/or
online RL going on from the adapter -> evaluate.

Preferences come from a labeller: the synthetic oracle for a target outcome (`labeller: oracle`), a trained
reward model's ranking (`labeller: reward_model`), or a designer in the labelling app (`labeller: app`: the
labels in `label_db` made on the round's rollouts; the loop waits `wait_for_labels` seconds for them, or stops
and says how to label and resume). Round r writes under output_dir/round-r; a round whose evaluation exists is
not run again, so `resume=true` goes on after the last finished round. The sub-stages are the shipped
stages, configured by their recipes (`reward_recipe`, `preference_ft_recipe`, `align_recipe`) and overrides.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hf_agents.data import load_trajectories
from hf_agents.data.convert import merge_datasets
from hf_agents.data.preferences import read_preferences, synthetic_preferences, write_preferences
from hf_agents.files import atomic_write_json, write_train_results
from hf_agents.training import load_stage
from hf_agents.training.common import (
    PolicyArguments,
    RecipeError,
    RolloutArguments,
    StageArguments,
    check_output_dir,
    parse_stage,
)

LABELLERS = ("oracle", "reward_model", "app")
ROUND_IDS = 1_000_000  # round r's episode ids become r * ROUND_IDS + id in the merged rollouts


@dataclass
class AlignLoopConfig(StageArguments, PolicyArguments, RolloutArguments):
    r"""The designer's loop. Paper (Appendix A): the designer refreshes the reward model with rollouts of the
    improving agent; its experiments ran one round."""

    output_dir: str = field(default="", metadata={"help": "Where each round's rollouts, preferences, reward model, "
                                                  "adapter and evaluation go (round-1, round-2, ...)."})
    target: str | None = field(default=None, metadata={"help": "The outcome the designer wants: the oracle's target "
                                                       "and the success reported each round."})
    rounds: int = field(default=3, metadata={"help": "Rounds of roll out, label, reward model, train, evaluate."})
    labeller: str = field(default="oracle", metadata={"help": f"Who prefers: one of {LABELLERS}."})
    reward_model: str | None = field(default=None, metadata={"help": "labeller=reward_model: the trained reward "
                                                             "model whose ranking labels the rollouts."})
    label_db: str | None = field(default=None, metadata={"help": "labeller=app: the labelling app's database."})
    designer: str | None = field(default=None, metadata={"help": "labeller=app: whose labels (default: all)."})
    wait_for_labels: float = field(default=0.0, metadata={"help": "labeller=app: seconds to wait for labels on a "
                                                          "round's rollouts before stopping with instructions."})
    rollouts_per_round: int = field(default=200, metadata={"help": "Episodes rolled out (and labelled) per round."})
    comparisons_per_round: int | None = field(default=None, metadata={"help": "Oracle or reward-model comparisons "
                                                                      "per round (default: every strict pair)."})
    eval_episodes: int = field(default=300, metadata={"help": "Evaluation episodes per round (fresh seeds)."})
    reward_recipe: str = field(default="reward.yaml", metadata={"help": "Recipe of the reward model retrained "
                                                                "each round."})
    preference_ft_recipe: str | None = field(default="preference_ft.yaml", metadata={"help": "Recipe of the "
                                             "round's preference fine-tuning (empty: none)."})
    align_recipe: str | None = field(default="align.yaml", metadata={"help": "Recipe of the round's online RL "
                                                                     "(empty: none)."})
    reward_overrides: list[str] = field(default_factory=list, metadata={"help": "key=value overrides of the "
                                                                        "reward recipe."})
    preference_ft_overrides: list[str] = field(default_factory=list, metadata={"help": "key=value overrides of "
                                                                               "the preference_ft recipe."})
    align_overrides: list[str] = field(default_factory=list, metadata={"help": "key=value overrides of the align "
                                                                       "recipe."})
    trainable: str = field(default="lora", metadata={"help": "lora: the designer's adapter, carried from round to "
                                                     "round (head and full are not supported here)."})
    seed: int = field(default=0, metadata={"help": "Seeds the rollouts, the sampled comparisons and the stages."})

    def __post_init__(self):
        if self.labeller not in LABELLERS:
            raise ValueError(f"labeller must be one of {LABELLERS}, got '{self.labeller}'")
        if self.trainable != "lora":
            raise ValueError("the loop carries a LoRA adapter from round to round; set trainable=lora")
        if self.rounds < 1 or self.rollouts_per_round < 2 or self.eval_episodes < 1:
            raise ValueError("rounds, eval_episodes >= 1 and rollouts_per_round >= 2 are needed")
        if not (self.preference_ft_recipe or self.align_recipe):
            raise ValueError("set preference_ft_recipe, align_recipe or both: a round must train the adapter")
        if self.labeller == "oracle" and not self.target:
            raise ValueError("labeller=oracle needs `target`, the outcome the designer wants")
        if self.labeller == "reward_model" and not self.reward_model:
            raise ValueError("labeller=reward_model needs `reward_model`")
        if self.labeller == "app" and not self.label_db:
            raise ValueError("labeller=app needs `label_db`, the labelling app's database")
        super().__post_init__()


class LabelsMissing(ValueError):
    """A round's rollouts have no labels yet (labeller=app)."""


class AlignLoop:
    """Runs the rounds; `history` holds each finished round's evaluation."""

    def __init__(self, config: AlignLoopConfig):
        self.config, self.out = config, Path(config.output_dir)
        from hf_agents.models import AgentConfig

        self.game = config.game(AgentConfig.from_pretrained(config.agent), config.agent)
        outcomes = self.game.outcomes
        if config.target and outcomes and config.target not in outcomes:
            raise ValueError(f"target '{config.target}' is not an outcome of this game; choose one of "
                             f"{list(outcomes)}")
        self.history_path = self.out / "history.json"
        self.history = json.loads(self.history_path.read_text()) if self.history_path.exists() else []

    def adapter(self, r: int) -> str | None:
        """The adapter round r starts from: the last one trained, or `init_adapter` in round 1."""
        return self.history[r - 2]["adapter"] if r > 1 else self.config.init_adapter

    def run(self) -> dict:
        for r in range(len(self.history) + 1, self.config.rounds + 1):
            self.history.append(self.round(r))
            atomic_write_json(self.history_path, self.history)
        return {"rounds": len(self.history), "history": self.history}

    def round(self, r: int) -> dict:
        c, folder = self.config, self.out / f"round-{r}"
        rollouts = self.roll_out(r, folder)
        prefs = self.preferences(r, folder, rollouts)
        reward = self.train_reward_model(r, folder)
        adapter = self.adapter(r)
        if c.preference_ft_recipe:
            adapter = self.train(c.preference_ft_recipe, c.preference_ft_overrides, folder / "preference-ft",
                                 reward, adapter)
        if c.align_recipe:
            adapter = self.train(c.align_recipe, c.align_overrides, folder / "align", reward, adapter)
        summary = self.evaluate(adapter, folder / "eval", seed=12345 + r)
        reward_metrics = json.loads((Path(reward) / "train_results.json").read_text())["metrics"]
        return {"round": r, "adapter": adapter, "comparisons": len(read_preferences(prefs)),
                "reward_eval_accuracy": reward_metrics.get("eval_accuracy"),
                "distribution": summary["distribution"], "ci95": summary["ci95"],
                **({f"success_{c.target}": summary["distribution"].get(c.target, 0.0)} if c.target else {})}

    # -- the steps of a round ----------------------------------------------------------------------
    def roll_out(self, r: int, folder: Path) -> Path:
        """The current policy's episodes, written as the round's trajectory dataset (kept for labelling)."""
        path = folder / "rollouts"
        if not (path / "meta" / "info.json").exists():
            self.evaluate(self.adapter(r), folder / "rollouts-eval", seed=self.config.seed * 1000 + r,
                          episodes=self.config.rollouts_per_round, trajectories=path)
        return path

    def evaluate(self, adapter: str | None, out: Path, seed: int, episodes: int | None = None, trajectories=None):
        from hf_agents.rollout.evaluate import evaluate_model

        c = self.config
        return evaluate_model(c.agent, out, episodes=episodes or c.eval_episodes, num_envs=c.num_envs,
                              temperature=c.temperature, seed=seed, videos=0 if trajectories else 3,
                              label=out.parent.name, trajectories=trajectories, overwrite=True, env=self.game.id,
                              env_kwargs=self.game.kwargs, image_key=self.game.image_key,
                              max_steps=c.max_episode_steps, adapters={c.adapter_name: adapter} if adapter else None,
                              rollout_workers=c.rollout_workers)

    def preferences(self, r: int, folder: Path, rollouts: Path) -> Path:
        c, path = self.config, folder / "preferences.parquet"
        if path.exists():
            return path
        episodes = load_trajectories(rollouts).episodes
        if c.labeller == "app":
            pairs, labellers = self.app_labels(r, rollouts)
        else:
            pairs = self.ranked_pairs(episodes, rollouts)
            labellers = f"{c.labeller}:{c.target or Path(c.reward_model).name}"
        if not pairs:
            raise LabelsMissing(f"round {r}: no strict preference among {rollouts}'s {len(episodes)} rollouts "
                                "(they all tie); roll out more episodes (rollouts_per_round) or change the target")
        return write_preferences(path, pairs, labellers)

    def ranked_pairs(self, episodes: list[dict], rollouts: Path) -> list[tuple[int, int]]:
        c = self.config
        if c.labeller == "oracle":
            return synthetic_preferences(episodes, c.target, c.comparisons_per_round, seed=c.seed)
        from hf_agents.models import TrajectoryRewardModel

        data = load_trajectories(rollouts)
        model = TrajectoryRewardModel.load_trained(c.reward_model, data.frame_size[0])
        rewards = model(embeddings=model.embed_dataset(data, progress=False)).logits[:, 0].tolist()
        ids = [int(m["episode_id"]) for m in episodes]
        pairs = [(a, b) if ra > rb else (b, a) for i, (a, ra) in enumerate(zip(ids, rewards))
                 for b, rb in zip(ids[i + 1:], rewards[i + 1:]) if ra != rb]
        n = c.comparisons_per_round
        return pairs if n is None or len(pairs) <= n else random.Random(c.seed).sample(pairs, n)

    def app_labels(self, r: int, rollouts: Path):
        """The strict pairs a designer labelled on this round's rollouts (waiting for them if asked to)."""
        from hf_agents.data.labels import expand, read_labels, stale_datasets

        c, deadline = self.config, time.monotonic() + self.config.wait_for_labels
        rollouts = rollouts.resolve()  # the labelling app records the absolute path; output_dir may be relative
        while True:
            labels = [row for row in read_labels(c.label_db, c.designer)
                      if Path(row["dataset_path"]).resolve() == rollouts]
            stale = stale_datasets(labels)
            if stale:
                raise ValueError(f"round {r}: {stale[0][1]}; label the round's rollouts again (a new --db) and resume")
            seen, rows = set(), []
            for row in labels:  # one judgement per labeller and pair (an older database may repeat one)
                for pair in expand(row)[0]:
                    if (row["labeller"], frozenset(pair)) not in seen:
                        seen.add((row["labeller"], frozenset(pair)))
                        rows.append((pair, row["labeller"]))
            if rows or time.monotonic() >= deadline:
                break
            time.sleep(min(5.0, max(deadline - time.monotonic(), 0.1)))
        if not rows:
            raise LabelsMissing(f"round {r}: no labels in {c.label_db} on {rollouts} (or only ties and skips); "
                                f"label them with `hf-agents label {rollouts} --db {c.label_db} --labeller NAME`, "
                                "then run the loop again with resume=true")
        return [pair for pair, _ in rows], [who for _, who in rows]

    def train_reward_model(self, r: int, folder: Path) -> str:
        """A reward model on every round's rollouts and preferences so far (episode ids kept apart by round)."""
        out = folder / "reward"
        if (out / "train_results.json").exists():
            return str(out)
        rounds = [self.out / f"round-{k}" for k in range(1, r + 1)]
        merged = merge_datasets([load_trajectories(f / "rollouts") for f in rounds], folder / "all-rollouts",
                                [k * ROUND_IDS for k in range(1, r + 1)], overwrite=True,
                                description=f"Rollouts of rounds 1-{r} of the designer's loop.", progress=False)
        pairs, labellers = [], []
        for k, f in enumerate(rounds, start=1):
            found = read_preferences(f / "preferences.parquet")
            pairs += [(k * ROUND_IDS + a, k * ROUND_IDS + b) for a, b in found]
            labellers += [f"round-{k}"] * len(found)
        write_preferences(folder / "all-preferences.parquet", pairs, labellers)
        self.stage(self.config.reward_recipe, self.config.reward_overrides, out,
                   [f"trajectories={merged}", f"preferences={folder / 'all-preferences.parquet'}",
                    f"agent={self.config.agent}"])
        return str(out)

    def train(self, recipe: str, overrides: list[str], out: Path, reward: str, adapter: str | None) -> str:
        """Preference fine-tuning or RL of the designer's adapter with the round's reward model; its folder."""
        c = self.config
        if not (out / "adapter_config.json").exists():
            start = [f"init_adapter={adapter}"] if adapter else ["init_adapter="]
            self.stage(recipe, overrides, out, [f"agent={c.agent}", *start, "reward_source=model",
                                                f"reward_model={reward}", f"target={c.target or ''}",
                                                "trainable=lora", f"adapter_name={c.adapter_name}",
                                                f"num_envs={c.num_envs}", f"rollout_workers={c.rollout_workers}",
                                                f"seed={c.seed}",
                                                f"max_episode_steps={c.max_episode_steps}",
                                                *([f"env={c.env}"] if c.env else []),
                                                *([f"env_kwargs={c.env_kwargs}"] if c.env_kwargs else []),
                                                *([f"image_key={c.image_key}"] if c.image_key else [])])
        return str(out)

    def stage(self, recipe: str, overrides: list[str], out: Path, values: list[str]) -> dict:
        """Run a shipped stage in this process: its recipe, the loop's values, then the recipe overrides."""
        shutil.rmtree(out, ignore_errors=True)  # a round's half-done stage starts again
        report = ["--report_to", *(self.config.report_to or ["none"])]
        name, config = parse_stage(recipe, [*values, *overrides, f"output_dir={out}", "overwrite=true", *report])
        return load_stage(name).run(config)


def run(config: AlignLoopConfig) -> dict:
    if not config.resume:
        check_output_dir(config)
    elif not Path(config.output_dir).is_dir():
        raise RecipeError(f"{config.output_dir}: resume=true given but no loop was started there")
    loop = AlignLoop(config)  # every check before any rollout
    metrics = loop.run()
    write_train_results(config.output_dir, metrics, config=asdict(config))
    return metrics


CONFIG = AlignLoopConfig
REQUIRED = ("agent", "output_dir")
