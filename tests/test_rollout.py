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
from hf_agents.envs.vector import BatchedEnv
from hf_agents.games.jumppads.env import make_jumppads
from hf_agents.games.jumppads.population import ScriptedPopulation
from hf_agents.models import AgentPolicy
from hf_agents.rollout.engine import rollout
from hf_agents.rollout.evaluate import evaluate_policy, wilson
from tests.conftest import make_tiny_agent
from tests.toy_games import FUSE_ID, Corridor


def test_scripted_policy_evaluation_matches_intended_pad_and_writes_files(tmp_path):
    env_fn = functools.partial(make_jumppads, frame_size=32)
    summary = evaluate_policy(ScriptedPopulation(4, seed=0, pad="left"), tmp_path, env_fn, episodes=8, num_envs=4,
                              videos=2, label="scripted-left", progress=False)
    assert summary["counts"]["left"] >= 7 and summary["episodes"] == 8 and summary["dropped"] == 0
    assert summary["outcomes"] == ["left", "middle", "right", "none"]  # the game's order, from its metadata
    assert sum(summary["per_spawn"][s]["episodes"] for s in summary["per_spawn"]) == 8
    assert summary["fell"] <= 1 and summary["mean_return"] == 0.0  # JumpPads' own entry; it gives no reward
    lo, hi = summary["ci95"]["left"]
    assert lo < summary["distribution"]["left"] <= hi
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["counts"] == summary["counts"]
    for name in ("outcome_distribution.png", "heatmap.png", "trajectories.png"):
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
    model = make_tiny_agent()
    env_fn = functools.partial(make_jumppads, frame_size=32, max_steps=12)
    policy = AgentPolicy(model, 2, temperature=0.8, seed=0)
    with BatchedEnv(env_fn, 2) as venv, TrajectoryWriter(tmp_path / "ro", frame_size=32) as writer:
        result = rollout(venv, policy, 3, seed=5, writer=writer, progress=False, source="rollout:tiny")
    ds = load_trajectories(tmp_path / "ro")
    assert len(ds) == 3 and result.env_steps == ds.num_steps
    steps = ds.read(0)
    assert steps["logprob"].shape == (ds.episodes[0]["length"],) and np.all(steps["logprob"] < 0)
    np.testing.assert_allclose(steps["logprob"], result.episodes[0].logprobs)
    for key in ("x", "y", "z", "yaw"):  # privileged state recorded for plots and preferences
        assert np.isfinite(steps[f"state_{key}"]).all()
    assert ds.episodes[0]["source"] == "rollout:tiny"
    # what RL and DPO need to trust these log-probs (item 8)
    assert ds.info["policy"] == policy.metadata and ds.info["policy"]["temperature"] == 0.8


@pytest.mark.parametrize("noop", [0, 3, None])
def test_only_the_games_own_no_op_is_an_idle_gamepad(noop):
    """Discrete actions: the declared no-op (any index, or none) is the idle gamepad; every real action presses a
    button, so filtering no-ops never drops a real move."""
    mapper = ActionMapper(spaces.Discrete(5), noop=noop)
    for action in range(5):
        ids = mapper.from_env(action)
        assert mapper.to_env(ids) == action
        assert (ids == NOOP_IDS).all() == (action == noop)
    assert mapper.to_env(NOOP_IDS) == (noop or 0)
    with pytest.raises(ActionMappingError, match="noop_action 7"):
        ActionMapper(spaces.Discrete(5), noop=7)
    with pytest.raises(ActionMappingError, match="more than 12 actions besides a no-op"):
        ActionMapper(spaces.Discrete(13), noop=None)


