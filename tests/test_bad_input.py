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


def test_a_context_length_below_two_is_refused():
    for H in (0, 1):  # at H = 1 a full window could keep nothing of itself: acting and re-scoring need H >= 2
        with pytest.raises(ValueError, match=f"context_length={H}: the model needs at least 2 timesteps"):
            AgentConfig(context_length=H)


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


def test_a_negative_number_of_rollout_workers_is_refused(tmp_path, capsys, tiny_agent_dir):
    code, err = cli(capsys, "evaluate", tiny_agent_dir, "--rollout-workers", -1, "--out", tmp_path / "e")
    assert code == 2 and "--rollout-workers -1: must be >= 0" in err
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


# -- issue 31: outputs that cannot be clobbered, one writer per output, bounds, disk errors --------------------------


def checksums(*paths) -> dict:
    """sha256 of every file under `paths` (files or folders): what must stay byte-equal."""
    from hf_agents.files import sha256_file

    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*"))) if p.is_file()]
    return {str(p): sha256_file(p) for p in files}


def one_error_line(err: str, prefix: str = "hf-agents") -> str:
    """The command's error: exactly one line starting `prefix` and no traceback (progress bars may come before)."""
    lines = [line for line in err.splitlines() if line.startswith(f"{prefix}")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def label_db(path):
    """A label database beside the dataset its labels are of (path.parent / "labelled")."""
    from hf_agents.labelling import LabelStore
    from hf_agents.locations import fingerprint

    data = path.parent / "labelled"
    write_test_dataset(data, [3] * 7, rng=1)
    store = LabelStore(path, fingerprint(data), str(data), range(7))
    store.add("alice", "pair", [3, 4], [1, 0])
    store.add("alice", "pair", [5, 6], [0, 1])
    return path


def test_out_files_refuse_what_is_there_and_never_replace_a_database_a_table_or_weights(tmp_path, capsys, rng,
                                                                                       tiny_agent_dir):
    db, prefs = label_db(tmp_path / "labels.sqlite"), tmp_path / "prefs.parquet"
    write_test_dataset(tmp_path / "ds", [5] * 3, rng=rng, outcomes=["left", "none"])
    table = tmp_path / "ds" / "episodes" / "episodes.parquet"
    weights = tiny_agent_dir / "model.safetensors"
    before = checksums(db, tmp_path / "ds", tiny_agent_dir)
    for target in (db, table, weights):
        for overwrite in ([], ["--overwrite"]):
            for command in (["label", "export", db], ["preferences", "synthetic", tmp_path / "ds", "--pad", "left"]):
                code, err = cli(capsys, *command, "--out", target, *overwrite)
                line = one_error_line(err)
                assert code == 2 and f"--out {target}: " in line, line
                if not overwrite:
                    assert "already exists; pass --overwrite to replace it" in line or "inside the trajectory" in line
    assert "exists and is not a preferences file; --overwrite only replaces a preferences file" in line
    assert checksums(db, tmp_path / "ds", tiny_agent_dir) == before
    code, err = cli(capsys, "label", "export", db, "--out", tmp_path / "ds" / "new.parquet")
    assert code == 2 and f"lies inside the trajectory dataset {tmp_path / 'ds'}" in one_error_line(err)
    assert not (tmp_path / "ds" / "new.parquet").exists()
    assert main(["label", "export", str(db), "--out", str(prefs)]) == 0  # a new file: written
    code, err = cli(capsys, "label", "export", db, "--out", prefs)
    assert code == 2 and f"--out {prefs}: already exists; pass --overwrite" in one_error_line(err)
    assert main(["label", "export", str(db), "--out", str(prefs), "--labeller", "alice", "--overwrite"]) == 0
    assert checksums(db) == {k: v for k, v in before.items() if k == str(db)}
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no lock or temp file left


HOLD_WRITER = """
import sys
import numpy as np
from hf_agents.data import TrajectoryWriter
writer = TrajectoryWriter(sys.argv[1], frame_size=(16, 16))
writer.add_episode(np.zeros((3, 16, 16, 3), np.uint8), np.zeros((3, 16), np.int64), source="first")
print("ready", flush=True)
sys.stdin.readline()
writer.close()
"""

HOLD_LOCK = """
import sys
from hf_agents.files import output_lock
with output_lock(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.readline()
"""


def holder(script, path):
    """A process writing `path` (through the library's own writer or lock), paused until told to finish."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_writer_of_one_output_is_refused_at_once_and_the_first_result_is_intact(tmp_path, capsys, rng):
    import time

    src, out = wham_folder(tmp_path / "rec"), tmp_path / "ds"
    first = holder(HOLD_WRITER, out)
    try:
        busy = f"{out}: another run is writing it (pid {first.pid}: "
        code, err = cli(capsys, "data", "import", src, "--out", out, "--size", "16")
        assert code == 2 and busy in one_error_line(err) and "wait for it to finish" in err
        start = time.monotonic()
        code, err = cli(capsys, "data", "generate", "pretrain", "--out", out, "--episodes", 1, "--num-envs", 1)
        assert code == 2 and busy in one_error_line(err) and time.monotonic() - start < 5  # no game was started
        first.communicate("\n", timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0
    assert [e["source"] for e in load_trajectories(out).episodes] == ["first"]  # the first writer's result
    run = tmp_path / "run"
    second = holder(HOLD_LOCK, run)
    try:
        code, err = cli(capsys, "train", "stage=imitation", f"dataset={out}", f"output_dir={run}")
        assert code == 2 and f"{run}: another run is writing it (pid {second.pid}" in one_error_line(err)
        assert not run.exists()
        second.kill()  # killed, not finished: the kernel releases the lock
        second.wait(timeout=30)
        killed = holder(HOLD_WRITER, tmp_path / "ds2")
        killed.kill()
        killed.wait(timeout=30)
    finally:
        second.kill()
    assert main(["data", "import", str(src), "--out", str(tmp_path / "ds2"), "--size", "16"]) == 0
    assert len(load_trajectories(tmp_path / "ds2")) == 1


@pytest.mark.parametrize("stage, override, message", [
    ("imitation", "max_steps=0", "max_steps=0: must be -1 (train for num_train_epochs) or >= 1"),
    ("imitation", "learning_rate=-1", "learning_rate=-1.0: must be a finite number > 0"),
    ("reward", "learning_rate=nan", "learning_rate=nan: must be a finite number > 0"),
    ("dpo", "beta=-0.1", "beta=-0.1: must be a finite number > 0"),
    ("imitation", "eval_fraction=-1", "eval_fraction=-1.0: must be in [0, 1)"),
    ("reward", "eval_fraction=1", "eval_fraction=1.0: must be in [0, 1)"),
    ("imitation", "context_length=100000", "context_length=100000: must be in 2..512"),
    ("imitation", "context_length=1", "context_length=1: must be in 2..512"),
    ("preference_ft", "temperature=-1", "temperature=-1.0: must be a finite number > 0"),
    ("preference_ft", "num_envs=0", "num_envs=0: must be >= 1"),
])
def test_training_values_out_of_range_are_refused_before_any_work(tmp_path, capsys, stage, override, message):
    code, err = cli(capsys, "train", f"stage={stage}", override, f"output_dir={tmp_path / 'out'}")
    assert code == 2 and one_error_line(err).startswith(f"hf-agents train: error: command line: {message}")
    assert not (tmp_path / "out").exists()


def test_a_context_the_model_cannot_hold_is_refused_before_allocating():
    with pytest.raises(ValueError, match="context_length=100000: at most 512 timesteps"):
        AgentConfig.from_preset("tiny", context_length=100000)


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "AGENT", "--temperature", "-1"], "--temperature -1.0: must be a finite number > 0"),
    (["evaluate", "AGENT", "--temperature", "nan"], "--temperature nan: must be a finite number > 0"),
    (["evaluate", "AGENT", "--num-envs", "0"], "--num-envs 0: must be >= 1 (parallel game processes)"),
    (["play", "AGENT", "--temperature", "0"], "--temperature 0.0: must be a finite number > 0"),
    (["data", "generate", "pretrain", "--num-envs", "0"], "--num-envs 0: must be >= 1 (parallel game processes)"),
    (["label", "DATA", "--labeller", "a", "--port", "99999"], "--port 99999: must be a TCP port in 1..65535"),
    (["label", "DATA", "--labeller", "a", "--port", "0"], "--port 0: must be a TCP port in 1..65535"),
])
def test_command_options_out_of_range_are_refused_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    argv = [str(tmp_path / "agent") if a == "AGENT" else str(tmp_path / "data") if a == "DATA" else a for a in argv]
    code, err = cli(capsys, *argv, "--out" if argv[0] != "label" else "--db", out)
    assert code == 2 and one_error_line(err).startswith(f"hf-agents: error: {message}")
    assert not out.exists()


DISK_SCRIPT = """
import contextlib, hashlib, io, json, os, sys
from hf_agents.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append([code, err.getvalue()])
files = {os.path.relpath(os.path.join(top, name), sys.argv[2]): hashlib.sha256(open(os.path.join(top, name), "rb")
         .read()).hexdigest() for top, _, names in os.walk(sys.argv[2]) for name in names}
print(json.dumps({"results": results, "left": sorted(os.listdir(sys.argv[2])), "files": files}))
"""


def on_a_broken_disk(tmp_path, kind: str, commands, prepare: str = "", files: bool = False, preamble: str = ""):
    """Run `hf-agents` commands whose outputs lie on `disk`: a read-only or a full file system (a tmpfs mounted in a
    private mount namespace; as another user than root, a folder without write permission stands for read-only),
    or ("small") a 64 kB one that fills up while they write. `prepare`: shell commands that put files on the disk
    first (DISK stands for it); `preamble`: Python run before the commands. Returns (disk, [(exit code, stderr)], what is left on the disk: its names, or with
    `files` {path under the disk: sha256} of every file on it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    commands = [[str(a).replace("DISK", str(disk)) for a in argv] for argv in commands]
    prepare = prepare.replace("DISK", str(disk))
    if os.geteuid() != 0:
        if kind != "ro":
            pytest.skip("filling a disk needs a private tmpfs mount (root); not root here")
        if prepare:
            subprocess.run(["sh", "-c", prepare], check=True)
        disk.chmod(0o555)
        script = ["sh", "-c", '"$0" -c "$1" "$2" "$3"', sys.executable]
    else:
        if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
            pytest.skip("root without a private mount namespace (unshare -m): cannot mount a read-only/full disk")
        mount = {"ro": f"mount -t tmpfs -o ro,size=1m tmpfs {disk}", "small": f"mount -t tmpfs -o size=64k tmpfs {disk}",
                 "full": f"mount -t tmpfs -o size=64k tmpfs {disk} && (head -c 1M /dev/zero > {disk}/filler; true)"}[kind]
        mount += f" && {prepare}" if prepare else ""
        script = ["unshare", "-m", "sh", "-c", f'{mount} && "$0" -c "$1" "$2" "$3"', sys.executable]
    done = subprocess.run([*script, preamble + DISK_SCRIPT, json.dumps(commands), str(disk)], capture_output=True,
                          text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    disk.chmod(0o755)
    return disk, found["results"], found["files" if files else "left"]


DISK_COMMANDS = [
    ["label", "export", "DB", "--out", "DISK/prefs.parquet"],
    ["data", "import", "REC", "--out", "DISK/ds", "--size", "16"],
    ["data", "convert", "DS", "--out", "DISK/bmp", "--frame-codec", "bmp"],
    ["data", "export", "DS", "--out", "DISK/npz"],
    ["train", "stage=imitation", "dataset=DS", "output_dir=DISK/run", "max_steps=1"],
    ["evaluate", "AGENT", "--out", "DISK/eval", "--episodes", "1", "--num-envs", "1"],
    ["push", "AGENT", "me/agent", "--to", "DISK/publish"],
]


@pytest.mark.parametrize("kind, cause", [("ro", "read-only"), ("full", "the disk is full")])
def test_a_read_only_or_full_disk_is_one_line_naming_the_path(tmp_path, rng, tiny_agent_dir, kind, cause):
    db, src = label_db(tmp_path / "labels.sqlite"), wham_folder(tmp_path / "rec")
    write_test_dataset(tmp_path / "ds", [5] * 2, rng=rng)
    names = {"DB": db, "REC": src, "DS": tmp_path / "ds", "AGENT": tiny_agent_dir}
    commands = [[str(names.get(a, a)).replace("=DS", f"={tmp_path / 'ds'}") for a in argv] for argv in DISK_COMMANDS]
    before = checksums(db, src, tmp_path / "ds", tiny_agent_dir)
    disk, results, left = on_a_broken_disk(tmp_path, kind, commands)
    if os.geteuid() != 0:
        cause = "permission denied"
    for argv, (code, err) in zip(commands, results):
        line = one_error_line(err)
        out = next(a for a in argv if "DISK" in a).split("=", 1)[-1].replace("DISK", str(disk))
        assert code == 2 and line.startswith(f"hf-agents{' train' if argv[0] == 'train' else ''}: error: "), line
        assert out in line and cause in line, (argv, line)
    assert left == ([] if kind == "ro" or os.geteuid() != 0 else ["filler"])  # nothing half-written
    assert checksums(db, src, tmp_path / "ds", tiny_agent_dir) == before


def test_a_file_where_a_folder_goes_is_named(tmp_path, capsys, tiny_agent_dir):
    file = tmp_path / "notes.txt"
    file.write_text("precious")
    code, err = cli(capsys, "train", "stage=imitation", f"dataset={tmp_path / 'ds'}", f"output_dir={file}")
    assert code == 2 and f"{file}: output_dir is a file, not a folder" in one_error_line(err)
    code, err = cli(capsys, "push", tiny_agent_dir, "me/agent", "--to", file)
    assert code == 2 and one_error_line(err) == f"hf-agents: error: --to {file}: is a file; give a new or empty folder"
    assert file.read_text() == "precious" and sorted(os.listdir(tmp_path)) == ["agent", "notes.txt"]


def test_resume_over_a_truncated_optimizer_names_the_checkpoint_and_the_fix(tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    checkpoint(run / "checkpoint-4", 4)
    torch.save({"state": {0: torch.zeros(256)}}, run / "checkpoint-4" / "optimizer.pt")
    data = (run / "checkpoint-4" / "optimizer.pt").read_bytes()
    (run / "checkpoint-4" / "optimizer.pt").write_bytes(data[: len(data) // 2])  # killed while saving
    before = checksums(run)
    code, err = cli(capsys, "train", "stage=imitation", f"dataset={tmp_path / 'ds'}", f"output_dir={run}",
                    "resume=true")
    line = one_error_line(err)
    assert code == 2 and f"{run}: resume=true but no checkpoint is whole (checkpoint-4: optimizer.pt: truncated" in line
    assert "delete the damaged checkpoint folder(s), or run with resume=false overwrite=true" in line
    assert checksums(run) == before


def test_a_dataset_whose_episode_table_is_not_one_names_the_file_and_columns(tmp_path, capsys, rng):
    from hf_agents.data.preferences import write_preferences

    write_test_dataset(tmp_path / "ds", [5] * 2, rng=rng)
    table = tmp_path / "ds" / "episodes" / "episodes.parquet"
    table.unlink()
    write_preferences(tmp_path / "p.parquet", [(0, 1)], "a")  # a parquet table of something else
    (tmp_path / "p.parquet").rename(table)
    code, err = cli(capsys, "data", "info", tmp_path / "ds")
    line = one_error_line(err)
    assert code == 2 and f"{table}: not an episode table, missing column(s) ['episode_id', 'source'" in line


def test_a_training_run_never_writes_over_what_it_reads(tmp_path, capsys, tiny_agent_dir):
    before = checksums(tiny_agent_dir)
    for output_dir in (tiny_agent_dir, tmp_path):  # the agent itself, or a folder holding it
        code, err = cli(capsys, "train", "stage=imitation", f"dataset={tmp_path / 'ds'}", f"init_from={tiny_agent_dir}",
                        f"output_dir={output_dir}", "overwrite=true")
        line = one_error_line(err)
        assert code == 2 and f"{output_dir}: output_dir holds the init_from {tiny_agent_dir} this stage reads" in line
    assert checksums(tiny_agent_dir) == before


# -- a save, an export or a label database that the disk stops midway ----------------------------------------------


@pytest.mark.parametrize("save_steps, limit, cause", [
    (1, 1.5, "the disk is full; free space or write somewhere else (ENOSPC)"),  # torch.save of a checkpoint's optimizer
    (1000, 0.5, "File too large (EFBIG)"),  # safetensors, in the final save_model: weights and config.json go
])
def test_a_save_that_the_disk_stops_is_one_line_and_leaves_no_half_written_weights(tmp_path, capsys, rng, save_steps,
                                                                                    limit, cause):
    import resource
    import signal

    from hf_agents.models import AgentModel

    write_test_dataset(tmp_path / "ds", [5] * 2, rng=rng)
    run, before = tmp_path / "run", checksums(tmp_path / "ds")
    weights = 4 * AgentModel(AgentConfig.from_preset("tiny", image_size=16)).num_parameters()  # float32 bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < 2 * weights:
        pytest.skip(f"the file size limit ({hard} bytes) is below what the test needs")
    # No file may grow past `limit` x the weights' size (a write past it fails as on a full disk): the weights fit, a
    # checkpoint's optimizer.pt (twice their size) does not; or the final weights do not (save_steps=1000: no
    # checkpoint). torch.save then raises RuntimeError ("unexpected pos ..."), safetensors SafetensorError.
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit * weights), hard))
    try:
        code, err = cli(capsys, "train", "stage=imitation", f"dataset={tmp_path / 'ds'}", f"output_dir={run}",
                        "model_preset=tiny", "max_steps=1", f"save_steps={save_steps}", "eval_fraction=0",
                        "report_to=none")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert code == 2 and one_error_line(err) == f"hf-agents train: error: {run}: {cause}"
    assert not run.exists() or not list(run.rglob("*"))  # no checkpoint-1, no weights, no config.json
    assert checksums(tmp_path / "ds") == before


def test_an_export_that_fills_the_disk_removes_its_files_and_keeps_what_was_there(tmp_path, rng):
    import hashlib
    import re

    write_test_dataset(tmp_path / "ds", [20] * 6, rng=rng)  # each .npz ~16 kB: a few fit on the 64 kB disk
    before = checksums(tmp_path / "ds")
    disk, [(code, err)], files = on_a_broken_disk(
        tmp_path, "small", [["data", "export", tmp_path / "ds", "--out", "DISK/npz"]], files=True,
        prepare="mkdir DISK/npz && printf precious > DISK/npz/notes.txt && printf old > DISK/npz/recording.npz")
    line = one_error_line(err)
    failed = re.fullmatch(rf"hf-agents: error: {re.escape(str(disk / 'npz'))}/episode_00000(\d)\.npz: the disk is "
                          r"full; free space or write somewhere else \(ENOSPC\)", line)
    assert code == 2 and failed and 1 <= int(failed.group(1)) <= 5, line  # after writing at least one whole file
    sha = {"precious": hashlib.sha256(b"precious").hexdigest(), "old": hashlib.sha256(b"old").hexdigest()}
    assert files == {"npz/notes.txt": sha["precious"], "npz/recording.npz": sha["old"]}  # only what was there
    assert checksums(tmp_path / "ds") == before


def test_a_label_database_that_cannot_be_created_names_the_folder(tmp_path, rng):
    write_test_dataset(tmp_path / "ds", [5] * 2, rng=rng)
    (tmp_path / "notes.sqlite").write_text("precious")  # a file that is there and is not a database
    before = checksums(tmp_path / "ds", tmp_path / "notes.sqlite")
    label = ["label", tmp_path / "ds", "--labeller", "alice", "--db"]
    # the database is opened before the page is built: a stand-in for Gradio spares its import (seconds)
    disk, [(code, err), (code2, err2)], left = on_a_broken_disk(
        tmp_path, "ro", [[*label, "DISK/labels.sqlite"], [*label, tmp_path / "notes.sqlite"]],
        preamble="import sys, types; sys.modules['gradio'] = types.ModuleType('gradio')\n")
    cause = ("the folder {} is read-only (EROFS)" if os.geteuid() == 0 else
             "permission denied to write in the folder {} (EACCES)").format(disk)
    assert code == 2 and one_error_line(err) == (f"hf-agents: error: {disk / 'labels.sqlite'}: cannot create the label "
                                                 f"database: {cause}; pick another --db")
    assert code2 == 2 and one_error_line(err2) == (f"hf-agents: error: {tmp_path / 'notes.sqlite'}: not a label "
                                                   "database (file is not a database); pick another --db")
    assert left == [] and checksums(tmp_path / "ds", tmp_path / "notes.sqlite") == before


def test_held_out_data_of_another_frame_size_is_refused_before_training(tmp_path, capsys, rng):
    write_test_dataset(tmp_path / "train", [8] * 2, size=16, rng=rng)
    write_test_dataset(tmp_path / "held-out", [8] * 2, size=24, rng=rng)
    code, err = cli(capsys, "train", "stage=imitation", f"dataset={tmp_path / 'train'}", "report_to=none",
                    f"eval_dataset={tmp_path / 'held-out'}", "max_steps=2", "context_length=4", "use_cpu=true",
                    f"output_dir={tmp_path / 'out'}")
    line = one_error_line(err)
    assert code == 2 and f"{tmp_path / 'held-out'} (eval_dataset): frames are 24x24" in line
    assert "16x16" in line and not (tmp_path / "out" / "model.safetensors").exists()


def test_a_missing_or_corrupt_preferences_file_is_named_by_the_reward_stage(tmp_path, capsys, rng):
    write_test_dataset(tmp_path / "ds", [6] * 4, size=16, rng=rng)
    (tmp_path / "bad.parquet").write_bytes(b"garbage")
    for name, message in (("missing.parquet", "no such preferences file"), ("bad.parquet", "corrupt or truncated")):
        code, err = cli(capsys, "train", "stage=reward", f"trajectories={tmp_path / 'ds'}", "encoder=random",
                        f"preferences={tmp_path / name}", "report_to=none", f"output_dir={tmp_path / 'out'}")
        assert code == 2 and one_error_line(err).startswith(f"hf-agents train: error: {tmp_path / name}: {message}")
