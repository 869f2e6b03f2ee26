"""The example second game, ViZDoom's Health Gathering with a designer's taste (hf_agents.games.health_gathering),
through the whole pipeline at tiny size, as docs/tutorial-second-game.md runs it: a studio's recordings -> import ->
pretrain -> SFT -> evaluate (no --env: the agent knows its game) -> a designer's labels through the labelling
app -> label export -> reward model -> preference fine-tuning -> align (target=left) -> evaluate -> push --to."""

import json
import os
from collections import Counter

import numpy as np
import pytest

from hf_agents.cli import main
from hf_agents.data import load_trajectories
from hf_agents.envs import game_metadata
from hf_agents.games.health_gathering import ENV, OUTCOMES
from hf_agents.games.health_gathering.env import HealthGatheringEnv, side_of
from hf_agents.games.health_gathering.record import record
from hf_agents.locations import RECIPES
from hf_agents.training.launch import main as train

TINY = ["model_preset=tiny", "context_length=8", "max_steps=2", "per_device_train_batch_size=2", "eval_fraction=0",
        "eval_strategy=no", "save_strategy=no", "warmup_steps=0", "logging_steps=1", "report_to=none",
        "use_cpu=true", "disable_tqdm=true"]
TASTE = {"left": 2, "right": 1, "none": 0}  # the designer: survive, and take the first medkit on the left


def test_the_game_reports_the_side_of_its_first_medkit_and_leaves_nothing_in_the_working_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meta = game_metadata(ENV)  # without starting the engine
    assert meta["outcomes"] == OUTCOMES == ("left", "right") and meta["render_fps"] == 10
    assert meta["card"]["name"].startswith("Health Gathering") and set(meta["outcome_colours"]) >= set(OUTCOMES)
    assert side_of(900.0) == "left" and side_of(300.0) == "right"
    env = HealthGatheringEnv(max_steps=30)
    try:
        seen = Counter()
        for seed in range(6):
            obs, info = env.reset(seed=seed)
            assert obs.shape == (120, 160, 3) and obs.dtype == np.uint8 and info["outcome"] is None
            assert set(info["state"]) == {"x", "y", "yaw", "health"}
            for t in range(30):
                obs, reward, terminated, truncated, info = env.step(np.array([t % 5 == 0, 0, 1]))
                assert reward > 0  # the scenario's living reward, whatever the side
                if info["outcome"]:
                    seen[info["outcome"]] += 1
                    break
            if not info["outcome"]:
                assert truncated and info["step"] == 30
        assert set(seen) <= set(OUTCOMES) and sum(seen.values()) >= 1
        first, _ = env.reset(seed=3)
        env.reset(seed=4)
        again, _ = env.reset(seed=3)
        assert np.array_equal(first, again)  # an episode depends on its seed only
        with pytest.raises(ValueError, match="MultiBinary"):
            env.step(np.array([2, 0, 0]))
    finally:
        env.close()
    assert sorted(os.listdir(tmp_path)) == []  # ViZDoom's _vizdoom/ and _vizdoom.ini went to a scratch dir


def test_recordings_are_wham_npz_that_import_with_their_game_reward_state_and_outcome(tmp_path):
    paths = record(tmp_path / "rec", episodes=2, seed=0, max_steps=12, progress=False)
    with np.load(paths[0]) as z:
        assert z["images"].shape[1:] == (3, 120, 160) and z["actions"].shape == (len(z["images"]), 16)
        assert set(np.unique(z["actions"][:, 3:])) == {0.0}  # only buttons A, B and X are the game's
    assert main(["data", "import", str(tmp_path / "rec"), "--out", str(tmp_path / "data"), "--size", "32",
                 "--env", ENV]) == 0
    data = load_trajectories(tmp_path / "data")
    assert data.info["game"]["id"] == ENV and data.info["fps"] == 10 and data.frame_size == (32, 32)
    steps = data.read(0)
    assert steps["reward"].sum() > 0 and {"state_x", "state_y", "state_health"} <= set(steps)
    curated = record(tmp_path / "curated", episodes=2, seed=0, max_steps=60, curated=True, progress=False)
    outcomes = []
    for path in curated:
        with np.load(path) as z:
            outcomes.append(str(z["outcome"]))
            assert int(z["outcome_step"]) == len(z["actions"]) - 1  # cut at the first medkit
    assert sorted(outcomes) == ["left", "right"]


