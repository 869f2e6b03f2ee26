import functools
from collections import Counter
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import hf_agents.envs  # noqa: F401  (registers hf_agents/JumpPads-v0)
from hf_agents.actions import NOOP_IDS
from hf_agents.cli import main as cli
from hf_agents.data import load_trajectories
from hf_agents.envs.vector import BatchedEnv
from hf_agents.games.jumppads.env import JumpPadsEnv, make_jumppads
from hf_agents.games.jumppads.map import PADS, VARIANTS
from hf_agents.games.jumppads.population import Persona, ScriptedPlayer, ScriptedPopulation
from hf_agents.rollout.engine import rollout

EXPERT = Persona(skill=1.0, heading_noise=0, wiggle=0, hesitate_p=0, noop_p=0, wrong_turn_p=0, idle_steps=0, runs=True)


@pytest.fixture(scope="module")
def env():
    e = JumpPadsEnv()
    yield e
    e.close()


def play(env, player, spawn=None, seed=None, variant=None):
    options = {k: v for k, v in (("spawn", spawn), ("variant", variant)) if v is not None}
    obs, info = env.reset(seed=seed, options=options)
    player.reset(info)
    for _ in range(env.max_steps):
        obs, _, terminated, truncated, info = env.step(player.act(info))
        if terminated or truncated:
            break
    return info


