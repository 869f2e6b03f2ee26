"""The built-in game's demo: the whole chain, end to end on JumpPads at CPU scale, and its report.

generate data -> pretrain -> SFT and the from-scratch baseline -> evaluate all three (the SFT agent's
evaluation episodes are kept as its on-policy rollouts) -> synthetic preferences for the left pad ->
reward models with the agent encoder and the random-projection baseline -> align the SFT agent to the left
pad with the more accurate of the two reward models: preference fine-tuning, then online RL (at CPU scale RLOO, both on one
LoRA adapter named "left"; the paper's head-only REINFORCE at --scale gpu), each evaluated -> comparison figure
and results tables beside the paper's. Stage outputs are reused when present.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hf_agents.files import atomic_write_json
from hf_agents.games.jumppads import PAPER
from hf_agents.locations import RECIPES

SCALES = {  # data, steps (None: the recipe's), evaluation size, reward-model epochs, preference fine-tuning
    # rollouts and steps, alignment updates and episodes, the evaluations' rollout workers (as the recipes');
    # "cpu": the README's demo (10 reward epochs: as accurate as 30 there)
    "cpu": dict(pretrain_episodes=400, per_pad=80, pretrain_steps=None, sft_steps=None, eval_episodes=300,
                reward_epochs=10, pft_rollouts=200, pft_steps=None, align_updates=None, align_episodes=32,
                rollout_workers=2),
    # smoke: only checks that the chain runs. Its pretraining and SFT sizes decide whether the SFT agent reaches a
    # pad in its 8 evaluation episodes (the preferences, reward models and alignment need one): kept as they are;
    # the later stages at their fewest (one reward epoch, one preference fine-tuning step, one alignment update)
    "smoke": dict(pretrain_episodes=16, per_pad=2, pretrain_steps=6, sft_steps=4, eval_episodes=8, reward_epochs=1,
                  pft_rollouts=4, pft_steps=1, align_updates=1, align_episodes=4, rollout_workers=2),
    # the paper's model, frames, batches and learning rates (recipes/gpu/), for a machine with a GPU
    "gpu": dict(pretrain_episodes=5000, per_pad=100, pretrain_steps=None, sft_steps=None, eval_episodes=1000,
                reward_epochs=None, pft_rollouts=None, pft_steps=None, align_updates=None, align_episodes=16,
                rollout_workers=0, frame_size=128, recipes="gpu",
                frame_codec="bmp"),  # uncompressed frames: the loaders keep up with the GPU (BENCHMARKS.md)
}
PREFERRED_PAD = "left"  # the paper aligns to the left pad first


class Stages:
    """Runs each demo stage once: a stage is reused only when its output exists and was made from the same inputs
    (fingerprints of the input folders, the recipe, the scale's sizes and the package version) as now."""

    def __init__(self, out: Path, log):
        self.record_path, self.log = out / "demo-stages.json", log
        self.record = json.loads(self.record_path.read_text()) if self.record_path.exists() else {}

    def __call__(self, name, done: Path, fn, inputs=(), **params):
        from hf_agents import __version__
        from hf_agents.locations import fingerprint

        key = {"inputs": {str(p): fingerprint(p) for p in inputs}, "params": params, "hf_agents": __version__}
        key = json.loads(json.dumps(key, default=str))
        if done.exists() and self.record.get(name) == key:
            self.log(f"[demo] {name}: reusing {done}")
            return
        if done.exists():
            self.log(f"[demo] {name}: {done} was made from other inputs (or by an older version); redoing it")
        start = time.time()
        self.log(f"[demo] {name} ...")
        fn()
        self.record[name] = key
        atomic_write_json(self.record_path, self.record)
        self.log(f"[demo] {name}: done in {time.time() - start:.0f}s")


def recipe_path(recipe: str, scale: dict) -> Path:
    """A stage's recipe at this scale (recipes/gpu/ for the paper's scale)."""
    return RECIPES / scale.get("recipes", "") / f"{recipe}.yaml"


def _train(recipe: str | Path, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", "hf_agents.training", str(recipe), *overrides]
    done = subprocess.run(cmd, env={**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"})
    if done.returncode:
        raise StageFailed(f"the {Path(recipe).stem} stage failed (exit code {done.returncode}); its error is printed above. Fix it "
                          "and run the demo again: finished stages are reused")


class StageFailed(RuntimeError):
    """A demo stage's training process exited with an error (printed by that process)."""


def run_demo(out="outputs", scale="cpu", num_envs=8, log=print) -> dict:
    from hf_agents.games.jumppads.generate import generate_pretrain, generate_sft
    from hf_agents.rollout.evaluate import compare, evaluate_model

    s, out = SCALES[scale], Path(out)
    data, t0 = out / "data", time.time()
    out.mkdir(parents=True, exist_ok=True)
    stage, size, codec = Stages(out, log), s.get("frame_size", 64), s.get("frame_codec", "png")
    recipe = lambda name: recipe_path(name, s)  # noqa: E731
    stage("pretraining data", data / "pretrain" / "meta" / "info.json",
          lambda: generate_pretrain(data / "pretrain", episodes=s["pretrain_episodes"], num_envs=num_envs,
                                    frame_size=size, overwrite=True, frame_codec=codec),
          episodes=s["pretrain_episodes"], size=size)
    stage("SFT data", data / "sft" / "meta" / "info.json",
          lambda: generate_sft(data / "sft", per_pad=s["per_pad"], num_envs=num_envs, frame_size=size, overwrite=True,
                               frame_codec=codec),
          per_pad=s["per_pad"], size=size)
    def common(name, steps):
        return [f"output_dir={out / name}", "overwrite=true"] + ([f"max_steps={steps}"] if steps else [])

    stage("pretrain", out / "pretrain" / "model.safetensors", lambda: _train(
        recipe("pretrain"), [f"dataset={data / 'pretrain'}", *common("pretrain", s["pretrain_steps"])]),
        inputs=[data / "pretrain", recipe("pretrain")], steps=s["pretrain_steps"])
    stage("SFT", out / "sft" / "model.safetensors", lambda: _train(
        recipe("sft"), [f"dataset={data / 'sft'}", f"init_from={out / 'pretrain'}", *common("sft", s["sft_steps"])]),
        inputs=[data / "sft", out / "pretrain", recipe("sft")], steps=s["sft_steps"])
    stage("scratch", out / "scratch" / "model.safetensors", lambda: _train(
        recipe("scratch"), [f"dataset={data / 'sft'}", *common("scratch", s["sft_steps"])]),
        inputs=[data / "sft", recipe("scratch")], steps=s["sft_steps"])
    summaries = {}
    rollouts = out / "rollouts" / "sft"
    for name in ("pretrain", "sft", "scratch"):
        label = {"pretrain": "base"}.get(name, name)
        target = out / name / "eval"  # inside the model's folder: its model card shows the results
        keep = rollouts if name == "sft" else None  # the paper's on-policy rollouts come from this evaluation
        done = target / "eval.json"  # and, for the SFT agent, its rollouts: either missing redoes the evaluation
        if keep is not None and not (keep / "meta" / "info.json").exists():
            done = keep / "meta" / "info.json"
        stage(f"evaluate {label}", done, lambda n=name, t=target, lb=label, k=keep: evaluate_model(
            out / n, t, episodes=s["eval_episodes"], num_envs=num_envs, label=lb, trajectories=k, overwrite=True,
            rollout_workers=s["rollout_workers"]),
            inputs=[out / name], episodes=s["eval_episodes"])
        summaries[label] = json.loads((target / "eval.json").read_text())
    compare([out / n / "eval" for n in ("pretrain", "sft", "scratch")], out / "comparison.png", labels=list(summaries))
    rewards = reward_models(out, rollouts, s, stage, log)
    if "skipped" not in rewards["agent"]:
        summaries.update(align_left(out, s, num_envs, stage, best_encoder(rewards)))
    report = (report_header(scale) + results_table(summaries, out) + "\n" + reward_table(rewards) + "\n"
              + findings_table(findings(summaries, rewards)))
    (out / "report.md").write_text(report)
    log(report)
    log(f"[demo] finished in {time.time() - t0:.0f}s; figures and videos under {out}/<stage>/eval, table in {out}/report.md")
    return summaries


def reward_models(out: Path, rollouts: Path, s: dict, stage: Stages, log) -> dict:
    """Synthetic preferences on the SFT agent's rollouts, then a reward model per encoder; their metrics."""
    import pyarrow.parquet as pq

    from hf_agents.data import load_trajectories
    from hf_agents.data.preferences import synthetic_preferences, write_preferences

    prefs = out / f"preferences-{PREFERRED_PAD}.parquet"
    stage("synthetic preferences", prefs, lambda: write_preferences(
        prefs, synthetic_preferences(load_trajectories(rollouts).episodes, PREFERRED_PAD),
        f"synthetic:{PREFERRED_PAD}"), inputs=[rollouts])
    results = {}
    if not pq.read_metadata(prefs).num_rows:  # every rollout tied (tiny smoke runs): nothing to learn from
        log("[demo] reward models: skipped, the rollouts hold no strict preference (all ended alike)")
        return {encoder: {"skipped": "no strict preference among the rollouts"} for encoder in ("agent", "random")}
    epochs = [f"num_train_epochs={s['reward_epochs']}"] if s["reward_epochs"] else []
    for encoder in ("agent", "random"):  # a failing stage stops the demo with its error
        target = out / f"reward-{PREFERRED_PAD}-{encoder}"
        stage(f"reward model ({encoder} encoder)", target / "model.safetensors", lambda e=encoder, t=target: _train(
            recipe_path("reward", s), [f"trajectories={rollouts}", f"preferences={prefs}", f"encoder={e}",
                                       f"agent={out / 'sft'}", f"output_dir={t}", "overwrite=true", *epochs]),
            inputs=[rollouts, prefs, out / "sft", recipe_path("reward", s)], epochs=s["reward_epochs"])
        results[encoder] = json.loads((target / "train_results.json").read_text())["metrics"]
    return results


def best_encoder(rewards: dict) -> str:
    """The encoder whose reward model is the more accurate on held-out comparisons (the agent's on a tie or
    when neither was evaluated): what a designer would align with."""
    accuracy = {e: m.get("eval_accuracy") or 0.0 for e, m in rewards.items() if "skipped" not in m}
    return max(accuracy, key=lambda e: (accuracy[e], e == "agent")) if accuracy else "agent"


def align_left(out: Path, s: dict, num_envs: int, stage: Stages, encoder: str = "agent") -> dict:
    """The left designer's agent as in the paper's Figure 8: preference fine-tuning on the SFT agent's
    top-scored rollouts, then online RL going on from it, both with the reward model of `encoder` (the more
    accurate on held-out comparisons); each evaluated."""
    from hf_agents.models.adapters import is_adapter

    reward_model, pft = out / f"reward-{PREFERRED_PAD}-{encoder}", out / f"preference-ft-{PREFERRED_PAD}"
    recipe = recipe_path("preference_ft", s)
    sizes = [f"{k}={v}" for k, v in (("rollout_episodes", s["pft_rollouts"]), ("max_steps", s["pft_steps"]))
             if v]
    stage(f"preference fine-tuning ({PREFERRED_PAD})", pft / "train_results.json", lambda: _train(
        recipe, [f"target={PREFERRED_PAD}", f"agent={out / 'sft'}", f"reward_model={reward_model}",
                 f"output_dir={pft}", "overwrite=true", f"num_envs={num_envs}", *sizes]),
        inputs=[out / "sft", reward_model, recipe], rollouts=s["pft_rollouts"], steps=s["pft_steps"])
    fine_tuned = _evaluate(pft, f"sft + {PREFERRED_PAD} preference fine-tuning", s, num_envs, stage)
    target, recipe = out / f"align-{PREFERRED_PAD}", recipe_path("align", s)
    # a LoRA adapter goes on training on the SFT agent; a head (the paper's) was saved as a whole agent
    start = [f"agent={out / 'sft'}", f"init_adapter={pft}"] if is_adapter(pft) else [f"agent={pft}"]
    stage(f"align ({PREFERRED_PAD} adapter)", target / "train_results.json", lambda: _train(
        recipe, [f"target={PREFERRED_PAD}", *start, f"reward_model={reward_model}", f"output_dir={target}",
                 "overwrite=true", f"episodes_per_update={s['align_episodes']}"]  # on the recipe's 16 games
        + ([f"num_updates={s['align_updates']}"] if s["align_updates"] else [])),
        inputs=[out / "sft", pft, reward_model, recipe], updates=s["align_updates"],
        episodes=s["align_episodes"])
    return {fine_tuned["label"]: fine_tuned, f"sft + {PREFERRED_PAD} adapter": _evaluate(
        target, f"sft + {PREFERRED_PAD} adapter", s, num_envs, stage)}


def _evaluate(model: Path, label: str, s: dict, num_envs: int, stage: Stages) -> dict:
    """A demo stage: evaluate an agent (or adapter) into model/eval; its summary."""
    from hf_agents.rollout.evaluate import evaluate_model

    evaluation = model / "eval"
    stage(f"evaluate {label}", evaluation / "eval.json", lambda: evaluate_model(
        model, evaluation, episodes=s["eval_episodes"], num_envs=num_envs, label=label,
        rollout_workers=s["rollout_workers"]), inputs=[model],
        episodes=s["eval_episodes"])
    return json.loads((evaluation / "eval.json").read_text())


def reward_table(results: dict) -> str:
    used = best_encoder(results)
    lines = [f"| reward model ({PREFERRED_PAD} pad) | train comparisons | held-out comparisons | held-out accuracy | "
             "paper (~100 comparisons) | aligns the adapter |", "|---|---|---|---|---|---|"]
    paper = {"agent": "> 90%", "random": "lower, high variance"}
    for encoder, m in results.items():
        if "skipped" in m:
            lines.append(f"| {encoder} encoder | - | - | skipped: {m['skipped']} | {paper[encoder]} | |")
            continue
        accuracy = m.get("eval_accuracy")
        shown = "" if accuracy is None else f"{accuracy:.0%}"
        if _collapsed(m):
            shown = "collapsed: one constant reward for every trajectory"
        lines.append(f"| {encoder} encoder | {m['train_comparisons']} | {m['eval_comparisons']} | {shown} | "
                     f"{paper[encoder]} | {'yes' if encoder == used else ''} |")
    return "\n".join(lines) + "\n"


def _collapsed(metrics: dict) -> bool:
    """A reward model that gives every training trajectory the same reward (the L2 penalty pulled its weights to
    zero): its accuracy counts every comparison as a tie, so it says nothing about its encoder."""
    lo, hi = metrics.get("reward_min"), metrics.get("reward_max")
    return lo is not None and hi is not None and hi - lo < 1e-6


def report_header(scale: str) -> str:
    """The report's title and what its scale is for."""
    from hf_agents import __version__

    lines = [f"# JumpPads demo report ({scale} scale, hf-agents {__version__})", ""]
    if scale == "smoke":
        lines += ["Smoke scale only checks that the whole chain runs: its models are tiny and barely trained, so its "
                  "numbers mean nothing about the paper's findings.", ""]
    return "\n".join(lines) + "\n"


def results_table(summaries: dict, out: Path) -> str:
    lines = ["| agent | folder | left | middle | right | none (failure) | paper failure | eval loss | episodes |",
             "|---|---|---|---|---|---|---|---|---|"]
    runs = {"base": "pretrain", f"sft + {PREFERRED_PAD} adapter": f"align-{PREFERRED_PAD}",
            f"sft + {PREFERRED_PAD} preference fine-tuning": f"preference-ft-{PREFERRED_PAD}"}  # label -> folder
    for label, s in summaries.items():
        d = s["distribution"]
        run = runs.get(label, label)
        results = out / run / "train_results.json"
        loss = json.loads(results.read_text())["metrics"].get("eval_loss") if results.exists() else None
        paper = PAPER.get(label, {}).get("none")
        lines.append(f"| {label} | `{run}/` | {d['left']:.0%} | {d['middle']:.0%} | {d['right']:.0%} | {d['none']:.0%} | "
                     f"{'' if paper is None else f'{paper:.0%}'} | {'' if loss is None else f'{loss:.2f}'} | "
                     f"{s['episodes']} |")
    return "\n".join(lines) + "\n"


def _share(summary: dict, outcome: str) -> str:
    lo, hi = summary["ci95"][outcome]
    return f"{summary['distribution'][outcome]:.0%} [{lo:.0%}-{hi:.0%}]"


def findings(summaries: dict, rewards: dict) -> list[dict]:
    """The paper's findings that this run can check, each with what was measured (95% Wilson intervals, one
    seed) and whether it holds here."""
    base, sft, scratch = (summaries.get(k) for k in ("base", "sft", "scratch"))
    aligned = summaries.get(f"sft + {PREFERRED_PAD} adapter")
    apart = lambda low, high, o: low["ci95"][o][1] < high["ci95"][o][0]  # noqa: E731  (intervals separate)
    rows = []
    if base and sft:
        rows.append(dict(finding="pretraining + SFT fails less than pretraining alone", paper="44% -> 11% failure",
                         measured=f"{_share(base, 'none')} -> {_share(sft, 'none')}", episodes=sft["episodes"],
                         holds=apart(sft, base, "none")))
        pads = {p: sft["distribution"][p] for p in sft["distribution"] if p != "none"}
        rows.append(dict(finding="the SFT agent is competent and balanced (failure <= 20%, every pad >= 15%)",
                         paper="11% failure, balanced", measured=f"failure {_share(sft, 'none')}, pads "
                         + " / ".join(f"{v:.0%}" for v in pads.values()), episodes=sft["episodes"],
                         holds=sft["distribution"]["none"] <= 0.20 and min(pads.values()) >= 0.15))
        visits = {p: base["distribution"][p] for p in pads}
        rows.append(dict(finding="the base agent is biased (most-visited pad >= 2x the least)",
                         paper="yes (its data's spawn imbalance)", measured=" / ".join(f"{p} {v:.0%}" for p, v in
                                                                                      visits.items()),
                         episodes=base["episodes"], holds=_measured(max(visits.values()) >= 2 * min(visits.values()),
                                                                    *visits.values())))
    if sft and scratch:
        ratio = scratch["distribution"]["none"] / max(sft["distribution"]["none"], 1e-9)
        rows.append(dict(finding="without pretraining the agent fails >= 1.5x as often (intervals apart)",
                         paper="~20% vs 11%", measured=f"{_share(scratch, 'none')} vs {_share(sft, 'none')} "
                         f"({ratio:.1f}x)", episodes=scratch["episodes"], holds=ratio >= 1.5 and apart(sft, scratch, "none")))
    accuracy = {e: m.get("eval_accuracy") for e, m in rewards.items() if "skipped" not in m}
    collapsed = [e for e, m in rewards.items() if "skipped" not in m and _collapsed(m)]
    if collapsed:
        rows.append(dict(finding="agent-encoder reward model beats the random encoder (by >= 2 points)",
                         paper="> 90% vs lower", measured=f"not compared: the {' and '.join(collapsed)} encoder's "
                         "model collapsed to one constant reward", episodes=rewards["agent"].get("eval_comparisons"),
                         holds=None))
    elif accuracy.get("agent") is not None and accuracy.get("random") is not None:
        rows.append(dict(finding="agent-encoder reward model beats the random encoder (by >= 2 points)",
                         paper="> 90% vs lower", measured=f"{accuracy['agent']:.1%} vs {accuracy['random']:.1%} held-out",
                         episodes=rewards["agent"].get("eval_comparisons"),
                         holds=accuracy["agent"] >= accuracy["random"] + 0.02))
    if aligned and sft:
        before, after = sft["distribution"][PREFERRED_PAD], aligned["distribution"][PREFERRED_PAD]
        rows.append(dict(finding=f"alignment at least doubles the {PREFERRED_PAD} pad (intervals apart)",
                         paper="~90% after 600 updates", measured=f"{_share(sft, PREFERRED_PAD)} -> "
                         f"{_share(aligned, PREFERRED_PAD)}", episodes=aligned["episodes"],
                         holds=_measured(after >= 2 * before and apart(sft, aligned, PREFERRED_PAD), before, after)))
    return rows


def _measured(holds: bool, *shares: float) -> bool | None:
    """A finding about shares that are all zero is not measured (None: 'n/a'), whatever the comparison says."""
    return holds if any(shares) else None


def findings_table(rows: list[dict]) -> str:
    lines = ["| finding | paper | this run (95% interval) | episodes (reward models: comparisons) | seeds | holds here |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['finding']} | {r['paper']} | {r['measured']} | {r['episodes']} | 1 | "
              f"{'n/a' if r['holds'] is None else 'yes' if r['holds'] else '**no**'} |" for r in rows]
    return "\n".join(lines) + "\n"