def test_the_second_game_through_the_whole_pipeline(tmp_path, capsys):
    from hf_agents.labelling.app import LabellingApp

    t = tmp_path
    # A studio's own recordings, imported with the game they come from.
    record(t / "rec" / "play", episodes=6, seed=0, max_steps=24, progress=False)
    record(t / "rec" / "curated", episodes=4, seed=100, max_steps=40, curated=True, progress=False)
    for name in ("play", "curated"):
        assert main(["data", "import", str(t / "rec" / name), "--out", str(t / "data" / name), "--size", "32",
                     "--env", ENV]) == 0
    # Pretraining and SFT with the shipped recipes, at tiny size.
    assert train([str(RECIPES / "pretrain.yaml"), f"dataset={t / 'data' / 'play'}", f"output_dir={t / 'pretrain'}",
                  *TINY]) == 0
    assert train([str(RECIPES / "sft.yaml"), f"dataset={t / 'data' / 'curated'}", f"init_from={t / 'pretrain'}",
                  f"output_dir={t / 'sft'}", *TINY]) == 0
    # The agent knows its game: evaluate without --env, keeping the episodes as on-policy rollouts.
    assert main(["evaluate", str(t / "sft"), "--episodes", "10", "--num-envs", "2", "--max-steps", "24",
                 "--videos", "0", "--trajectories", str(t / "rollouts")]) == 0
    before = json.loads((t / "rollouts-eval" / "eval.json").read_text())
    assert before["game_spec"]["id"] == ENV and set(before["outcomes"]) == {"left", "right", "none"}
    rollouts = load_trajectories(t / "rollouts")
    outcome = {m["episode_id"]: m["outcome"] for m in rollouts.episodes}
    assert len(set(outcome.values())) >= 2, outcome  # something for the designer to prefer
    # A designer labels pairs through the labelling app's API, preferring the left side.
    app = LabellingApp(str(t / "rollouts"), str(t / "labels.sqlite"), "dana")
    while (pair := app.next_pair("dana")) is not None:
        app.submit("dana", "pair", pair, [TASTE[outcome[e]] for e in pair])
    assert main(["label", "export", str(t / "labels.sqlite"), "--labeller", "dana", "--out",
                 str(t / "prefs-dana.parquet")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["comparisons"] > 0
    # The designer's reward model, preference fine-tuning and alignment to "left", with the shipped recipes.
    assert train([str(RECIPES / "reward.yaml"), f"trajectories={t / 'rollouts'}",
                  f"preferences={t / 'prefs-dana.parquet'}", f"agent={t / 'sft'}", "labeller=dana",
                  f"output_dir={t / 'reward-dana'}", "num_train_epochs=3", "eval_fraction=0",
                  "per_device_train_batch_size=8", "report_to=none", "use_cpu=true", "disable_tqdm=true"]) == 0
    assert json.loads((t / "reward-dana" / "config.json").read_text())["game"]["id"] == ENV
    assert train([str(RECIPES / "preference_ft.yaml"), "target=left", f"agent={t / 'sft'}",
                  f"reward_model={t / 'reward-dana'}", f"output_dir={t / 'preference-ft-left'}", "rollout_episodes=4",
                  "max_steps=2", "per_device_train_batch_size=2", "context_length=8", "num_envs=2", "warmup_steps=0",
                  "report_to=none", "use_cpu=true", "disable_tqdm=true"]) == 0
    assert train([str(RECIPES / "align.yaml"), "target=left", f"agent={t / 'sft'}",
                  f"init_adapter={t / 'preference-ft-left'}", f"reward_model={t / 'reward-dana'}",
                  f"output_dir={t / 'align-left'}", "num_updates=1", "episodes_per_update=4", "rloo_k=2",
                  "save_steps=1", "max_episode_steps=24", "num_envs=2", "report_to=none"]) == 0
    # The SFT agent and the designer's adapter on the same fresh levels, again without --env; then a replay.
    for model in ("sft", "align-left"):
        assert main(["evaluate", str(t / model), "--episodes", "4", "--num-envs", "2", "--max-steps", "24",
                     "--videos", "1", "--seed", "50000"]) == 0
        after = json.loads((t / model / "eval" / "eval.json").read_text())
        assert after["game_spec"]["id"] == ENV and set(after["outcomes"]) == {"left", "right", "none"}
    assert main(["compare", str(t / "sft" / "eval"), str(t / "align-left" / "eval"), "--out",
                 str(t / "comparison.png")]) == 0
    capsys.readouterr()
    assert main(["play", str(t / "sft"), "--adapter", f"left={t / 'align-left'}", "--out", str(t / "play"),
                 "--max-steps", "10"]) == 0
    played = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(played["outcomes"]) == {"left", "right", "none"} and played["videos"]
    # Published as local folders: what the Hub repositories would get; the cards name the game and its return.
    assert main(["push", str(t / "sft"), "studio/health-gathering-sft", "--to", str(t / "hub-sft")]) == 0
    assert main(["push", str(t / "align-left"), "studio/health-gathering-left", "--to", str(t / "hub-left"),
                 "--base-model", "studio/health-gathering-sft"]) == 0
    for hub in ("hub-sft", "hub-left"):
        card = (t / hub / "README.md").read_text()
        assert "Health Gathering" in card and ENV in card and "mean_return" in card, card
        assert not any((t / hub).glob("**/*.sqlite"))
