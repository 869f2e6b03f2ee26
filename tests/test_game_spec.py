"""The game travels with what is made from it: datasets, agents, reward models and evaluations name their game, and
every command that plays finds it there instead of falling back to the built-in JumpPads."""

import json

import numpy as np
import pytest

from hf_agents.cli import main
from hf_agents.data import load_trajectories
from hf_agents.envs import JUMPPADS_ID
from hf_agents.envs.spec import GameSpec, GameUnknownError, parse_kwargs, resolve_game
from hf_agents.models import AgentConfig
from hf_agents.training.launch import main as train_main
from tests.conftest import make_tiny_agent
from tests.toy_games import CORRIDOR_ID


def _corridor_agent(tmp_path):
    """Rollouts of the Corridor game, and an agent pretrained on them (its game comes from the data)."""
    make_tiny_agent().save_pretrained(tmp_path / "jumppads-agent")
    assert main(["evaluate", str(tmp_path / "jumppads-agent"), "--env", CORRIDOR_ID, "--episodes", "4", "--num-envs",
                 "2", "--max-steps", "8", "--videos", "0", "--trajectories", str(tmp_path / "rollouts")]) == 0
    assert train_main([f"dataset={tmp_path / 'rollouts'}", "model_preset=tiny", "context_length=8", "max_steps=1",
                       "per_device_train_batch_size=2", "report_to=none", "eval_fraction=0", "use_cpu=true",
                       f"output_dir={tmp_path / 'corridor-agent'}"]) == 0
    return tmp_path / "corridor-agent"


def test_an_agent_trained_on_a_game_evaluates_and_plays_it_without_env(tmp_path, capsys):
    agent = _corridor_agent(tmp_path)
    assert load_trajectories(tmp_path / "rollouts").info["game"]["id"] == CORRIDOR_ID
    game = AgentConfig.from_pretrained(agent).game
    assert game["id"] == CORRIDOR_ID and game["outcomes"] == ["goal", "pit"] and game["frame_size"] == 32
    assert main(["evaluate", str(agent), "--episodes", "3", "--num-envs", "1", "--max-steps", "8", "--videos", "0"]) == 0
    summary = json.loads((agent / "eval" / "eval.json").read_text())
    assert summary["game_spec"]["id"] == CORRIDOR_ID and summary["outcomes"] == ["goal", "pit", "none"]
    assert main(["play", str(agent), "--out", str(tmp_path / "play"), "--max-steps", "8"]) == 0
    played = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(played["outcomes"]) == {"goal", "pit", "none"}  # Corridor's outcomes, not JumpPads' pads


def test_an_agent_that_names_no_game_is_refused_until_env_names_one(tmp_path, capsys):
    make_tiny_agent(game=None).save_pretrained(tmp_path / "agent")
    assert main(["evaluate", str(tmp_path / "agent"), "--episodes", "2", "--num-envs", "1"]) == 2
    err = capsys.readouterr().err
    assert "does not name its game" in err and "--env" in err and "Traceback" not in err
    assert not (tmp_path / "agent" / "eval").exists()
    assert main(["evaluate", str(tmp_path / "agent"), "--env", JUMPPADS_ID, "--env-kwarg", "pads_look_alike=true",
                 "--episodes", "2", "--num-envs", "1", "--videos", "0"]) == 0
    spec = json.loads((tmp_path / "agent" / "eval" / "eval.json").read_text())["game_spec"]
    assert spec["id"] == JUMPPADS_ID and spec["kwargs"] == {"pads_look_alike": True}


def test_a_game_that_cannot_be_imported_is_one_clear_error(capsys, tmp_path):
    make_tiny_agent().save_pretrained(tmp_path / "agent")
    assert main(["evaluate", str(tmp_path / "agent"), "--env", "no_such_module:Nothing-v0", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_module:Nothing-v0" in err and "PYTHONPATH" in err and "Traceback" not in err


def test_explicit_env_and_kwargs_win_over_the_saved_game():
    saved = GameSpec.of(None, kwargs={"variant": "ninja"}, frame_size=32)
    assert resolve_game(None, saved, "x") == saved
    assert resolve_game(None, saved, "x", {"pads_look_alike": True}).kwargs == {"variant": "ninja",
                                                                                "pads_look_alike": True}
    other = resolve_game(CORRIDOR_ID, saved, "x")
    assert other.id == CORRIDOR_ID and other.kwargs == {} and other.outcomes == ("goal", "pit")
    with pytest.raises(GameUnknownError, match="pass --env"):
        resolve_game(None, None, "the agent at a")
    assert parse_kwargs(["a=1", "b=true", "c=name", "d=[1, 2]"]) == {"a": 1, "b": True, "c": "name", "d": [1, 2]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_kwargs(["novalue"])
    assert GameSpec.from_dict(saved.to_dict()) == saved
    with pytest.raises(ValueError, match="not a game spec"):
        GameSpec.from_dict({"name": "x"})


def test_a_reward_model_of_another_game_is_refused(tmp_path):
    from hf_agents.models import TrajectoryRewardConfig, TrajectoryRewardModel

    config = TrajectoryRewardConfig(encoder="random", image_size=32, reward_min=0.0, reward_max=1.0,
                                    game=GameSpec.of(CORRIDOR_ID, frame_size=32).to_dict())
    TrajectoryRewardModel(config).save_pretrained(tmp_path / "reward")
    assert TrajectoryRewardModel.load_trained(tmp_path / "reward", 32, CORRIDOR_ID) is not None
    with pytest.raises(ValueError, match="trained on trajectories of tests.toy_games:Corridor-v0"):
        TrajectoryRewardModel.load_trained(tmp_path / "reward", 32, JUMPPADS_ID)


def test_imports_keep_rewards_state_outcome_frame_rate_and_game(tmp_path, capsys):
    T = 5
    images = np.random.default_rng(0).integers(0, 256, (T, 3, 12, 12), dtype=np.uint8)
    actions = np.zeros((T, 16))
    np.savez(tmp_path / "ep.npz", images=images, actions=actions, rewards=np.arange(T, dtype=np.float32),
             state_x=np.linspace(0, 1, T), outcome=np.array("goal"), outcome_step=np.array(3))
    folder = tmp_path / "ep-folder"
    folder.mkdir()
    from PIL import Image

    for i in range(T):
        Image.fromarray(images[i].transpose(1, 2, 0)).save(folder / f"image{i}.png")
    (folder / "actions.json").write_text(json.dumps({f"image{i}.png": [0.0] * 16 for i in range(T)}))
    (folder / "episode.json").write_text(json.dumps({"rewards": [1.0] * T, "state": {"x": [0.5] * T}}))
    assert main(["data", "import", str(tmp_path / "ep.npz"), str(folder), "--out", str(tmp_path / "data"),
                 "--size", "16", "--env", CORRIDOR_ID, "--fps", "15"]) == 0
    data = load_trajectories(tmp_path / "data")
    assert data.info["fps"] == 15 and data.info["game"]["id"] == CORRIDOR_ID
    first, second = data.read(0), data.read(1)
    assert np.allclose(first["reward"], np.arange(T)) and np.allclose(first["state_x"], np.linspace(0, 1, T))
    assert data.episodes[0]["outcome"] == "goal" and data.episodes[0]["outcome_step"] == 3
    assert data.episodes[1]["outcome"] == "none" and np.allclose(second["reward"], 1.0)
    (folder / "episode.json").write_text(json.dumps({"rewards": [1.0] * (T - 1)}))
    assert main(["data", "import", str(folder), "--out", str(tmp_path / "bad"), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "episode.json" in err and "'rewards' must hold 5" in err
