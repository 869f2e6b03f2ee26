"""`hf-agents` command line: one sub-command per pipeline stage."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise ValueError(f"--size {text}: give pixels as N or WxH, e.g. 64 or 96x64") from None
    if len(parts) > 2 or min(parts) <= 0:
        raise ValueError(f"--size {text}: give positive pixels as N or WxH, e.g. 64 or 96x64")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def cmd_data_import(args) -> None:
    from hf_agents.data.wham import import_wham
    from hf_agents.envs.spec import GameSpec, parse_kwargs

    size = _size(args.size)
    game = GameSpec.of(args.env, parse_kwargs(args.env_kwarg), args.image_key, size[0], args.fps) if args.env else None
    if game is None:
        print("note: no --env given: the dataset names no game, so agents trained on it need --env to play",
              file=sys.stderr)
    path = import_wham(args.sources, args.out, frame_size=size, overwrite=args.overwrite, variant=args.variant,
                       fps=args.fps or (game.fps if game else 10), game=game.to_dict() if game else None)
    info = json.loads((path / "meta" / "info.json").read_text())
    print(json.dumps({"wrote": str(path), "episodes": info["num_episodes"], "steps": info["num_steps"],
                      **info["import"]}))
    if info["import"]["stick_values_quantised"]:
        print(f"note: {info['import']['stick_values_quantised']} stick values lay between bucket centres and were "
              "moved to the nearest one (recordings from the game hold the centres exactly)", file=sys.stderr)


def cmd_data_info(args) -> None:
    from hf_agents.data import load_trajectories

    ds = load_trajectories(args.dataset)
    print(json.dumps(ds.info, indent=2))


def cmd_data_verify(args) -> None:
    from hf_agents.data import load_trajectories
    from hf_agents.data.schema import DatasetFormatError

    data = load_trajectories(args.dataset)
    problems = data.verify()
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        raise DatasetFormatError(f"{args.dataset}: {len(problems)} of {len(data)} episodes have damaged frames (listed "
                                 "above); re-generate or re-import them")
    print(json.dumps({"dataset": args.dataset, "episodes": len(data), "steps": data.num_steps, "damaged": 0}))


def cmd_data_export(args) -> None:
    from hf_agents.data import load_trajectories
    from hf_agents.data.wham import export_npz
    from hf_agents.files import writing_folder

    with writing_folder(args.out):
        paths = export_npz(load_trajectories(args.dataset), args.out, overwrite=args.overwrite)
    print(f"wrote {len(paths)} .npz files to {args.out}")


def cmd_data_convert(args) -> None:
    from hf_agents.data import load_trajectories
    from hf_agents.data.convert import convert_frames

    out = convert_frames(load_trajectories(args.dataset), args.out, args.frame_codec, overwrite=args.overwrite)
    print(f"wrote {out} ({args.frame_codec} frames)")


def cmd_data_push(args) -> None:
    from hf_agents.data import load_trajectories
    from hf_agents.publish import upload_folder

    load_trajectories(args.dataset)  # refuse to publish something that does not open
    upload_folder(args.dataset, args.repo_id, "dataset", args.private)
    print(f"pushed {args.dataset} to the Hub dataset {args.repo_id}")


def cmd_data_generate(args) -> None:
    from hf_agents.data.writer import check_target
    from hf_agents.files import output_lock
    from hf_agents.games.jumppads.generate import generate_pretrain, generate_sft

    common = dict(frame_size=_size(args.size), num_envs=args.num_envs, seed=args.seed, max_steps=args.max_steps,
                  overwrite=args.overwrite, frame_codec=args.frame_codec)
    with output_lock(args.out):  # a second `data generate --out` of this folder fails now, not after its games
        check_target(Path(args.out), args.overwrite)
        if args.kind == "pretrain":
            path = generate_pretrain(args.out, episodes=args.episodes, **common)
        else:
            path = generate_sft(args.out, per_pad=args.per_pad, **common)
    info = json.loads((path / "meta" / "info.json").read_text())
    print(json.dumps({"wrote": str(path), "episodes": info["num_episodes"], "steps": info["num_steps"],
                      "dropped_episodes": info.get("dropped_episodes", 0)}))


def cmd_env_contact_sheet(args) -> None:
    from hf_agents.files import check_file_target, is_png
    from hf_agents.games.jumppads.plots import contact_sheet

    check_file_target(args.out, args.overwrite, "PNG image", is_png)
    print(f"wrote {contact_sheet(args.out, frame_size=args.size)}")


def cmd_evaluate(args) -> None:
    from hf_agents.envs.spec import parse_kwargs
    from hf_agents.rollout.evaluate import evaluate_model

    summary = evaluate_model(args.model, args.out, episodes=args.episodes, num_envs=args.num_envs,
                             temperature=args.temperature, seed=args.seed, videos=args.videos, label=args.label,
                             trajectories=args.trajectories, overwrite=args.overwrite, env=args.env,
                             max_steps=args.max_steps, adapters=_adapters(args.adapter),
                             env_kwargs=parse_kwargs(args.env_kwarg), image_key=args.image_key,
                             rollout_workers=args.rollout_workers)
    keys = ("label", "episodes", "dropped", "distribution", "mean_return", "mean_length")
    for one in (summary.values() if summary and "episodes" not in summary else [summary]):
        if one:  # other ranks of a distributed evaluation return nothing; rank 0 reports
            print(json.dumps({k: one[k] for k in keys}))


def evaluation_folder(model: str, trajectories: str | None) -> str:
    """Where `evaluate` writes when --out is not given: MODEL/eval (the evaluation its model card shows), but beside
    the rollouts (DIR-eval) when --trajectories DIR is given, so making rollouts never replaces a model's own
    evaluation."""
    if trajectories:
        return f"{os.path.normpath(trajectories)}-eval"
    return f"{model.rstrip('/')}/eval"


def _game_arguments(parser) -> None:
    """--env, --env-kwarg and --max-steps of a command that plays an agent."""
    parser.add_argument("--env", default=None,
                        help="the game to play, a Gymnasium id ('module:Id', e.g. ale_py:ALE/Pong-v5) behind "
                             "GamepadEnv (default: the game saved with the agent)")
    parser.add_argument("--env-kwarg", action="append", default=None, metavar="KEY=VALUE",
                        help="a keyword argument of the game (repeatable; JSON values), e.g. pads_look_alike=true")
    parser.add_argument("--image-key", default=None, help="the observation key holding the RGB frame, for Dict "
                        "observations with several images (default: the game's saved one, or its only image)")
    parser.add_argument("--max-steps", type=int, default=None, help="episode timeout in steps (default: the game's)")


def _adapters(specs) -> dict | None:
    """--adapter NAME=DIR or DIR (named after the folder) -> {name: dir}."""
    if not specs:
        return None
    out = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (None, None, spec)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"--adapter {spec}: no such adapter directory (an alignment run's output_dir)")
        out[name or os.path.basename(os.path.normpath(path))] = path
    return out


def cmd_preferences_synthetic(args) -> None:
    from collections import Counter

    from hf_agents.data import load_trajectories
    from hf_agents.data.preferences import check_preferences_target, synthetic_preferences, write_preferences
    from hf_agents.envs.spec import resolve_game, saved_game

    check_preferences_target(args.out, args.overwrite)
    data = load_trajectories(args.trajectories)
    episodes = data.episodes
    if args.env or data.info.get("game"):
        game = resolve_game(args.env, saved_game(data.info.get("game"), args.trajectories),
                            f"the trajectories at {args.trajectories}")
        outcomes, where = game.outcomes, game.describe()
    else:  # recordings that name no game: the outcomes they hold
        outcomes = tuple(sorted({e["outcome"] for e in episodes} - {"none"}))
        where = f"the trajectories at {args.trajectories} (they name no game; --env names it)"
    if outcomes and args.target not in outcomes:
        raise ValueError(f"--target {args.target}: not an outcome of {where}; choose one of {list(outcomes)}")
    pairs = synthetic_preferences(episodes, args.target, max_comparisons=args.max_comparisons, seed=args.seed)
    if not pairs:
        raise ValueError(f"{args.trajectories}: no strict preference among its {len(episodes)} trajectories (outcomes "
                         f"{dict(Counter(e['outcome'] for e in episodes))}); roll out episodes that end differently "
                         "(e.g. `hf-agents evaluate AGENT --trajectories DIR`); nothing was written")
    write_preferences(args.out, pairs, labeller=f"synthetic:{args.target}", dataset=args.trajectories)
    outcomes = dict(Counter(e["outcome"] for e in episodes))
    print(json.dumps({"preferences": str(args.out), "comparisons": len(pairs), "trajectories": len(episodes),
                      "outcomes": outcomes}))


def cmd_reward_sweep(args) -> None:
    from transformers import HfArgumentParser

    from hf_agents.files import follow_umask
    from hf_agents.processes import freeze_loaded_objects
    from hf_agents.training.reward_sweep import RewardSweepConfig, run_sweep

    rest = list(args.rest)
    if rest and not rest[0].startswith("-"):
        rest = ["--trajectories", *rest]  # the trajectories may come first, without their flag
    parser = HfArgumentParser(RewardSweepConfig, prog="hf-agents reward sweep", formatter_class=HelpFormatter,
                              description=RewardSweepConfig.__doc__)
    (config,) = parser.parse_args_into_dataclasses(args=rest)
    freeze_loaded_objects()  # as a training run does: the sweep's Trainers' garbage collections skip the libraries
    summary = run_sweep(config)
    follow_umask(config.output_dir)  # the reward models' safetensors (written 0600 through tempfile)
    for target, by_encoder in summary["results"].items():
        for encoder, rows in by_encoder.items():
            print(json.dumps({"target": target, "encoder": encoder, **{k: round(r["mean"], 3) for k, r in rows.items()}}))
    print(f"wrote {config.output_dir}/sweep.json and {config.output_dir}/sweep.png")


def cmd_compare(args) -> None:
    from hf_agents.files import check_file_target, is_png
    from hf_agents.rollout.evaluate import compare

    check_file_target(args.out, args.overwrite, "PNG image", is_png)
    print(f"wrote {compare(args.eval_dirs, args.out, labels=args.labels)}")


def cmd_train(args) -> None:
    from hf_agents.training.launch import main as train_main

    code = train_main(args.rest)
    if code:
        raise SystemExit(code)


def cmd_align_loop(args) -> None:
    """`hf-agents align loop [RECIPE] [key=value ...]`: the align_loop stage, its shipped recipe by default."""
    rest = list(args.rest)
    if not rest or "=" in rest[0] or rest[0].startswith("-"):
        rest = ["align_loop.yaml", *rest]
    args.rest = rest
    cmd_train(args)


def accelerate_config(name: str) -> Path:
    """An accelerate config file: a path, or the name of one shipped with the package (cpu, gpu, multi-gpu, ...)."""
    from hf_agents.locations import RECIPES

    shipped = RECIPES / "accelerate" / f"{Path(name).stem}.yaml"
    if Path(name).is_file():
        return Path(name)
    if shipped.is_file() and os.sep not in name:
        return shipped
    names = sorted(p.stem for p in (RECIPES / "accelerate").glob("*.yaml"))
    raise FileNotFoundError(f"accelerate config '{name}': no such file, and not one shipped with the package "
                            f"({', '.join(names)})")


def cmd_launch(args) -> None:
    import subprocess

    config = accelerate_config(args.config)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m",
               "hf_agents.training", *args.rest]
    print(f"accelerate launch --config_file {config} -m hf_agents.training {' '.join(args.rest)}", file=sys.stderr)
    code = subprocess.run(command).returncode
    if code:
        raise SystemExit(code)


def cmd_push(args) -> None:
    from contextlib import nullcontext

    from hf_agents.files import writing_folder
    from hf_agents.publish import push

    if args.to and os.path.exists(args.to) and not os.path.isdir(args.to):
        raise FileExistsError(f"--to {args.to}: is a file; give a new or empty folder")
    with writing_folder(args.to) if args.to else nullcontext():
        where = push(args.folder, args.repo_id, private=args.private, to=args.to, base_model=args.base_model,
                     datasets=args.datasets)
    print(f"wrote what would be uploaded to {args.repo_id} into {where}" if args.to else f"pushed {args.folder} to "
          f"the Hub model {where}")


def cmd_play(args) -> None:
    from hf_agents.envs.spec import parse_kwargs
    from hf_agents.rollout.evaluate import evaluate_model

    out = Path(args.out or f"play-{Path(args.model).name}")
    summary = evaluate_model(args.model, out, episodes=args.episodes, num_envs=min(args.episodes, 4),
                             temperature=args.temperature, seed=args.seed, videos=args.episodes,
                             adapters=_adapters(args.adapter), progress=False, env=args.env,
                             max_steps=args.max_steps, env_kwargs=parse_kwargs(args.env_kwarg),
                             image_key=args.image_key)
    videos = sorted(str(p) for p in out.glob("**/videos/*.gif"))
    outcomes = {k: v["counts"] for k, v in summary.items()} if "counts" not in summary else summary["counts"]
    print(json.dumps({"videos": videos, "outcomes": outcomes}))


def cmd_recipes(args) -> None:
    from hf_agents.locations import RECIPES

    print(RECIPES if args.path else "\n".join(str(p) for p in sorted(RECIPES.rglob("*.yaml"))))


def cmd_label(args) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise FileNotFoundError("the labelling app needs Gradio: pip install 'hf-agents[label]'") from None
    from hf_agents.labelling.app import LabellingApp, serve

    app = LabellingApp(args.trajectories, args.db, args.labeller, target=args.target, levels=args.levels,
                       reward_model=args.reward_model, videos=args.videos, seed=args.seed)
    serve(app, host=args.host, port=args.port, token=args.token or os.environ.get("HF_AGENTS_LABEL_TOKEN"))


def cmd_label_export(args) -> None:
    from hf_agents.data.labels import export_preferences
    from hf_agents.data.preferences import check_preferences_target

    check_preferences_target(args.out, args.overwrite)
    print(json.dumps(export_preferences(args.db, args.out, labeller=args.labeller)))


def cmd_label_summary(args) -> None:
    from hf_agents.data.labels import label_summary

    print(json.dumps(label_summary(args.db), indent=2))


def label_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-agents label export", formatter_class=HelpFormatter,
                                description="write the preferences parquet the reward stage reads, from the labels "
                                            "of a label database that were not undone; ties and skips are dropped "
                                            "and counted; labels of a dataset regenerated since are refused")
    p.add_argument("db", help="label database (the --db of `hf-agents label`)")
    p.add_argument("--out", required=True, help="preferences parquet file")
    p.add_argument("--labeller", default=None, help="only this designer's labels (one reward model per designer)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preferences file at --out (never "
                   "anything else)")
    p.set_defaults(fn=cmd_label_export, command="label-export")
    return p


def label_summary_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-agents label summary", formatter_class=HelpFormatter,
                                description="labels per designer and dataset, undone labels, and how often designers "
                                            "agree on the pairs they both judged (JSON)")
    p.add_argument("db", help="label database (the --db of `hf-agents label`)")
    p.set_defaults(fn=cmd_label_summary, command="label-summary")
    return p


def cmd_demo(args) -> None:
    from hf_agents.games.jumppads.demo import StageFailed, run_demo

    out = args.out or ("outputs" if args.scale == "cpu" else f"outputs-{args.scale}")  # scales never share stages
    try:
        run_demo(out, scale=args.scale, num_envs=args.num_envs)
    except StageFailed as e:
        print(f"hf-agents demo: {e}", file=sys.stderr)
        raise SystemExit(1) from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, unless the help gives it already or there is none (None, an off
    switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is none for none in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def _command(group, name: str, summary: str, description: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """A sub-command: `summary` in its parent's list, `description` (default: the summary) atop its own help."""
    return group.add_parser(name, help=summary, description=description or summary, formatter_class=HelpFormatter,
                            **kwargs)


