"""Model cards for every stage's output, `push --to DIR` (exactly what would be uploaded) and `play`.

This module is light at import (the heavy imports are inside the tests): the game processes of `evaluate` import
it for its toy game, Arena."""

import json
import re
from pathlib import Path

import gymnasium as gym
import pytest

from tests.toy_games import CORRIDOR_ID, Corridor


class Arena(Corridor):
    """Corridor as a game that reports no outcome, only rewards (judged by its return), and names itself to cards."""

    metadata = {"card": {"name": "Arena", "outcome_noun": "flag", "tags": ["toy-arena"],
                         "limitations": "A toy game of the tests."}}

    def _info(self):
        return {**super()._info(), "outcome": None}


ARENA_ID = "tests.test_cards:Arena-v0"
if "Arena-v0" not in gym.registry:
    gym.register(id="Arena-v0", entry_point="tests.test_cards:Arena")


def card(folder):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def cli(argv) -> int:
    from hf_agents.cli import main

    return main([str(a) for a in argv])


ABSOLUTE = re.compile(r"""(?<![\w.~:/\\-])(?:~?/|[A-Za-z]:[/\\])[^\s"'`,;:()\[\]{}<>|=]+""")


def local_paths(folder: Path, *roots) -> list[str]:
    """Absolute local paths in the text files of a published folder: any absolute path, and any mention of `roots`
    (the test's folder, the working directory, the home directory)."""
    roots = [str(r) for r in (*roots, Path.cwd(), Path.home()) if len(str(r)) > 1]
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".md", ".json", ".txt", ".yaml"):
            text = path.read_text()
            found += [f"{path.relative_to(folder)}: {m}" for m in ABSOLUTE.findall(text)]
            found += [f"{path.relative_to(folder)}: {r}" for r in roots if r in text]
    return found


def quick_start(text: str) -> str:
    return text.split("## Quick start", 1)[1].split("```", 2)[1]


