import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_agents.training.common import RecipeError, parse_recipe
from hf_agents.training.imitation import UNIFORM_LOSS
from hf_agents.training.launch import main
from tests.conftest import Drained, KillWhen, write_test_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ["model_preset=tiny", "context_length=8", "per_device_train_batch_size=4", "per_device_eval_batch_size=4",
        "report_to=none", "logging_steps=1", "dataloader_num_workers=0", "save_strategy=steps"]


def run(args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "hf_agents.training", *args], cwd=REPO, env=env,
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


def test_command_line_overrides_win_over_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: x\nlearning_rate: 0.1\nmax_steps: 7\n")
    plain = parse_recipe(str(recipe))
    assert (plain.learning_rate, plain.max_steps) == (0.1, 7)
    config = parse_recipe(str(recipe), ["learning_rate=0.5", "--max_steps", "3"])  # both override forms
    assert (config.dataset, config.learning_rate, config.max_steps) == ("x", 0.5, 3)


@pytest.mark.parametrize("shipped", ["pretrain", "sft", "scratch"])
def test_the_shipped_imitation_recipes_parse_to_every_value_they_set(shipped):
    import yaml

    from hf_agents.training import load_stage

    path = REPO / "recipes" / f"{shipped}.yaml"
    config = parse_recipe(str(path))
    assert type(config) is load_stage("imitation").CONFIG
    for field, value in yaml.safe_load(path.read_text()).items():
        assert getattr(config, field) == value, field


def test_one_recipe_serves_every_target_through_references():
    """`{target}` in a recipe's paths follows the target override: no per-target recipe files."""
    for target in ("left", "right", "middle"):
        config = parse_recipe(str(REPO / "recipes" / "align.yaml"), [f"target={target}"])
        assert (config.output_dir, config.reward_model, config.init_adapter, config.adapter_name) == (
            f"outputs/align-{target}", f"outputs/reward-{target}-random", f"outputs/preference-ft-{target}", target)
    config = parse_recipe(str(REPO / "recipes" / "preference_ft.yaml"), ["target=right", "output_dir=mine"])
    assert (config.output_dir, config.reward_model) == ("mine", "outputs/reward-right-random")
    with pytest.raises(RecipeError, match=r"align.yaml: field '\w+' refers to \{target\}"):
        parse_recipe(str(REPO / "recipes" / "align.yaml"), ["--target"])


def test_gpu_scale_recipes_carry_the_papers_values():
    """recipes/gpu (`hf-agents demo --scale gpu`): the paper's model, frames, batches and rates (Appendix C)."""
    from hf_agents.games.jumppads.demo import SCALES, recipe_path
    from hf_agents.models import AgentConfig

    def parse(name, *overrides):
        return parse_recipe(str(recipe_path(name, SCALES["gpu"])), list(overrides))

    pre = parse("pretrain", "bf16=false")  # bf16 needs a GPU; everything else parses here
    assert (pre.model_preset, pre.learning_rate, pre.weight_decay, pre.warmup_steps, pre.context_length) == (
        "paper-103m", 1e-4, 1e-4, 1000, 32)
    assert pre.per_device_train_batch_size * pre.gradient_accumulation_steps == 256 and pre.torch_compile
    sft = parse("sft", "bf16=false")
    assert (sft.learning_rate, sft.per_device_train_batch_size, sft.max_steps, sft.warmup_steps) == (1e-6, 128, 1500, 200)
    assert parse("scratch", "bf16=false").model_preset == "paper-103m"
    reward = parse("reward", "bf16=false")
    assert (reward.per_device_train_batch_size, reward.learning_rate, reward.l2_penalty) == (2048, 1e-4, 0.1)
    pft = parse("preference_ft", "bf16=false")
    assert (pft.trainable, pft.learning_rate, pft.max_steps, pft.top_fraction, pft.iterations) == (
        "head", 1e-5, 1000, 0.2, 1)
    assert pft.per_device_train_batch_size * pft.gradient_accumulation_steps == 256
    align = parse("align")
    assert (align.algorithm, align.trainable, align.num_updates, align.episodes_per_update, align.learning_rate) == (
        "reinforce", "head", 600, 16, 1e-4)
    assert AgentConfig.from_preset("paper-103m").image_size == SCALES["gpu"]["frame_size"] == 128


