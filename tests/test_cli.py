"""The command line's conventions: help everywhere (short for a training stage), --version, a bare command, the
pipeline order; `evaluate --trajectories` leaves a model's own evaluation alone; written files follow the umask;
no warning without news on CPU (pinned memory) or at an adapter load (peft's fan_in_fan_out)."""

import argparse
import json
import os
import warnings

import pytest

from hf_agents import __version__
from hf_agents.cli import build_parser
from hf_agents.cli import main as cli
from hf_agents.locations import RECIPES

PAGE = 100  # lines a --help page stays under


@pytest.fixture(autouse=True)
def terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # an ordinary terminal; help wraps to it


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_help_explains_recipe_and_overrides(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and len(out.splitlines()) < PAGE
    assert "usage: hf-agents train RECIPE [key=value ...]" in out and "accelerate launch" in out
    assert "-m hf_agents.training RECIPE" in out and "sft.yaml" in out and "TrainingArguments" in out
    for stage in ("imitation", "reward", "preference_ft", "align", "dpo", "align_loop"):
        assert f"  {stage} " in out
    assert run(capsys, "train")[:2] == (0, out)  # no recipe: the same help, not an error
    from hf_agents.training.launch import main as training_main  # python -m hf_agents.training --help

    assert training_main(["--help"]) == 0 and capsys.readouterr().out.strip() == out.strip()


def test_stage_help_shows_its_own_fields_only(capsys):
    code, out, _ = run(capsys, "train", "sft.yaml", "--help")
    assert code == 0 and len(out.splitlines()) < PAGE, out
    assert "Stage `imitation`" in out and "cut_at_outcome (bool; default: False; recipe: True)" in out
    assert "End each episode at the step its outcome happened" in out  # the field's help
    assert "recipe: 0.0003 # paper: 1e-6" in out  # the recipe's value and the paper's, from the recipe's note
    assert "context_length (int; default: 32; paper: 32; recipe: 32)" in out  # the paper's value, from the help
    assert "Any field of transformers.TrainingArguments can be set as key=value too" in out
    assert "--adam_beta1" not in out and "adam_beta1" not in out  # not the Trainer's hundred-odd fields
    code, align, _ = run(capsys, "train", RECIPES / "align.yaml", "-h")  # a path works too
    assert code == 0 and "episodes_per_update (int; default: 16; recipe: 32 # paper: 16" in align
    assert "TrainingArguments" not in align  # the align stage has its own loop, not the Trainer's
    assert run(capsys, "train", "stage=dpo", "--help")[0] == 0
    code, _, err = run(capsys, "train", "no-such.yaml", "--help")
    assert code == 2 and "no such recipe file" in err


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_shipped_recipe_has_a_short_help_page(capsys, recipe):
    from hf_agents.training.launch import main as training_main

    assert training_main([recipe, "--help"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < PAGE and "(str" in out


def test_a_list_override_sets_a_list_and_an_empty_one_empties_it():
    from hf_agents.training.common import RecipeError, parse_stage

    def field(*overrides):
        return parse_stage("align.yaml", list(overrides))[1]

    assert field("report_to=[tensorboard]").report_to == ["tensorboard"]
    assert field("report_to=[]").report_to == []  # the default is ["tensorboard"]
    assert field("env_kwargs=[a=1, b=2]").env_kwargs == ["a=1", "b=2"]
    assert parse_stage("align_loop.yaml", ["reward_overrides=[]"])[1].reward_overrides == []  # the recipe sets one
    with pytest.raises(RecipeError, match=r"unknown field\(s\) \['reprot_to'\]"):
        field("reprot_to=[]")
    with pytest.raises(RecipeError, match="seed=\\[\\] but `seed` is not a list"):
        field("seed=[]")


def test_version_and_bare_command(capsys):
    code, out, _ = run(capsys)
    assert code == 0 and out.startswith("usage: hf-agents") and "demo" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"hf-agents {__version__}"
    code, out, _ = run(capsys, "data")  # a group alone: its commands
    assert code == 0 and "usage: hf-agents data" in out and "generate" in out
    code, _, err = run(capsys, "evaluate")
    assert code == 2 and "required: model" in err


def _parsers(parser, name="hf-agents"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_flag_has_help_with_its_default_and_commands_are_in_pipeline_order(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    order = list(commands)
    assert order[:4] == ["data", "train", "evaluate", "play"] and order[-2:] == ["push", "demo"]
    assert order.index("preferences") < order.index("label") < order.index("reward") < order.index("push")
    for name, sub in _parsers(parser):
        for action in sub._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                assert action.help, f"{name}: {action.dest} has no help"
    code, out, _ = run(capsys, "evaluate", "--help")
    out = " ".join(out.split())
    assert code == 0 and "(default: 1000)" in out and "(default: 12345)" in out and "DIR-eval" in out
    code, out, _ = run(capsys, "compare", "--help")
    assert code == 0 and "(default: comparison.png)" in " ".join(out.split())
    code, out, _ = run(capsys, "play", "--help")
    assert code == 0 and "first reset seed (default: 0)" in " ".join(out.split())  # a zero is a default too
    code, out, _ = run(capsys, "demo", "--help")
    assert "preference fine-tuning, then online RL" in " ".join(out.split()) and "report" in out


def test_evaluate_with_trajectories_leaves_the_models_evaluation_alone(tmp_path, tiny_agent_dir, capsys):
    from hf_agents.data import load_trajectories

    tiny = ["--episodes", 1, "--num-envs", 1, "--videos", 0, "--max-steps", 3]
    assert run(capsys, "evaluate", tiny_agent_dir, *tiny)[0] == 0  # the model's own: MODEL/eval, in its card
    own, card = tiny_agent_dir / "eval" / "eval.json", tiny_agent_dir / "README.md"
    before = own.read_bytes(), card.read_bytes()
    rollouts = tmp_path / "rollouts"
    code, _, err = run(capsys, "evaluate", tiny_agent_dir, *tiny[:1], 2, *tiny[2:], "--trajectories", rollouts)
    assert code == 0, err
    assert (own.read_bytes(), card.read_bytes()) == before
    assert len(load_trajectories(rollouts)) == 2  # the rollouts, and their evaluation beside them
    assert json.loads((tmp_path / "rollouts-eval" / "eval.json").read_text())["episodes"] == 2
    code, _, err = run(capsys, "evaluate", tiny_agent_dir, *tiny, "--trajectories", tmp_path / "r2", "--overwrite",
                       "--out", tiny_agent_dir / "eval")  # asked for: replaced
    assert code == 0, err
    assert json.loads(own.read_text())["episodes"] == 1 and not (tmp_path / "r2-eval").exists()


def test_written_files_follow_the_umask(tmp_path):
    import torch
    from safetensors.torch import save_file

    from hf_agents.files import atomic_dir, atomic_path, atomic_write, follow_umask, umask

    current = umask()
    assert (atomic_write(tmp_path / "a.json", "{}").stat().st_mode & 0o777) == 0o666 & ~current
    previous = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert atomic_write(tmp_path / "b.txt", b"x").stat().st_mode & 0o777 == 0o640
        with atomic_path(tmp_path / "c.bin") as tmp:  # a writer that makes its file private, as tempfile does
            os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))
        assert (tmp_path / "c.bin").stat().st_mode & 0o777 == 0o640
        with atomic_dir(tmp_path / "d") as folder:
            save_file({"w": torch.zeros(2)}, str(folder / "w.safetensors"))  # written 0600 through tempfile
        assert (tmp_path / "d" / "w.safetensors").stat().st_mode & 0o777 == 0o640
        save_file({"w": torch.zeros(2)}, str(tmp_path / "d" / "v.safetensors"))
        (tmp_path / "d" / "mine").write_text("x")
        os.chmod(tmp_path / "d" / "mine", 0o604)
        follow_umask(tmp_path / "d")
        assert (tmp_path / "d" / "v.safetensors").stat().st_mode & 0o777 == 0o640
        assert (tmp_path / "d" / "mine").stat().st_mode & 0o777 == 0o604  # a mode someone chose is kept
    finally:
        os.umask(previous)


def test_no_warning_without_news(tmp_path):
    import torch

    from hf_agents.models.adapters import load_for_acting
    from hf_agents.models.trainable import TrainablePolicy
    from hf_agents.training.common import parse_recipe
    from tests.conftest import make_tiny_agent

    config = parse_recipe("sft.yaml", ["report_to=none"])
    assert config.dataloader_pin_memory == torch.cuda.is_available()  # pinned memory only with a GPU to copy to
    agent = make_tiny_agent()
    agent.save_pretrained(tmp_path / "agent")
    policy = TrainablePolicy.create(agent, "lora", base_path=str(tmp_path / "agent"), adapter_name="left")
    policy.save(tmp_path / "left")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_for_acting(tmp_path / "left")
        load_for_acting(tmp_path / "agent", {"a": str(tmp_path / "left"), "b": str(tmp_path / "left")})
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)]


def test_launch_finds_a_shipped_accelerate_config_by_name_from_any_folder(tmp_path, jumppads_sft, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # outside the repository: no recipes/ folder here
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cli(["launch", "no-such-config", "pretrain.yaml"]) == 2
    assert "cpu-2ranks" in capsys.readouterr().err  # the error lists the shipped names
    assert cli(["launch", "cpu", "pretrain.yaml", f"dataset={jumppads_sft}", "model_preset=tiny", "context_length=8",
                "max_steps=1", "per_device_train_batch_size=2", "eval_fraction=0", "report_to=none",
                f"output_dir={tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists()
