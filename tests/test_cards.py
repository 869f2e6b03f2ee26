"""Model cards for every stage's output, `push --to DIR` (exactly what would be uploaded) and `play`."""

import json

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData
from peft import PeftModel
from transformers import AutoModel

from hf_agents.cli import main as cli
from hf_agents.locations import RECIPES
from hf_agents.models import AgentModel
from hf_agents.rollout.evaluate import evaluate_model
from hf_agents.training.launch import main as train
from tests.test_training import TINY


def card(folder) -> ModelCard:
    return ModelCard.load(folder / "README.md")


@pytest.mark.slow
def test_agent_and_adapter_cards_round_trip_and_pushed_folders_load_back(tmp_path, jumppads_sft):
    sft = tmp_path / "sft"
    assert train([f"dataset={jumppads_sft}", *TINY, "max_steps=4", "save_strategy=no", "eval_strategy=no",
                  f"output_dir={sft}"]) == 0
    assert card(sft).data.library_name == "hf-agents" and "imitation-learning" in card(sft).data.tags
    summary = evaluate_model(sft, sft / "eval", episodes=4, num_envs=2, videos=1, progress=False)
    data = card(sft).data  # evaluating into the model's folder puts the results in its card
    values = {r.metric_type: r.metric_value for r in data.eval_results}
    assert values["failure_rate"] == pytest.approx(summary["distribution"]["none"], abs=1e-4)
    assert values["success_rate_left"] == pytest.approx(summary["distribution"]["left"], abs=1e-4)
    again = ModelCardData(**data.to_dict())  # the metadata round-trips, eval results included
    assert [(r.metric_type, r.metric_value) for r in again.eval_results] == [
        (r.metric_type, r.metric_value) for r in data.eval_results]
    assert "![" in card(sft).text and "eval/videos/" in card(sft).text  # the replay GIF is shown

    left = tmp_path / "align-left"
    assert train([str(RECIPES / "align.yaml"), f"agent={sft}", "reward_source=oracle", "num_updates=1",
                  "episodes_per_update=2", "rloo_k=2", "num_envs=2", "max_episode_steps=12", "report_to=none",
                  "init_adapter=", f"output_dir={left}"]) == 0
    adapter = card(left)
    assert adapter.data.library_name == "peft" and adapter.data.base_model == "sft" and "lora" in adapter.data.tags
    assert "Lineage: `align-left` (adapter) <- `sft`" in adapter.text

    assert cli(["push", str(sft), "me/sft", "--to", str(tmp_path / "pub-sft")]) == 0
    assert cli(["push", str(left), "me/left", "--to", str(tmp_path / "pub-left"), "--base-model", "me/sft"]) == 0
    published = {p.relative_to(tmp_path / "pub-left").as_posix() for p in (tmp_path / "pub-left").rglob("*")}
    assert {"README.md", "adapter_model.safetensors", "adapter_config.json", "success.png"} <= published
    assert not any(p.startswith("checkpoint-") or p.endswith((".bin", ".pt")) for p in published), published
    assert card(tmp_path / "pub-left").data.base_model == "me/sft"
    assert not (tmp_path / "pub-sft" / "training_args.bin").exists()  # a pickle: never published
    base = AutoModel.from_pretrained(tmp_path / "pub-sft")  # no trust_remote_code: our Auto classes
    assert isinstance(base, AgentModel)
    agent = PeftModel.from_pretrained(base, tmp_path / "pub-left", adapter_name="left")
    original = PeftModel.from_pretrained(AgentModel.from_pretrained(sft), left, adapter_name="left")
    for (name, a), (_, b) in zip(agent.named_parameters(), original.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    result = evaluate_model(tmp_path / "pub-left", tmp_path / "eval-pub", episodes=2, num_envs=2, videos=0,
                            progress=False)
    assert result["episodes"] + result["dropped"] == 2
    assert cli(["push", str(tmp_path / "nothing"), "me/x", "--to", str(tmp_path / "pub-x")]) == 2


def test_play_writes_a_video(tmp_path, capsys, tiny_agent_dir):
    capsys.readouterr()
    assert cli(["play", str(tiny_agent_dir), "--out", str(tmp_path / "play")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(printed["videos"]) == 1 and (tmp_path / "play").exists()
    assert sum(printed["outcomes"].values()) == 1