def test_the_stage_registry_is_the_one_place_a_stage_is_named(tmp_path, capsys, monkeypatch):
    import dataclasses
    import inspect
    import re
    import types

    import hf_agents.training as training
    from hf_agents.training.common import StageArguments

    for name in training.STAGES:
        module = training.load_stage(name)
        assert dataclasses.is_dataclass(module.CONFIG) and callable(module.run), name
        shared = {"output_dir", *StageArguments.__dataclass_fields__} - {"save_safetensors"}  # check_output_dir's
        assert shared <= set(module.CONFIG.__dataclass_fields__), name
        assert module.REQUIRED and set(module.REQUIRED) <= set(module.CONFIG.__dataclass_fields__), name
        ours = [c for c in module.CONFIG.__mro__ if c.__module__.startswith("hf_agents")]
        for field in set().union(*map(inspect.get_annotations, ours)):  # our fields (and overrides) say what they do
            assert module.CONFIG.__dataclass_fields__[field].metadata.get("help"), (name, field)
    assert parse_recipe(None, ["dataset=x"]).__class__ is training.load_stage("imitation").CONFIG  # the default
    reward = parse_recipe(None, ["stage=reward", "trajectories=t", "preferences=p", "report_to=none"])
    assert type(reward) is training.load_stage("reward").CONFIG and type(reward).__name__ == "RewardTrainingConfig"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: pretrain\n")
    valid = re.escape(str(sorted(training.STAGES)))
    with pytest.raises(RecipeError, match=f"r.yaml: unknown stage 'pretrain'; choose one of {valid}"):
        parse_recipe(str(recipe))
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert "RECIPE [key=value ...]" in shown and all(f"  {name} " in shown for name in training.STAGES)

    # A new stage is one module and one registry line: parse, dispatch and --help need nothing else.
    @dataclasses.dataclass
    class ToyConfig(StageArguments):
        output_dir: str = dataclasses.field(default="", metadata={"help": "Where it goes."})
        steps: int = dataclasses.field(default=1, metadata={"help": "How long."})

    toy = types.ModuleType("toy_stage")
    toy.CONFIG, toy.REQUIRED, toy.run = ToyConfig, ("output_dir",), lambda config: {"steps": config.steps}
    monkeypatch.setitem(sys.modules, "toy_stage", toy)
    monkeypatch.setitem(training.STAGES, "toy", "toy_stage")
    assert main(["stage=toy", "output_dir=o", "steps=3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"steps": 3}
    assert main(["stage=toy"]) == 2
    assert "`output_dir` is required for the toy stage" in capsys.readouterr().err
    assert main(["stage=toy", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "steps (int; default: 1)" in shown and "How long." in shown and "TrainingArguments" not in shown


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
    assert "frames are 32x32 but the model takes 64x64" in capsys.readouterr().err
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
    # what produced it: config, version, seed and a fingerprint of the data
    from hf_agents.locations import fingerprint

    made = json.loads((out / "provenance.json").read_text())
    assert made["inputs"]["dataset"] == {"path": str(jumppads_sft), "sha256": fingerprint(jumppads_sft)}
    assert made["config"]["max_steps"] == 60 and made["seed"] == made["config"]["seed"] and made["hf_agents_version"]


def assert_kill_and_resume_matches(args, tmp_path, checkpoint: str) -> None:
    """Run `args` in a process of their own ('killed') and kill -9 it once `checkpoint` is written, meanwhile run
    them to the end here ('ref'); resume the killed run (here): its final weights equal the uninterrupted run's
    exactly."""
    proc = run([*args, f"output_dir={tmp_path / 'killed'}"])
    killer = KillWhen(proc, tmp_path / "killed" / checkpoint / "trainer_state.json")
    assert main([*args, f"output_dir={tmp_path / 'ref'}"]) == 0  # the uninterrupted run, while the other one runs
    killer.check()  # killed mid-run
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    assert main([*args, f"output_dir={tmp_path / 'killed'}", "resume=true"]) == 0  # from what the killed run left
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, jumppads_sft):
    args = [f"dataset={jumppads_sft}", *TINY, "max_steps=24", "save_steps=4", "eval_strategy=no",
            "learning_rate=1e-3", "augment=true"]
    assert_kill_and_resume_matches(args, tmp_path, "checkpoint-8")


@pytest.mark.slow
def test_two_cpu_ranks_match_one_process(tmp_path, jumppads_sft):
    common = [f"dataset={jumppads_sft}", *TINY, "max_steps=6", "save_strategy=no", "eval_strategy=no",
              "augment=false", "filter_noops=false", "learning_rate=1e-3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    two = Drained(subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                                    str(REPO / "recipes" / "accelerate" / "cpu-2ranks.yaml"), "-m",
                                    "hf_agents.training", *common, "per_device_train_batch_size=4",
                                    f"output_dir={tmp_path / 'two'}"],
                                   cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    # one process (this one, on the CPU as the ranks are) while the two ranks start
    assert main([*common, "per_device_train_batch_size=8", f"output_dir={tmp_path / 'one'}", "use_cpu=true"]) == 0
    code, output = two.wait(timeout=600)
    assert code == 0, output[-6000:]
    l1 = [h["loss"] for h in history(tmp_path / "one")["log_history"] if "loss" in h]
    l2 = [h["loss"] for h in history(tmp_path / "two")["log_history"] if "loss" in h]
    assert len(l1) == len(l2) == 6
    for x, y in zip(l1, l2):
        assert abs(x - y) < 1e-3 * abs(x), (l1, l2)


def test_batch_augmentation_on_the_device():
    from hf_agents.training.augment import augment_frames

    frames = torch.zeros(2, 3, 3, 16, 16, dtype=torch.uint8)
    frames[..., 4:8, 4:8] = torch.tensor([200, 100, 50], dtype=torch.uint8)[:, None, None]
    identity = torch.tensor([[1, 1, 1, 0, 0, 0, 1]] * 2, dtype=torch.float32)
    torch.testing.assert_close(augment_frames(frames, identity), frames.float(), rtol=0, atol=1e-3)
    params = identity.clone()
    params[0, 4] = 2 / 16  # window 0: shift right by 2 of its 16 pixels
    params[1, 0] = 1.2  # window 1: 20% brighter
    out = augment_frames(frames, params)
    torch.testing.assert_close(out[0, :, :, 4:8, 6:10], frames[0, :, :, 4:8, 4:8].float(), rtol=0, atol=1e-3)
    assert out[0, :, :, :, 4:6].abs().sum() == 0  # the square left columns 4 and 5
    torch.testing.assert_close(out[1], (frames[1].float() * 1.2).clamp(0, 255), rtol=0, atol=1e-3)
    assert torch.equal(out[0, 0], out[0, 2])  # one draw for every frame of a window


def test_augmentation_draws_are_seeded_per_window(jumppads_sft):
    from hf_agents.data import load_trajectories
    from hf_agents.training.augment import AugmentedWindows

    windows = load_trajectories(jumppads_sft).windows(8, 4)
    a, b = AugmentedWindows(windows, seed=3), AugmentedWindows(windows, seed=3)
    assert torch.equal(a[5]["augment"], b[5]["augment"]) and not torch.equal(a[5]["augment"], a[6]["augment"])
    b.set_epoch(1)
    assert not torch.equal(a[5]["augment"], b[5]["augment"])
    assert torch.equal(a[5]["frames"], windows[5]["frames"])  # the loader leaves the pixels alone


def test_a_list_override_on_the_command_line_is_a_list_as_in_a_recipe():
    from hf_agents.training.common import RecipeError, _read_values

    values = _read_values(None, ["reward_overrides=[num_train_epochs=10, encoder=random]", "x=[y"])
    assert values == {"reward_overrides": ["num_train_epochs=10", "encoder=random"], "x": "[y"}
    with pytest.raises(RecipeError, match="is not a list"):
        _read_values(None, ["a=[b, [c]"])


def test_a_training_run_leaves_its_libraries_out_of_garbage_collections_and_still_frees_its_own(tmp_path,
                                                                                                monkeypatch):
    """The Trainer starts `train()` with a full garbage collection (accelerate's free_memory): 0.26 s over the
    imported libraries' objects on 2 cores. A run freezes them once its stage is imported (HF_AGENTS_FREEZE_GC=0:
    not), so that collection looks only at what the run made, which it still frees."""
    import gc
    import weakref

    from hf_agents import processes

    def run(name):
        processes.freeze_loaded_objects.cache_clear()
        gc.unfreeze()
        assert main([f"dataset={tmp_path / 'ds'}", "model_preset=tiny", "context_length=4",
                     "per_device_train_batch_size=2", "max_steps=1", "eval_fraction=0", "save_strategy=no",
                     "report_to=none", f"output_dir={tmp_path / name}"]) == 0
        return gc.get_freeze_count()

    write_test_dataset(tmp_path / "ds", size=32)
    monkeypatch.delenv("HF_AGENTS_FREEZE_GC", raising=False)
    try:
        assert run("on") > 100_000  # torch's, transformers' and datasets' objects among them
        made = type("Made", (), {})()
        made.cycle, ref = made, weakref.ref(made)  # garbage made after the freeze, in a reference cycle
        del made
        gc.collect()
        assert ref() is None  # collected
        monkeypatch.setenv("HF_AGENTS_FREEZE_GC", "0")
        assert run("off") == 0
        monkeypatch.setenv("HF_AGENTS_FREEZE_GC", "yes")
        processes.freeze_loaded_objects.cache_clear()
        with pytest.raises(ValueError, match="HF_AGENTS_FREEZE_GC='yes'"):
            processes.freeze_loaded_objects()
    finally:
        processes.freeze_loaded_objects.cache_clear()
        gc.unfreeze()
