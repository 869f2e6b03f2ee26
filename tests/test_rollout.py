import functools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from hf_agents.actions import NOOP_IDS, action_space
from hf_agents.cli import main as cli
from hf_agents.data import TrajectoryWriter, load_trajectories
from hf_agents.envs.adapter import ActionMapper, ActionMappingError, GamepadEnv, make_gamepad_env
from hf_agents.envs.jumppads import make_jumppads
from hf_agents.envs.population import ScriptedPopulation
from hf_agents.envs.vector import BatchedEnv
from hf_agents.models import AgentConfig, AgentModel, AgentPolicy
from hf_agents.rollout.engine import rollout
from hf_agents.rollout.evaluate import evaluate_policy, wilson


def test_scripted_policy_evaluation_matches_intended_pad_and_writes_files(tmp_path):
    summary = evaluate_policy(ScriptedPopulation(4, seed=0, pad="left"), tmp_path, episodes=8, num_envs=4,
                              frame_size=32, videos=2, label="scripted-left", progress=False)
    assert summary["counts"]["left"] >= 7 and summary["episodes"] == 8 and summary["dropped"] == 0
    assert sum(summary["per_spawn"][s]["episodes"] for s in summary["per_spawn"]) == 8
    lo, hi = summary["ci95"]["left"]
    assert lo < summary["distribution"]["left"] <= hi
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["counts"] == summary["counts"]
    for name in ("jumppad_distribution.png", "heatmap.png", "trajectories.png"):
        assert (tmp_path / name).stat().st_size > 5_000
    gifs = list((tmp_path / "videos").glob("*.gif"))
    assert len(gifs) == 2 and all(g.stat().st_size > 10_000 for g in gifs)
    assert cli(["compare", str(tmp_path), str(tmp_path), "--labels", "a", "b", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 5_000


def test_wilson_interval():
    lo, hi = wilson(44, 100)
    assert 0.34 < lo < 0.44 < hi < 0.54
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_agent_rollouts_are_written_in_the_dataset_format(tmp_path):
    torch.manual_seed(0)
    model = AgentModel(AgentConfig.from_preset("tiny", context_length=8)).eval()
    env_fn = functools.partial(make_jumppads, frame_size=32, max_steps=12)
    with BatchedEnv(env_fn, 2) as venv, TrajectoryWriter(tmp_path / "ro", frame_size=32) as writer:
        result = rollout(venv, AgentPolicy(model, 2, seed=0), 3, seed=5, writer=writer, progress=False,
                         source="rollout:tiny")
    ds = load_trajectories(tmp_path / "ro")
    assert len(ds) == 3 and result.env_steps == ds.num_steps
    steps = ds.read(0)
    assert steps["logprob"].shape == (ds.episodes[0]["length"],) and np.all(steps["logprob"] < 0)
    np.testing.assert_allclose(steps["logprob"], result.episodes[0].logprobs)
    assert np.isfinite(steps["state_x"]).all()  # privileged state recorded for plots and preferences
    assert ds.episodes[0]["source"] == "rollout:tiny"


@pytest.mark.parametrize(
    "space",
    [spaces.Discrete(6), spaces.MultiBinary(5), spaces.MultiDiscrete([2, 3, 11]),
     spaces.Box(-2.0, 3.0, (3,), np.float32),
     spaces.Dict({"move": spaces.Box(-1.0, 1.0, (2,), np.float32), "fire": spaces.Discrete(2)})],
)
def test_action_mapping_round_trips(space):
    mapper = ActionMapper(space)
    space.seed(0)

    def flat(a):
        return np.concatenate([np.ravel(np.asarray(a[k], float)) for k in sorted(a)]) if isinstance(a, dict) \
            else np.ravel(np.asarray(a, float))

    has_box = isinstance(space, spaces.Box) or (isinstance(space, spaces.Dict) and
                                                 any(isinstance(v, spaces.Box) for v in space.spaces.values()))
    for _ in range(20):
        a = space.sample()
        quantised = mapper.to_env(mapper.from_env(a))  # boxes snap to the stick buckets, the rest is exact
        assert space.contains(quantised)
        if not has_box:
            np.testing.assert_array_equal(flat(quantised), flat(a))
        ids = mapper.from_env(quantised)
        assert action_space().contains(ids)
        np.testing.assert_allclose(flat(mapper.to_env(ids)), flat(quantised), atol=1e-6)
    assert space.contains(mapper.to_env(NOOP_IDS.copy()))


def test_unmappable_spaces_are_clear():
    with pytest.raises(ActionMappingError, match="more than 13"):
        ActionMapper(spaces.Discrete(20))
    with pytest.raises(ActionMappingError, match="stick axes"):
        ActionMapper(spaces.Box(-1, 1, (5,)))
    with pytest.raises(ActionMappingError, match="bounded"):
        ActionMapper(spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ActionMappingError, match="Text"):
        ActionMapper(spaces.Text(5))
    with pytest.raises(ValueError, match="RGB"):
        GamepadEnv(gym.make("CartPole-v1"))


def test_third_party_atari_game_through_rollout_recording_and_training(tmp_path):
    # "module:id" makes every worker process import ale_py (which registers the ALE games) first
    env_fn = functools.partial(make_gamepad_env, "ale_py:ALE/Pong-v5", frame_size=32, max_episode_steps=20)
    model = AgentModel(AgentConfig.from_preset("tiny", context_length=8)).eval()
    with BatchedEnv(env_fn, 2) as venv, TrajectoryWriter(tmp_path / "pong", frame_size=32) as writer:
        result = rollout(venv, AgentPolicy(model, 2, seed=0), 2, writer=writer, progress=False, source="pong")
    assert len(result.episodes) == 2 and result.dropped == 0
    ds = load_trajectories(tmp_path / "pong")
    assert ds.read(0)["frames"].shape[1:] == (3, 32, 32)
    from hf_agents.train import main as train_main

    assert train_main([f"dataset={tmp_path / 'pong'}", "model_preset=tiny", "context_length=8", "max_steps=2",
                       "per_device_train_batch_size=2", "report_to=none", "eval_fraction=0",
                       f"output_dir={tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
def test_evaluation_shares_episodes_across_two_ranks(tmp_path):
    import os
    import subprocess
    import sys

    AgentModel(AgentConfig.from_preset("tiny", image_size=32, context_length=8)).save_pretrained(tmp_path / "agent")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hf_agents.cli",
                           "evaluate", str(tmp_path / "agent"), "--episodes", "6", "--num-envs", "2", "--videos", "1",
                           "--out", str(tmp_path / "eval")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert summary["ranks"] == 2 and summary["episodes"] + summary["dropped"] == 6
    assert len(list((tmp_path / "eval" / "videos").glob("*.gif"))) == 1