def test_gymnasium_api(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = gym.make("hf_agents/JumpPads-v0", frame_size=32)
    check_env(made.unwrapped, skip_render_check=True)
    obs, info = made.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
    assert {"outcome", "state", "spawn", "variant", "fell"} <= set(info)  # privileged state only in info
    assert set(info["state"]) == {"x", "y", "z", "yaw"} and info["outcome"] is None
    assert made.metadata["outcomes"] == PADS  # what the generic evaluation lists
    made.close()
    assert not list(tmp_path.iterdir())  # ViZDoom's scratch files went to a temp dir
    with pytest.raises(ValueError, match="unknown variant"):
        JumpPadsEnv(variant="nope")


def test_variants_look_different(env):
    frames = [env.reset(options={"spawn": 0, "variant": v})[0].astype(float) for v in VARIANTS]
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            assert np.abs(frames[i] - frames[j]).mean() > 5


def test_look_alike_pads_change_only_how_the_pads_look(env):
    alike = JumpPadsEnv(pads_look_alike=True)
    try:
        runs = []
        for e in (env, alike):
            player = ScriptedPlayer(np.random.default_rng(0), pad="left", persona=EXPERT)
            obs, info = e.reset(seed=0, options={"spawn": 0})
            player.reset(info)
            frames, states = [obs], [info["state"]]
            while info["outcome"] is None and len(frames) <= e.max_steps:
                obs, _, terminated, truncated, info = e.step(player.act(info))
                frames.append(obs)
                states.append(info["state"])
                if terminated or truncated:
                    break
            runs.append((info["outcome"], states, np.stack(frames).astype(float)))
        (outcome, states, frames), (outcome_alike, states_alike, frames_alike) = runs
        assert outcome == outcome_alike == "left" and states == states_alike  # the same game
        assert np.abs(frames - frames_alike).max(axis=(1, 2, 3)).max() > 50  # the left pad no longer looks left
    finally:
        alike.close()


@pytest.mark.parametrize("pad", PADS)
def test_scripted_controller_reaches_each_pad_from_every_spawn(env, pad):
    for spawn in range(4):
        info = play(env, ScriptedPlayer(np.random.default_rng(0), pad=pad, persona=EXPERT), spawn=spawn)
        assert info["outcome"] == pad, (pad, spawn, info)


def test_random_policy_almost_never_reaches_a_pad(env):
    class Random:
        def reset(self, info):
            pass

        def act(self, info):
            return env.action_space.sample()

    env.action_space.seed(0)
    reached = sum(play(env, Random(), seed=s)["outcome"] is not None for s in range(15))
    assert reached <= 1


def test_population_is_middle_biased_with_right_from_right_imbalance(env):
    rng = np.random.default_rng(0)
    by_spawn = {s: Counter() for s in range(4)}
    for e in range(48):
        info = play(env, ScriptedPlayer(rng), spawn=e % 4, seed=e)
        by_spawn[info["spawn"]][info["outcome"] or "none"] += 1
    total = sum(by_spawn.values(), Counter())
    assert total["middle"] > total["left"] and total["middle"] > total["right"]  # middle bias
    assert min(total[p] for p in PADS) >= 2  # multi-modal
    # mirror asymmetry: the left spawn mostly goes left, the right spawn rarely goes right
    assert by_spawn[3]["right"] < 0.5 * by_spawn[0]["left"]


def test_an_episode_does_not_depend_on_the_map_played_before(env):
    """A reset loads its map once, whether the previous episode was on the same map or another: the episode's frames
    depend only on its seed, spawn and variant."""
    actions = [np.asarray(NOOP_IDS) + np.eye(16, dtype=np.int64)[k % 4] for k in range(12)]  # press some buttons

    def frames(seed, spawn, variant="ninja"):
        obs, _ = env.reset(seed=seed, options={"spawn": spawn, "variant": variant})
        return np.stack([obs] + [env.step(a)[0] for a in actions])

    first = frames(5, 1)
    for before in ((1, "ninja"), (2, "ninja"), (1, "robot")):  # the same map, another spawn's, another variant's
        frames(9, *before)
        np.testing.assert_array_equal(frames(5, 1), first)


def test_continue_after_pad_launches_to_main_island():
    env = JumpPadsEnv(continue_after_pad=True, max_steps=80)
    info = play(env, ScriptedPlayer(np.random.default_rng(0), pad="middle", persona=EXPERT), spawn=1)
    env.close()
    # play goes on after the pad, on the main island, until the timeout or a fall into one of its pits
    assert info["outcome"] == "middle" and info["on_main_island"] and (info["step"] == 80 or info["fell"])


def _scratch_folders() -> set:
    """This process's game processes' scratch folders (`envs.vector.start_game_process`)."""
    import tempfile

    from hf_agents.envs.vector import scratch_prefix

    return set(Path(tempfile.gettempdir()).glob(f"{scratch_prefix()}*"))


def test_the_engine_folder_of_a_killed_process_goes_with_the_next_one_made_on_the_host(tmp_path):
    """An env made in a process that is then killed leaves its engine's folder; the next process on this host that
    makes an engine folder removes it."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    play = ("import time; from hf_agents.games.jumppads.env import JumpPadsEnv; env = JumpPadsEnv(max_steps=5); "
            "env.reset(seed=0); print(env._scratch, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", play], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        folder = Path(proc.stdout.readline().strip())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the process and its engine
        proc.wait()
    assert folder.parent == tmp_path and (folder / "engine.log").exists()
    make = "import shutil; from hf_agents.games.engine import make_engine_folder; shutil.rmtree(make_engine_folder())"
    subprocess.run([sys.executable, "-c", make], env=env, check=True, timeout=120)
    assert not folder.exists() and not list(tmp_path.glob("hf-agents-vizdoom-*"))  # the shared WAD stays


def test_batched_env_recovers_crashed_and_hung_workers():
    """A game process that dies or hangs is replaced; the engine files of the killed ones go with them."""
    env_fn = functools.partial(make_jumppads, fault_injection=True, frame_size=32, max_steps=30)
    before = _scratch_folders()
    with BatchedEnv(env_fn, 3, step_timeout=5) as venv:
        # each game process writes its engine's files in a folder of its own
        assert all(list(Path(proc.scratch).glob("hf-agents-vizdoom-*")) for proc, _ in venv.workers)
        options = [{"spawn": 0}, {"spawn": 1, "crash_at": 3}, {"spawn": 2, "hang_at": 5}]
        obs, infos = venv.reset(options=options)
        errors = {}
        for t in range(10):
            live = [i for i in range(3) if i not in errors]
            obs, _, term, trunc, infos = venv.step([NOOP_IDS] * len(live), live)
            for i, info in zip(live, infos):
                if "error" in info:
                    assert term[live.index(i)]
                    errors[i] = (t, info["error"])
        assert set(errors) == {1, 2} and errors[1][0] == 2 and errors[2][0] == 4
        assert "died" in errors[1][1] and "hung" in errors[2][1]
        assert venv.restarts == 2
        obs, infos = venv.reset()  # restarted workers play again
        assert obs.shape == (3, 32, 32, 3)
        assert len(_scratch_folders() - before) == 3  # the killed processes' folders are gone
    assert _scratch_folders() == before


def test_a_game_that_cannot_be_made_is_named_and_leaves_no_worker_running():
    import multiprocessing

    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="creating the env failed") as raised:
        BatchedEnv(functools.partial(make_jumppads, no_such_option=1), 3)
    assert "no_such_option" in str(raised.value)
    started = [p for p in multiprocessing.active_children() if p not in before]
    assert not [p for p in started if p.is_alive()]  # while the error is still held


def test_frames_through_shared_memory_equal_piped_frames_and_leave_no_file():
    env_fn = functools.partial(make_jumppads, fault_injection=True, frame_size=32, max_steps=30)
    seen = {}
    for shared in (True, False):
        with BatchedEnv(env_fn, 2, step_timeout=5, shared_memory=shared) as venv:
            assert (venv.shared is not None) == shared
            path = venv.shared.path if shared else None
            venv.action_space.seed(0)
            moves = [[venv.action_space.sample() for _ in range(2)] for _ in range(3)]
            frames = [venv.reset(seeds=[1, 2], options=[{"spawn": 0}, {"spawn": 3, "crash_at": 3}])[0]]
            first = frames[0].copy()
            for actions in moves:  # env 1's worker dies at its 3rd step and is replaced
                frames.append(venv.step(actions)[0])
            frames.append(venv.reset(seeds=[5, 6])[0])  # the fresh worker writes its own slot
            assert venv.restarts == 1
            np.testing.assert_array_equal(frames[0], first)  # an answer is a copy, not a view of the slot
        seen[shared] = frames
        assert path is None or not Path(path).exists()
    for a, b in zip(seen[True], seen[False], strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_frame_file_of_a_killed_process_is_removed_by_the_next_one():
    """A process killed mid-run leaves its shared frame file; the next batch of envs removes it, not a live one's."""
    import os
    import subprocess
    import sys
    import tempfile

    from hf_agents.envs.vector import SharedFrames

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    orphan = folder / f"{SharedFrames.PREFIX}{dead.pid}-test"
    alive = folder / f"{SharedFrames.PREFIX}{os.getpid()}-test"
    orphan.write_bytes(b"x")
    alive.write_bytes(b"x")
    try:
        shared = SharedFrames(2, (4, 4, 3), np.uint8)
        assert not orphan.exists() and alive.exists() and Path(shared.path).exists()
        shared.close()
        assert not Path(shared.path).exists()
    finally:
        orphan.unlink(missing_ok=True)
        alive.unlink(missing_ok=True)


ENGINE_CRASH = """
import contextlib, os, signal, time
from hf_agents.games.jumppads.env import JumpPadsEnv
env = JumpPadsEnv()
env.reset(seed=0)
me = os.getpid()
engine = [int(c) for t in os.listdir(f"/proc/{me}/task") for c in open(f"/proc/{me}/task/{t}/children").read().split()]
os.kill(engine[0], signal.SIGSEGV)
log = os.path.join(env._scratch, "engine.log")
for _ in range(100):  # the engine's crash handler writes its report, then ends the process
    time.sleep(0.1)
    if "Fatal Error" in open(log).read():
        break
print("crash report in the game's log:", "Fatal Error" in open(log).read())
with contextlib.suppress(Exception):
    env.close()
"""


def test_the_engines_crash_report_goes_to_the_games_log_not_the_console():
    """ViZDoom's process can crash while it quits; its report lands in the game's scratch log, off the console."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", ENGINE_CRASH], capture_output=True, text=True, timeout=120)
    assert "crash report in the game's log: True" in proc.stdout, proc.stdout + proc.stderr
    assert "Fatal Error" not in proc.stdout + proc.stderr


def test_an_engine_that_does_not_start_names_its_log(monkeypatch, tmp_path):
    import hf_agents.games.jumppads.env as jumppads

    monkeypatch.setattr(jumppads, "wad_path", lambda pads_look_alike=False: tmp_path / "missing.wad")
    with pytest.raises(RuntimeError, match=r"did not start: .*missing\.wad(.|\n)*engine\.log"):
        JumpPadsEnv()


def test_rollout_drops_and_counts_failed_episodes():
    env_fn = functools.partial(make_jumppads, fault_injection=True, frame_size=32, max_steps=20)

    with BatchedEnv(env_fn, 2, step_timeout=5) as venv:
        # episode 1 crashes at its 4th step (option passed through the env's reset options)
        result = rollout(venv, ScriptedPopulation(2, seed=0), 4, seed=0, progress=False,
                         options=[{}, {"crash_at": 4}, {}, {}])
    assert result.dropped == 1 and len(result.episodes) == 3 and "died" in result.errors[0]


def test_generate_cli_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert cli(["data", "generate", "sft", "--out", str(tmp_path / name), "--per-pad", "1", "--size", "32",
                    "--num-envs", "2", "--seed", "3"]) == 0
    a, b = load_trajectories(tmp_path / "a"), load_trajectories(tmp_path / "b")
    assert sorted(m["outcome"] for m in a.episodes) == ["left", "middle", "right"]
    assert all(m["variant"] == "ninja" for m in a.episodes)
    for e in range(len(a)):
        np.testing.assert_array_equal(a.read(e)["actions"], b.read(e)["actions"])
        np.testing.assert_array_equal(a.read(e)["frames"], b.read(e)["frames"])


def test_generate_pretrain_has_all_variants_and_play_after_pad(tmp_path):
    assert cli(["data", "generate", "pretrain", "--out", str(tmp_path / "pre"), "--episodes", "12", "--size", "32",
                "--num-envs", "3", "--max-steps", "60"]) == 0
    ds = load_trajectories(tmp_path / "pre")
    assert len({m["variant"] for m in ds.episodes}) >= 4
    launched = [m for m in ds.episodes if m["outcome"] != "none"]
    assert launched and any(m["length"] > m["outcome_step"] + 5 for m in launched)  # play goes on after the pad


def test_contact_sheet_command(tmp_path):
    out = tmp_path / "sheet.png"
    assert cli(["env", "contact-sheet", "--out", str(out), "--size", "32"]) == 0
    from PIL import Image

    img = np.asarray(Image.open(out))
    assert img.shape[0] > 6 * 32 and img.std() > 20