@pytest.mark.parametrize(
    "space",
    [spaces.Discrete(6), spaces.MultiBinary(5), spaces.MultiDiscrete([2, 3, 11]),
     spaces.MultiDiscrete([2, 5], start=[1, -2]), spaces.Box(-2.0, 3.0, (3,), np.float32),
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
    with pytest.raises(ActionMappingError, match="more than 12 actions besides a no-op"):
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
    model = make_tiny_agent()
    with BatchedEnv(env_fn, 2) as venv, TrajectoryWriter(tmp_path / "pong", frame_size=32) as writer:
        result = rollout(venv, AgentPolicy(model, 2, seed=0), 2, writer=writer, progress=False, source="pong")
    assert len(result.episodes) == 2 and result.dropped == 0
    ds = load_trajectories(tmp_path / "pong")
    assert ds.read(0)["frames"].shape[1:] == (32, 32, 3)
    from hf_agents.training.launch import main as train_main

    assert train_main([f"dataset={tmp_path / 'pong'}", "model_preset=tiny", "context_length=8", "max_steps=2",
                       "per_device_train_batch_size=2", "report_to=none", "eval_fraction=0",
                       f"output_dir={tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
def test_evaluation_shares_episodes_across_two_ranks(tmp_path):
    import os
    import subprocess
    import sys

    make_tiny_agent().save_pretrained(tmp_path / "agent")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hf_agents.cli",
                           "evaluate", str(tmp_path / "agent"), "--episodes", "6", "--num-envs", "2", "--videos", "1",
                           "--out", str(tmp_path / "eval")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert summary["ranks"] == 2 and summary["episodes"] + summary["dropped"] == 6
    assert len(list((tmp_path / "eval" / "videos").glob("*.gif"))) == 1


def make_corridor(frame_size=16):
    return GamepadEnv(Corridor(), frame_size=frame_size)  # a Dict with one RGB image needs no image_key


class PressA:
    metadata = {"policy": "press-a"}

    def reset(self, indices, infos, seeds=None):
        pass

    def act(self, observations, infos):
        assert observations.shape[1:] == (16, 16, 3) and observations.dtype == np.uint8
        ids = np.tile(NOOP_IDS, (len(observations), 1))
        ids[:, 0] = 1
        return ids, np.full(len(observations), -0.5, np.float32)


def test_a_game_reporting_only_the_documented_info_keys_is_evaluated_and_recorded(tmp_path):
    summary = evaluate_policy(PressA(), tmp_path / "eval", make_corridor, episodes=3, num_envs=2, videos=1,
                              progress=False, trajectories=tmp_path / "ro")
    assert summary["outcomes"] == ["goal", "pit", "none"] and summary["counts"] == {"goal": 3, "pit": 0, "none": 0}
    assert summary["mean_return"] == 1.0 and summary["mean_length"] == 3.0 and summary["per_spawn"]["0"]["goal"] == 3
    assert (tmp_path / "eval" / "outcome_distribution.png").exists()
    assert len(list((tmp_path / "eval" / "videos").glob("*_goal.gif"))) == 1
    ds = load_trajectories(tmp_path / "ro")
    assert ds.info["policy"] == {"policy": "press-a"} and ds.episodes[0]["outcome_step"] == 2
    steps = ds.read(0)
    np.testing.assert_array_equal(steps["state_x"], [0, 1, 2])  # the game's own state keys, as state_<key>
    np.testing.assert_array_equal(steps["reward"], [0, 0, 1])
    assert "state_y" not in steps


def test_dict_observations_with_several_images_need_an_image_key():
    space = spaces.Dict({"a": spaces.Box(0, 255, (8, 8, 3), np.uint8), "b": spaces.Box(0, 255, (8, 8, 3), np.uint8)})

    class TwoCameras(Corridor):
        observation_space = space

    with pytest.raises(ValueError, match="image_key"):
        GamepadEnv(TwoCameras())
    assert GamepadEnv(TwoCameras(), image_key="b").image_key == "b"


def test_third_party_atari_game_through_the_evaluate_command(tmp_path):
    make_tiny_agent().save_pretrained(tmp_path / "agent")
    assert cli(["evaluate", str(tmp_path / "agent"), "--env", "ale_py:ALE/Pong-v5", "--episodes", "2",
                "--num-envs", "2", "--max-steps", "15", "--videos", "1", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert summary["episodes"] == 2 and summary["dropped"] == 0 and summary["mean_length"] == 15
    assert summary["outcomes"] == ["none"] and np.isfinite(summary["mean_return"])
    assert len(list((tmp_path / "eval" / "videos").glob("*.gif"))) == 1


@pytest.mark.slow
def test_same_seed_same_data_and_evaluation_however_many_game_processes(tmp_path):
    """Each episode's randomness (scripted player, agent sampling) comes from its own reset seed, so the episode
    tables are byte-identical and every episode's steps equal whether 1 or 3 processes play them."""
    from hf_agents.games.jumppads.generate import generate_pretrain
    from hf_agents.rollout.evaluate import evaluate_model

    for n in (1, 3):
        generate_pretrain(tmp_path / f"data-{n}", episodes=6, frame_size=32, num_envs=n, seed=5, max_steps=30,
                          progress=False)
    one, three = (load_trajectories(tmp_path / f"data-{n}") for n in (1, 3))
    table = "episodes/episodes.parquet"
    assert (tmp_path / "data-1" / table).read_bytes() == (tmp_path / "data-3" / table).read_bytes()
    for i in range(len(one)):
        a, b = one.read(i), three.read(i)
        assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["actions"], b["actions"])

    make_tiny_agent().save_pretrained(tmp_path / "agent")
    for n in (1, 3):
        evaluate_model(tmp_path / "agent", tmp_path / f"eval-{n}", episodes=6, num_envs=n, seed=3, videos=0,
                       progress=False, trajectories=tmp_path / f"rollouts-{n}", max_steps=30)
    one, three = (load_trajectories(tmp_path / f"rollouts-{n}") for n in (1, 3))
    assert one.episodes == three.episodes
    for i in range(len(one)):
        assert np.array_equal(one.read(i)["actions"], three.read(i)["actions"])
        # batched matmuls and cache layouts sum in another order: log-probs agree to float noise, actions exactly
        np.testing.assert_allclose(one.read(i)["logprob"], three.read(i)["logprob"], atol=2e-3)


def test_two_groups_of_envs_play_the_same_episodes_as_one(tmp_path):
    """groups=2 lets half the envs act while the other half's games step; each episode keeps its own stream."""
    model = make_tiny_agent()
    runs = []
    for groups in (1, 2):  # fresh game processes for each run, as two runs of a command have
        with BatchedEnv(functools.partial(make_jumppads, frame_size=32, max_steps=12), 4) as venv:
            runs.append(rollout(venv, AgentPolicy(model, 4, seed=7), 7, seed=11, progress=False, groups=groups))
            if groups == 2:
                with pytest.raises(ValueError, match="groups=5"):
                    rollout(venv, AgentPolicy(model, 4, seed=7), 1, progress=False, groups=5)
    one, two = (sorted(r.episodes, key=lambda e: e.index) for r in runs)
    assert [e.index for e in one] == [e.index for e in two] == list(range(7))
    assert runs[0].env_steps == runs[1].env_steps > 0
    for a, b in zip(one, two):
        assert (a.spawn, a.outcome, a.length) == (b.spawn, b.outcome, b.length)
        # an episode may land on another game process: the engine's random numbers come from the episode's seed
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.frames, b.frames)


def _jumppads_12(fault_injection=False):
    return functools.partial(make_jumppads, frame_size=32, max_steps=12, fault_injection=fault_injection)


def test_rollout_workers_play_the_same_episodes_as_one_process():
    """Two processes, each acting for its own 2 envs and stepping their games itself, play the one-process engine's
    episodes: the same frames and actions, log-probs and frame embeddings up to float order."""
    from hf_agents.rollout.workers import RolloutWorkers

    model = make_tiny_agent()
    runs = []
    for make in (lambda: BatchedEnv(_jumppads_12(), 4), lambda: RolloutWorkers(_jumppads_12(), 4, workers=2)):
        with make() as venv:
            runs.append(rollout(venv, AgentPolicy(model, 4, seed=7), 7, seed=11, progress=False))
    one, two = (sorted(r.episodes, key=lambda e: e.index) for r in runs)
    assert [e.index for e in one] == [e.index for e in two] == list(range(7))
    assert runs[0].env_steps == runs[1].env_steps > 0 and runs[1].dropped == 0
    for a, b in zip(one, two):
        assert (a.spawn, a.outcome, a.length) == (b.spawn, b.outcome, b.length)
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.frames, b.frames)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        np.testing.assert_allclose(a.features, b.features, atol=1e-4)


def test_rollout_workers_drop_what_failed_and_play_the_rest(tmp_path):
    """A game that raises loses its own episode; a worker that dies (a game exits the process) or goes silent (a game
    hangs) is replaced, loses the episodes it was playing, and its fresh copy plays the rest of its share. Every
    episode kept is the one a clean run plays, and the written dataset holds exactly those. A killed worker's game
    files (its scratch folder) go with it."""
    import tempfile
    from pathlib import Path

    from hf_agents.envs.vector import scratch_prefix
    from hf_agents.rollout.workers import RolloutWorkers

    scratch = lambda: set(Path(tempfile.gettempdir()).glob(f"{scratch_prefix()}*"))  # noqa: E731
    before = scratch()
    model = make_tiny_agent()
    faults = [{}, {}, {"raise_at": 2}, {"crash_at": 3}, {}, {}, {}, {"hang_at": 4}, {}, {}]
    with BatchedEnv(_jumppads_12(), 2) as venv:
        clean = {e.index: e for e in rollout(venv, AgentPolicy(model, 2, seed=3), 10, seed=5, progress=False).episodes}
    # worker 0 plays episodes 0, 2, 4, 6, 8 and worker 1 episodes 1, 3, 5, 7, 9, each on 2 games
    with RolloutWorkers(_jumppads_12(fault_injection=True), 4, workers=2, timeout=5) as workers, TrajectoryWriter(
            tmp_path / "data", frame_size=32) as writer:
        result = rollout(workers, AgentPolicy(model, 4, seed=3), 10, seed=5, options=faults, writer=writer,
                         progress=False)
        assert workers.restarts == 2
        assert len(scratch() - before) == 2  # the killed workers' game files went with them
    assert scratch() == before
    kept = sorted(e.index for e in result.episodes)
    # episode 2 raised; worker 1 died in episode 3 while playing 1 too, then hung in episode 7 while playing 5
    assert kept == [0, 4, 6, 8, 9] and result.dropped == 5
    assert any("raised" in e for e in result.errors)
    assert any("exited" in e and "[1, 3]" in e for e in result.errors)
    assert any("no sign of life" in e and "[5, 7]" in e for e in result.errors)
    for e in result.episodes:
        assert np.array_equal(e.actions, clean[e.index].actions) and np.array_equal(e.frames, clean[e.index].frames)
    assert sorted(m["episode_id"] for m in load_trajectories(tmp_path / "data").episodes) == kept


def test_rollout_workers_act_with_the_weights_and_settings_of_each_call():
    """A worker keeps the model it was sent and later takes only its weights: after the weights change in place (as an
    update changes them), and for a model with other settings (keep_steps), the workers still play what one process
    plays with that model, with no weight or cache left from the call before."""
    from hf_agents.rollout.workers import RolloutWorkers

    def episodes(venv, model):
        result = rollout(venv, AgentPolicy(model, 4, seed=7), 6, seed=11, progress=False)
        return sorted(result.episodes, key=lambda e: e.index)

    model = make_tiny_agent(context_length=4)
    with RolloutWorkers(_jumppads_12(), 4, workers=2) as workers:
        runs = [episodes(workers, model)]
        held = list(workers.model_keys)
        with torch.no_grad():  # the stem convolution (whose weight acting reorders once) and the action head
            model.encoder.stem.weight.mul_(-3.0)
            model.head[-1].bias.add_(torch.linspace(-4.0, 4.0, model.head[-1].bias.numel()))
        runs.append(episodes(workers, model))
        assert workers.model_keys == held and None not in held  # the same model: its weights alone were sent
        other = make_tiny_agent(context_length=4, keep_steps=3)
        other.load_state_dict(model.state_dict())
        runs.append(episodes(workers, other))
        assert workers.model_keys != held  # another model: sent whole
    with BatchedEnv(_jumppads_12(), 4) as venv:
        for m, run in zip((model, other), runs[1:]):
            for a, b in zip(episodes(venv, m), run):
                assert np.array_equal(a.actions, b.actions) and np.array_equal(a.frames, b.frames)
                np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    assert any(not np.array_equal(a.actions, b.actions) for a, b in zip(runs[0], runs[1]))  # the weights did change
    assert any(not np.allclose(a.logprobs, b.logprobs) for a, b in zip(runs[1], runs[2]))  # and keep_steps did too


def test_a_dead_rollout_workers_env_steps_still_count():
    """Worker 1 plays episodes 1, 3 and 5 on 2 games and dies in episode 5, after 1 and 3 ended: the steps it took
    up to its last message count in `env_steps` (and so in `steps_per_second`) with worker 0's."""
    from hf_agents.rollout.workers import RolloutWorkers

    faults = [{}, {}, {}, {}, {}, {"crash_at": 3}]
    with RolloutWorkers(_jumppads_12(fault_injection=True), 4, workers=2, timeout=5) as workers:
        result = rollout(workers, AgentPolicy(make_tiny_agent(), 4, seed=3), 6, seed=5, options=faults,
                         progress=False)
    assert sorted(e.index for e in result.episodes) == [0, 1, 2, 3, 4] and result.dropped == 1
    # every step of the kept episodes, and at most the 12 of the dropped one besides
    assert sum(e.length for e in result.episodes) <= result.env_steps <= sum(e.length for e in result.episodes) + 12


@pytest.mark.skipif(torch.cuda.is_available(), reason="rollout workers act on the CPU; with a GPU they are refused")
def test_evaluation_on_rollout_workers_gives_the_one_process_evaluation(tmp_path):
    """`hf-agents evaluate --rollout-workers 2`: the same summary and written rollouts as the agent acting in one
    process; the workers report the game's outcomes (its metadata) as the batched env does."""
    from hf_agents.rollout.evaluate import evaluate_model

    make_tiny_agent().save_pretrained(tmp_path / "agent")
    for workers in (0, 2):
        evaluate_model(tmp_path / "agent", tmp_path / f"eval-{workers}", episodes=6, num_envs=4, seed=3, videos=1,
                       progress=False, trajectories=tmp_path / f"rollouts-{workers}", max_steps=12,
                       rollout_workers=workers)
    one, two = (json.loads((tmp_path / f"eval-{w}" / "eval.json").read_text()) for w in (0, 2))
    assert one["outcomes"] == two["outcomes"] and len(one["outcomes"]) > 1
    for key in ("episodes", "dropped", "counts", "mean_return", "mean_length", "per_spawn"):
        assert one[key] == two[key], key
    assert len(list((tmp_path / "eval-2" / "videos").glob("*.gif"))) == 1
    a, b = (load_trajectories(tmp_path / f"rollouts-{w}") for w in (0, 2))
    assert a.episodes == b.episodes
    for i in range(len(a)):
        assert np.array_equal(a.read(i)["actions"], b.read(i)["actions"])


def test_rollout_workers_name_a_game_that_cannot_be_made_and_leave_no_process():
    import multiprocessing

    from hf_agents.rollout.workers import RolloutWorkers

    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="creating the envs failed") as raised:
        RolloutWorkers(functools.partial(make_jumppads, no_such_option=1), 2, workers=2)
    assert "no_such_option" in str(raised.value)
    assert not [p for p in multiprocessing.active_children() if p not in before and p.is_alive()]


def test_rollout_workers_refuse_more_workers_than_envs_and_a_policy_they_cannot_split():
    from hf_agents.rollout.workers import RolloutWorkers

    with pytest.raises(ValueError, match="workers=3: choose between 1 and num_envs"):
        RolloutWorkers(_jumppads_12(), 2, workers=3)
    with RolloutWorkers(_jumppads_12(), 2, workers=1) as workers:
        with pytest.raises(ValueError, match="split"):
            rollout(workers, ScriptedPopulation(2, seed=0), 2, progress=False)


def test_a_game_without_outcomes_is_judged_by_its_return_not_by_failures():
    from types import SimpleNamespace

    from hf_agents.rollout.evaluate import summarize

    episodes = [SimpleNamespace(outcome="none", episode_return=r, length=10, spawn=-1) for r in (1.0, 3.0)]
    summary = summarize(episodes, outcomes=())
    assert summary["failure_rate"] is None and summary["mean_return"] == 2.0 and summary["outcomes"] == ["none"]
    assert summarize(episodes, outcomes=("goal",))["failure_rate"] == 1.0  # with outcomes, none of them is a failure


def test_envs_with_no_episode_left_leave_the_agents_batch_and_episodes_stay_the_same():
    """Once the schedule has no episode for an env, the engine drops it from the agent's batch (`keep`): acting then
    costs only the games still playing, and every episode is what the full batch plays."""

    class FullBatch(AgentPolicy):
        keep = None  # a policy without `keep`: it acts for every env to the end

    class Counting(AgentPolicy):
        batches: list[int] = []

        def act(self, frames, infos=None):
            self.batches.append(len(frames))
            return super().act(frames, infos)

    model = make_tiny_agent()
    runs = []
    for cls in (FullBatch, Counting):  # episodes of 2 to 7 steps: envs leave in no particular order
        with BatchedEnv(functools.partial(make_gamepad_env, FUSE_ID, frame_size=32), 4) as venv:
            runs.append(rollout(venv, cls(model, 4, seed=7), 9, seeds=[3, 0, 5, 1, 4, 2, 0, 3, 1], progress=False))
    assert Counting.batches[0] == 4 and Counting.batches[-1] == 1  # the batch shrinks to the last env playing
    full, kept = (sorted(r.episodes, key=lambda e: e.index) for r in runs)
    assert [e.index for e in full] == [e.index for e in kept] == list(range(9))
    for a, b in zip(full, kept):
        assert (a.spawn, a.outcome, a.length) == (b.spawn, b.outcome, b.length)
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.frames, b.frames)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-3)
        np.testing.assert_allclose(a.features, b.features, atol=1e-4)
