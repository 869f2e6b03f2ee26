import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_agents.train import RecipeError, main, parse_recipe
from hf_agents.training.imitation import UNIFORM_LOSS

REPO = Path(__file__).resolve().parents[1]
TINY = ["model_preset=tiny", "context_length=8", "per_device_train_batch_size=4", "per_device_eval_batch_size=4",
        "report_to=none", "logging_steps=1", "dataloader_num_workers=0", "save_strategy=steps"]


def run(args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "hf_agents.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def history(out):
    return json.loads((Path(out) / "train_results.json").read_text())


def test_recipe_errors_name_file_and_field(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: x\nlearning_rat: 0.1\n")
    with pytest.raises(RecipeError, match=r"r.yaml: unknown field\(s\) \['learning_rat'\]"):
        parse_recipe(str(recipe))
    recipe.write_text("dataset: x\nlearning_rate: fast\n")
    with pytest.raises(RecipeError, match="r.yaml.*learning_rate.*fast"):
        parse_recipe(str(recipe))
    config = parse_recipe(str(recipe), ["learning_rate=0.5", "--max_steps", "3"])
    assert config.learning_rate == 0.5 and config.max_steps == 3  # overrides win
    for shipped in ("pretrain", "sft", "scratch"):
        parse_recipe(str(REPO / "recipes" / f"{shipped}.yaml"))  # the shipped recipes parse


def test_bad_inputs_fail_before_training(tmp_path, jumppads_sft, capsys):
    from transformers import GPT2Config

    from hf_agents.models import AgentConfig, AgentModel

    base = [f"dataset={jumppads_sft}", *TINY, "max_steps=2"]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("precious")
    assert main([*base, f"output_dir={tmp_path / 'used'}"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "used" / "keep.txt").read_text() == "precious"
    GPT2Config().save_pretrained(tmp_path / "gpt2")
    assert main([*base, f"output_dir={tmp_path / 'o1'}", f"init_from={tmp_path / 'gpt2'}"]) == 2
    assert "'gpt2' checkpoint" in capsys.readouterr().err
    AgentModel(AgentConfig.from_preset("tiny", image_size=64, context_length=8)).save_pretrained(tmp_path / "a64")
    assert main([*base, f"output_dir={tmp_path / 'o2'}", f"init_from={tmp_path / 'a64'}"]) == 2
    assert "frames are (32, 32) but the model takes 64x64" in capsys.readouterr().err
    assert main([*base, f"output_dir={tmp_path / 'o3'}", "resume=true"]) == 2
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_training_learns_and_saves_safetensors(tmp_path, jumppads_sft):
    out = tmp_path / "run"
    assert main([f"dataset={jumppads_sft}", *TINY, "max_steps=60", "learning_rate=3e-3", "warmup_steps=5",
                 "eval_strategy=steps", "eval_steps=60", "save_steps=60", "eval_fraction=0.2",
                 f"output_dir={out}", "report_to=tensorboard"]) == 0
    results = history(out)
    losses = [h["loss"] for h in results["log_history"] if "loss" in h]
    assert sum(losses[-10:]) / 10 < 0.6 * UNIFORM_LOSS  # falls well below knowing nothing
    assert results["metrics"]["eval_loss"] < 0.8 * UNIFORM_LOSS
    assert (out / "model.safetensors").exists() and not list(out.glob("**/pytorch_model.bin"))
    assert list(out.glob("runs/**/events.out.tfevents*"))  # TensorBoard logs


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, jumppads_sft):
    args = [f"dataset={jumppads_sft}", *TINY, "max_steps=24", "save_steps=4", "eval_strategy=no",
            "learning_rate=1e-3", "augment=true"]
    ref = run([*args, f"output_dir={tmp_path / 'ref'}"])
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    proc = run([*args, f"output_dir={tmp_path / 'killed'}", "save_steps=4"])
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "checkpoint-8" / "trainer_state.json").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # a real kill, mid-run
    proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = run([*args, f"output_dir={tmp_path / 'killed'}", "resume=true"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.slow
def test_two_cpu_ranks_match_one_process(tmp_path, jumppads_sft):
    common = [f"dataset={jumppads_sft}", *TINY, "max_steps=6", "save_strategy=no", "eval_strategy=no",
              "augment=false", "filter_noops=false", "learning_rate=1e-3"]
    one = run([*common, "per_device_train_batch_size=8", f"output_dir={tmp_path / 'one'}"])
    assert one.wait(timeout=300) == 0, one.stdout.read()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          str(REPO / "recipes" / "accelerate" / "cpu-2ranks.yaml"), "-m", "hf_agents.train",
                          *common, "per_device_train_batch_size=4", f"output_dir={tmp_path / 'two'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    l1 = [h["loss"] for h in history(tmp_path / "one")["log_history"] if "loss" in h]
    l2 = [h["loss"] for h in history(tmp_path / "two")["log_history"] if "loss" in h]
    assert len(l1) == len(l2) == 6
    for x, y in zip(l1, l2):
        assert abs(x - y) < 1e-3 * abs(x), (l1, l2)
