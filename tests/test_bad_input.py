"""Bad input and faults on purpose: one clear line (file, field, fix), exit code 2, and nothing on disk lost."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file
from transformers import GPT2Config

from hf_agents.cli import main
from hf_agents.data import load_trajectories
from hf_agents.models import AgentConfig
from hf_agents.training.common import clear_checkpoints, last_intact_checkpoint
from tests.conftest import write_test_dataset


def cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(map(str, argv)))
    return code, capsys.readouterr().err


def wham_folder(path, frames=3, stick=0.0):
    path.mkdir(parents=True)
    table = {}
    for i in range(frames):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(path / f"image{i}.png")
        table[f"image{i}.png"] = [0.0] * 12 + [stick, 0.0, 0.0, 0.0]
    (path / "actions.json").write_text(json.dumps(table))
    return path


def test_truncated_image_names_the_file_and_writes_nothing(tmp_path, capsys):
    src = wham_folder(tmp_path / "rec")
    data = (src / "image1.png").read_bytes()
    (src / "image1.png").write_bytes(data[: len(data) // 2])
    code, err = cli(capsys, "data", "import", src, "--out", tmp_path / "ds", "--size", "16")
    assert code == 2
    assert f"{src / 'image1.png'}: unreadable image" in err and "leave this folder out" in err
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds*"))


def test_off_centre_stick_values_are_counted(tmp_path, capsys):
    src = wham_folder(tmp_path / "rec", stick=0.5)
    assert main(["data", "import", str(src), "--out", str(tmp_path / "ds"), "--size", "16"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["stick_values_quantised"] == 3
    assert "3 stick values lay between bucket centres" in err


def test_overwrite_never_replaces_what_is_not_our_dataset(tmp_path, capsys, tiny_agent_dir):
    src = wham_folder(tmp_path / "rec")
    code, err = cli(capsys, "data", "import", src, "--out", src, "--overwrite", "--size", "16")
    assert code == 2 and "overlaps the input" in err
    assert (src / "actions.json").exists() and len(list(src.glob("*.png"))) == 3  # recordings intact
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    code, err = cli(capsys, "data", "import", src, "--out", mine, "--overwrite", "--size", "16")
    assert code == 2 and f"{mine} exists and is not an hf-agents trajectory dataset" in err
    assert (mine / "notes.txt").read_text() == "precious"
    weights = (tiny_agent_dir / "model.safetensors").read_bytes()
    code, err = cli(capsys, "evaluate", tiny_agent_dir, "--episodes", 1, "--num-envs", 1, "--trajectories", tiny_agent_dir,
                    "--overwrite", "--out", tmp_path / "eval")
    assert code == 2 and "is not an hf-agents trajectory dataset" in err
    assert (tiny_agent_dir / "model.safetensors").read_bytes() == weights
    # a dataset of ours is replaced
    assert main(["data", "import", str(src), "--out", str(tmp_path / "ds"), "--size", "16"]) == 0
    assert main(["data", "import", str(src), str(src), "--out", str(tmp_path / "ds"), "--size", "16",
                 "--overwrite"]) == 0
    assert len(load_trajectories(tmp_path / "ds")) == 2


def test_missing_corrupt_and_foreign_models_are_named(tmp_path, capsys, tiny_agent_dir):
    capsys.readouterr()
    code, err = cli(capsys, "evaluate", tmp_path / "nonexistent", "--out", tmp_path / "e")
    assert code == 2 and err.strip() == f"hf-agents: error: {tmp_path / 'nonexistent'}: no such model directory"
    code, err = cli(capsys, "evaluate", "./a/b", "--out", tmp_path / "e")
    assert code == 2 and "a/b: no such model directory" in err
    weights = tiny_agent_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, err = cli(capsys, "evaluate", tiny_agent_dir, "--out", tmp_path / "e")
    assert code == 2 and f"{weights}: corrupt or partial weights" in err and "pick a checkpoint" in err
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    save_file({"w": __import__("torch").zeros(1)}, tmp_path / "gpt2" / "model.safetensors")
    code, err = cli(capsys, "evaluate", tmp_path / "gpt2", "--out", tmp_path / "e")
    assert code == 2 and "a 'gpt2' checkpoint, not an hf-agents agent" in err
    assert not (tmp_path / "e").exists()


def test_a_frame_size_that_is_not_pixels_is_refused(tmp_path, capsys):
    code, err = cli(capsys, "data", "import", tmp_path, "--out", tmp_path / "x", "--size", "abc")
    assert code == 2 and "--size abc: give pixels as N or WxH" in err
    assert not (tmp_path / "x").exists()


def test_synthetic_preferences_without_a_strict_preference_are_refused_and_write_nothing(tmp_path, capsys, rng):
    write_test_dataset(tmp_path / "ds", [5] * 3, rng=rng)  # no outcomes: every pair ties
    code, err = cli(capsys, "preferences", "synthetic", tmp_path / "ds", "--pad", "left", "--out", tmp_path / "p.parquet")
    assert code == 2 and "no strict preference among its 3 trajectories" in err
    assert not (tmp_path / "p.parquet").exists()


def test_export_refuses_to_replace_files_already_there(tmp_path, capsys, rng):
    write_test_dataset(tmp_path / "ds", [5] * 3, rng=rng)
    assert main(["data", "export", str(tmp_path / "ds"), "--out", str(tmp_path / "npz")]) == 0
    exported = {p.name: p.read_bytes() for p in (tmp_path / "npz").iterdir()}
    capsys.readouterr()
    code, err = cli(capsys, "data", "export", tmp_path / "ds", "--out", tmp_path / "npz")
    assert code == 2 and "already exists (3 of the files would be replaced)" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "npz").iterdir()} == exported


def test_a_context_length_below_one_is_refused():
    with pytest.raises(ValueError, match="context_length=0: the model needs at least 1 timestep"):
        AgentConfig(context_length=0)


def test_a_spawn_outside_the_game_is_refused_and_the_env_still_works():
    from hf_agents.games.jumppads.env import JumpPadsEnv

    env = JumpPadsEnv(frame_size=32)
    try:
        for spawn in (-2, 9):
            with pytest.raises(ValueError, match=r"spawn must be in 0\.\.3"):
                env.reset(options={"spawn": spawn})
        obs, info = env.reset(options={"spawn": 1})  # the env still works
        assert info["spawn"] == 1 and obs.shape == (32, 32, 3)
    finally:
        env.close()


def test_killed_writers_leave_no_staging_behind(tmp_path, rng):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".ds.tmp-{dead.stdout.strip()}-abcd1234"
    (stale / "data").mkdir(parents=True)
    live = tmp_path / f".ds.tmp-{os.getpid()}-feedbeef"  # a writer of a live process is left alone
    live.mkdir()
    write_test_dataset(tmp_path / "ds", [4], rng=rng)
    assert not stale.exists() and live.exists()


def checkpoint(path, step, whole=True):
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": __import__("torch").full((4,), float(step))}, path / "model.safetensors")
    if not whole:
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[:20])


def test_resume_takes_this_runs_last_whole_checkpoint(tmp_path):
    class Config:
        output_dir, overwrite, resume = str(tmp_path), True, False

    checkpoint(tmp_path / "checkpoint-300", 300)  # an earlier run's
    clear_checkpoints(Config)  # overwrite=true: a new run starts
    assert not (tmp_path / "checkpoint-300").exists()
    checkpoint(tmp_path / "checkpoint-20", 20)
    checkpoint(tmp_path / "checkpoint-40", 40, whole=False)  # killed while writing
    with pytest.warns(UserWarning, match="checkpoint-40: incomplete checkpoint"):
        assert last_intact_checkpoint(tmp_path) == tmp_path / "checkpoint-20"


def test_demo_stops_with_the_failed_stage(tmp_path):
    from hf_agents.games.jumppads.demo import StageFailed, _train

    with pytest.raises(StageFailed, match="the sft stage failed \\(exit code 2\\)"):
        _train("sft", [f"dataset={tmp_path / 'missing'}", f"output_dir={tmp_path / 'out'}"])


def test_damaged_frames_are_named_by_episode_and_step(tmp_path, rng, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hf_agents.data import DatasetFormatError

    write_test_dataset(tmp_path / "ds", [5] * 3, rng=rng)
    shard = sorted((tmp_path / "ds" / "data").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    frames = table.column("frame").to_pylist()
    frames[7]["bytes"] = frames[7]["bytes"][:30]  # episode 1, step 2: a truncated PNG
    column = table.schema.get_field_index("frame")
    pq.write_table(table.set_column(column, "frame", pa.array(frames, type=table.schema.field("frame").type)), shard)
    code, err = cli(capsys, "data", "verify", tmp_path / "ds")
    assert code == 2 and "episode 1, step 2: the frame does not decode" in err and "1 of 3 episodes" in err
    with pytest.raises(DatasetFormatError, match="episode 1, step 2: the frame does not decode"):
        load_trajectories(tmp_path / "ds").read(1)


def test_a_malformed_recipe_is_named(tmp_path, capsys):
    from hf_agents.training.launch import main as train

    (tmp_path / "bad.yaml").write_text("stage: imitation\ndataset: [unclosed\n")
    assert train([str(tmp_path / "bad.yaml")]) == 2
    assert f"{tmp_path / 'bad.yaml'}: not valid YAML" in capsys.readouterr().err


def test_an_empty_recording_is_refused_and_writes_nothing(tmp_path, capsys):
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 3, 8, 8), np.uint8), actions=np.zeros((0, 16), np.float32))
    code, err = cli(capsys, "data", "import", tmp_path / "empty.npz", "--out", tmp_path / "ds", "--size", "8")
    assert code == 2 and "'images' holds 0 frames" in err and not (tmp_path / "ds").exists()


def test_an_evaluation_of_no_episodes_is_refused(tmp_path, capsys, tiny_agent_dir):
    code, err = cli(capsys, "evaluate", tiny_agent_dir, "--episodes", 0, "--out", tmp_path / "e")
    assert code == 2 and "--episodes 0: an evaluation needs at least 1 episode" in err
    assert not (tmp_path / "e").exists()


def test_a_corrupt_agent_config_is_named(tmp_path, capsys, tiny_agent_dir):
    (tiny_agent_dir / "config.json").write_text('{"model_type": "hf_agent", ')
    code, err = cli(capsys, "evaluate", tiny_agent_dir, "--out", tmp_path / "e")
    assert code == 2 and f"{tiny_agent_dir / 'config.json'}: corrupt config" in err
    assert not (tmp_path / "e").exists()


def test_nan_actions_in_a_recording_are_named_and_write_nothing(tmp_path, capsys):
    actions = np.zeros((2, 16), np.float32)
    actions[1, 13] = np.nan
    np.savez(tmp_path / "nan.npz", images=np.zeros((2, 3, 8, 8), np.uint8), actions=actions)
    code, err = cli(capsys, "data", "import", tmp_path / "nan.npz", "--out", tmp_path / "ds", "--size", "8")
    assert code == 2 and "nan.npz: component 'left_y' is outside the gamepad contract" in err
    assert not (tmp_path / "ds").exists()