@pytest.mark.slow
def test_agent_and_adapter_cards_round_trip_and_pushed_folders_load_back(tmp_path, jumppads_sft):
    import torch
    from huggingface_hub import ModelCardData
    from peft import PeftModel
    from transformers import AutoModel

    from hf_agents.locations import RECIPES
    from hf_agents.models import AgentModel
    from hf_agents.rollout.evaluate import evaluate_model
    from hf_agents.training.launch import main as train
    from tests.test_training import TINY

    sft = tmp_path / "sft"
    assert train([f"dataset={jumppads_sft}", *TINY, "max_steps=4", "save_strategy=no", "eval_strategy=no",
                  f"output_dir={sft}"]) == 0
    assert card(sft).data.library_name == "hf-agents" and "imitation-learning" in card(sft).data.tags
    summary = evaluate_model(sft, sft / "eval", episodes=4, num_envs=2, videos=1, progress=False)
    data = card(sft).data  # evaluating into the model's folder puts the results in its card
    values = {r.metric_type: r.metric_value for r in data.eval_results}
    assert values["failure_rate"] == pytest.approx(summary["distribution"]["none"], abs=1e-4)
    assert values["success_rate_left"] == pytest.approx(summary["distribution"]["left"], abs=1e-4)
    assert values["mean_return"] == pytest.approx(summary["mean_return"], abs=1e-4)
    assert data.datasets is None  # trained on a local folder: no Hub dataset to name
    again = ModelCardData(**data.to_dict())  # the metadata round-trips, eval results included
    assert [(r.metric_type, r.metric_value) for r in again.eval_results] == [
        (r.metric_type, r.metric_value) for r in data.eval_results]
    assert "![" in card(sft).text and "eval/videos/" in card(sft).text  # the replay GIF is shown
    assert "JumpPads" in card(sft).text and "failure rate (no pad)" in str(data.to_dict())

    left = tmp_path / "align-left"
    assert train([str(RECIPES / "align.yaml"), f"agent={sft}", "reward_source=oracle", "num_updates=1",
                  "episodes_per_update=2", "rloo_k=2", "num_envs=2", "max_episode_steps=12", "report_to=none",
                  "init_adapter=", f"output_dir={left}"]) == 0
    adapter = card(left)
    assert adapter.data.library_name == "peft" and "lora" in adapter.data.tags
    assert adapter.data.base_model is None  # its base is a local folder: named in the lineage, not as a Hub id
    assert "Lineage: `align-left` (adapter) <- `sft`" in adapter.text

    assert cli(["push", sft, "me/sft", "--to", tmp_path / "pub-sft"]) == 0
    assert cli(["push", left, "me/left", "--to", tmp_path / "pub-left", "--base-model", "me/sft"]) == 0
    published = {p.relative_to(tmp_path / "pub-left").as_posix() for p in (tmp_path / "pub-left").rglob("*")}
    assert {"README.md", "adapter_model.safetensors", "adapter_config.json", "success.png"} <= published
    assert not any(p.startswith("checkpoint-") or p.endswith((".bin", ".pt")) for p in published), published
    assert card(tmp_path / "pub-left").data.base_model == "me/sft"
    assert not (tmp_path / "pub-sft" / "training_args.bin").exists()  # a pickle: never published
    for pub in ("pub-sft", "pub-left"):
        assert local_paths(tmp_path / pub, tmp_path) == []
    base = AutoModel.from_pretrained(tmp_path / "pub-sft")  # no trust_remote_code: our Auto classes
    assert isinstance(base, AgentModel)
    agent = PeftModel.from_pretrained(base, tmp_path / "pub-left", adapter_name="left")
    original = PeftModel.from_pretrained(AgentModel.from_pretrained(sft), left, adapter_name="left")
    for (name, a), (_, b) in zip(agent.named_parameters(), original.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    result = evaluate_model(tmp_path / "pub-sft", tmp_path / "eval-pub", episodes=2, num_envs=2, videos=0,
                            progress=False, adapters={"left": str(tmp_path / "pub-left")})
    assert result["episodes"] + result["dropped"] == 2  # the published adapter plays on the published base
    assert cli(["push", tmp_path / "nothing", "me/x", "--to", tmp_path / "pub-x"]) == 2


def test_play_writes_a_video(tmp_path, capsys, tiny_agent_dir):
    capsys.readouterr()
    assert cli(["play", tiny_agent_dir, "--out", tmp_path / "play"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(printed["videos"]) == 1 and (tmp_path / "play").exists()
    assert sum(printed["outcomes"].values()) == 1


def _trained(recipe: str, overrides: list[str]) -> Path:
    """The provenance.json a training run with `recipe` and `overrides` writes (its output_dir holds the model)."""
    from hf_agents.locations import RECIPES
    from hf_agents.training.common import parse_stage, write_provenance

    _, config = parse_stage(str(RECIPES / recipe), [*overrides, "report_to=none"])
    return write_provenance(config, str(RECIPES / recipe), [*overrides, "report_to=none"])


def _lineage(tmp_path) -> dict[str, Path]:
    """A pretrained and an SFT agent, a preference-fine-tuned adapter of the SFT agent, an aligned adapter that went
    on training it and a reward model: saved by the library's own writers, with the provenance.json their
    recipes write and their cards."""
    from hf_agents.cards import write_model_card
    from hf_agents.models import AgentModel, TrajectoryRewardModel
    from hf_agents.models.trainable import TrainablePolicy
    from tests.conftest import make_tiny_agent

    p = {name: tmp_path / name for name in ("pretrain", "sft", "preference-ft-left", "align-left", "reward-left")}
    data = tmp_path / "data" / "demos"
    data.mkdir(parents=True)
    (tmp_path / "prefs.parquet").write_bytes(b"")
    make_tiny_agent(seed=0).save_pretrained(p["pretrain"])
    make_tiny_agent(seed=1).save_pretrained(p["sft"])
    _trained("sft.yaml", [f"dataset={data}", f"init_from={p['pretrain']}", f"output_dir={p['sft']}"])
    for name, init in (("preference-ft-left", None), ("align-left", p["preference-ft-left"])):
        policy = TrainablePolicy.create(AgentModel.from_pretrained(p["sft"]), "lora", base_path=str(p["sft"]),
                                        adapter_name="left", init_adapter=str(init) if init else None)
        policy.save(p[name])  # peft's own README.md comes with it; the card replaces it
        _trained("preference_ft.yaml" if init is None else "align.yaml",
                 [f"agent={p['sft']}", f"init_adapter={init or ''}", "reward_source=oracle", "reward_model=",
                  "target=left", f"output_dir={p[name]}"])
    TrajectoryRewardModel.from_agent(AgentModel.from_pretrained(p["sft"]), game=make_tiny_agent().config.game
                                     ).save_pretrained(p["reward-left"])
    _trained("reward.yaml", [f"agent={p['sft']}", f"trajectories={data}", f"preferences={tmp_path / 'prefs.parquet'}",
                             f"output_dir={p['reward-left']}"])
    for folder in p.values():
        write_model_card(folder)
    return p


def test_push_writes_hub_ids_and_no_local_path(tmp_path, capsys):
    from peft import PeftModel

    from hf_agents.models import AgentModel
    from hf_agents.publish import push

    p, pub = _lineage(tmp_path), tmp_path / "published"
    assert "Model Card for Model ID" not in (p["align-left"] / "README.md").read_text()  # peft's empty template
    local = card(p["sft"]).data  # before publishing: local folders are never named as Hub ids
    assert local.base_model is None and local.datasets is None and card(p["align-left"]).data.base_model is None

    # an adapter's base is a local folder: its Hub id is required, and nothing is written without it
    assert cli(["push", p["align-left"], "me/left", "--to", pub / "left"]) == 2
    assert "--base-model" in capsys.readouterr().err and not (pub / "left").exists()
    assert cli(["push", p["align-left"], "me/left", "--to", pub / "left", "--base-model", p["sft"]]) == 2
    assert "not a Hub id" in capsys.readouterr().err and not (pub / "left").exists()

    assert cli(["push", p["align-left"], "me/left", "--to", pub / "left", "--base-model", "me/sft"]) == 0
    assert json.loads((pub / "left" / "adapter_config.json").read_text())["base_model_name_or_path"] == "me/sft"
    assert json.loads((pub / "left" / "hf_agents_base.json").read_text())["base_model"] == "me/sft"
    left = card(pub / "left")
    assert left.data.base_model == "me/sft"  # its base agent, not the adapter it went on training
    code = quick_start(left.text)
    assert code.count("from_pretrained(") == 2 and code.count("PeftModel.from_pretrained(") == 1  # one adapter
    assert 'AutoModel.from_pretrained("me/sft")' in code and '"me/left"' in code and "load_adapter" not in code
    assert "Lineage: `me/left` (adapter) <- `preference-ft-left` <- `me/sft` <- `pretrain`." in left.text
    assert "Model Card for Model ID" not in left.text and "More Information Needed" not in left.text

    # an agent: Hub ids when given, else no base_model or datasets at all
    assert cli(["push", p["sft"], "me/sft", "--to", pub / "sft"]) == 0
    data = card(pub / "sft").data
    assert data.base_model is None and data.datasets is None
    assert "Lineage: `me/sft` (agent) <- `pretrain`." in card(pub / "sft").text
    push(p["sft"], "me/sft", to=pub / "sft-ids", base_model="me/pretrain", datasets=["me/demos"])
    data = card(pub / "sft-ids").data
    assert data.base_model == "me/pretrain" and data.datasets == ["me/demos"]
    made = json.loads((pub / "sft-ids" / "provenance.json").read_text())
    assert made["config"]["init_from"] == "me/pretrain" and made["config"]["dataset"] == "me/demos"
    assert made["recipe"] == "recipes/sft.yaml" and made["config"]["output_dir"] == "sft"

    # a reward model scores trajectories: its card neither plays nor evaluates, it aligns
    assert cli(["push", p["reward-left"], "me/reward-left", "--to", pub / "reward", "--base-model", "me/sft"]) == 0
    reward = card(pub / "reward")
    assert "play" not in reward.text and "evaluate" not in reward.text, reward.text
    assert "hf-agents train recipes/align.yaml agent=me/sft reward_model=me/reward-left" in reward.text
    assert reward.data.base_model == "me/sft" and "reward-model" in reward.data.tags

    for folder in pub.iterdir():
        assert local_paths(folder, tmp_path) == [], folder
        assert "published" not in (folder / "README.md").read_text()  # the repo id, never the --to folder
    agent = PeftModel.from_pretrained(AgentModel.from_pretrained(pub / "sft"), pub / "left", adapter_name="left")
    assert "left" in agent.peft_config  # what was published loads: the base agent, then its one adapter


def test_a_card_names_the_game_its_return_and_no_pads(tmp_path):
    """Agents of other games: one without outcomes (judged by its return) and one with outcomes of its own."""
    from hf_agents.envs.spec import GameSpec
    from tests.conftest import make_tiny_agent

    for game in (ARENA_ID, CORRIDOR_ID):
        agent = tmp_path / game.split(":")[1]
        make_tiny_agent(game=GameSpec.of(game, frame_size=32).to_dict()).save_pretrained(agent)
        assert cli(["evaluate", agent, "--episodes", "3", "--num-envs", "1", "--max-steps", "6", "--videos", "0"]) == 0
        summary = json.loads((agent / "eval" / "eval.json").read_text())
        assert cli(["push", agent, f"studio/{agent.name.lower()}", "--to", tmp_path / "pub" / agent.name]) == 0
        pushed = card(tmp_path / "pub" / agent.name)
        text, metrics = pushed.text, {r.metric_type: r.metric_value for r in pushed.data.eval_results}
        assert not re.search(r"\bpads?\b", f"{text} {pushed.data.to_dict()}", re.I), text  # (a gamepad is fine)
        assert f"`{game}`" in text and "--env" not in text.replace("without `--env`", "")
        assert f"hf-agents evaluate studio/{agent.name.lower()}` play that game without `--env`" in text
        assert metrics["mean_return"] == pytest.approx(summary["mean_return"], abs=1e-4)
        assert "Mean return on " in text and f"{summary['mean_return']:.2f}" in text
        assert local_paths(tmp_path / "pub" / agent.name, tmp_path) == []
        if game == ARENA_ID:  # no outcomes: no rates, a return
            assert "**Arena**" in text and "reports no outcomes" in text and "toy-arena" in pushed.data.tags
            assert "failure" not in text and "success" not in text and set(metrics) == {"mean_return"}, metrics
        else:  # outcomes of its own, named with a neutral noun
            assert "failure rate (no outcome)" in str(pushed.data.to_dict())
            assert {"success_rate_goal", "success_rate_pit", "failure_rate", "mean_return"} == set(metrics)