def _group(sub, name: str, summary: str, dest: str):
    """A command of sub-commands (data, env, ...); alone it prints its help."""
    parser = _command(sub, name, summary)
    parser.set_defaults(fn=lambda args: parser.print_help())
    return parser.add_subparsers(dest=dest, metavar="COMMAND", title="commands",
                                 help=f"`hf-agents {name} COMMAND --help` for its options")


DEMO = ("JumpPads only: the whole chain on the built-in game, then its report. Generate data -> pretrain -> SFT "
        "and the from-scratch baseline -> evaluate all three (the SFT agent's evaluation episodes are its on-policy "
        "rollouts) -> synthetic preferences for the left pad -> reward models with the agent encoder and the "
        "random-projection baseline -> align the SFT agent to the left pad with the more accurate of the two: "
        "preference fine-tuning, then online RL (at CPU scale RLOO, both on one LoRA adapter named 'left'; the "
        "paper's head-only REINFORCE at --scale gpu), each evaluated -> comparison figure and results tables beside the "
        "paper's. Finished stages are reused when their inputs are unchanged.")


def build_parser() -> argparse.ArgumentParser:
    from hf_agents import __version__

    p = argparse.ArgumentParser(
        prog="hf-agents", formatter_class=HelpFormatter,
        description="Train game-playing agents the way LLMs are trained, on the Hugging Face stack: trajectory data "
                    "-> pretraining and SFT -> evaluation -> preferences -> reward model -> alignment (one LoRA "
                    "adapter per designer) -> the Hub. The commands below are in pipeline order.",
        epilog="`hf-agents COMMAND --help` for each command; `hf-agents train RECIPE --help` for a stage's fields. "
               "A quick check that the whole chain runs: hf-agents demo --scale smoke")
    p.add_argument("--version", action="version", version=f"hf-agents {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                           help="`hf-agents COMMAND --help` for its options")

    data = _group(sub, "data", "trajectory datasets: import, generate, inspect, convert, publish", "data_command")
    imp = _command(data, "import", "import WHAM recordings (.npz files or imageN.png+actions.json folders)",
                   "Import recordings, one episode per .npz file or folder. An .npz holds 'images' uint8 (T, 3, H, "
                   "W) and 'actions' float (T, 16: 12 buttons in {0, 1}, then 4 stick axes in [-1, 1]); a folder "
                   "holds imageN.png and actions.json {file name: 16 numbers}. Optional, kept as recorded: per-step "
                   "'rewards' and 'state_<key>' arrays, the episode's 'outcome' (string) and 'outcome_step' (in an "
                   ".npz as arrays of those names, in a folder in episode.json with 'state' as {key: [...]}). "
                   "--env names the game (saved with the dataset, so the agents trained on it play it).")
    imp.add_argument("sources", nargs="+", help=".npz files or recording folders")
    imp.add_argument("--out", required=True, help="output dataset directory")
    imp.add_argument("--size", default="64", help="frame size in pixels, N or WxH (e.g. 64 or 128x128)")
    imp.add_argument("--variant", default="default", help="visual variant recorded in episode metadata")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    imp.add_argument("--env", default=None, help="the game the recordings come from, a Gymnasium id ('module:Id'); "
                     "saved with the dataset (default: none named)")
    imp.add_argument("--env-kwarg", action="append", default=None, metavar="KEY=VALUE",
                     help="a keyword argument of the game (repeatable; JSON values)")
    imp.add_argument("--image-key", default=None, help="the game's observation key holding the RGB frame (Dict "
                     "observations with several images)")
    imp.add_argument("--fps", type=int, default=None, help="frames (agent decisions) per second of the recordings "
                     "(default: the game's render_fps, else 10)")
    imp.set_defaults(fn=cmd_data_import)
    gen = _command(data, "generate", "JumpPads only: generate the built-in game's datasets with its scripted "
                   "population")
    gen.add_argument("kind", choices=["pretrain", "sft"], help="pretrain: unfiltered play; sft: successful episodes "
                     "cut at the pad, balanced over the pads")
    gen.add_argument("--out", required=True, help="output dataset directory")
    gen.add_argument("--episodes", type=int, default=200, help="pretrain: number of episodes")
    gen.add_argument("--per-pad", type=int, default=100, help="sft: successful episodes per pad (paper: 100)")
    gen.add_argument("--size", default="64", help="frame size in pixels, N or WxH")
    gen.add_argument("--frame-codec", default="png", choices=["png", "bmp"],
                     help="png: small files; bmp: uncompressed, fast to load (GPU training)")
    gen.add_argument("--num-envs", type=int, default=4, help="parallel game processes")
    gen.add_argument("--max-steps", type=int, default=100, help="episode timeout in steps (10 Hz)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the spawns and the scripted players")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    gen.set_defaults(fn=cmd_data_generate)
    info = _command(data, "info", "print a dataset's statistics")
    info.add_argument("dataset", help="local directory or Hub dataset id")
    info.set_defaults(fn=cmd_data_info)
    ver = _command(data, "verify", "decode every frame; name each damaged episode and step")
    ver.add_argument("dataset", help="local directory or Hub dataset id")
    ver.set_defaults(fn=cmd_data_verify)
    conv = _command(data, "convert", "re-encode the frames: bmp (uncompressed, fast to load) or png (small)")
    conv.add_argument("dataset", help="local directory or Hub dataset id")
    conv.add_argument("--out", required=True, help="output dataset directory (the source is kept)")
    conv.add_argument("--frame-codec", required=True, choices=["bmp", "png"], help="the new frame encoding")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    conv.set_defaults(fn=cmd_data_convert)
    exp = _command(data, "export", "export episodes back to WHAM .npz files")
    exp.add_argument("dataset", help="local directory or Hub dataset id")
    exp.add_argument("--out", required=True, help="folder for the episode_*.npz files")
    exp.add_argument("--overwrite", action="store_true", help="replace episode_*.npz files already in --out")
    exp.set_defaults(fn=cmd_data_export)
    push = _command(data, "push", "publish a dataset (with its card) as a Hub dataset repository")
    push.add_argument("dataset", help="local dataset directory")
    push.add_argument("repo_id", help="USER/NAME on the Hub")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.set_defaults(fn=cmd_data_push)

    train = _command(sub, "train", "train a stage from a recipe: pretrain, SFT, reward model, preference "
                     "fine-tuning, alignment, DPO, the designer's loop", add_help=False,
                     usage="hf-agents train RECIPE [key=value ...]",
                     description="Same as `python -m hf_agents.training` (and `accelerate launch ... -m "
                                 "hf_agents.training`). `hf-agents train --help` explains it; `hf-agents train "
                                 "RECIPE --help` lists that stage's fields.")
    train.add_argument("rest", nargs=argparse.REMAINDER, metavar="RECIPE [key=value ...]",
                       help="recipe file or shipped recipe name, then overrides")
    train.set_defaults(fn=cmd_train)

    ev = _command(sub, "evaluate", "evaluate an agent on its game: outcome shares, return, figures, videos",
                  "Evaluate an agent: outcome shares with 95% intervals, mean return and length, figures and "
                  "videos. By default the evaluation goes to MODEL/eval, which the model's card shows; "
                  "--trajectories DIR (rollouts for preferences) writes it beside DIR instead, unless --out says "
                  "where.")
    ev.add_argument("model", help="agent folder (or a LoRA adapter folder, loaded onto its base agent)")
    ev.add_argument("--out", default=None, help="output directory (default: MODEL/eval, the model's own evaluation "
                    "shown in its card, replaced; with --trajectories DIR: DIR-eval, leaving MODEL/eval as it is)")
    ev.add_argument("--episodes", type=int, default=1000, help="episodes to play (the paper's evaluation plays 1000)")
    ev.add_argument("--num-envs", type=int, default=8, help="parallel game processes")
    ev.add_argument("--rollout-workers", type=int, default=0, help="acting processes, each playing its share of the "
                    "games (on a CPU: one per core, faster; 0: the agent acts in this process, as with a GPU)")
    ev.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the agent's actions")
    ev.add_argument("--seed", type=int, default=12345, help="first reset seed (episode i uses seed + i)")
    ev.add_argument("--videos", type=int, default=3, help="GIFs of the first N episodes")
    ev.add_argument("--label", default=None, help="name in the summary and figures (default: the model's folder "
                    "name)")
    ev.add_argument("--trajectories", default=None,
                    help="also write the episodes as a trajectory dataset here (rollouts for preferences and "
                         "labelling); the evaluation then goes to DIR-eval unless --out is given")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing --trajectories dataset")
    _game_arguments(ev)
    ev.add_argument("--adapter", action="append", default=None, metavar="[NAME=]DIR",
                    help="LoRA adapter(s) of a designer, loaded onto MODEL at once; each is evaluated in turn")
    ev.set_defaults(fn=cmd_evaluate)

    pl = _command(sub, "play", "watch an agent: play episodes of its game and write GIF videos")
    pl.add_argument("model", help="agent folder (or an adapter folder, loaded onto its base)")
    pl.add_argument("--adapter", action="append", metavar="[NAME=]DIR",
                    help="LoRA adapter to play with (repeatable)")
    pl.add_argument("--episodes", type=int, default=1, help="episodes to play, one video each")
    pl.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the agent's actions")
    pl.add_argument("--seed", type=int, default=0, help="first reset seed")
    pl.add_argument("--out", help="output folder (default: play-<model folder name>)")
    _game_arguments(pl)
    pl.set_defaults(fn=cmd_play)

    prefs = _group(sub, "preferences", "preferences between trajectories", "preferences_command")
    syn = _command(prefs, "synthetic", "the paper's synthetic oracle: the target outcome > another outcome > none, "
                   "then sooner")
    syn.add_argument("trajectories", help="trajectory dataset (e.g. from `hf-agents evaluate --trajectories`)")
    syn.add_argument("--target", "--pad", required=True, help="the outcome the designer wants: one of those the game "
                     "(--env) reports; any other is refused with the game's list")
    syn.add_argument("--env", default=None, help="the game the trajectories are from (default: the game saved with "
                     "them)")
    syn.add_argument("--out", required=True, help="preferences parquet file")
    syn.add_argument("--max-comparisons", type=int, default=None, help="sample this many of all strict pairs "
                     "(default: all of them)")
    syn.add_argument("--seed", type=int, default=0, help="seed of the sampled pairs")
    syn.add_argument("--overwrite", action="store_true", help="replace an existing preferences file at --out (never "
                     "anything else)")
    syn.set_defaults(fn=cmd_preferences_synthetic)

    lab = _command(sub, "label", "label pairs or rankings of episode videos in a browser (a local web app); "
                   "`hf-agents label export DB --out PREFS` writes the preferences file, `hf-agents label summary DB` "
                   "counts labels and agreement")
    lab.add_argument("trajectories", help="trajectory dataset to label (e.g. from `hf-agents evaluate --trajectories`)")
    lab.add_argument("--labeller", required=True, help="the designer's name (one reward model and adapter each)")
    lab.add_argument("--db", default="labels.sqlite", help="label database, shared by labellers and servers")
    lab.add_argument("--port", type=int, default=7860, help="port of the web app")
    lab.add_argument("--host", default="127.0.0.1", help="address to bind; beyond loopback needs --token")
    lab.add_argument("--token", default=None, help="access token (default: $HF_AGENTS_LABEL_TOKEN)")
    lab.add_argument("--target", type=int, default=100, help="labels this labeller aims for (progress shown; capped at "
                     "the pairs left to ask)")
    lab.add_argument("--levels", type=int, default=5, help="levels of the ranking tab's rating scale")
    lab.add_argument("--reward-model", default=None,
                     help="show the pairs this reward model is least sure about (default: least-watched first)")
    lab.add_argument("--videos", default=None, help="video cache folder (default: beside the database)")
    lab.add_argument("--seed", type=int, default=0, help="seed of the order pairs are shown in")
    lab.set_defaults(fn=cmd_label)

    rw = _group(sub, "reward", "reward-model studies", "reward_command")
    sw = _command(rw, "sweep", "held-out accuracy vs training comparisons, both encoders, seeds, targets (paper "
                  "Figures 7 and 14); `hf-agents reward sweep --help` lists its fields", add_help=False)
    sw.add_argument("rest", nargs=argparse.REMAINDER, help="TRAJECTORIES --output_dir DIR [--field value ...]")
    sw.set_defaults(fn=cmd_reward_sweep)

    al = _group(sub, "align", "the designer's loop", "align_command")
    loop = _command(al, "loop", "the designer's loop: rounds of roll out -> labels (oracle, reward model or label "
                    "database) -> reward model on all rollouts so far -> preference fine-tuning and RL -> evaluate",
                    add_help=False, usage="hf-agents align loop [RECIPE] [key=value ...]",
                    description="Same as `hf-agents train align_loop.yaml ...` (the shipped recipe unless RECIPE "
                                "names another); `hf-agents align loop --help` lists its fields.")
    loop.add_argument("rest", nargs=argparse.REMAINDER, metavar="[RECIPE] [key=value ...]",
                      help="recipe file (default: the shipped align_loop.yaml), then overrides")
    loop.set_defaults(fn=cmd_align_loop)

    cmp_ = _command(sub, "compare", "one figure of several evaluations (e.g. base vs SFT vs aligned)")
    cmp_.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR", help="evaluation folders (each with an eval.json)")
    cmp_.add_argument("--labels", nargs="+", default=None, help="one name per EVAL_DIR (default: each evaluation's "
                      "label)")
    cmp_.add_argument("--out", default="comparison.png", help="figure file")
    cmp_.add_argument("--overwrite", action="store_true", help="replace an existing figure at --out")
    cmp_.set_defaults(fn=cmd_compare)

    rec = _command(sub, "recipes", "list the recipes and accelerate configs shipped with the package")
    rec.add_argument("--path", action="store_true", help="print only their folder")
    rec.set_defaults(fn=cmd_recipes)

    env = _group(sub, "env", "the built-in JumpPads game", "env_command")
    sheet = _command(env, "contact-sheet", "JumpPads only: PNG of frames from every spawn and visual variant")
    sheet.add_argument("--out", default="docs/contact_sheet.png", help="PNG file")
    sheet.add_argument("--size", type=int, default=128, help="frame size in pixels")
    sheet.add_argument("--overwrite", action="store_true", help="replace an existing PNG at --out")
    sheet.set_defaults(fn=cmd_env_contact_sheet)

    la = _command(sub, "launch", "run a training stage with `accelerate launch` and a shipped config found by name",
                  "Same as `accelerate launch --config_file CONFIG -m hf_agents.training RECIPE [key=value ...]`, "
                  "where CONFIG may be the name of an accelerate config shipped with the package (see "
                  "`hf-agents recipes`), from any folder.")
    la.add_argument("config", help="accelerate config: a shipped name (cpu, cpu-2ranks, gpu, multi-gpu, fsdp, "
                    "deepspeed-zero2) or a file")
    la.add_argument("rest", nargs=argparse.REMAINDER, metavar="RECIPE [key=value ...]",
                    help="recipe file or shipped recipe name, then overrides")
    la.set_defaults(fn=cmd_launch)

    pu = _command(sub, "push", "publish an agent, reward model or adapter folder with its model card")
    pu.add_argument("folder", help="a training run's output_dir")
    pu.add_argument("repo_id", help="USER/NAME on the Hub")
    pu.add_argument("--private", action="store_true", help="create the repository private")
    pu.add_argument("--to", help="write exactly what would be uploaded into this local folder instead")
    pu.add_argument("--base-model", help="Hub id of the base agent (required for an adapter trained on a local "
                    "agent): written into adapter_config.json and the card")
    pu.add_argument("--dataset", action="append", dest="datasets", default=None, metavar="HUB_ID",
                    help="Hub id of a training dataset, shown in the card (repeatable)")
    pu.set_defaults(fn=cmd_push)

    demo = _command(sub, "demo", "JumpPads only: the whole pipeline on the built-in game and its report", DEMO)
    demo.add_argument("--out", default=None, help="output folder (default: outputs, or outputs-SCALE for the other "
                      "scales)")
    demo.add_argument("--scale", default="cpu", choices=["cpu", "smoke", "gpu"],
                      help="cpu: the README's demo; smoke: a short run that only checks that the chain runs (its "
                           "numbers mean nothing); gpu: the paper's model, frames and batches")
    demo.add_argument("--num-envs", type=int, default=8, help="parallel game processes")
    demo.set_defaults(fn=cmd_demo)
    return p


# option -> (rule it must meet, what to give); checked before any work
NUMBER_RULES = {
    "num_envs": (lambda v: v >= 1, ">= 1 (parallel game processes)"),
    "per_pad": (lambda v: v >= 1, ">= 1"),
    "max_steps": (lambda v: v >= 1, ">= 1 (episode timeout in steps)"),
    "videos": (lambda v: v >= 0, ">= 0"),
    "max_comparisons": (lambda v: v >= 1, ">= 1"),
    "temperature": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0 (1.0 samples the agent as trained)"),
    "port": (lambda v: 1 <= v <= 65535, "a TCP port in 1..65535 (default 7860)"),
    "levels": (lambda v: v >= 2, ">= 2 (levels of the rating scale)"),
    "target": (lambda v: v >= 1, ">= 1"),
}


def check_numbers(args) -> None:
    """Refuse a numeric option out of its range, naming the option and what to give (before any work)."""
    for name, (ok, rule) in NUMBER_RULES.items():
        value = getattr(args, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not ok(value):
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be {rule}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from hf_agents.processes import keep_freed_memory

    keep_freed_memory()
    passed_on = {("label", "export"): None, ("label", "summary"): None, ("reward", "sweep"): cmd_reward_sweep,
                 ("train",): cmd_train, ("align", "loop"): cmd_align_loop}
    words = next((w for w in passed_on if tuple(argv[:len(w)]) == w), None)
    try:
        if words == ("label", "export"):
            args = label_export_parser().parse_args(argv[2:])
        elif words == ("label", "summary"):
            args = label_summary_parser().parse_args(argv[2:])
        elif words:  # their own parsers read everything after the command, --help included
            args = argparse.Namespace(fn=passed_on[words], rest=argv[len(words):], command=" ".join(words))
        elif not argv:  # a bare `hf-agents`: what there is to do
            build_parser().print_help()
            return 0
        else:
            args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2): argparse has printed them
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    if getattr(args, "command", None) == "evaluate" and args.out is None:
        args.out = evaluation_folder(args.model, args.trajectories)
    from hf_agents.data.schema import DatasetFormatError

    try:
        check_numbers(args)
        args.fn(args)
    except (DatasetFormatError, OSError, ValueError) as e:  # OSError: a read-only or full disk, a busy output, ...
        from hf_agents.files import error_message

        where = getattr(args, "out", None) or getattr(args, "to", None)  # for an error that names no path
        print(f"hf-agents: error: {error_message(e, where)}", file=sys.stderr)
        return 2
    except SystemExit as e:  # a passed-on parser's --help (0) or error (2), a failed training run
        if isinstance(e.code, int):
            return e.code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
